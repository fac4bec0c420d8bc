import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ScoreCache } from '../src/cache/score-cache.js';
import { createRedis } from '../src/cache/redis-client.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';

/** How L2 reads and writes share round trips, against a real Redis that the test freezes and thaws. */

let redis: TestRedis;
let client: Redis;

beforeAll(async () => {
  redis = await TestRedis.start();
  client = new Redis(redis.url, { maxRetriesPerRequest: null });
  await client.mset('pi:score:k0', '0.25', 'pi:score:k1', '0.5', 'pi:score:k2', '0.125', 'pi:score:k3', '0.75');
});

afterEach(() => redis.resume());

afterAll(async () => {
  client?.disconnect();
  await redis?.close();
});

/** Runs `fn` with a ScoreCache on its own connection (configured as the service configures it). */
async function withCache(redisTimeoutMs: number, fn: (cache: ScoreCache) => Promise<void>): Promise<void> {
  const conn = createRedis(redis.url, pino({ level: 'silent' }));
  try {
    await until(() => conn.status === 'ready', 'cache connection ready');
    await fn(new ScoreCache({ maxEntries: 100, ttlSeconds: 60, redisTimeoutMs }, conn));
  } finally {
    conn.disconnect();
  }
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('ScoreCache L2 reads', () => {
  it('hold reads that arrive while one is on the wire, then send them together in one MGET', () =>
    withCache(5000, async (cache) => {
      redis.pause();
      const first = cache.getL2('k0');
      await turns(3);
      expect(cache.l2Reads).toBe(1);
      const later = [cache.getL2('k1'), cache.getL2('k2')];
      await turns(3);
      const third = cache.getL2('k3');
      await new Promise((r) => setTimeout(r, 30));
      expect(cache.l2Reads).toBe(1); // still one exchange: the others wait for it
      redis.resume();
      expect(await first).toBe(0.25);
      expect(await Promise.all([...later, third])).toEqual([0.5, 0.125, 0.75]);
      expect(cache.l2Reads).toBe(2);
      expect(cache.l2Hits).toBe(4);
      // An idle cache sends at once again.
      expect(await cache.getL2('missing')).toBeUndefined();
      expect(cache.l2Reads).toBe(3);
    }));

  it('writes land with their TTL, batched into one command, and survive a script flush', () =>
    withCache(2000, async (cache) => {
      const scriptCalls = async () => {
        const stats = await client.info('commandstats');
        // Successful script runs (a NOSCRIPT reply counts as a failed call).
        let ok = 0;
        for (const m of stats.matchAll(/cmdstat_eval(?:sha)?:calls=(\d+),.*failed_calls=(\d+)/g)) ok += Number(m[1]) - Number(m[2]);
        return ok;
      };
      const callsBefore = await scriptCalls();
      cache.set('w1', 0.375);
      cache.set('w2', 0.625);
      await turns(2);
      cache.set('w3', 0.875);
      await until(async () => (await client.get('pi:score:w3')) === '0.875', 'the writes to land');
      expect(await client.mget('pi:score:w1', 'pi:score:w2')).toEqual(['0.375', '0.625']);
      expect(await scriptCalls()).toBe(callsBefore + 1); // three writes, one command
      const ttl = await client.ttl('pi:score:w1');
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60);
      expect(await cache.getL2('w2')).toBe(0.625);
      // A restarted or flushed server no longer knows the write script: it is loaded again.
      await client.script('FLUSH');
      cache.set('w4', 0.5);
      await until(async () => (await client.get('pi:score:w4')) === '0.5', 'the write after a script flush to land');
      expect(cache.l2Errors).toBe(0);
    }));

  it('flush() sends buffered writes at once and waits for them (shutdown loses nothing)', () =>
    withCache(2000, async (cache) => {
      for (let i = 0; i < 1000; i++) cache.set(`f${i}`, i / 1000);
      await cache.flush();
      const keys = Array.from({ length: 1000 }, (_, i) => `pi:score:f${i}`);
      const values = await client.mget(keys);
      expect(values.map(Number)).toEqual(keys.map((_, i) => i / 1000));
      expect(cache.l2Errors).toBe(0);
    }));

  it('a Redis whose reads keep timing out is skipped for a while, then probed, and counts as slow meanwhile', () =>
    withCache(20, async (cache) => {
      redis.pause();
      for (let i = 0; i < 3; i++) expect(await cache.getL2('k0')).toBeUndefined();
      expect(cache.l2Timeouts).toBe(3);
      expect(cache.l2Suspensions).toBe(1);
      expect(cache.l2Slow).toBe(true);
      expect(cache.l2Enabled).toBe(false);
      // Suspended: answered at once, nothing sent; writes are dropped instead of queued.
      const reads = cache.l2Reads;
      expect(await cache.getL2('k1')).toBeUndefined();
      expect(cache.l2Reads).toBe(reads);
      for (let i = 0; i < 100; i++) cache.set(`s${i}`, 0.5);
      await cache.flush(50);
      expect(cache.l2WritesDropped).toBe(100);
      redis.resume();
      // After the pause one exchange probes Redis; once it answers in time, L2 is back.
      expect(await until(() => cache.getL2('k1'), 'L2 answering again', 5000)).toBe(0.5);
      expect(cache.l2Slow).toBe(false);
      expect(cache.l2Enabled).toBe(true);
    }));

  it('at most four write batches wait on a hung Redis; the rest are dropped, the waiting ones land later', () =>
    withCache(2000, async (cache) => {
      redis.pause();
      for (let b = 0; b < 6; b++) {
        for (let i = 0; i < 10; i++) cache.set(`h${b}-${i}`, b / 10);
        await cache.flush(10); // sends the batch; Redis does not answer
      }
      expect(cache.l2WritesDropped).toBe(20);
      redis.resume();
      const landed = Array.from({ length: 4 }, (_, b) => `pi:score:h${b}-9`);
      await until(async () => (await client.exists(...landed)) === 4, 'the four waiting batches to land');
      expect(await client.exists('pi:score:h4-0', 'pi:score:h5-0')).toBe(0);
      // Slots free again: the next batch is sent.
      cache.set('after', 0.25);
      await cache.flush();
      expect(await client.get('pi:score:after')).toBe('0.25');
      expect(cache.l2WritesDropped).toBe(20);
    }));

  it('a hung Redis delays reads by the timeout, never stalls them', () =>
    withCache(50, async (cache) => {
      redis.pause();
      const started = Date.now();
      const first = cache.getL2('k0');
      await turns(3);
      const held = cache.getL2('k1');
      expect(await first).toBeUndefined();
      expect(await held).toBeUndefined(); // sent after the first timed out, then timed out itself
      expect(cache.l2Reads).toBe(2);
      expect(Date.now() - started).toBeLessThan(5000);
      redis.resume();
      // Late replies are ignored; fresh reads work again.
      expect(await until(() => cache.getL2('k2'), 'reads answered after resume')).toBe(0.125);
    }));
});
