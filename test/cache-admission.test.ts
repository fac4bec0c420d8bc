import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SightingFilter } from '../src/cache/admission.js';
import { loadConfig, ConfigError } from '../src/config/env.js';
import { buildTestApp } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { scoreKeyFor } from './helpers/score-key.js';
import { API_KEYS, KEY, bearer } from './helpers/segments.js';

type Features = Record<string, unknown>;
interface PredictionBody {
  probability: number;
  cached: boolean;
}

describe('SightingFilter (admission on second sighting)', () => {
  it('reports a row unseen the first time and seen after, whatever the row', () => {
    fc.assert(
      fc.property(fc.array(fc.float({ noNaN: true }), { minLength: 1, maxLength: 80 }), (values) => {
        const filter = new SightingFilter(1024);
        const row = Float32Array.from(values);
        expect(filter.seenBefore(row)).toBe(false);
        expect(filter.seenBefore(Float32Array.from(values))).toBe(true);
      }),
    );
  });

  it('tells apart rows that differ in one value by one unit in the last place, or in width', () => {
    const filter = new SightingFilter(1 << 16);
    const base = Float32Array.from({ length: 75 }, (_, i) => (i % 7 === 0 ? 1 : i / 10));
    expect(filter.seenBefore(base)).toBe(false);
    let fresh = 0;
    for (let i = 0; i < base.length; i++) {
      const next = base.slice();
      const bits = new Int32Array(next.buffer);
      bits[i] += 1;
      if (!filter.seenBefore(next)) fresh++;
    }
    expect(fresh).toBe(base.length);
    expect(filter.seenBefore(base.subarray(0, 74))).toBe(false);
    expect(filter.seenBefore(base)).toBe(true);
  });

  it('forgets every sighting on clear()', () => {
    const filter = new SightingFilter(1024);
    const row = Float32Array.of(1, 2, 3);
    filter.seenBefore(row);
    filter.clear();
    expect(filter.seenBefore(row)).toBe(false);
  });

  it('remembers most rows within a quarter of its capacity and mistakes none for seen', () => {
    const capacity = 4096;
    const filter = new SightingFilter(capacity);
    const rows = Array.from({ length: capacity / 4 }, (_, i) => Float32Array.of(i, i * 0.5, 3));
    const falseSeen = rows.filter((r) => filter.seenBefore(r)).length;
    const remembered = rows.filter((r) => filter.seenBefore(r)).length;
    expect(falseSeen).toBe(0);
    // Direct-mapped: a later row may take an earlier row's slot (about one in eight here, and each
    // row found missing in the second pass takes another's); uniform hashing keeps about three in four.
    expect(remembered / rows.length).toBeGreaterThan(0.7);
  });
});

describe('CACHE_ADMISSION', () => {
  it('defaults to repeat and refuses other values naming the variable', () => {
    expect(loadConfig({}).CACHE_ADMISSION).toBe('repeat');
    expect(() => loadConfig({ CACHE_ADMISSION: 'sometimes' })).toThrow(ConfigError);
    expect(() => loadConfig({ CACHE_ADMISSION: 'sometimes' })).toThrow(/CACHE_ADMISSION/);
  });
});

describe('default admission with Redis as L2', () => {
  let redis: TestRedis;
  let client: Redis;
  let app: FastifyInstance;
  let rows: Features[];
  let counter = 0;
  const fresh = (): Features => {
    counter++;
    return { ...rows[counter % rows.length], ProductRelated_Duration: 7 + counter * 1.25 };
  };
  const predict = async (features: Features, userId?: string): Promise<PredictionBody> => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: bearer(KEY.predict), payload: { userId, features } });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as PredictionBody;
  };
  const l2 = () => app.services.cache.l2!.stats();

  beforeAll(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
    rows = shopperFeatureRows(20);
    app = await buildTestApp({ REDIS_URL: redis.url, REDIS_TIMEOUT_MS: '2000', API_KEYS });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    client?.disconnect();
    await redis?.stop();
  });

  it('a first sighting touches neither level; the second reads L2 and stores; the third is a hit equal to the first answer', async () => {
    const features = fresh();
    const key = `pi:score:${scoreKeyFor(app, features)}`;
    const before = l2();
    const first = await predict(features);
    await app.services.cache.flush();
    expect(first.cached).toBe(false);
    expect(l2().reads).toBe(before.reads);
    expect(await client.exists(key)).toBe(0);

    const second = await predict(features);
    await app.services.cache.flush();
    expect(second.cached).toBe(false);
    expect(l2().reads).toBe(before.reads + 1);
    expect(Number(await client.get(key))).toBe(second.probability);

    const third = await predict(features);
    expect(third).toEqual({ ...first, cached: true });
  });

  it('an L2 entry written by another replica is found from this replica\'s second sighting', async () => {
    const features = fresh();
    await client.set(`pi:score:${scoreKeyFor(app, features)}`, '0.123');
    expect((await predict(features)).cached).toBe(false);
    const second = await predict(features);
    expect(second).toMatchObject({ cached: true, probability: 0.123 });
  });

  it('erasing a user whose last input was cached drops that entry from L1 and Redis', async () => {
    const features = fresh();
    const userId = 'admission-user-1';
    await predict(features, userId);
    await predict(features, userId);
    await app.services.segments.flush();
    await app.services.cache.flush();
    const key = `pi:score:${scoreKeyFor(app, features)}`;
    expect(await client.exists(key)).toBe(1);
    const res = await app.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
    expect(res.statusCode, res.body).toBe(200);
    expect((res.json() as { removed: { cacheEntries: number } }).removed.cacheEntries).toBe(2);
    expect(await client.exists(key)).toBe(0);
    expect((await predict(features)).cached).toBe(false);
  });

  it("a user's last request that this replica did not admit still lets erasure find the score another replica cached", async () => {
    const other = await buildTestApp({ REDIS_URL: redis.url, REDIS_TIMEOUT_MS: '2000', API_KEYS });
    try {
      const features = fresh();
      const userId = 'admission-user-2';
      const key = `pi:score:${scoreKeyFor(app, features)}`;
      // Cached by this replica (second sighting) ...
      await predict(features, userId);
      await predict(features, userId);
      await app.services.cache.flush();
      expect(await client.exists(key)).toBe(1);
      // ... then the same user's same row on a replica that sees it for the first time: not
      // admitted there, and the user's record is replaced by that replica's.
      const res = await other.inject({ method: 'POST', url: '/v1/predict', headers: bearer(KEY.predict), payload: { userId, features } });
      expect(res.json()).toMatchObject({ cached: false });
      await other.services.segments.flush();
      expect(await client.hget(`pi:user:${userId}`, 'ck')).toBe(scoreKeyFor(app, features));
      const erased = await other.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
      expect(erased.statusCode, erased.body).toBe(200);
      expect(await client.exists(key)).toBe(0);
    } finally {
      await other.close();
    }
  });
});
