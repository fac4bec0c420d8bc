import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisMembershipStore } from '../src/segments/redis-membership-store.js';
import type { MembershipRecord } from '../src/segments/membership-store.js';
import { TestRedis } from './helpers/redis-server.js';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { until } from './helpers/http.js';

/** Calls of one Redis command since the last CONFIG RESETSTAT (scripts' calls included). */
async function calls(client: Redis, command: string): Promise<number> {
  const info = await client.info('commandstats');
  return Number(info.match(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm'))?.[1] ?? 0);
}

describe('Redis membership store: writes', () => {
  let redis: TestRedis;
  let client: Redis;
  let store: RedisMembershipStore;

  beforeAll(async () => {
    redis = await TestRedis.start();
    client = new Redis(redis.url);
    store = new RedisMembershipStore(client, 86_400);
  });
  afterAll(async () => {
    client?.disconnect();
    await redis?.close();
  });

  it('a record touches the segments the user leaves and joins, however many segments are defined', async () => {
    const ids = ['high-intent', 'medium-intent', 'low-intent', ...Array.from({ length: 60 }, (_, i) => `rule-${i}`)];
    const rec = (userId: string, segments: string[], probability: number): MembershipRecord => ({ userId, probability, version: 'v1', persona: null, segments, at: Date.now() });
    const users = Array.from({ length: 50 }, (_, i) => `u-${i}`);
    await store.record(users.map((u) => rec(u, ['low-intent', 'rule-1', 'rule-2'], 0.1)), ids);
    await client.config('RESETSTAT');
    await store.record(users.map((u) => rec(u, ['high-intent', 'rule-2', 'rule-3'], 0.9)), ids);

    // Each user left two segments (low-intent, rule-1) and is in three: 2 removals and 3 additions
    // per user (plus pi:seen), not one command for each of the 63 segments.
    expect(await calls(client, 'zrem')).toBe(50 * 2);
    expect(await calls(client, 'zadd')).toBe(50 * (3 + 1));
    for (const [seg, size] of [['low-intent', 0], ['rule-1', 0], ['rule-2', 50], ['high-intent', 50], ['rule-3', 50]] as const) expect(await store.size(seg), seg).toBe(size);
    expect((await store.user('u-7'))!.segments).toEqual(['high-intent', 'rule-2', 'rule-3']);
  });

  it('an export whose pages end inside a run of tied scores lists every member once, in the member-page order', async () => {
    // Ids whose byte order differs from a locale's collation order (case, accents, CJK). Under the
    // C locales of this machine Lua's own comparison is byte order too, so this guards the paging,
    // not the locale independence.
    const ids = Array.from({ length: 40 }, (_, i) => [`a${i}`, `B${i}`, `é${i}`, `中${i}`, `Z${i}`, `e${i}`][i % 6] + `-${i}`);
    await store.record(ids.map((userId) => ({ userId, probability: 0.5, version: 'v1', persona: null, segments: ['tied'], at: Date.now() })), ['tied']);
    const exported: string[] = [];
    for await (const chunk of store.exportChunks('tied', 'ndjson', undefined, 7)) {
      for (const line of chunk.toString('utf8').trim().split('\n')) exported.push((JSON.parse(line) as { userId: string }).userId);
    }
    const listed = (await store.page('tied', { limit: 100 })).members.map((m) => m.userId);
    expect(listed).toHaveLength(ids.length);
    expect(exported).toEqual(listed);
  });
});

describe('turning FEATURE_RETENTION off', () => {
  let redis: TestRedis;
  afterAll(async () => {
    await redis?.close();
  });

  it('removes the features kept while it was on, at the next start, and keeps the rest of each record', async () => {
    redis = await TestRedis.start();
    const features = shopperFeatureRows(1)[0];
    const on = await buildTestApp({ REDIS_URL: redis.url });
    await on.ready();
    for (const userId of ['kept-a', 'kept-b']) expect((await on.inject({ method: 'POST', url: '/v1/predict', payload: { userId, features } })).statusCode).toBe(200);
    await on.services.segments.flush();
    expect((await on.inject({ url: '/v1/users/kept-a' })).json().featuresRetained).toBe(true);
    await on.close();

    const off = await buildTestApp({ REDIS_URL: redis.url, FEATURE_RETENTION: 'off' });
    await off.ready();
    try {
      await until(async () => (await off.inject({ url: '/v1/users/kept-a' })).json().featuresRetained === false, 'kept features to be removed');
      for (const id of ['kept-a', 'kept-b']) {
        const u = (await off.inject({ url: `/v1/users/${id}` })).json();
        expect(u).toMatchObject({ userId: id, featuresRetained: false });
        expect(u.segments.length).toBeGreaterThan(0);
      }
    } finally {
      await off.close();
    }
  });
});
