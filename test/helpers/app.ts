import { mkdtempSync, cpSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config/env.js';

export const DEFAULT_STORE = resolve('model-store');

/** A private copy of the bundled model store, so tests that activate or delete cannot interfere. */
export function copyDefaultStore(): string {
  const dir = mkdtempSync(join(tmpdir(), 'test-store-'));
  cpSync(DEFAULT_STORE, dir, { recursive: true });
  return dir;
}

/** Builds the real app from an environment-like record (same path as production startup). */
export async function buildTestApp(env: Record<string, string | undefined> = {}) {
  const ownStore = env.MODEL_STORE === undefined ? copyDefaultStore() : undefined;
  const config = loadConfig({ MODEL_STORE: ownStore, LOG_LEVEL: 'silent', TF_BACKEND: 'wasm', ...env });
  const app = await buildApp(config);
  if (ownStore) app.addHook('onClose', async () => rmSync(ownStore, { recursive: true, force: true }));
  return app;
}
