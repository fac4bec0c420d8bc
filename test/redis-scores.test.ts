import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { MAX_BUFFERED_WRITES, RedisScores } from '../src/cache/redis-scores.js';
import { createRedis } from '../src/cache/redis-client.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';

/** How the score cache's L2 reads and writes share round trips, against a real Redis that the test freezes and thaws. */

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

/** Runs `fn` with an L2 store on its own connection (configured as the service configures it); `found` records what reads found. */
async function withStore(timeoutMs: number, fn: (store: RedisScores, found: Map<string, number>) => Promise<void>): Promise<void> {
  const conn = createRedis(redis.url, pino({ level: 'silent' }), 'test');
  try {
    await until(() => conn.status === 'ready', 'cache connection ready');
    const found = new Map<string, number>();
    await fn(new RedisScores(conn, { ttlSeconds: 60, timeoutMs }, (k, p) => found.set(k, p)), found);
  } finally {
    conn.disconnect();
  }
}

/** Successful script runs so far (a NOSCRIPT reply counts as a failed call). */
async function scriptCalls(): Promise<number> {
  const stats = await client.info('commandstats');
  let ok = 0;
  for (const m of stats.matchAll(/cmdstat_eval(?:sha)?:calls=(\d+),.*failed_calls=(\d+)/g)) ok += Number(m[1]) - Number(m[2]);
  return ok;
}

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('score cache L2 (RedisScores)', () => {
  it('hold reads that arrive while one is on the wire, then send them together in one MGET', () =>
    withStore(5000, async (store, found) => {
      redis.pause();
      const first = store.read('k0');
      await turns(3);
      expect(store.reads).toBe(1);
      const later = [store.read('k1'), store.read('k2')];
      await turns(3);
      const third = store.read('k3');
      await new Promise((r) => setTimeout(r, 30));
      expect(store.reads).toBe(1); // still one exchange: the others wait for it
      redis.resume();
      expect(await first).toBe(0.25);
      expect(await Promise.all([...later, third])).toEqual([0.5, 0.125, 0.75]);
      expect(store.reads).toBe(2);
      expect(store.hits).toBe(4);
      expect(Object.fromEntries(found)).toEqual({ k0: 0.25, k1: 0.5, k2: 0.125, k3: 0.75 }); // handed to L1
      // An idle cache sends at once again.
      expect(await store.read('missing')).toBeUndefined();
      expect(store.reads).toBe(3);
    }));

  it('writes land with their TTL, batched into one command, and survive a script flush', () =>
    withStore(2000, async (store) => {
      const callsBefore = await scriptCalls();
      store.write('w1', 0.375);
      store.write('w2', 0.625);
      await turns(2);
      store.write('w3', 0.875);
      await until(async () => (await client.get('pi:score:w3')) === '0.875', 'the writes to land');
      expect(await client.mget('pi:score:w1', 'pi:score:w2')).toEqual(['0.375', '0.625']);
      expect(await scriptCalls()).toBe(callsBefore + 1); // three writes, one command
      const ttl = await client.ttl('pi:score:w1');
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60);
      expect(await store.read('w2')).toBe(0.625);
      // A restarted or flushed server no longer knows the write script: it is loaded again.
      await client.script('FLUSH');
      store.write('w4', 0.5);
      await until(async () => (await client.get('pi:score:w4')) === '0.5', 'the write after a script flush to land');
      expect(store.errors).toBe(0);
    }));

  it('flush() sends buffered writes at once and waits for them (shutdown loses nothing)', () =>
    withStore(2000, async (store) => {
      for (let i = 0; i < 1000; i++) store.write(`f${i}`, i / 1000);
      await store.flush();
      const keys = Array.from({ length: 1000 }, (_, i) => `pi:score:f${i}`);
      const values = await client.mget(keys);
      expect(values.map(Number)).toEqual(keys.map((_, i) => i / 1000));
      expect(store.errors).toBe(0);
    }));

  it('delete() right after a write (user erasure) leaves no key: neither the buffered write nor one already on the wire lands later', () =>
    withStore(2000, async (store) => {
      store.write('e-buffered', 0.5); // still waiting for the 10 ms flush
      expect(await store.delete(['e-buffered'])).toBe(0);
      redis.pause();
      store.write('e-sent', 0.25);
      await store.flush(50); // sent, not yet applied: Redis is frozen
      const erased = store.delete(['e-sent']);
      redis.resume();
      expect(await erased).toBe(1); // the write landed first, then the DEL removed it
      await new Promise((r) => setTimeout(r, 50));
      expect(await client.exists('pi:score:e-buffered', 'pi:score:e-sent')).toBe(0);
    }));

  it('a Redis whose reads keep timing out is skipped for a while, then probed, and counts as slow meanwhile', () =>
    withStore(20, async (store) => {
      redis.pause();
      for (let i = 0; i < 3; i++) expect(await store.read('k0')).toBeUndefined();
      expect(store.timeouts).toBe(3);
      expect(store.suspensions).toBe(1);
      expect(store.slow).toBe(true);
      expect(store.available).toBe(false);
      // Suspended: answered at once, nothing sent; writes are dropped instead of queued.
      const reads = store.reads;
      expect(await store.read('k1')).toBeUndefined();
      expect(store.reads).toBe(reads);
      for (let i = 0; i < 100; i++) store.write(`s${i}`, 0.5);
      await store.flush(50);
      expect(store.writesDropped).toBe(100);
      redis.resume();
      // After the pause one exchange probes Redis; once it answers in time, L2 is back.
      expect(await until(() => store.read('k1'), 'L2 answering again', 5000)).toBe(0.5);
      expect(store.slow).toBe(false);
      expect(store.available).toBe(true);
    }));

  it('an answer that arrived in time is not a timeout because this process was busy when the timer fired', () =>
    withStore(5, async (store) => {
      for (let i = 0; i < 3; i++) {
        const read = store.read('k1');
        await turns(1); // the MGET is on the wire
        // The event loop is blocked far past the 5 ms timeout; Redis has long answered meanwhile.
        const until = performance.now() + 250;
        while (performance.now() < until);
        expect(await read).toBe(0.5);
      }
      expect(store.timeouts).toBe(0);
      expect(store.hits).toBe(3);
    }));

  it('a slow Redis that recovers is probed without any request reading L2 (readiness does not stay "down")', () =>
    withStore(50, async (store) => {
      redis.pause();
      for (let i = 0; i < 3; i++) expect(await store.read('k0')).toBeUndefined();
      expect(store.slow).toBe(true);
      store.probeIfSlow(); // suspended: nothing is sent yet
      const reads = store.reads;
      redis.resume();
      await new Promise((r) => setTimeout(r, 1100)); // the suspension (1 s) is over
      expect(store.slow).toBe(true); // no read has cleared it
      // A probe that times out on a busy machine suspends reads again; the next one after that goes out.
      await until(
        () => {
          store.probeIfSlow();
          return !store.slow;
        },
        'a probe answered in time',
        10_000,
      );
      expect(store.reads).toBeGreaterThan(reads);
      expect(store.available).toBe(true);
    }));

  it('at most four write batches are on the wire to a hung Redis; later writes wait (bounded) and land once it answers', () =>
    withStore(2000, async (store) => {
      redis.pause();
      for (let b = 0; b < 6; b++) {
        for (let i = 0; i < 10; i++) store.write(`h${b}-${i}`, b / 10);
        await store.flush(10); // sends the batch while a slot is free; Redis does not answer
      }
      expect(store.writesDropped).toBe(0); // batches 5 and 6 wait in the buffer
      // The buffer is bounded: beyond MAX_BUFFERED_WRITES, writes are dropped.
      for (let i = 0; i < MAX_BUFFERED_WRITES; i++) store.write(`burst-${i}`, 0.5);
      expect(store.writesDropped).toBe(20);
      redis.resume();
      await store.flush(20_000);
      expect(await client.exists('pi:score:h0-9', 'pi:score:h3-9', 'pi:score:h4-0', 'pi:score:h5-9')).toBe(4);
      const burst = Array.from({ length: MAX_BUFFERED_WRITES - 20 }, (_, i) => `pi:score:burst-${i}`);
      expect(await client.exists(...burst)).toBe(burst.length);
      expect(await client.exists(`pi:score:burst-${MAX_BUFFERED_WRITES - 20}`)).toBe(0);
      expect(store.writesDropped).toBe(20);
      expect(store.errors).toBe(0);
    }));

  it('flush() sends writes made while it waits, and waits without holding the event loop', () =>
    withStore(2000, async (store) => {
      redis.pause();
      store.write('fa', 0.5);
      await store.flush(5); // on the wire, unanswered
      const flushing = store.flush(5000);
      store.write('fb', 0.25); // arrives while flush() waits
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 5);
      await new Promise((r) => setTimeout(r, 50));
      redis.resume();
      await flushing;
      clearInterval(ticker);
      expect(ticks).toBeGreaterThan(0);
      expect(await client.mget('pi:score:fa', 'pi:score:fb')).toEqual(['0.5', '0.25']);
    }));

  it('thousands of writes from one turn leave in batches of 512 and all land without a flush', () =>
    withStore(2000, async (store) => {
      const callsBefore = await scriptCalls();
      for (let i = 0; i < 5000; i++) store.write(`t${i}`, i / 5000);
      const keys = Array.from({ length: 5000 }, (_, i) => `pi:score:t${i}`);
      await until(async () => (await client.exists(...keys)) === 5000, 'all 5000 writes to land');
      expect(await scriptCalls()).toBe(callsBefore + Math.ceil(5000 / 512));
      expect((await client.mget(keys.slice(4990))).map(Number)).toEqual(keys.slice(4990).map((_, i) => (4990 + i) / 5000));
      expect(store.writesDropped).toBe(0);
    }));

  it('a hung Redis delays reads by the timeout, never stalls them', () =>
    withStore(50, async (store) => {
      redis.pause();
      const started = Date.now();
      const first = store.read('k0');
      await turns(3);
      const held = store.read('k1');
      expect(await first).toBeUndefined();
      expect(await held).toBeUndefined(); // sent after the first timed out, then timed out itself
      expect(store.reads).toBe(2);
      expect(Date.now() - started).toBeLessThan(5000);
      redis.resume();
      // Late replies are ignored; fresh reads work again.
      expect(await until(() => store.read('k2'), 'reads answered after resume')).toBe(0.125);
    }));
});

describe('score cache L2 event counters when commands time out (REDIS_COMMAND_TIMEOUT_MS)', () => {
  const COMMAND_TIMEOUT_MS = 300;

  /** Like withStore, on a connection whose commands fail after COMMAND_TIMEOUT_MS (as the service configures it). */
  async function withTimingOutStore(timeoutMs: number, fn: (store: RedisScores) => Promise<void>): Promise<void> {
    const conn = createRedis(redis.url, pino({ level: 'silent' }), 'test', { commandTimeoutMs: COMMAND_TIMEOUT_MS });
    try {
      await until(() => conn.status === 'ready', 'cache connection ready');
      await fn(new RedisScores(conn, { ttlSeconds: 60, timeoutMs }));
    } finally {
      conn.disconnect();
    }
  }

  it('a read that timed out is not counted as an error too when its command fails later', () =>
    withTimingOutStore(20, async (store) => {
      redis.pause();
      for (let i = 0; i < 3; i++) expect(await store.read(`k${i}`)).toBeUndefined();
      expect(store.timeouts).toBe(3);
      // The three MGETs are still on the wire; they fail once the command timeout passes.
      await new Promise((r) => setTimeout(r, COMMAND_TIMEOUT_MS * 3));
      expect(store.stats()).toMatchObject({ reads: 3, timeouts: 3, errors: 0 });
    }));

  it('a write batch that fails counts one error and every score in it as not written', () =>
    withTimingOutStore(2000, async (store) => {
      redis.pause();
      for (let i = 0; i < 3; i++) store.write(`t${i}`, 0.5);
      await store.flush(10); // sent as one batch; Redis does not answer
      expect(store.writesDropped).toBe(0);
      await until(() => store.errors > 0, 'the write batch to fail', 5000);
      expect(store.stats()).toMatchObject({ errors: 1, writes_dropped: 3 });
    }));
});
