import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENAPI_PATH } from '../scripts/write-openapi.js';
import { buildTestApp } from './helpers/app.js';
import { expectError, pathsOf } from './helpers/http.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { API_KEYS, KEY, bearer } from './helpers/segments.js';

/** Rule segments over HTTP: the operand limit, reserved ids, and boolean words in rules (embedded store). */
let app: FastifyInstance;
const features = shopperFeatureRows(1)[0];
const strings = (n: number, tag = '') => Array.from({ length: n }, (_, i) => `${tag}m${i}`);
const leaves = (n: number, tag: string) => Array.from({ length: n }, (_, k) => ({ feature: 'Month', in: strings(1000, `${tag}${k}-`) }));

beforeAll(async () => {
  app = await buildTestApp({ API_KEYS });
  await app.ready();
});
afterAll(async () => {
  await app?.close();
});

const send = (method: 'POST' | 'PUT', url: string, payload: object) => app.inject({ method, url, headers: bearer(KEY.segments), payload });

describe('"in" operands summed over a rule', () => {
  it('refuses more than 1,000 (400 naming rule) on create and replace, as in the reported slow-rule body', async () => {
    const cases = [
      // The reported shape: ~200 leaves of 1,000 strings each (~1.4 MB), within every other limit.
      { any: [...leaves(98, 'a'), { any: leaves(100, 'b') }] },
      { all: [{ feature: 'Month', in: strings(500) }, { not: { feature: 'VisitorType', in: strings(501) } }] },
      { any: [{ score: { in: Array.from({ length: 600 }, (_, i) => i / 1000) } }, { feature: 'Month', in: strings(401) }] },
    ];
    for (const rule of cases) {
      for (const [method, url] of [['POST', '/v1/segments'], ['PUT', '/v1/segments/whatever']] as const) {
        const res = await send(method, url, { name: 'many operands', rule });
        expect(res.statusCode, res.body.slice(0, 300)).toBe(400); // a 201 would echo the whole rule
        const body = expectError(res, 400, 'validation_error');
        expect(pathsOf(body)).toEqual(['rule']);
        expect(body.details[0].message).toMatch(/at most 1000 "in" operands/);
      }
    }
  });

  it('accepts exactly 1,000', async () => {
    const rule = { any: [{ feature: 'Month', in: strings(500) }, { feature: 'VisitorType', in: strings(500) }] };
    const created = await send('POST', '/v1/segments', { id: 'thousand-operands', name: 'at the limit', rule });
    expect(created.statusCode, created.body).toBe(201);
    const replaced = await send('PUT', '/v1/segments/thousand-operands', { name: 'still at the limit', rule });
    expect(replaced.statusCode, replaced.body).toBe(200);
  });
});

describe('reserved rule segment ids', () => {
  /** Every fixed (non-parameter) route segment directly under /v1/segments/, from the route documentation. */
  const fixedNames = () => {
    const doc = JSON.parse(readFileSync(OPENAPI_PATH, 'utf8')) as { paths: Record<string, unknown> };
    return Object.keys(doc.paths)
      .map((p) => /^\/v1\/segments\/([^/{}]+)$/.exec(p)?.[1])
      .filter((s): s is string => s !== undefined);
  };

  it('an id naming a route under /v1/segments/ (bands, score) is a 400 naming id', async () => {
    const names = fixedNames();
    expect(names).toEqual(expect.arrayContaining(['bands', 'score']));
    for (const id of names) {
      const body = expectError(await send('POST', '/v1/segments', { id, name: `named ${id}`, rule: { score: { gte: 0.5 } } }), 400, 'validation_error');
      expect(pathsOf(body), id).toEqual(['id']);
    }
    // The routes still answer as before.
    const bands = await app.inject({ url: '/v1/segments/bands', headers: bearer(KEY.segments) });
    expect(bands.json()).toEqual({ high: 0.6, medium: 0.3 });
    expect((await app.inject({ url: '/v1/segments', headers: bearer(KEY.segments) })).json().segments.map((s: { id: string }) => s.id)).not.toContain('bands');
  });
});

describe('boolean words and numeric-looking categories in rules', () => {
  it('a rule on "TRUE" matches users sent with true or "TRUE"; category "0x10" is not 16, " 16 " is (categories are trimmed)', async () => {
    const segs = [
      { id: 'weekend-upper', rule: { feature: 'Weekend', eq: 'TRUE' } },
      { id: 'weekend-bool', rule: { feature: 'Weekend', eq: true } },
      { id: 'weekday-upper', rule: { feature: 'Weekend', in: ['FALSE'] } },
      { id: 'browser-16', rule: { feature: 'Browser', eq: 16 } },
    ];
    for (const s of segs) {
      const res = await send('POST', '/v1/segments', { ...s, name: s.id });
      expect(res.statusCode, res.body).toBe(201);
    }
    const users = [
      { userId: 'u-string-true', features: { ...features, Weekend: 'TRUE', Browser: '0x10' } },
      { userId: 'u-bool-true', features: { ...features, Weekend: true, Browser: 16 } },
      { userId: 'u-false', features: { ...features, Weekend: 'false', Browser: ' 16 ' } },
    ];
    const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: bearer(KEY.predict), payload: { instances: users } });
    expect(res.statusCode, res.body).toBe(200);
    const segmentsOf = async (userId: string) => {
      const r = await app.inject({ url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
      expect(r.statusCode, r.body).toBe(200);
      return (r.json().segments as string[]).filter((s) => segs.some((x) => x.id === s)).sort();
    };
    expect(await segmentsOf('u-string-true')).toEqual(['weekend-bool', 'weekend-upper']);
    expect(await segmentsOf('u-bool-true')).toEqual(['browser-16', 'weekend-bool', 'weekend-upper']);
    expect(await segmentsOf('u-false')).toEqual(['browser-16', 'weekday-upper']);
  });
});
