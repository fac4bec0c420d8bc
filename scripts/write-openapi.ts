/**
 * Writes openapi/openapi.json from the routes' zod schemas (`npm run openapi`).
 * The configuration is fixed (not read from the environment) so the document is reproducible:
 * test/openapi.test.ts regenerates it and fails when the committed file has drifted.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/env.js';

export const OPENAPI_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'openapi', 'openapi.json');

/** The OpenAPI document as committed: 2-space JSON plus a trailing newline. */
export async function generateOpenApi(modelStore = './model-store'): Promise<string> {
  const config = loadConfig({ LOG_LEVEL: 'silent', MODEL_STORE: modelStore, TF_BACKEND: 'wasm' });
  const app = await buildApp(config);
  try {
    await app.ready();
    return JSON.stringify(app.swagger(), null, 2) + '\n';
  } finally {
    await app.close();
  }
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  const text = await generateOpenApi();
  mkdirSync(dirname(OPENAPI_PATH), { recursive: true });
  writeFileSync(OPENAPI_PATH, text);
  console.log(`wrote ${OPENAPI_PATH}`);
}
