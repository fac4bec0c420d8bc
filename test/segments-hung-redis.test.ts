import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';

const API_KEYS = 'segments:seg-key-1234,predict:pred-key-1234';
const SEG = { authorization: 'Bearer seg-key-1234' };
const PRED = { authorization: 'Bearer pred-key-1234' };
const rows = shopperFeatureRows(60);

/**
 * A Redis that is connected but frozen (SIGSTOP) must neither stall predictions nor let
 * membership writes pile up without bound, and shutdown must not wait for it forever.
 */
describe('segment memberships while Redis hangs', () => {
  let redis: TestRedis;
  let app: FastifyInstance;

  beforeAll(async () => {
    redis = await TestRedis.start();
    app = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '400' });
    await app.ready();
  });
  afterAll(async () => {
    redis?.resume();
    await app?.close();
    await redis?.close();
  });

  const predict = async (userId: string, i: number) => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId, features: rows[i % rows.length] } });
    expect(res.statusCode, res.body).toBe(200);
  };
  const metric = async (name: string) => {
    const text = (await app.inject({ url: '/metrics' })).body;
    return Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1]);
  };

  it('drops what it cannot write (counted), keeps predicting, and records again once Redis answers', async () => {
    await predict('before-hang', 0);
    await app.services.segments.flush();
    expect((await app.inject({ url: '/v1/users/before-hang', headers: SEG })).statusCode).toBe(200);

    redis.pause();
    // Six batch requests of 10,000 users: each becomes one write batch. 50,000 records may wait.
    for (let b = 0; b < 6; b++) {
      const instances = Array.from({ length: 10_000 }, (_, i) => ({ userId: `hang-${b}-${i}`, features: rows[i % rows.length] }));
      const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: PRED, payload: { instances } });
      expect(res.statusCode).toBe(200);
      await new Promise((r) => setImmediate(r));
      expect(app.services.segments.waiting).toBeLessThanOrEqual(50_000);
    }
    // At least the sixth batch went past the bound (earlier ones may also have timed out by now).
    expect(app.services.segments.dropped).toBeGreaterThanOrEqual(10_000);
    // The waiting batches end too: their commands time out instead of hanging.
    await app.services.segments.flush();
    expect(app.services.segments.dropped).toBe(60_000);
    expect(await metric('intent_membership_records_dropped_total')).toBe(60_000);

    // Resumed, Redis first works through the commands it was sent while frozen (reads meanwhile
    // answer 503 when they time out); then a new score is recorded again.
    redis.resume();
    await until(async () => {
      await predict('after-hang', 1);
      await app.services.segments.flush();
      const res = await app.inject({ url: '/v1/users/after-hang', headers: SEG });
      expect([200, 404, 503]).toContain(res.statusCode);
      return res.statusCode === 200;
    }, 'memberships to be recorded again', 60_000, 200);
  });

  it('a rule delete or a user erasure behind many queued writes answers 503 within about the command timeout, not one timeout per batch', async () => {
    const other = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '400' });
    await other.ready();
    const created = await other.inject({ method: 'POST', url: '/v1/segments', headers: SEG, payload: { id: 'hung-delete', name: 'x', rule: { score: { gte: 0 } } } });
    expect(created.statusCode, created.body).toBe(201);
    redis.pause();
    try {
      // One write batch each: queued behind one another, each waits out its 400 ms timeout.
      for (let i = 0; i < 40; i++) {
        const res = await other.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId: `queued-${i}`, features: rows[i % rows.length] } });
        expect(res.statusCode).toBe(200);
        await new Promise((r) => setImmediate(r));
      }
      for (const [method, url] of [['DELETE', '/v1/segments/hung-delete'], ['DELETE', '/v1/users/queued-3']] as const) {
        const started = Date.now();
        const res = await other.inject({ method, url, headers: SEG });
        expect(res.statusCode, res.body).toBe(503);
        expect(Date.now() - started).toBeLessThan(3000); // 40 queued batches × 400 ms would be 16 s
      }
    } finally {
      redis.resume();
      await other.close();
    }
    // The refused delete left the rule in place (read through the other replica on the same Redis).
    await until(async () => (await app.services.segments.refreshDefinitions()) && (await app.inject({ url: '/v1/segments/hung-delete', headers: SEG })).statusCode === 200, 'the rule to be listed', 10_000);
  });

  it('a change whose command timed out is a 503 saying it may still be applied (it is, once Redis answers), not "try again"', async () => {
    const other = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '400' });
    await other.ready();
    redis.pause();
    let res;
    try {
      res = await other.inject({ method: 'POST', url: '/v1/segments', headers: SEG, payload: { id: 'late-rule', name: 'late', rule: { score: { gte: 0.5 } } } });
    } finally {
      redis.resume();
    }
    expect(res.statusCode, res.body).toBe(503);
    expect(res.json().message).toMatch(/did not answer in time: the change was sent and may still be applied.*read the resource before retrying/);
    await until(async () => (await other.services.segments.refreshDefinitions()) && (await other.inject({ url: '/v1/segments/late-rule', headers: SEG })).statusCode === 200, 'the late rule to be listed', 10_000);
    // An update reads the rule first: when that read times out nothing was sent, and the answer says try again.
    redis.pause();
    try {
      res = await other.inject({ method: 'PUT', url: '/v1/segments/late-rule', headers: SEG, payload: { name: 'renamed', rule: { score: { gte: 0.5 } } } });
    } finally {
      redis.resume();
    }
    expect(res.statusCode, res.body).toBe(503);
    expect(res.json().message).toBe('redis is unavailable or not answering; try again later');
    await until(async () => (await other.inject({ url: '/v1/segments/late-rule', headers: SEG })).statusCode === 200, 'the rule to be readable', 10_000);
    expect((await other.inject({ url: '/v1/segments/late-rule', headers: SEG })).json().name).toBe('late');
    await other.inject({ method: 'DELETE', url: '/v1/segments/late-rule', headers: SEG });
    await other.close();
  });

  it('closes while Redis hangs (pending writes give up after the command timeout)', async () => {
    const other = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '400' });
    await other.ready();
    redis.pause();
    try {
      const res = await other.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId: 'closing', features: rows[0] } });
      expect(res.statusCode).toBe(200);
      await other.close(); // without the timeout this never resolves while Redis is frozen
      expect(other.services.segments.dropped).toBe(1);
    } finally {
      redis.resume();
    }
  });

  it('close gives up on many queued writes within a bounded time, not one command timeout per batch, and counts each record once', async () => {
    const other = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '400' });
    await other.ready();
    redis.pause();
    try {
      // One write batch each, queued behind one another: waiting for all would take 40 × 400 ms.
      for (let i = 0; i < 40; i++) {
        const res = await other.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId: `at-close-${i}`, features: rows[i % rows.length] } });
        expect(res.statusCode).toBe(200);
        await new Promise((r) => setImmediate(r));
      }
      const started = Date.now();
      await other.close();
      // At most 400 ms for the writes, then the score cache's 1 s flush on the same frozen Redis.
      expect(Date.now() - started).toBeLessThan(5000);
      expect(other.services.segments.dropped).toBe(40);
      // The abandoned writes fail later (the connection is closed): they are not counted again.
      await new Promise((r) => setTimeout(r, 1000));
      expect(other.services.segments.dropped).toBe(40);
      expect(other.services.segments.waiting).toBe(0);
    } finally {
      redis.resume();
    }
  });
});
