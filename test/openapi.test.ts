import { existsSync, readFileSync, rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateOpenApi, OPENAPI_PATH } from '../scripts/write-openapi.js';
import { copyDefaultStore } from './helpers/app.js';

const DRIFT = 'openapi/openapi.json is out of date with the routes: run npm run openapi and commit the result';

describe('openapi/openapi.json', () => {
  it('matches the document generated from the routes', async () => {
    // A private store copy: generating the document must not depend on (or touch) the bundled store.
    const store = copyDefaultStore();
    const generated = await generateOpenApi(store).finally(() => rmSync(store, { recursive: true, force: true }));
    expect(existsSync(OPENAPI_PATH), `openapi/openapi.json is missing: run npm run openapi`).toBe(true);
    const committed = readFileSync(OPENAPI_PATH, 'utf8');
    expect(committed === generated, DRIFT).toBe(true);
  });

  it('documents the prediction routes', async () => {
    const doc = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as {
      openapi: string;
      paths: Record<string, Record<string, { security?: unknown[] }>>;
      components: { securitySchemes: Record<string, unknown> };
    };
    expect(doc.openapi).toMatch(/^3\./);
    expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/healthz', '/readyz', '/v1/schema', '/v1/predict', '/v1/predict/batch']));
    expect(doc.paths['/v1/predict'].post).toBeDefined();
    expect(doc.paths['/openapi.json']).toBeUndefined(); // hidden route
    expect(doc.components.securitySchemes.bearer).toEqual({ type: 'http', scheme: 'bearer' });
    expect(doc.paths['/healthz'].get.security).toEqual([]); // probes need no key
  });

  it('documents the multipart bodies of the upload routes (they read their parts as streams, without a body schema)', () => {
    const doc = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as { paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: { properties: Record<string, { format?: string }>; required: string[] } }> } }>> };
    for (const [path, file] of [['/v1/segments/score', 'file'], ['/v1/datasets', 'file'], ['/v1/models', 'model.json']] as const) {
      const body = doc.paths[path].post.requestBody?.content['multipart/form-data'];
      expect(body, path).toBeDefined();
      expect(body!.schema.properties[file].format, path).toBe('binary');
      expect(body!.schema.required, path).toContain(file);
    }
  });
});

describe('openapi/openapi.json references', () => {
  it('has no dangling $ref', () => {
    const text = readFileSync(OPENAPI_PATH, 'utf8');
    const doc = JSON.parse(text) as { components?: { schemas?: Record<string, unknown> } };
    const defined = new Set(Object.keys(doc.components?.schemas ?? {}));
    const referenced = [...text.matchAll(/"#\/components\/schemas\/([^"]+)"/g)].map((m) => m[1]);
    expect(referenced.length).toBeGreaterThan(0);
    expect(referenced.filter((r) => !defined.has(r))).toEqual([]);
  });
});
