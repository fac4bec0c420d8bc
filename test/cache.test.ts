import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { until } from './helpers/http.js';
import { cacheKey } from '../src/inference/scorer.js';
import { scoreKeyFor } from './helpers/score-key.js';

type Features = Record<string, unknown>;
interface PredictionBody {
  probability: number;
  label: boolean;
  modelVersion: string;
  cached: boolean;
}

const VERSION = 'shoppers-mlp-v1';
const SCORE_PREFIX = 'pi:score:';

let redis: TestRedis;
let client: Redis;
let appA: FastifyInstance;
let appB: FastifyInstance;
let rows: Features[];
let counter = 0;

/** A body no other request in this file sends (distinct encoded input). */
function fresh(): Features {
  counter++;
  return { ...rows[counter % rows.length], PageValues: 0.25 + counter * 0.5, ProductRelated_Duration: 10 + counter * 3.5 };
}

async function predict(app: FastifyInstance, features: Features): Promise<PredictionBody> {
  const res = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features } });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as PredictionBody;
}

/** The Redis key the service stores this input under for the app's active version. */
const redisKeyFor = (app: FastifyInstance, features: Features) => SCORE_PREFIX + scoreKeyFor(app, features);

async function readyz(app: FastifyInstance): Promise<{ status: string; redis: string }> {
  return (await app.inject({ method: 'GET', url: '/readyz' })).json();
}

const scoreKeys = () => client.keys(`${SCORE_PREFIX}*`);

beforeAll(async () => {
  redis = await TestRedis.start();
  client = new Redis(redis.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
  client.on('error', () => {}); // expected while the server is stopped on purpose
  // A generous L2 read timeout: this file checks what the cache returns, not how fast.
  // Every row cached from its first sighting: these tests are about the two levels, not admission (see cache-admission.test.ts).
  const env = { REDIS_URL: redis.url, REDIS_TIMEOUT_MS: '2000', CACHE_ADMISSION: 'all' };
  appA = await buildTestApp(env);
  appB = await buildTestApp(env);
  await Promise.all([appA.ready(), appB.ready()]);
  for (const app of [appA, appB]) await until(async () => (await readyz(app)).redis === 'up', 'redis up at startup');
  rows = shopperFeatureRows(500);
});

afterAll(async () => {
  await appA?.close();
  await appB?.close();
  client?.disconnect();
  await redis?.close();
});

describe('score cache with Redis (L2)', () => {
  it('a cached answer equals the computed one and says cached:true; Redis holds the same value', async () => {
    const features = fresh();
    const computed = await predict(appA, features);
    expect(computed.cached).toBe(false);
    const key = redisKeyFor(appA, features);
    const stored = await until(() => client.get(key), 'the L2 write to land');
    expect(Number(stored)).toBe(computed.probability);
    expect(await client.ttl(key)).toBeGreaterThan(0);

    const cached = await predict(appA, features);
    expect(cached.cached).toBe(true);
    expect(cached.probability).toBe(computed.probability);
    expect(cached.label).toBe(computed.label);
  });

  it('L2 is shared: a second app on the same Redis answers cached:true on its first request', async () => {
    const features = fresh();
    const computed = await predict(appA, features);
    expect(computed.cached).toBe(false);
    await until(() => client.exists(redisKeyFor(appA, features)), 'the L2 write to land');

    const l2HitsBefore = appB.services.cache.l2!.hits;
    expect(appB.services.cache.getL1(redisKeyFor(appB, features).slice(SCORE_PREFIX.length))).toBeUndefined();
    const fromB = await predict(appB, features);
    expect(fromB.cached).toBe(true);
    expect(fromB.probability).toBe(computed.probability);
    expect(appB.services.cache.l2!.hits).toBe(l2HitsBefore + 1);

    // Batch rows bypass the cache by design, and still agree exactly with the cached single answer.
    const other = fresh();
    const res = await appB.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: [{ features: other }, { features }] } });
    expect(res.statusCode, res.body).toBe(200);
    const out = res.json() as { predictions: PredictionBody[] };
    expect(out.predictions.map((p) => p.cached)).toEqual([false, false]);
    expect(out.predictions[1].probability).toBe(computed.probability);
  });

  it('concurrent requests waiting on L2 each keep their own row: scores equal the batch scores of the same rows', async () => {
    const inputs = Array.from({ length: 300 }, () => fresh());
    const readsBefore = appA.services.cache.l2!.reads;
    const singles = await Promise.all(inputs.map((features) => predict(appA, features)));
    expect(singles.every((p) => !p.cached)).toBe(true);
    // Reads were shared: far fewer L2 round trips than requests.
    expect(appA.services.cache.l2!.reads - readsBefore).toBeLessThan(inputs.length / 5);
    const res = await appA.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: inputs.map((features) => ({ features })) } });
    const batch = (res.json() as { predictions: PredictionBody[] }).predictions;
    expect(singles.map((p) => p.probability)).toEqual(batch.map((p) => p.probability));
    // And answered from L2 by the other app, still row for row.
    const fromB = await Promise.all(inputs.map((features) => predict(appB, features)));
    expect(fromB.every((p) => p.cached)).toBe(true);
    expect(fromB.map((p) => p.probability)).toEqual(batch.map((p) => p.probability));
  });

  it('batch rows neither read nor write the cache', async () => {
    const instances = [fresh(), fresh(), fresh()].map((features) => ({ features }));
    const first = (await appA.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances } })).json() as { predictions: PredictionBody[] };
    expect(first.predictions.every((p) => !p.cached)).toBe(true);
    // Writes are flushed in order: once a later single prediction's key has landed, any batch write would have too.
    const later = fresh();
    expect((await predict(appA, later)).cached).toBe(false);
    await until(() => client.exists(redisKeyFor(appA, later)), 'the later single write to land');
    expect(await client.exists(...instances.map((i) => redisKeyFor(appA, i.features)))).toBe(0);
    const second = (await appB.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances } })).json() as { predictions: PredictionBody[] };
    expect(second.predictions.map((p) => p.cached)).toEqual([false, false, false]);
    expect(second.predictions.map((p) => p.probability)).toEqual(first.predictions.map((p) => p.probability));
  });
});

describe('version keying', () => {
  it('cacheKey depends on the version and on every byte of the input', () => {
    const v = Float32Array.from([0.5, -1, 2, 0]);
    expect(cacheKey('a', v)).toBe(cacheKey('a', Float32Array.from(v)));
    expect(cacheKey('a', v)).not.toBe(cacheKey('b', v));
    // The version is hashed together with the row: one flat base64url sha1.
    expect(cacheKey('a', v)).toMatch(/^[A-Za-z0-9_-]{27}$/);
    const w = Float32Array.from(v);
    w[3] = 1e-30;
    expect(cacheKey('a', w)).not.toBe(cacheKey('a', v));
    // A subarray view hashes only its own rows (batch rows share one buffer).
    const two = Float32Array.from([...v, ...v]);
    expect(cacheKey('a', two.subarray(4, 8))).toBe(cacheKey('a', v));
  });

  it('two store versions keep separate entries for the same input', async () => {
    // Register the bundled version again under another id (same weights, same spec).
    const store = appA.services.store;
    const srcDir = store.dir(VERSION);
    const files = new Map<string, Buffer>();
    for (const name of readdirSync(srcDir)) if (name !== 'card.json' && name !== 'manifest.json') files.set(name, readFileSync(join(srcDir, name)));
    const otherId = 'shoppers-mlp-v1-copy';
    store.writeVersion({ ...store.card(VERSION), id: otherId, created: new Date().toISOString() }, files);

    const features = fresh();
    const onV1 = await predict(appA, features);
    expect(onV1.modelVersion).toBe(VERSION);
    const v1Key = redisKeyFor(appA, features);
    await until(() => client.exists(v1Key), 'v1 entry');

    await appA.services.lifecycle.activate(otherId, { by: 'test' });
    try {
      expect(appA.services.models.active?.id).toBe(otherId);
      const onCopy = await predict(appA, features);
      expect(onCopy.modelVersion).toBe(otherId);
      expect(onCopy.cached).toBe(false); // not answered from the other version's entry
      expect(onCopy.probability).toBe(onV1.probability); // identical weights
      const copyKey = redisKeyFor(appA, features);
      expect(copyKey).not.toBe(v1Key);
      await until(() => client.exists(copyKey), 'copy entry');
      // Both entries live side by side, each holding the same score.
      expect(await client.exists(v1Key, copyKey)).toBe(2);
      expect(Number(await client.get(copyKey))).toBe(Number(await client.get(v1Key)));
    } finally {
      await appA.services.lifecycle.activate(VERSION, { by: 'test' });
    }
    expect(appA.services.models.active?.id).toBe(VERSION);
    expect((await predict(appA, features)).cached).toBe(true);
  });
});

describe('Redis outage', () => {
  it('keeps answering while Redis hangs (frozen, connection open), then uses L2 again', async () => {
    for (const app of [appA, appB]) await until(() => app.services.models.active?.id === VERSION, 'bundled version active');
    const known = fresh();
    await predict(appA, known);
    await until(() => client.exists(redisKeyFor(appA, known)), 'the L2 write to land');
    redis.pause();
    try {
      const during = Array.from({ length: 50 }, () => fresh());
      const answers = await Promise.all(during.map((features) => appB.inject({ method: 'POST', url: '/v1/predict', payload: { features } })));
      for (const res of answers) {
        expect(res.statusCode, res.body).toBe(200);
        expect((res.json() as PredictionBody).cached).toBe(false);
      }
    } finally {
      redis.resume();
    }
    // appB never saw `known`: once Redis answers again, it comes from L2.
    expect(appB.services.cache.getL1(redisKeyFor(appB, known).slice(SCORE_PREFIX.length))).toBeUndefined();
    const hitsBefore = appB.services.cache.l2!.hits;
    await until(async () => {
      appB.services.cache.clearL1(); // a miss while Redis was catching up would otherwise answer from L1
      return (await predict(appB, known)).cached;
    }, 'an L2 hit after resume');
    expect(appB.services.cache.l2!.hits).toBeGreaterThan(hitsBefore);
  });

  it('a hung Redis (connected, not answering) shows as down; predictions stay 200 and stop waiting for it', async () => {
    const app = await buildTestApp({ REDIS_URL: redis.url, REDIS_TIMEOUT_MS: '20', CACHE_ADMISSION: 'all' });
    try {
      await until(async () => (await readyz(app)).redis === 'up', 'redis up');
      redis.pause();
      for (let i = 0; i < 5; i++) expect((await predict(app, fresh())).cached).toBe(false);
      expect(app.services.cache.l2!.timeouts).toBe(3); // then reads skip Redis instead of waiting
      const down = await readyz(app);
      expect(down).toMatchObject({ status: 'ready', redis: 'down' });
      const metrics = (await app.inject('/metrics')).body;
      expect(metrics).toContain('intent_score_cache_l2_events_total{event="timeouts"} 3');
      expect(metrics).toContain('intent_score_cache_l2_events_total{event="suspensions"} 1');
      expect(metrics).toContain('intent_redis_up 0');
      redis.resume();
      await until(async () => {
        await predict(app, fresh()); // a read after the pause probes Redis again
        return (await readyz(app)).redis === 'up';
      }, '/readyz to show redis up once Redis answers again');
    } finally {
      redis.resume();
      await app.close();
    }
  });

  it('keeps answering while Redis is down, reports it, and recovers after a restart', async () => {
    // Settle: every replica serves the bundled version (the previous test touched fleet state).
    for (const app of [appA, appB]) await until(() => app.services.models.active?.id === VERSION, 'bundled version active');

    await redis.stop();
    const outage = Array.from({ length: 200 }, () => fresh());
    for (let i = 0; i < outage.length; i += 50) {
      const answers = await Promise.all(outage.slice(i, i + 50).map((features) => appA.inject({ method: 'POST', url: '/v1/predict', payload: { features } })));
      for (const res of answers) {
        expect(res.statusCode, res.body).toBe(200);
        const p = res.json() as PredictionBody;
        expect(p.cached).toBe(false);
        expect(p.probability).toBeGreaterThanOrEqual(0);
        expect(p.probability).toBeLessThanOrEqual(1);
      }
    }
    await until(async () => (await readyz(appA)).redis === 'down', '/readyz to show redis down');
    const down = await readyz(appA);
    expect(down.status).toBe('ready'); // degraded caching, still serving
    // L1 still answers repeats during the outage.
    expect((await predict(appA, outage[0])).cached).toBe(true);
    // Batch too.
    const b = await appA.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: [{ features: fresh() }, { features: outage[1] }] } });
    expect(b.statusCode, b.body).toBe(200);

    await redis.startProcess();
    await until(async () => (await readyz(appA)).redis === 'up', '/readyz to show redis up again');
    const sizeBefore = await client.dbsize();
    const before = (await scoreKeys()).length;
    expect(before).toBe(0); // the restarted server has no persistence

    const after = Array.from({ length: 20 }, () => fresh());
    for (const features of after) expect((await predict(appA, features)).cached).toBe(false);
    const keys = after.map((f) => redisKeyFor(appA, f));
    await until(async () => (await client.exists(...keys)) === keys.length, 'new entries to land in Redis');
    expect(await client.dbsize()).toBeGreaterThanOrEqual(sizeBefore + keys.length);
    expect((await scoreKeys()).length).toBeGreaterThanOrEqual(before + keys.length);
  });
});
