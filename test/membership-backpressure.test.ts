import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';
import { pino } from 'pino';
import { SegmentService } from '../src/segments/segment-service.js';
import { MemoryMembershipStore } from '../src/segments/memory-membership-store.js';
import type { MembershipRecord } from '../src/segments/membership-store.js';
import type { ModelManager } from '../src/registry/model-manager.js';
import type { ScoreCache } from '../src/cache/score-cache.js';

/**
 * Bulk traffic with userIds goes at the membership store's pace: per-user writes are slower than
 * scoring, and before, batch after batch overflowed the write queue and records were dropped on a
 * healthy Redis (20 batches of 10,000 users lost 90,000).
 */
const PREDICT = 'predict-key-123';
const SEG = 'segments-key-123';

describe('membership writes keep up with bulk traffic (real Redis)', () => {
  let redis: TestRedis;
  let client: Redis;
  let app: FastifyInstance;
  const rows = shopperFeatureRows(10_000);
  const auth = (key: string) => ({ authorization: `Bearer ${key}` });

  beforeAll(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
    app = await buildTestApp({ REDIS_URL: redis.url, FEATURE_RETENTION: 'on', API_KEYS: `predict:${PREDICT},segments:${SEG}` });
    await app.ready();
  });
  afterAll(async () => {
    client?.disconnect();
    await app?.close();
    await redis?.close();
  });

  it('eight batch requests of 10,000 users back to back: every user recorded, none dropped', async () => {
    const BATCHES = 8;
    for (let b = 0; b < BATCHES; b++) {
      const instances = rows.map((features, i) => ({ userId: `bulk-${b}-${i}`, features }));
      const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances }, headers: auth(PREDICT) });
      expect(res.statusCode).toBe(200);
    }
    await app.services.segments.flush();
    expect(app.services.segments.dropped).toBe(0);
    expect(await client.zcard('pi:seen')).toBe(BATCHES * rows.length);
    const metrics = (await app.inject({ url: '/metrics' })).body;
    expect(metrics).toMatch(/^intent_membership_records_dropped_total 0$/m);
  }, 120_000);

  it('an audience upload of 60,000 users (more than the write queue holds): every user recorded, the job counts no record dropped', async () => {
    const columns = Object.keys(rows[0]);
    const lines = [['userId', ...columns].join(',')];
    for (let i = 0; i < 60_000; i++) {
      const r = rows[i % rows.length];
      lines.push([`aud-${i}`, ...columns.map((c) => String(r[c]))].join(','));
    }
    const boundary = '----bulk' + Math.random().toString(16).slice(2);
    const payload = Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\n${lines.join('\n')}\n\r\n--${boundary}--\r\n`);
    const before = await client.zcard('pi:seen');
    const res = await app.inject({ method: 'POST', url: '/v1/segments/score', payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, ...auth(SEG) } });
    expect(res.statusCode, res.body).toBe(202);
    const id = res.json().jobId as string;
    const job = async () => (await app.inject({ url: `/v1/jobs/${id}`, headers: auth(SEG) })).json() as { status: string; scored: number; recordsDropped: number };
    await until(async () => ['succeeded', 'failed', 'cancelled'].includes((await job()).status), 'the job to finish', 100_000);
    expect(await job()).toMatchObject({ status: 'succeeded', scored: 60_000, recordsDropped: 0 });
    expect((await client.zcard('pi:seen')) - before).toBe(60_000);
    expect(app.services.segments.dropped).toBe(0);
  }, 120_000);
});

describe('a frozen membership store does not hold bulk answers or user reads (real Redis, paused)', () => {
  let redis: TestRedis;
  let app: FastifyInstance;
  const rows = shopperFeatureRows(1000);
  const auth = (key: string) => ({ authorization: `Bearer ${key}` });
  const TIMEOUT_MS = 300;

  beforeAll(async () => {
    redis = await TestRedis.start();
    app = await buildTestApp({ REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: String(TIMEOUT_MS), API_KEYS: `predict:${PREDICT},segments:${SEG}` });
    await app.ready();
  });
  afterAll(async () => {
    redis?.resume();
    await app?.close();
    await redis?.close();
  });

  it('batches with userIds answer without waiting for each queued write to time out, and a user read answers 503 without waiting for them either', async () => {
    redis.pause();
    const BATCHES = 30;
    const started = Date.now();
    for (let b = 0; b < BATCHES; b++) {
      const instances = rows.map((features, i) => ({ userId: `frozen-${b}-${i}`, features }));
      const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances }, headers: auth(PREDICT) });
      expect(res.statusCode).toBe(200);
    }
    // Waiting for the queue to drain would take about one timeout per queued batch (~9 s here).
    expect(Date.now() - started).toBeLessThan((BATCHES * TIMEOUT_MS) / 2);
    const readStarted = Date.now();
    const user = await app.inject({ url: '/v1/users/frozen-0-0', headers: auth(SEG) });
    expect(user.statusCode).toBe(503);
    expect(Date.now() - readStarted).toBeLessThan((BATCHES * TIMEOUT_MS) / 2);
    redis.resume();
    await until(async () => (await app.inject({ url: '/v1/users/frozen-29-999', headers: auth(SEG) })).statusCode !== 503, 'user reads answering again', 30_000);
  }, 60_000);
});

describe('several bulk producers on a slow but healthy store', () => {
  /** Writes take 20 µs per record: a 10,000-record batch settles in 200 ms. */
  class SlowStore extends MemoryMembershipStore {
    override async record(batch: MembershipRecord[], segmentIds: string[]): Promise<void> {
      await new Promise((r) => setTimeout(r, batch.length / 50));
      return super.record(batch, segmentIds);
    }
  }

  it('wait as long as batches keep settling: three producers of 60,000 records each lose none', async () => {
    const store = new SlowStore();
    const models = { active: null } as unknown as ModelManager;
    // flushWaitMs (500 ms) is shorter than the whole queue takes to drain, longer than one batch.
    const segments = new SegmentService(store, models, {} as ScoreCache, pino({ level: 'silent' }), { ttlDays: 30, retainFeatures: false, flushWaitMs: 500 });
    const producer = async (lane: number) => {
      for (let round = 0; round < 6; round++) {
        for (let i = 0; i < 10_000; i++) {
          segments.enqueue({ userId: `p${lane}-${round}-${i}`, probability: 0.5, version: 'v1', persona: null, segments: ['low-intent'], at: Date.now() });
        }
        await segments.backpressure();
      }
    };
    await Promise.all([producer(0), producer(1), producer(2)]);
    await segments.flush();
    expect(segments.dropped).toBe(0);
    expect(await store.size('low-intent')).toBe(180_000);
  }, 60_000);
});

