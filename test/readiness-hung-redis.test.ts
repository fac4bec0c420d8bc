import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';

/**
 * A Redis that stays connected but stops answering (SIGSTOP) is reported down even when no request
 * reads the score cache (default admission: first sightings never do), and up again once it answers.
 */
describe('/readyz and intent_redis_up with a frozen Redis and no score-cache traffic', () => {
  let redis: TestRedis;
  let app: FastifyInstance;

  beforeAll(async () => {
    redis = await TestRedis.start();
    app = await buildTestApp({ REDIS_URL: redis.url });
    await app.ready();
  });
  afterAll(async () => {
    redis?.resume();
    await app?.close();
    await redis?.close();
  });

  const readiness = async () => (await app.inject({ url: '/readyz' })).json() as { status: string; redis: string };
  const gauge = async () => /^intent_redis_up (\S+)$/m.exec((await app.inject({ url: '/metrics' })).body)?.[1];

  it('goes down within seconds of the freeze, serving meanwhile, and comes back up', async () => {
    await until(async () => (await readiness()).redis === 'up', 'redis up');
    redis.pause();
    try {
      // First sightings: scored without touching Redis, so only the watch can notice.
      for (const features of shopperFeatureRows(5)) expect((await app.inject({ method: 'POST', url: '/v1/predict', payload: { features } })).statusCode).toBe(200);
      await until(async () => (await readiness()).redis === 'down', 'readiness to report redis down', 8000);
      expect(await readiness()).toMatchObject({ status: 'ready' }); // Redis degrades caching, it does not stop serving
      expect(await gauge()).toBe('0');
    } finally {
      redis.resume();
    }
    await until(async () => (await readiness()).redis === 'up', 'readiness to report redis up again', 8000);
    expect(await gauge()).toBe('1');
  });
});
