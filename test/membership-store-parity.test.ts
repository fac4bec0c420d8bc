import fc from 'fast-check';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MemoryMembershipStore } from '../src/segments/memory-membership-store.js';
import { RedisMembershipStore } from '../src/segments/redis-membership-store.js';
import type { MembershipRecord, MembershipStore } from '../src/segments/membership-store.js';
import { TestRedis } from './helpers/redis-server.js';

/**
 * The embedded store and the Redis store must record the same memberships: which segments a
 * record leaves and joins, and which segments it marks updated (a refused re-score marks none).
 */
let redis: TestRedis;
let client: Redis;

beforeAll(async () => {
  redis = await TestRedis.start();
  client = new Redis(redis.url);
});
afterAll(async () => {
  client?.disconnect();
  await redis?.close();
});

const rec = (userId: string, segments: string[], at: number, extra: Partial<MembershipRecord> = {}): MembershipRecord => ({
  userId,
  probability: 0.2,
  version: 'v1',
  persona: null,
  segments,
  at,
  ...extra,
});

describe.each([{ kind: 'memory' as const }, { kind: 'redis' as const }])('membership records ($kind store)', ({ kind }) => {
  let store: MembershipStore;
  beforeEach(async () => {
    if (kind === 'redis') await client.flushall();
    store = kind === 'redis' ? new RedisMembershipStore(client, 86_400) : new MemoryMembershipStore();
  });

  it('a refused re-score marks no segment updated', async () => {
    const now = Date.now();
    // Not stored at all: nothing is written, so nothing was updated.
    await store.record([rec('absent', ['low-intent'], now - 5, { ifSeenAt: now - 5 })], ['low-intent']);
    expect(await store.user('absent')).toBeNull();
    expect(await store.size('low-intent')).toBe(0);
    expect(await store.updated('low-intent')).toBeNull();

    // Stored, but seen at another time than the re-score read (scored live meanwhile).
    await store.record([rec('seen', ['medium-intent'], now)], ['medium-intent', 'high-intent']);
    await store.record([rec('seen', ['high-intent'], now - 5, { ifSeenAt: now - 5, probability: 0.9 })], ['medium-intent', 'high-intent']);
    expect(await store.updated('high-intent')).toBeNull();
    expect(await store.size('high-intent')).toBe(0);

    // The same re-score with the right time is written and marks its segment.
    await store.record([rec('seen', ['high-intent'], now, { ifSeenAt: now, probability: 0.9 })], ['medium-intent', 'high-intent']);
    expect(await store.size('high-intent')).toBe(1);
    expect(await store.updated('high-intent')).not.toBeNull();
  });

  it('a new record removes the user from segments the previous one lists, even ones no longer defined', async () => {
    await store.record([rec('w', ['r1'], Date.now())], ['r1']);
    expect(await store.size('r1')).toBe(1);
    // r1 was deleted meanwhile: it is no longer among the segment ids passed in.
    await store.record([rec('w', [], Date.now())], ['low-intent']);
    expect(await store.size('r1')).toBe(0);
    expect((await store.page('r1', { limit: 10 })).members).toEqual([]);
  });
});

describe('the two stores agree on any sequence of records (property)', () => {
  const SEGMENTS = ['low-intent', 'high-intent', 'r1', 'r2', 'persona-0'];
  const USERS = ['u0', 'u1', 'u2'];
  const op = fc.record({
    user: fc.constantFrom(...USERS),
    segments: fc.subarray(SEGMENTS),
    ids: fc.subarray(SEGMENTS),
    guard: fc.constantFrom('none', 'match', 'stale'),
    probability: fc.constantFrom(0.1, 0.5, 0.9),
  });

  it('memberships, sizes, updated marks and user records', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        await client.flushall();
        const mem = new MemoryMembershipStore();
        const red = new RedisMembershipStore(client, 86_400);
        let t = Date.now() - 1_000_000;
        for (const o of ops) {
          t += 10;
          const seenAt = (await mem.user(o.user))?.at;
          const ifSeenAt = o.guard === 'none' ? undefined : o.guard === 'match' ? (seenAt ?? t - 1) : (seenAt ?? t) - 5;
          const r = rec(o.user, o.segments, ifSeenAt ?? t, { probability: o.probability, ifSeenAt });
          await mem.record([r], o.ids);
          await red.record([r], o.ids);
        }
        for (const s of SEGMENTS) {
          expect((await red.page(s, { limit: 100 })).members, s).toEqual((await mem.page(s, { limit: 100 })).members);
          expect(await red.size(s), s).toBe(await mem.size(s));
          expect((await red.updated(s)) === null, `updated(${s})`).toBe((await mem.updated(s)) === null);
        }
        for (const u of USERS) {
          const pick = (x: Awaited<ReturnType<MembershipStore['user']>>) => x && { probability: x.probability, at: x.at, segments: x.segments };
          expect(pick(await red.user(u)), u).toEqual(pick(await mem.user(u)));
        }
      }),
      { numRuns: 80 },
    );
  });
});
