import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cacheScope } from '../src/cache/cache-scope.js';
import type { Manifest } from '../src/registry/manifest.js';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { multipart, until } from './helpers/http.js';
import { cacheKey } from '../src/inference/scorer.js';
import { scoreKeyFor } from './helpers/score-key.js';
import { TestRedis } from './helpers/redis-server.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

/**
 * Score-cache keys are scoped by the version's content (id + manifest digest), not by its id
 * alone: version ids are reusable (POST /v1/models takes an explicit id, DELETE frees it).
 * Two replicas share one store volume and one Redis, as in production.
 */

type Features = Record<string, number | string | boolean>;
interface PredictionBody {
  probability: number;
  modelVersion: string;
  cached: boolean;
}

const SCORE_PREFIX = 'pi:score:';
const API_KEYS = 'segments:seg-key-123,admin:adm-key-123,predict:pred-key-123';
const ADMIN = { authorization: 'Bearer adm-key-123' };
const PREDICT = { authorization: 'Bearer pred-key-123' };
const SEGMENTS = { authorization: 'Bearer seg-key-123' };
const REUSED = 'x';

let redis: TestRedis;
let client: Redis;
let storeDir: string;
let weightsDir: string;
let appA: FastifyInstance;
let appB: FastifyInstance;
let rows: Features[];
let counter = 0;

/** A body no other request in this file sends (distinct encoded input). */
function fresh(): Features {
  counter++;
  return { ...rows[counter % rows.length], PageValues: 0.75 + counter * 0.5, ProductRelated_Duration: 20 + counter * 3.5 };
}

async function predict(app: FastifyInstance, features: Features, userId?: string): Promise<PredictionBody> {
  const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: userId ? { userId, features } : { features } });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as PredictionBody;
}

/** What the active version's weights give for `features`, computed (batch rows bypass the score cache). */
async function computed(app: FastifyInstance, features: Features): Promise<PredictionBody> {
  const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: PREDICT, payload: { instances: [{ features }] } });
  expect(res.statusCode, res.body).toBe(200);
  const [p] = (res.json() as { predictions: PredictionBody[] }).predictions;
  expect(p.cached).toBe(false);
  return p;
}

/**
 * Registers, through POST /v1/models with an explicit id, the bundled model with its output bias
 * shifted by `biasShift` (so its probabilities differ from any other shift's for every row).
 */
async function registerWeights(app: FastifyInstance, id: string, biasShift: number): Promise<void> {
  const variant = `bias${String(biasShift).replace(/[^0-9]/g, '_')}`;
  addSecondVersion(weightsDir, variant, { biasShift });
  const dir = join(weightsDir, 'versions', variant);
  const body = await multipart([
    { name: 'model', value: readFileSync(join(dir, 'model.json')), filename: 'model.json' },
    { name: 'weights', value: readFileSync(join(dir, 'group1-shard1of1.bin')), filename: 'group1-shard1of1.bin' },
    { name: 'featureSpec', value: readFileSync(join(dir, 'feature-spec.json')), filename: 'feature-spec.json' },
    { name: 'id', value: id },
  ]);
  const res = await app.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: { ...ADMIN, ...body.headers } });
  expect(res.statusCode, res.body).toBe(201);
  expect(res.json().id).toBe(id);
}

async function activate(app: FastifyInstance, id: string): Promise<void> {
  const res = await app.inject({ method: 'POST', url: `/v1/models/${id}/activate`, headers: ADMIN, payload: { reason: 'cache scope test' } });
  expect(res.statusCode, res.body).toBe(200);
  expect(res.json().active).toBe(id);
}

/** Waits until the app serves `id`, loaded from the store's current files (its scope is theirs). */
async function serving(app: FastifyInstance, id: string): Promise<void> {
  await until(() => app.services.models.active?.cacheScope === scopeInStore(id), `${id} to be served`);
}

function scopeInStore(id: string): string {
  return cacheScope(id, JSON.parse(readFileSync(join(storeDir, 'versions', id, 'manifest.json'), 'utf8')) as Manifest);
}

beforeAll(async () => {
  redis = await TestRedis.start();
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
  storeDir = copyDefaultStore();
  weightsDir = mkdtempSync(join(tmpdir(), 'test-weights-'));
  mkdirSync(join(weightsDir, 'versions'));
  // A generous L2 read timeout: this file checks what the cache returns, not how fast.
  // Every row cached from its first sighting: these tests are about keys, not admission.
  const env = { MODEL_STORE: storeDir, REDIS_URL: redis.url, REDIS_TIMEOUT_MS: '2000', API_KEYS, CACHE_ADMISSION: 'all' };
  appA = await buildTestApp(env);
  appB = await buildTestApp(env);
  await Promise.all([appA.ready(), appB.ready()]);
  for (const app of [appA, appB]) {
    await until(async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().redis === 'up', 'redis up at startup');
    await serving(app, BUNDLED_VERSION);
  }
  rows = shopperFeatureRows(200);
});

afterAll(async () => {
  await appA?.close();
  await appB?.close();
  client?.disconnect();
  await redis?.close();
  if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  if (weightsDir) rmSync(weightsDir, { recursive: true, force: true });
});

describe('score-cache scope', () => {
  it('is the version id plus a digest of its manifest: any file change (or another id) gives another scope, the manifest formatting none', () => {
    const manifest = JSON.parse(readFileSync(join(storeDir, 'versions', BUNDLED_VERSION, 'manifest.json'), 'utf8')) as Manifest;
    const scope = cacheScope(BUNDLED_VERSION, manifest);
    expect(scope).toMatch(new RegExp(`^${BUNDLED_VERSION.replace(/[.-]/g, '\\$&')}@[A-Za-z0-9_-]{16}$`));
    // Same entries in another order (e.g. a manifest written by another tool): same scope.
    const reordered = { ...manifest, files: Object.fromEntries(Object.entries(manifest.files).reverse()) };
    expect(cacheScope(BUNDLED_VERSION, reordered)).toBe(scope);
    // One weight file's checksum differs: another scope.
    const reweighted = { ...manifest, files: { ...manifest.files, 'group1-shard1of1.bin': '0'.repeat(64) } };
    expect(cacheScope(BUNDLED_VERSION, reweighted)).not.toBe(scope);
    expect(cacheScope('other-id', manifest)).not.toBe(scope);
    // Keys follow the scope.
    const v = Float32Array.from([0.5, -1, 2, 0]);
    expect(cacheKey(scope, v)).not.toBe(cacheKey(cacheScope(BUNDLED_VERSION, reweighted), v));
    expect(cacheKey(scope, v)).not.toBe(cacheKey(BUNDLED_VERSION, v));
  });

  it('is the same for the same version on two separately built apps on one store, so Redis (L2) stays shared between replicas', async () => {
    const scope = appA.services.models.active!.cacheScope;
    expect(scope).toBe(scopeInStore(BUNDLED_VERSION));
    expect(appB.services.models.active!.cacheScope).toBe(scope);

    const features = fresh();
    expect(scoreKeyFor(appB, features)).toBe(scoreKeyFor(appA, features));
    const first = await predict(appA, features);
    expect(first.cached).toBe(false);
    await until(() => client.exists(SCORE_PREFIX + scoreKeyFor(appA, features)), 'the L2 write to land');

    // appB never computed this row: its answer comes from the entry appA wrote.
    expect(appB.services.cache.getL1(scoreKeyFor(appB, features))).toBeUndefined();
    const hitsBefore = appB.services.cache.l2!.hits;
    const fromB = await predict(appB, features);
    expect(fromB).toMatchObject({ cached: true, probability: first.probability, modelVersion: BUNDLED_VERSION });
    expect(appB.services.cache.l2!.hits).toBe(hitsBefore + 1);
  });

  it('a version registered again under a deleted id is scored with its own weights, not answered from the old entry (L1 and Redis, on every replica)', async () => {
    // row: asked again on appA, which holds the old score in L1 (and Redis has it).
    // row2: asked again on appB, which could only find the old score in Redis.
    const row = fresh();
    const row2 = fresh();

    // Version x, weights A: computed, cached in appA's L1 and in Redis.
    await registerWeights(appA, REUSED, -2);
    await activate(appA, REUSED);
    const onOld = await predict(appA, row);
    const onOld2 = await predict(appA, row2);
    expect(onOld).toMatchObject({ modelVersion: REUSED, cached: false });
    expect(onOld2).toMatchObject({ modelVersion: REUSED, cached: false });
    await appA.services.cache.flush(5000); // both old scores are in Redis now
    expect((await predict(appA, row)).cached).toBe(true);
    const oldKey = scoreKeyFor(appA, row);
    const oldKey2 = scoreKeyFor(appA, row2);

    // Another version active, x deleted, different weights registered under the same id x.
    await activate(appA, BUNDLED_VERSION);
    const del = await appA.inject({ method: 'DELETE', url: `/v1/models/${REUSED}`, headers: ADMIN });
    expect(del.statusCode, del.body).toBe(200);
    await registerWeights(appA, REUSED, -5);
    await activate(appA, REUSED);
    for (const app of [appA, appB]) await serving(app, REUSED);

    const expected = await computed(appA, row);
    const expected2 = await computed(appB, row2);
    expect(expected.probability).not.toBe(onOld.probability);
    expect(expected2.probability).not.toBe(onOld2.probability);

    // Computed by the new weights, not answered from appA's L1 nor from Redis.
    const onNew = await predict(appA, row);
    expect(onNew).toEqual(expect.objectContaining({ modelVersion: REUSED, cached: false, probability: expected.probability }));
    const onNew2 = await predict(appB, row2);
    expect(onNew2).toEqual(expect.objectContaining({ modelVersion: REUSED, cached: false, probability: expected2.probability }));

    // The old entries are still there (until their TTL), under keys the new version never asks for.
    expect(scoreKeyFor(appA, row)).not.toBe(oldKey);
    expect(scoreKeyFor(appB, row2)).not.toBe(oldKey2);
    expect(appA.services.cache.getL1(oldKey)).toBe(onOld.probability);
    expect(await client.exists(SCORE_PREFIX + oldKey, SCORE_PREFIX + oldKey2)).toBe(2);

    // The new version's own entries are shared as usual.
    await until(() => client.exists(SCORE_PREFIX + scoreKeyFor(appB, row2)), 'the new entry to reach Redis');
    expect(await predict(appA, row2)).toMatchObject({ cached: true, probability: expected2.probability });
  });

  it('erasing a user deletes the entries of their last input under the scoped key (L1 and Redis)', async () => {
    const userId = 'erase-me-1';
    const row = fresh();
    expect((await predict(appA, row, userId)).cached).toBe(false);
    const key = scoreKeyFor(appA, row);
    await until(() => client.exists(SCORE_PREFIX + key), 'the entry to reach Redis');
    await until(async () => (await appA.inject({ method: 'GET', url: `/v1/users/${userId}`, headers: SEGMENTS })).statusCode === 200, 'the user record');

    const res = await appA.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: SEGMENTS });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().removed.cacheEntries).toBe(2); // appA's L1 entry and the Redis key
    expect(appA.services.cache.getL1(key)).toBeUndefined();
    expect(await client.exists(SCORE_PREFIX + key)).toBe(0);
    expect((await predict(appA, row)).cached).toBe(false);
  });
});

