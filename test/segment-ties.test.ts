import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisMembershipStore } from '../src/segments/redis-membership-store.js';
import { TestRedis } from './helpers/redis-server.js';

/**
 * Many members with one score (identical sessions score identically): pages and exports start
 * from the cursor in O(log N) instead of skipping the ties before it one by one, which made paging
 * a 170,000-member tie take 79 s and blocked Redis for seconds per export page.
 */
describe('segment pages over a large group of tied scores (Redis store)', () => {
  let redis: TestRedis;
  let client: Redis;
  let store: RedisMembershipStore;
  const TIED = 30_000;
  const ids = Array.from({ length: TIED }, (_, i) => `tie-${String(i).padStart(6, '0')}`);

  beforeAll(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
    store = new RedisMembershipStore(client, 86_400);
    const args: (string | number)[] = [];
    for (const id of ids) args.push(0.25, id);
    await client.zadd('pi:seg:ties', ...args);
    await client.zadd('pi:seg:ties', 0.9, 'top-a', 0.9, 'top-b', 0.1, 'below');
  });
  afterAll(async () => {
    client?.disconnect();
    await redis?.close();
  });

  /** ZRANGE and ZRANGEBYSCORE calls Redis ran (scripts' calls included) while `fn` ran. */
  async function rangeCalls(fn: () => Promise<void>): Promise<number> {
    const count = async () => {
      const stats = await client.info('commandstats');
      let n = 0;
      for (const m of stats.matchAll(/^cmdstat_(?:zrange|zrangebyscore|zrevrange|zrevrangebyscore):calls=(\d+)/gm)) n += Number(m[1]);
      return n;
    };
    const before = await count();
    await fn();
    return (await count()) - before;
  }

  it('pages through every member once, in score then descending id order, with a constant number of range reads per page', async () => {
    const seen: string[] = [];
    let pages = 0;
    const calls = await rangeCalls(async () => {
      let cursor: string | undefined;
      do {
        const page = await store.page('ties', { limit: 1000, cursor, minScore: 0.2 });
        seen.push(...page.members.map((m) => m.userId));
        cursor = page.nextCursor ?? undefined;
        pages++;
      } while (cursor);
    });
    expect(seen).toEqual(['top-b', 'top-a', ...[...ids].reverse()]);
    expect(pages).toBe(31);
    expect(calls).toBeLessThanOrEqual(pages);
  });

  it('a cursor whose member has since moved or left still resumes right after it among the ties', async () => {
    const first = await store.page('ties', { limit: 10, minScore: 0.2 });
    const last = first.members.at(-1)!;
    expect(last.userId).toBe(ids[TIED - 8]);
    await client.zadd('pi:seg:ties', 0.95, last.userId); // re-scored above the cursor
    try {
      const next = await store.page('ties', { limit: 3, cursor: first.nextCursor!, minScore: 0.2 });
      expect(next.members.map((m) => m.userId)).toEqual([ids[TIED - 9], ids[TIED - 10], ids[TIED - 11]]);
    } finally {
      await client.zadd('pi:seg:ties', 0.25, last.userId);
    }
  });

  it('exports every member once, in the same order, with a constant number of range reads per page', async () => {
    let text = '';
    const calls = await rangeCalls(async () => {
      for await (const chunk of store.exportChunks('ties', 'csv', 0.2, 5000)) text += chunk.toString();
    });
    const rows = text.trimEnd().split('\n');
    expect(rows.map((r) => r.split(',')[0])).toEqual(['top-b', 'top-a', ...[...ids].reverse()]);
    expect(calls).toBeLessThanOrEqual(8); // 7 pages of 5,000
  });
});
