import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';
import type { UserRecord } from '../src/segments/membership-store.js';

const A = BUNDLED_VERSION;
const B = 'rescore-b';
const API_KEYS = 'segments:seg-key-1234,admin:adm-key-1234,predict:pred-key-1234';
const SEG = { authorization: 'Bearer seg-key-1234' };
const ADMIN = { authorization: 'Bearer adm-key-1234' };
const PRED = { authorization: 'Bearer pred-key-1234' };
const rows = shopperFeatureRows(20);

interface UserBody {
  probability: number;
  modelVersion: string;
  scoredAt: string;
  lastSeenAt: string;
  persona: number | null;
  segments: string[];
}

/**
 * Re-scoring (after an activation) rewrites stored users in the background. It must not bring back
 * a user erased meanwhile, overwrite a newer live score, restart anyone's expiry clock or lose the
 * cache key erasure needs; and segments follow the active model even while a canary runs.
 * Run against both membership stores.
 */
describe.each([
  { store: 'memory' as const },
  { store: 'redis' as const },
])('re-scoring stored users ($store store)', ({ store }) => {
  let app: FastifyInstance;
  let storeDir: string;
  let redis: TestRedis | undefined;
  let client: Redis | undefined;
  let restore = () => {};

  beforeAll(async () => {
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    if (store === 'redis') {
      redis = await TestRedis.start();
      client = new Redis(redis.url);
    }
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS, REDIS_URL: redis?.url, CACHE_ADMISSION: 'all' });
    await app.ready();
    expect(app.services.segments.store.kind).toBe(store);
  });
  afterEach(() => restore());
  afterAll(async () => {
    await app?.close();
    client?.disconnect();
    await redis?.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  const predict = async (userId: string, features: Record<string, unknown>) => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId, features } });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as { probability: number; modelVersion: string; persona: { id: number } | null };
  };
  const user = async (userId: string) => {
    const res = await app.inject({ url: `/v1/users/${userId}`, headers: SEG });
    return res.statusCode === 404 ? null : (res.json() as UserBody);
  };
  const finished = async (id: string) => {
    const jobs = app.services.scoringJobs;
    await until(() => ['succeeded', 'failed', 'cancelled'].includes(jobs.get(id).status), `job ${id} to finish`, 30_000);
    expect(jobs.get(id).status).toBe('succeeded');
    await app.services.segments.flush();
  };
  /**
   * Runs `between` after the re-score job has read a chunk of users and before it scores them:
   * the window in which another request can change a user the job is about to rewrite.
   */
  function interceptChunks(between: (chunk: UserRecord[]) => Promise<void>) {
    const membership = app.services.segments.store;
    const original = membership.users.bind(membership);
    membership.users = async function* (chunk: number) {
      for await (const users of original(chunk)) {
        await between(users);
        yield users;
      }
    };
    restore = () => (membership.users = original);
  }

  it('a user erased while the job runs stays erased; one scored live meanwhile keeps the live score', async () => {
    await predict('erased-1', rows[0]);
    await predict('live-1', rows[1]);
    await app.services.segments.flush();
    let live: { probability: number } | undefined;
    interceptChunks(async (users) => {
      if (!users.some((u) => u.userId === 'erased-1')) return;
      const del = await app.inject({ method: 'DELETE', url: '/v1/users/erased-1', headers: SEG });
      expect(del.statusCode, del.body).toBe(200);
      await new Promise((r) => setTimeout(r, 5)); // a later time than the record the job read
      live = await predict('live-1', { ...rows[1], PageValues: 123.5 });
      await app.services.segments.flush();
    });
    await finished(app.services.scoringJobs.rescoreAll().id);
    expect(live).toBeDefined();
    expect(app.services.segments.dropped).toBe(0); // the job's writes were made, not lost

    expect(await user('erased-1')).toBeNull();
    if (client) expect(await client.exists('pi:user:erased-1')).toBe(0);
    const members = (await app.inject({ url: '/v1/segments/high-intent/members?limit=1000', headers: SEG })).json().members as { userId: string }[];
    const low = (await app.inject({ url: '/v1/segments/low-intent/members?limit=1000', headers: SEG })).json().members as { userId: string }[];
    expect([...members, ...low].map((m) => m.userId)).not.toContain('erased-1');
    expect((await user('live-1'))!.probability).toBe(live!.probability);
  });

  it("the job rewrites each stored user with the active model's score, and their record still expires a TTL after they were last seen", async () => {
    const answer = await predict('rewritten-1', rows[4]);
    await app.services.segments.flush();
    const membership = app.services.segments.store;
    const stored = (await membership.user('rewritten-1'))!;
    const daysAgo = Date.now() - 3 * 86_400_000;
    await membership.record([{ ...stored, probability: 0.0123, at: daysAgo }], []); // as if scored 3 days ago, by something else
    expect((await user('rewritten-1'))!.probability).toBe(0.0123);

    await finished(app.services.scoringJobs.rescoreAll().id);
    expect(app.services.segments.dropped).toBe(0);
    const after = (await user('rewritten-1'))!;
    expect(after.probability).toBe(answer.probability);
    expect(after.lastSeenAt).toBe(new Date(daysAgo).toISOString());
    expect(Date.parse(after.scoredAt)).toBeGreaterThan(Date.now() - 60_000); // computed by the re-score
    if (client) {
      // MEMBERSHIP_TTL_DAYS (30) plus a day's margin after the visit 3 days ago: 28 days left, not
      // 31 counted from the re-score.
      const ttlDays = (await client.pttl('pi:user:rewritten-1')) / 86_400_000;
      expect(ttlDays).toBeGreaterThan(27.9);
      expect(ttlDays).toBeLessThan(28.01);
    }
  });

  it('re-scoring keeps when each user was last seen and the cache key erasure needs', async () => {
    await predict('kept-1', rows[2]);
    await app.services.segments.flush();
    const before = (await user('kept-1'))!;
    await new Promise((r) => setTimeout(r, 20));
    await finished(app.services.scoringJobs.rescoreAll().id);
    const after = (await user('kept-1'))!;
    expect(after.lastSeenAt).toBe(before.lastSeenAt);
    expect(before.scoredAt).toBe(before.lastSeenAt);
    expect(Date.parse(after.scoredAt)).toBeGreaterThan(Date.parse(before.scoredAt));
    if (client) expect(await client.hget('pi:user:kept-1', 'ck')).toMatch(/^[\w-]{20,}$/);
    const removed = (await app.inject({ method: 'DELETE', url: '/v1/users/kept-1', headers: SEG })).json().removed as { cacheEntries: number };
    expect(removed.cacheEntries).toBeGreaterThanOrEqual(1);
  });

  it("during a canary, canary answers record no persona, and re-scoring uses the active model", async () => {
    const canary = await app.inject({ method: 'POST', url: `/v1/models/${B}/canary`, headers: ADMIN, payload: { percent: 100 } });
    expect(canary.statusCode, canary.body).toBe(200);
    try {
      const answer = await predict('canary-user', rows[3]);
      expect(answer.modelVersion).toBe(B);
      expect(answer.persona).not.toBeNull(); // the canary has personas of its own ...
      await app.services.segments.flush();
      const recorded = (await user('canary-user'))!;
      expect(recorded.modelVersion).toBe(B);
      expect(recorded.persona).toBeNull(); // ... which are not the active model's persona segments
      expect(recorded.segments.filter((s) => s.startsWith('persona-'))).toEqual([]);

      const job = app.services.scoringJobs.rescoreAll();
      await finished(job.id);
      expect(app.services.scoringJobs.get(job.id).modelVersion).toBe(A);
      const rescored = (await user('canary-user'))!;
      expect(rescored.modelVersion).toBe(A);
      expect(rescored.persona).not.toBeNull();
      expect(rescored.segments).toContain(`persona-${rescored.persona}`);
    } finally {
      await app.inject({ method: 'POST', url: '/v1/models/canary/abort', headers: ADMIN, payload: {} });
    }
  });

  it("a record scored by a model no longer active (in flight across an activation) is written without that model's persona", async () => {
    const active = app.services.models.active!.id;
    const other = active === A ? B : A;
    const segments = app.services.segments;
    segments.enqueue({ userId: 'late-persona', probability: 0.9, version: other, persona: 1, segments: ['high-intent', 'persona-1'], at: Date.now() });
    segments.enqueue({ userId: 'current-persona', probability: 0.9, version: active, persona: 1, segments: ['high-intent', 'persona-1'], at: Date.now() });
    await segments.flush();
    const late = await user('late-persona');
    expect(late?.persona).toBeNull();
    expect(late?.segments).toEqual(['high-intent']);
    expect((await user('current-persona'))?.segments).toEqual(expect.arrayContaining(['high-intent', 'persona-1']));
    const members = (await segments.store.page('persona-1', { limit: 10_000 })).members.map((m) => m.userId);
    expect(members).toContain('current-persona');
    expect(members).not.toContain('late-persona');
  });

  it('an activation empties the persona segments of the previous model; other segments stay', async () => {
    const membership = app.services.segments.store;
    const stale = { userId: 'stale-persona', probability: 0.9, version: A, persona: 9, segments: ['persona-9', 'high-intent'], at: Date.now() };
    await membership.record([stale], ['persona-9', 'high-intent']);
    expect(await membership.size('persona-9')).toBe(1);

    const res = await app.inject({ method: 'POST', url: `/v1/models/${B}/activate`, headers: ADMIN, payload: {} });
    expect(res.statusCode, res.body).toBe(200);
    await until(async () => (await membership.size('persona-9')) === 0, 'persona segments to be emptied');
    if (client) expect(await client.exists('pi:seg:persona-9')).toBe(0);
    const page = await membership.page('high-intent', { limit: 10_000 });
    expect(page.members.map((m) => m.userId)).toContain('stale-persona');
  });
});
