import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';

const COMMAND_TIMEOUT_MS = 500;
const rows = shopperFeatureRows(3);

/**
 * intent_score_cache_l2_events_total while Redis hangs (SIGSTOP): each read is one event (a read
 * that timed out is not an error too when its command fails later), and every score that never
 * reached Redis is counted as not written, whether its batch was dropped or failed on the wire.
 */
describe('score cache L2 events while Redis hangs', () => {
  let redis: TestRedis;
  let app: FastifyInstance;

  beforeAll(async () => {
    redis = await TestRedis.start();
    app = await buildTestApp({ REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: String(COMMAND_TIMEOUT_MS), CACHE_ADMISSION: 'all' });
    await app.ready();
  });
  afterAll(async () => {
    redis?.resume();
    await app?.close();
    await redis?.close();
  });

  const events = async () => {
    const text = (await app.inject({ url: '/metrics' })).body;
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^intent_score_cache_l2_events_total\{event="(\w+)"\} (\S+)$/gm)) out[m[1]] = Number(m[2]);
    return out;
  };

  it('three predictions on a frozen Redis: three reads timed out, three scores not written, no read counted as an error', async () => {
    await until(() => app.services.redisStatus() === 'up', 'redis up');
    redis.pause();
    for (const features of rows) {
      const res = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features } });
      expect(res.statusCode, res.body).toBe(200);
      expect(res.json()).toMatchObject({ cached: false });
    }
    // Write batches sent before reads were suspended fail after the command timeout; the rest were dropped.
    await until(async () => (await events()).writes_dropped === 3, 'every unwritten score to be counted', 10_000);
    // The reads' commands (sent earlier) have failed by now too; give stragglers time anyway.
    await new Promise((r) => setTimeout(r, COMMAND_TIMEOUT_MS + 200));
    const e = await events();
    expect(e).toMatchObject({ reads: 3, timeouts: 3, writes_dropped: 3 });
    expect(e.hits ?? 0).toBe(0);
    // Only failed write batches count as errors: at most two were sent (the third score came after
    // the third timeout suspended Redis, so it was dropped without being sent).
    expect(e.errors ?? 0).toBeLessThanOrEqual(2);
  });
});
