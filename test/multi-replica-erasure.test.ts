import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { expectError, until } from './helpers/http.js';
import { API_KEYS, KEY, bearer } from './helpers/segments.js';
import { scoreKeyFor } from './helpers/score-key.js';

/**
 * Two replicas (r0, r1) on one Redis: an erasure or a rule deletion on r0 must not be undone by
 * writes r1 had computed before it and lands after it (its membership queue, its batched L2 score
 * writes, its rule definitions that are up to 2 s old).
 */
const rows = shopperFeatureRows(5000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('two replicas on one Redis', () => {
  let redis: TestRedis;
  let client: Redis;
  let modelStore: string;
  let r0: FastifyInstance;
  let r1: FastifyInstance;

  beforeAll(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
    modelStore = copyDefaultStore();
    r0 = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, MODEL_STORE: modelStore });
    await r0.ready();
    r1 = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, MODEL_STORE: modelStore });
    await r1.ready();
  }, 60_000);
  afterAll(async () => {
    await r1?.close();
    await r0?.close();
    client?.disconnect();
    await redis?.close();
    if (modelStore) rmSync(modelStore, { recursive: true, force: true });
  });

  const batch = (on: FastifyInstance, instances: { userId: string; features: object }[]) =>
    on.inject({ method: 'POST', url: '/v1/predict/batch', headers: bearer(KEY.predict), payload: { instances } });
  const predict = (on: FastifyInstance, userId: string, features: object) =>
    on.inject({ method: 'POST', url: '/v1/predict', headers: bearer(KEY.predict), payload: { userId, features } });
  const erase = (on: FastifyInstance, userId: string) => on.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
  const getUser = (on: FastifyInstance, userId: string) => on.inject({ url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });

  it("an erasure on r0 is not undone by r1's membership writes queued before it", async () => {
    for (let round = 0; round < 3; round++) {
      const victim = `victim-${round}`;
      const instances = rows.map((features, i) => ({ userId: `bulk-${round}-${i}`, features }));
      expect((await batch(r1, instances)).statusCode).toBe(200);
      expect((await batch(r1, [{ userId: victim, features: rows[round] }])).statusCode).toBe(200);
      const res = await erase(r0, victim);
      expect(res.statusCode, res.body).toBe(200);
      await r1.services.segments.flush();
      await sleep(300);
      expectError(await getUser(r0, victim), 404, 'not_found');
      expect(await client.exists(`pi:user:${victim}`)).toBe(0);
      expect(await client.zscore('pi:seen', victim)).toBeNull();
      for (const id of ['high-intent', 'medium-intent', 'low-intent']) expect(await client.zscore(`pi:seg:${id}`, victim), id).toBeNull();
      // The tombstone does not name the user.
      expect(await client.keys(`*${victim}*`)).toEqual([]);
    }
  }, 120_000);

  it('the user scored again after the erasure is recorded again', async () => {
    expect((await erase(r0, 'returning')).statusCode).toBe(200);
    await sleep(5);
    expect((await batch(r1, [{ userId: 'returning', features: rows[7] }])).statusCode).toBe(200);
    await r1.services.segments.flush();
    expect((await getUser(r0, 'returning')).statusCode).toBe(200);
  });

  it("the cached score of r1's last input is gone once r0's erasure has settled, though r1 wrote it after r0's delete", async () => {
    for (let round = 0; round < 3; round++) {
      const userId = `cached-${round}`;
      const features = rows[100 + round];
      const ck = scoreKeyFor(r1, features);
      expect((await predict(r1, userId, features)).statusCode).toBe(200);
      await sleep(3);
      expect((await erase(r0, userId)).statusCode).toBe(200);
      await r1.services.cache.flush();
      await r1.services.segments.flush();
      // The erasing replica deletes the cache keys again 1 s after the erasure (off the request path).
      await sleep(1500);
      expect(await client.exists(`pi:score:${ck}`), `round ${round}`).toBe(0);
      expectError(await getUser(r0, userId), 404, 'not_found');
    }
  }, 60_000);

  it('a rule deleted on r0 is not refilled by r1 (whose definitions are up to 2 s old) while r1 scores', async () => {
    const created = await r0.inject({ method: 'POST', url: '/v1/segments', headers: bearer(KEY.segments), payload: { id: 'everyone', name: 'everyone', rule: { score: { gte: 0 } } } });
    expect(created.statusCode, created.body).toBe(201);
    await until(async () => (await r1.services.segments.store.rules()).some((r) => r.id === 'everyone') && r1.services.segments.segmentIds().includes('everyone'), 'r1 to load the rule', 10_000);
    let stop = false;
    let k = 0;
    /** The first load request sent after the delete answered (r1 may still have the rule then). */
    let firstAfter = -1;
    const load = (async () => {
      while (!stop) {
        const n = k++;
        const res = await batch(r1, rows.slice(0, 200).map((features, i) => ({ userId: `cont-${n}-${i}`, features })));
        expect(res.statusCode).toBe(200);
      }
    })();
    try {
      await until(async () => (await client.zcard('pi:seg:everyone')) >= 200, 'r1 to fill the rule');
      expect((await r0.inject({ method: 'DELETE', url: '/v1/segments/everyone', headers: bearer(KEY.segments) })).statusCode).toBe(200);
      firstAfter = k;
      await sleep(2500);
    } finally {
      stop = true;
      await load;
    }
    await r1.services.segments.flush();
    expect(await client.zcard('pi:seg:everyone')).toBe(0);
    for (const userId of [`cont-${firstAfter}-0`, `cont-${firstAfter + 1}-199`]) {
      const user = (await getUser(r0, userId)).json() as { segments: string[] };
      expect(user.segments, userId).not.toContain('everyone');
      expect(user.segments.length).toBeGreaterThan(0); // its band is still written
    }

    // Created again, the id is a rule again and fills from r1's writes.
    expect((await r0.inject({ method: 'POST', url: '/v1/segments', headers: bearer(KEY.segments), payload: { id: 'everyone', name: 'everyone', rule: { score: { gte: 0 } } } })).statusCode).toBe(201);
    await until(() => r1.services.segments.segmentIds().includes('everyone'), 'r1 to load the rule again', 10_000);
    expect((await batch(r1, [{ userId: 'after-recreate', features: rows[0] }])).statusCode).toBe(200);
    await r1.services.segments.flush();
    expect(await client.zscore('pi:seg:everyone', 'after-recreate')).not.toBeNull();
    expect(((await getUser(r0, 'after-recreate')).json() as { segments: string[] }).segments).toContain('everyone');
  }, 60_000);
});
