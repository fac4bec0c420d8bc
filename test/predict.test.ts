import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseFeatureSpec, type FeatureSpec } from '../src/preprocessing/feature-spec.js';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { expectError, pathsOf } from './helpers/http.js';

type Features = Record<string, unknown>;
interface PredictionBody {
  probability: number;
  label: boolean;
  threshold: number;
  modelVersion: string;
  cached: boolean;
  warnings: string[];
}

const VERSION = 'shoppers-mlp-v1';
const bundledSpec: FeatureSpec = parseFeatureSpec(JSON.parse(readFileSync(`model-store/versions/${VERSION}/feature-spec.json`, 'utf8')));

let app: FastifyInstance;
let rows: Features[];

const predict = (payload: unknown) => app.inject({ method: 'POST', url: '/v1/predict', payload: payload as object });
const predictRaw = (body: string) => app.inject({ method: 'POST', url: '/v1/predict', payload: body, headers: { 'content-type': 'application/json' } });
const batch = (payload: unknown) => app.inject({ method: 'POST', url: '/v1/predict/batch', payload: payload as object });
/** A row that no other test sends, so the first answer is computed rather than cached. */
const fresh = (i: number): Features => ({ ...rows[i % rows.length], ProductRelated_Duration: 1000 + i * 7.25 });

beforeAll(async () => {
  app = await buildTestApp({ BATCH_MAX_INSTANCES: '5', BODY_LIMIT_BYTES: '65536' });
  await app.ready();
  rows = shopperFeatureRows(400);
});

afterAll(async () => {
  await app?.close();
});

describe('POST /v1/predict: happy path', () => {
  it('answers a probability, its label at the threshold, and the model version', async () => {
    for (const features of [rows[0], rows[1], rows.find((r) => (r.PageValues as number) > 20)!]) {
      const res = await predict({ features });
      expect(res.statusCode, res.body).toBe(200);
      const p = res.json() as PredictionBody;
      expect(Object.keys(p)).toEqual(expect.arrayContaining(['cached', 'label', 'modelVersion', 'probability', 'threshold', 'warnings']));
      expect(p.probability).toBeGreaterThanOrEqual(0);
      expect(p.probability).toBeLessThanOrEqual(1);
      expect(p.threshold).toBe(bundledSpec.threshold);
      expect(p.label).toBe(p.probability >= p.threshold);
      expect(p.modelVersion).toBe(VERSION);
      expect(p.warnings).toEqual([]);
    }
  });

  it('the model separates sessions: a high page-value session scores above a bounce', async () => {
    const bounce = (await predict({ features: rows[0] })).json() as PredictionBody;
    const buyer = (await predict({ features: { ...rows[0], PageValues: 120, ProductRelated: 40, ProductRelated_Duration: 2400, BounceRates: 0, ExitRates: 0.01, Month: 'Nov' } })).json() as PredictionBody;
    expect(buyer.probability).toBeGreaterThan(bounce.probability);
  });

  it('is cached from the second sighting on (default admission): cached:true with the identical probability after that', async () => {
    const features = fresh(1);
    const first = (await predict({ features })).json() as PredictionBody;
    const second = (await predict({ features })).json() as PredictionBody;
    const third = (await predict({ features })).json() as PredictionBody;
    expect([first.cached, second.cached, third.cached]).toEqual([false, false, true]);
    expect(second.probability).toBe(first.probability);
    expect(third.probability).toBe(first.probability);
    expect(third.label).toBe(first.label);
    // Key order and the userId are not part of the cache key, only the encoded input is.
    const reordered = Object.fromEntries(Object.entries(features).reverse());
    const fourth = (await predict({ userId: 'u-1', sessionId: 's-1', features: reordered })).json() as PredictionBody;
    expect(fourth.cached).toBe(true);
    expect(fourth.probability).toBe(first.probability);
  });

  it('accepts null for a nullable feature and string forms of categories and booleans', async () => {
    const nullable = bundledSpec.features.find((f) => f.nullable)!;
    expect(nullable).toBeDefined();
    const res = await predict({ features: { ...fresh(2), [nullable.name]: null, Browser: '2', Weekend: 'TRUE' } });
    expect(res.statusCode, res.body).toBe(200);
  });

  it('works over real HTTP too (supertest)', async () => {
    const res = await request(app.server).post('/v1/predict').send({ features: rows[3] }).expect('content-type', /json/).expect(200);
    expect(res.body.modelVersion).toBe(VERSION);
    expect(res.body.label).toBe(res.body.probability >= res.body.threshold);
  });
});

describe('POST /v1/predict: each bad input is a 400 with the single error body', () => {
  it('missing feature', async () => {
    const { Month: _m, ...features } = rows[0];
    const body = expectError(await predict({ features }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['features.Month']);
    expect(body.details[0].message).toMatch(/missing/);
  });

  it('unknown feature', async () => {
    const body = expectError(await predict({ features: { ...rows[0], Coupon: 1 } }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['features.Coupon']);
    expect(body.details.map((d) => d.message).join(' ')).toMatch(/unknown feature/);
  });

  it.each([
    ['string for a numeric feature', 'Administrative', 'three', /finite number/],
    ['object for a categorical feature', 'Month', { name: 'May' }, /string or number category/],
    ['array for a categorical feature', 'VisitorType', ['Other'], /string or number category/],
    ['"maybe" for a boolean feature', 'Weekend', 'maybe', /true\/false/],
    ['number for a boolean feature', 'Weekend', 1, /true\/false/],
    ['boolean for a numeric feature', 'PageValues', true, /finite number/],
  ])('wrong type: %s', async (_label, name, value, message) => {
    const body = expectError(await predict({ features: { ...rows[0], [name]: value } }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual([`features.${name}`]);
    expect(body.details.map((d) => d.message).join(' | ')).toMatch(message);
  });

  it('null for a non-nullable feature (Month is non-nullable in the bundled spec)', async () => {
    expect(bundledSpec.features.find((f) => f.name === 'Month')?.nullable).toBe(false);
    const nonNullable = bundledSpec.features.filter((f) => !f.nullable).map((f) => f.name);
    expect(nonNullable).toEqual(expect.arrayContaining(['Month', 'PageValues', 'Weekend']));
    for (const name of nonNullable) {
      const body = expectError(await predict({ features: { ...rows[0], [name]: null } }), 400, 'validation_error');
      expect(pathsOf(body)).toEqual([`features.${name}`]);
      expect(body.details.map((d) => d.message).join(' ')).toMatch(/null is not allowed/);
    }
  });

  it.each([
    ['1e999', 'Infinity'],
    ['-1e999', '-Infinity'],
  ])('non-finite number (%s in the JSON)', async (literal) => {
    const raw = JSON.stringify({ features: { ...rows[0], PageValues: 12345 } }).replace('"PageValues":12345', `"PageValues":${literal}`);
    expect(raw).toContain(literal);
    const body = expectError(await predictRaw(raw), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['features.PageValues']);
    expect(body.details.map((d) => d.message).join(' ')).toMatch(/finite number/);
  });

  it.each([
    ['an array', '[1,2,3]'],
    ['a string', '"features"'],
    ['a number', '42'],
    ['null', 'null'],
  ])('body that is not an object: %s', async (_label, raw) => {
    const body = expectError(await predictRaw(raw), 400, 'validation_error');
    expect(body.details.length).toBeGreaterThan(0);
    expect(pathsOf(body)).toContain('body');
  });

  it.each([
    ['missing', {}, 'required: an object of feature values'],
    ['null', { features: null }, 'must be an object of feature values'],
    ['an array', { features: [1, 2] }, 'must be an object of feature values'],
    ['a string', { features: 'Month=May' }, 'must be an object of feature values'],
  ])('features %s', async (_label, payload, message) => {
    const body = expectError(await predict(payload), 400, 'validation_error');
    // One detail, not one from the schema and another from the feature check.
    expect(body.details).toEqual([{ path: 'features', message }]);
  });

  it('an unknown top-level field is refused', async () => {
    const body = expectError(await predict({ features: rows[0], feature: {} }), 400, 'validation_error');
    expect(body.details).toEqual([{ path: 'feature', message: 'unknown field' }]);
  });

  it('an unknown top-level key spelled like a feature path is still refused', async () => {
    const body = expectError(await predict({ features: rows[0], 'features.evil': 1 }), 400, 'validation_error');
    expect(body.details).toEqual([{ path: 'features.evil', message: 'unknown field' }]);
  });

  it('a bad query is named together with a bad body', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict?explain=maybe', payload: { userId: 5, features: rows[0] } });
    expect(pathsOf(expectError(res, 400, 'validation_error'))).toEqual(['explain', 'userId']);
  });

  it('three different bad fields give one 400 naming all three paths', async () => {
    const { Month: _m, ...features } = rows[0];
    const body = expectError(await predict({ features: { ...features, Weekend: 'maybe', Coupon: 'SAVE10' } }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['features.Coupon', 'features.Month', 'features.Weekend']);
    expect(body.message).toMatch(/3 invalid fields/);
  });

  it('schema and feature errors are merged into one answer', async () => {
    const body = expectError(await predict({ userId: '', features: { ...rows[0], Region: { id: 1 }, Administrative: 'x' } }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['features.Administrative', 'features.Region', 'userId']);
  });

  it('malformed JSON and a wrong content type keep the error body', async () => {
    const bad = expectError(await predictRaw('{"features": {'), 400);
    expect(bad.error).toBe('bad_request');
    const xml = await app.inject({ method: 'POST', url: '/v1/predict', payload: '<features/>', headers: { 'content-type': 'application/xml' } });
    expectError(xml, 415, 'unsupported_media_type');
    // Multipart is parsed only by the upload routes.
    const form = '--b\r\nContent-Disposition: form-data; name="features"\r\n\r\n{}\r\n--b--\r\n';
    const multipart = await app.inject({ method: 'POST', url: '/v1/predict', payload: form, headers: { 'content-type': 'multipart/form-data; boundary=b' } });
    expectError(multipart, 415, 'unsupported_media_type');
  });

  it('a body over BODY_LIMIT_BYTES is a 413 with the error body', async () => {
    const res = await predict({ features: { ...rows[0] }, userId: 'x'.repeat(70_000) });
    expectError(res, 413, 'payload_too_large');
  });
});

describe('unseen categories', () => {
  it('answer 200 with a warning naming each feature', async () => {
    const res = await predict({ features: { ...fresh(3), Browser: 99, VisitorType: 'Bot' } });
    expect(res.statusCode, res.body).toBe(200);
    const p = res.json() as PredictionBody;
    expect(p.warnings).toHaveLength(2);
    expect(p.warnings.find((w) => w.startsWith('Browser:'))).toMatch(/^Browser: category "99" is not in the model's vocabulary/);
    expect(p.warnings.find((w) => w.startsWith('VisitorType:'))).toMatch(/^VisitorType: category "Bot" is not in the model's vocabulary/);
    // The warning is part of the answer on a cache hit too (the row is cached from its second sighting).
    await predict({ features: { ...fresh(3), Browser: 99, VisitorType: 'Bot' } });
    const again = (await predict({ features: { ...fresh(3), Browser: 99, VisitorType: 'Bot' } })).json() as PredictionBody;
    expect(again.cached).toBe(true);
    expect(again.warnings).toEqual(p.warnings);
  });
});

describe('GET /v1/schema', () => {
  it("lists the active spec's features and an example body that predicts", async () => {
    const res = await app.inject({ method: 'GET', url: '/v1/schema' });
    expect(res.statusCode, res.body).toBe(200);
    const schema = res.json() as {
      modelVersion: string;
      threshold: number;
      label: { name: string; positive: string };
      features: { name: string; type: string; nullable: boolean; categories?: string[] }[];
      example: { features: Features };
    };
    expect(schema.modelVersion).toBe(VERSION);
    expect(schema.threshold).toBe(bundledSpec.threshold);
    expect(schema.label).toEqual({ name: 'Revenue', positive: 'TRUE' });
    expect(schema.features.map((f) => [f.name, f.type, f.nullable])).toEqual(bundledSpec.features.map((f) => [f.name, f.type, f.nullable]));
    expect(schema.features.find((f) => f.name === 'Month')?.categories).toContain('Nov');
    expect(Object.keys(schema.example.features)).toEqual(bundledSpec.features.map((f) => f.name));

    const p = await predict(schema.example);
    expect(p.statusCode, p.body).toBe(200);
    expect((p.json() as PredictionBody).warnings).toEqual([]);
  });
});

describe('POST /v1/predict/batch', () => {
  it('preserves order: each prediction equals the single predict of the same row', async () => {
    const instances = [0, 5, 17, 42, 99].map((i) => ({ features: { ...rows[i], ExitRates: 0.0123 + i / 10_000 } }));
    const res = await batch({ instances });
    expect(res.statusCode, res.body).toBe(200);
    const out = res.json() as { modelVersion: string; predictions: PredictionBody[] };
    expect(out.modelVersion).toBe(VERSION);
    expect(out.predictions).toHaveLength(instances.length);
    expect(out.predictions.every((p) => p.cached === false)).toBe(true);
    // Distinct probabilities, so a permutation could not pass unnoticed.
    expect(new Set(out.predictions.map((p) => p.probability)).size).toBe(instances.length);

    // Recompute each row alone (drop the in-process cache so the model runs again).
    app.services.cache.clearL1();
    for (const [i, inst] of instances.entries()) {
      const single = (await predict(inst)).json() as PredictionBody;
      expect(single.cached).toBe(false);
      expect(single.probability).toBe(out.predictions[i].probability);
      expect(single.label).toBe(out.predictions[i].label);
    }
  });

  it('reports every invalid instance by its index path', async () => {
    const instances = rows.slice(0, 5).map((features) => ({ features: { ...features } }));
    instances[1].features.Region = { code: 1 };
    instances[3].features.Weekend = 'maybe';
    delete instances[4].features.Month;
    const body = expectError(await batch({ instances }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['instances[1].features.Region', 'instances[3].features.Weekend', 'instances[4].features.Month']);
  });

  it('names an instance that is not an object once, and refuses unknown keys spelled like feature paths', async () => {
    const body = expectError(await batch({ instances: [{ features: rows[0] }, 'oops', { features: rows[1], 'features.evil': 1 }] }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['instances[1]', 'instances[2].features.evil']);
    const top = expectError(await batch({ instances: [{ features: rows[0] }], 'instances[0].features': 1 }), 400, 'validation_error');
    expect(pathsOf(top)).toEqual(['instances[0].features']);
  });

  it('names the instance whose features are not an object, or missing', async () => {
    const body = expectError(await batch({ instances: [{ features: rows[0] }, { features: 'oops' }, {}] }), 400, 'validation_error');
    expect(body.details).toEqual([
      { path: 'instances[1].features', message: 'must be an object of feature values' },
      { path: 'instances[2].features', message: 'required: an object of feature values' },
    ]);
  });

  it('lists the details in instance order, whichever check found them', async () => {
    const instances: { userId?: unknown; features: Record<string, unknown> }[] = rows.slice(0, 4).map((features) => ({ features: { ...features } }));
    instances[3].userId = 42; // found by the schema
    instances[1].features.Weekend = 'maybe'; // found by the feature check
    instances[0].features.Region = { code: 1 };
    const body = expectError(await batch({ instances }), 400, 'validation_error');
    expect(body.details.map((d) => d.path)).toEqual(['instances[0].features.Region', 'instances[1].features.Weekend', 'instances[3].userId']);
  });

  it('carries per-instance warnings for unseen categories', async () => {
    const res = await batch({ instances: [{ features: fresh(10) }, { features: { ...fresh(11), TrafficType: 999 } }] });
    expect(res.statusCode, res.body).toBe(200);
    const out = res.json() as { predictions: PredictionBody[] };
    expect(out.predictions[0].warnings).toEqual([]);
    expect(out.predictions[1].warnings).toHaveLength(1);
    expect(out.predictions[1].warnings[0]).toMatch(/^TrafficType: category "999" is not in the model's vocabulary/);
  });

  it('refuses more than BATCH_MAX_INSTANCES (5) and an empty batch', async () => {
    const six = rows.slice(0, 6).map((features) => ({ features }));
    const over = expectError(await batch({ instances: six }), 400, 'validation_error');
    expect(pathsOf(over)).toEqual(['instances']);
    const five = await batch({ instances: six.slice(0, 5) });
    expect(five.statusCode, five.body).toBe(200);
    const empty = expectError(await batch({ instances: [] }), 400, 'validation_error');
    expect(pathsOf(empty)).toEqual(['instances']);
    const missing = expectError(await batch({}), 400, 'validation_error');
    expect(pathsOf(missing)).toEqual(['instances']);
  });
});

describe('other routes', () => {
  it('unknown routes answer 404 with the error body', async () => {
    const get = expectError(await app.inject({ method: 'GET', url: '/v1/nothing?x=1' }), 404, 'not_found');
    expect(get.message).toBe('no route GET /v1/nothing');
    expect(get.details).toEqual([]);
  });

  it('a known path with the wrong method answers 405 with an Allow header', async () => {
    const get = await app.inject({ method: 'GET', url: '/v1/predict?explain=true' });
    expect(expectError(get, 405, 'method_not_allowed').message).toBe('GET is not allowed on /v1/predict; allowed: POST');
    expect(get.headers.allow).toBe('POST');
    const post = await app.inject({ method: 'POST', url: '/healthz' });
    expectError(post, 405, 'method_not_allowed');
    expect(post.headers.allow).toBe('GET, HEAD');
    // Paths with parameters match by shape; an unknown path stays a 404.
    const put = await app.inject({ method: 'PUT', url: '/v1/users/someone' });
    expectError(put, 405, 'method_not_allowed');
    expect(put.headers.allow).toBe('DELETE, GET, HEAD');
    expectError(await app.inject({ method: 'PUT', url: '/v1/users/someone/else' }), 404, 'not_found');
    // Matched as the router matches: percent-encoding decoded, a prefix root with its trailing slash.
    const encoded = await app.inject({ method: 'GET', url: '/v1/predic%74' });
    expectError(encoded, 405, 'method_not_allowed');
    const docsRoot = await app.inject({ method: 'POST', url: '/docs/' });
    expectError(docsRoot, 405, 'method_not_allowed');
    expect(docsRoot.headers.allow).toBe('GET, HEAD');
  });

  it('/healthz and /readyz', async () => {
    const health = await app.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toEqual({ status: 'ok' });
    const ready = await app.inject({ method: 'GET', url: '/readyz' });
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toEqual({
      status: 'ready',
      // On the WASM backend the bundled dense chain runs as direct kernel calls.
      model: { loaded: true, activeVersion: VERSION, canaryVersion: null, inferencePath: 'wasm-direct' },
      backend: 'wasm',
      redis: 'disabled',
    });
  });
});
