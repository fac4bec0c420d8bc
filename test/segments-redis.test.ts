import type { FastifyInstance } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { expectError, until } from './helpers/http.js';
import {
  API_KEYS,
  KEY,
  RULE_CASES,
  Expected,
  allMembers,
  bearer,
  before,
  coerced,
  expectProfileMatches,
  expectSegmentsMatch,
  getJson,
  page,
  parseCsvExport,
  parseNdjsonExport,
  scoreUsers,
  usersOver,
  type Bands,
  type Member,
  type Row,
  type RuleCase,
  expectFormulaIdsDefused,
  rescoreFinished,
} from './helpers/segments.js';

const N_USERS = 10_000;
const VERSION = 'shoppers-mlp-v1';

let redis: TestRedis;
let client: Redis;
let app: FastifyInstance;
let rows: Row[];
let personaCount: number;
let expected: Expected;

const post = (url: string, payload: object, key: string = KEY.segments) => app.inject({ method: 'POST', url, headers: bearer(key), payload });
const put = (url: string, payload: object, key: string) => app.inject({ method: 'PUT', url, headers: bearer(key), payload });

beforeAll(async () => {
  redis = await TestRedis.start();
  client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  client.on('error', () => {}); // the outage test kills redis-server on purpose
  app = await buildTestApp({ REDIS_URL: redis.url, API_KEYS, MEMBERSHIP_TTL_DAYS: '1', CACHE_ADMISSION: 'all' });
  await app.ready();
  rows = shopperFeatureRows();
  personaCount = app.services.models.active!.personas!.personas.length;
});

afterAll(async () => {
  await app?.close();
  client?.disconnect();
  await redis?.close();
});

describe('ACCEPTANCE 1 (Redis): 10,000 scored users, every segment equals the independently computed set', () => {
  it('runs on the Redis store', () => {
    expect(app.services.segments.store.kind).toBe('redis');
  });

  it('a rule naming an unknown feature is refused with a 400 that names it', async () => {
    const res = await post('/v1/segments', { name: 'bad', rule: { all: [{ feature: 'NotAFeature', eq: 1 }, { score: { gte: 0.5 } }] } });
    const body = expectError(res, 400, 'validation_error');
    expect(body.details.map((d) => d.message).join(' ')).toContain('"NotAFeature"');
    expectError(await post('/v1/segments', { name: 'bad', rule: { feature: 'PageValues', gt: 1, lt: 3 } }), 400, 'validation_error');
  });

  it('rule segments are defined before scoring (segments scope; reserved and duplicate ids conflict)', async () => {
    expectError(await post('/v1/segments', { name: 'x', rule: { score: { gte: 0.5 } } }, KEY.predict), 403, 'forbidden');
    for (const r of RULE_CASES) {
      const res = await post('/v1/segments', { id: r.id, name: r.name, rule: r.rule });
      expect(res.statusCode, res.body).toBe(201);
      expect(res.json()).toMatchObject({ id: r.id, name: r.name, rule: r.rule });
    }
    expectError(await post('/v1/segments', { id: RULE_CASES[0].id, name: 'again', rule: { score: { gte: 0.5 } } }), 409, 'conflict');
    expectError(await post('/v1/segments', { id: 'high-intent', name: 'taken', rule: { score: { gte: 0.5 } } }), 409, 'conflict');
    const bands = await getJson<Bands>(app, '/v1/segments/bands');
    expect(bands).toEqual({ high: 0.6, medium: 0.3 });
    expected = new Expected(bands, RULE_CASES);
  });

  it('scores 10,000 users (batches of 1000 with userIds, the last 50 one by one); every membership matches', async () => {
    // 8,000 distinct real rows, then 2,000 users repeating rows: equal scores, so ties are exercised.
    const users = usersOver(rows, N_USERS, 8000);
    const answers = await scoreUsers(app, expected, users, { chunk: 1000, singles: 50 });
    expect(answers.size).toBe(N_USERS);
    for (const p of answers.values()) {
      expect(p.modelVersion).toBe(VERSION);
      expect(p.persona).not.toBeNull();
    }
    expect(await app.services.segments.store.scoredUsers()).toBe(N_USERS);
    const listed = await expectSegmentsMatch(app, expected, personaCount);
    // Each user is in one band and one persona, plus matching rules.
    expect(listed).toBeGreaterThanOrEqual(2 * N_USERS);
    for (const seg of ['high-intent', 'medium-intent', 'low-intent', ...RULE_CASES.map((r) => r.id)]) expect(expected.members(seg).size, seg).toBeGreaterThan(50);
  });

  it('a user record names its latest score, version, persona and segments', async () => {
    for (const id of ['user-000000', 'user-004321', 'user-009999']) {
      const u = await getJson<{ userId: string; probability: number; modelVersion: string; persona: number; segments: string[]; featuresRetained: boolean }>(app, `/v1/users/${id}`);
      const want = expected.users.get(id)!;
      expect(u).toMatchObject({ userId: id, probability: want.probability, modelVersion: VERSION, persona: want.persona, featuresRetained: true });
      expect(new Set(u.segments)).toEqual(want.segments);
    }
    expectError(await app.inject({ method: 'GET', url: '/v1/users/nobody-here', headers: bearer(KEY.segments) }), 404, 'not_found');
  });

  it('pagination: small pages across ties list the same members as large pages; bad cursors and unknown segments fail', async () => {
    for (const seg of ['high-intent', 'returning-warm']) {
      const big = await allMembers(app, seg, { limit: 1000 });
      const small = await allMembers(app, seg, { limit: 37 });
      expect(small.members).toEqual(big.members);
      expect(small.pages).toBe(Math.max(1, Math.ceil(big.members.length / 37)));
    }
    // Forced repeats give ties; the listing above crossed some of them at page edges.
    const high = (await allMembers(app, 'high-intent')).members;
    const ties = high.filter((m, i) => i > 0 && high[i - 1].score === m.score).length;
    expect(ties).toBeGreaterThan(10);
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/high-intent/members?cursor=not-a-cursor', headers: bearer(KEY.segments) }), 400);
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/high-intent/members?limit=1001', headers: bearer(KEY.segments) }), 400);
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/no-such-segment/members', headers: bearer(KEY.segments) }), 404, 'not_found');
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/high-intent/members', headers: bearer(KEY.predict) }), 403, 'forbidden');
  });

  it('the cursor is stable when members are added between pages: none repeated, none skipped after it', async () => {
    const seg = 'high-intent';
    const old = (await allMembers(app, seg)).members;
    const first = await page(app, seg, { limit: 50 });
    const cursor = first.members[first.members.length - 1];
    const donor = (pick: (m: Member) => boolean) => expected.users.get(old.find(pick)!.userId)!.features;
    // Same features → same (cached) score as the donor, under new userIds placed around the cursor.
    const newcomers = [
      { userId: 'zz-above-000001', features: donor((m) => m.score > cursor.score) }, // before the cursor
      { userId: 'zz-tie-000001', features: donor((m) => m.userId === cursor.userId) }, // tie, sorts before the cursor
      { userId: 'late-tie-000001', features: donor((m) => m.userId === cursor.userId) }, // tie, sorts after it
      { userId: 'late-below-000001', features: donor((m) => m.score < cursor.score) }, // after the cursor
    ];
    // Added after the first page was served, before the client asks for the next one.
    const added = await scoreUsers(app, expected, newcomers, { singles: 2 });
    const rest = await allMembers(app, seg, { cursor: first.nextCursor, limit: 50 });
    expect(added.get('zz-tie-000001')!.probability).toBe(cursor.score);
    expect(added.get('late-tie-000001')!.probability).toBe(cursor.score);
    const all = [...first.members, ...rest.members];
    expect(new Set(all.map((m) => m.userId)).size).toBe(all.length);
    const ids = new Set(rest.members.map((m) => m.userId));
    expect(ids.has('zz-above-000001')).toBe(false);
    expect(ids.has('zz-tie-000001')).toBe(false);
    expect(ids.has('late-tie-000001')).toBe(true);
    expect(ids.has('late-below-000001')).toBe(true);
    // Exactly the old list plus the two newcomers after the cursor, in order.
    const want = [...old, ...newcomers.filter((n) => n.userId.startsWith('late-')).map((n) => ({ userId: n.userId, score: added.get(n.userId)!.probability }))]
      .sort((a, b) => (before(a, b) ? -1 : before(b, a) ? 1 : 0));
    expect(all).toEqual(want);
  });

  it('minScore filters members (and combines with the cursor)', async () => {
    for (const [seg, min] of [['low-intent', 0.2], ['returning-warm', 0.65], ['high-intent', 0.95]] as const) {
      const want = [...expected.members(seg)].filter(([, p]) => p >= min);
      const { members } = await allMembers(app, seg, { minScore: min, limit: 100 });
      expect(members.length).toBe(want.length);
      expect(new Map(members.map((m) => [m.userId, m.score]))).toEqual(new Map(want));
    }
  });

  it('re-scoring a user moves them between bands (low → high leaves low-intent)', async () => {
    const all = [...expected.users.values()];
    const low = all.reduce((a, b) => (b.probability < a.probability ? b : a));
    const high = all.reduce((a, b) => (b.probability > a.probability ? b : a));
    expect(low.probability).toBeLessThan(0.3);
    expect(high.probability).toBeGreaterThanOrEqual(0.6);
    const userId = 'mover-000001';
    const inSegment = async (seg: string) => (await allMembers(app, seg)).members.find((m) => m.userId === userId);

    await scoreUsers(app, expected, [{ userId, features: low.features }], { singles: 1 });
    let u = await getJson<{ segments: string[]; probability: number }>(app, `/v1/users/${userId}`);
    expect(u.segments).toContain('low-intent');
    expect(await inSegment('low-intent')).toEqual({ userId, score: low.probability });
    expect(await inSegment('high-intent')).toBeUndefined();

    await scoreUsers(app, expected, [{ userId, features: high.features }], { chunk: 1 });
    u = await getJson<{ segments: string[]; probability: number }>(app, `/v1/users/${userId}`);
    expect(u.probability).toBe(high.probability);
    expect(u.segments).toContain('high-intent');
    expect(u.segments).not.toContain('low-intent');
    expect(await inSegment('low-intent')).toBeUndefined();
    expect(await inSegment('high-intent')).toEqual({ userId, score: high.probability });
    expect(await client.zscore('pi:seg:low-intent', userId)).toBeNull();
  });

  it('bands changed at run time (admin only) apply to new predictions, and stored users are re-scored into them', async () => {
    const next: Bands = { high: 0.5, medium: 0.2 };
    expectError(await put('/v1/segments/bands', next, KEY.segments), 403, 'forbidden');
    expectError(await put('/v1/segments/bands', next, KEY.predict), 403, 'forbidden');
    expectError(await app.inject({ method: 'PUT', url: '/v1/segments/bands', payload: next }), 401, 'unauthorized');
    expectError(await put('/v1/segments/bands', { high: 0.5, medium: 0.6 }, KEY.admin), 400, 'validation_error');
    const res = await put('/v1/segments/bands', next, KEY.admin);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject(next);
    expect(await getJson<Bands>(app, '/v1/segments/bands')).toEqual(next);
    const high = await getJson<{ bounds: { min: number; max: number } }>(app, '/v1/segments/high-intent');
    expect(high.bounds).toEqual({ min: 0.5, max: 1 });
    expected.bands = next;

    // Users whose score was medium (resp. low) under the old bands are high (resp. medium) now.
    const all = [...expected.users.values()];
    const wasMedium = all.find((u) => u.probability >= 0.5 && u.probability < 0.6)!;
    const wasLow = all.find((u) => u.probability >= 0.2 && u.probability < 0.3)!;
    expect(wasMedium.segments.has('medium-intent')).toBe(true);
    expect(wasLow.segments.has('low-intent')).toBe(true);
    // Stored users move once the re-score the change started has run.
    await rescoreFinished(app, res);
    expected.rescored();
    await scoreUsers(app, expected, [
      { userId: 'bands-high-000001', features: wasMedium.features },
      { userId: 'bands-medium-000001', features: wasLow.features },
    ]);
    expect((await getJson<{ segments: string[] }>(app, '/v1/users/bands-high-000001')).segments).toContain('high-intent');
    expect((await getJson<{ segments: string[] }>(app, '/v1/users/bands-medium-000001')).segments).toContain('medium-intent');
    // Earlier members were re-scored into the new bands.
    expect((await getJson<{ segments: string[] }>(app, `/v1/users/${wasMedium.userId}`)).segments).toContain('high-intent');
    expect((await getJson<{ segments: string[] }>(app, `/v1/users/${wasLow.userId}`)).segments).toContain('medium-intent');
  });

  it('after all of that, every segment still equals the independent model', async () => {
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('rule definitions (Redis): the periodic refresh keeps unchanged rules as they are', () => {
  it('an unchanged rule keeps its object (and so its compiled form); a changed one is replaced', async () => {
    const rules = () => (app.services.segments as unknown as { ruleSegments: { id: string }[] }).ruleSegments;
    const created = await post('/v1/segments', { id: 'refresh-kept', name: 'kept', rule: { feature: 'Month', in: ['Nov', 'Dec'] } });
    expect(created.statusCode, created.body).toBe(201);
    const before = rules().find((r) => r.id === 'refresh-kept');
    const others = rules().filter((r) => r.id !== 'refresh-kept');
    await app.services.segments.refreshDefinitions();
    expect(rules().find((r) => r.id === 'refresh-kept')).toBe(before);
    rules().filter((r) => r.id !== 'refresh-kept').forEach((r, i) => expect(r).toBe(others[i]));
    const changed = await put('/v1/segments/refresh-kept', { name: 'kept', rule: { feature: 'Month', in: ['Nov'] } }, KEY.segments);
    expect(changed.statusCode).toBe(200);
    expect(rules().find((r) => r.id === 'refresh-kept')).not.toBe(before);
    // The change re-scored every stored user under the definitions now in force (bands included).
    await rescoreFinished(app, changed);
    expected.rescored();
    expect((await app.inject({ method: 'DELETE', url: '/v1/segments/refresh-kept', headers: bearer(KEY.segments) })).statusCode).toBe(200);
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('export (Redis): CSV and NDJSON streams equal the paginated list', () => {
  it('both formats, whole segments and with minScore', async () => {
    for (const seg of ['high-intent', 'returning-warm', 'persona-0']) {
      for (const minScore of [undefined, 0.7]) {
        const listed = (await allMembers(app, seg, { minScore })).members;
        const q = minScore === undefined ? '' : `&minScore=${minScore}`;
        const csv = await app.inject({ method: 'GET', url: `/v1/segments/${seg}/export?format=csv${q}`, headers: bearer(KEY.segments) });
        expect(csv.statusCode, csv.body).toBe(200);
        expect(csv.headers['content-type']).toMatch(/^text\/csv/);
        expect(csv.headers['content-disposition']).toBe(`attachment; filename="${seg}.csv"`);
        expect(parseCsvExport(csv.body)).toEqual(listed);
        const nd = await app.inject({ method: 'GET', url: `/v1/segments/${seg}/export?format=ndjson${q}`, headers: bearer(KEY.segments) });
        expect(nd.statusCode, nd.body).toBe(200);
        expect(nd.headers['content-type']).toMatch(/^application\/x-ndjson/);
        expect(parseNdjsonExport(nd.body)).toEqual(listed);
      }
    }
    // Default format is CSV; unknown segments are 404 before any streaming starts.
    const def = await app.inject({ method: 'GET', url: '/v1/segments/low-intent/export', headers: bearer(KEY.segments) });
    expect(parseCsvExport(def.body)).toEqual((await allMembers(app, 'low-intent')).members);
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/nope/export', headers: bearer(KEY.segments) }), 404, 'not_found');
  });

  it('a userId that starts like a spreadsheet formula gets an apostrophe in CSV; NDJSON carries it exactly', async () => {
    await expectFormulaIdsDefused(app, expected);
  });
});

/** Every Redis key, and every place in it that mentions userId (key names, members, fields, values). */
async function findEverywhere(userId: string): Promise<{ keys: number; hits: string[] }> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'COUNT', 2000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const hits: string[] = [];
  const types = (await client.pipeline(keys.map((k) => ['type', k])).exec())!.map(([, t]) => t as string);
  const p = client.pipeline();
  keys.forEach((k, i) => {
    if (k.includes(userId)) hits.push(`key name ${k}`);
    const t = types[i];
    if (t === 'string') p.get(k);
    else if (t === 'hash') p.hgetall(k);
    else if (t === 'zset') p.zscore(k, userId);
    else if (t === 'set') p.sismember(k, userId);
    else if (t === 'list') p.lrange(k, 0, -1);
    else throw new Error(`unexpected key type ${t} for ${k}`);
  });
  const res = (await p.exec())!;
  res.forEach(([err, v], i) => {
    if (err) throw err;
    const k = keys[i];
    const t = types[i];
    if (t === 'string' && String(v).includes(userId)) hits.push(`string ${k}`);
    if (t === 'hash') for (const [f, val] of Object.entries(v as Record<string, string>)) if (f.includes(userId) || val.includes(userId)) hits.push(`hash ${k} field ${f}`);
    if (t === 'zset' && v !== null) hits.push(`zset ${k}`);
    if (t === 'set' && v === 1) hits.push(`set ${k}`);
    if (t === 'list' && (v as string[]).some((x) => x.includes(userId))) hits.push(`list ${k}`);
  });
  return { keys: keys.length, hits };
}

describe('ACCEPTANCE 4 (Redis): erasure leaves nothing in Redis that contains the userId', () => {
  const eraseAndCheck = async (userId: string) => {
    const victim = expected.users.get(userId)!;
    // The scan finds the user before erasure (so it is able to).
    const beforeScan = await findEverywhere(userId);
    expect(beforeScan.keys).toBeGreaterThan(N_USERS);
    expect(beforeScan.hits).toEqual(expect.arrayContaining([`key name pi:user:${userId}`, 'zset pi:seen', ...[...victim.segments].map((s) => `zset pi:seg:${s}`)]));
    expect(await getJson(app, `/v1/users/${userId}`)).toMatchObject({ userId });

    expectError(await app.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.predict) }), 403, 'forbidden');
    const res = await app.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { userId: string; removed: { segments: string[]; userRecord: boolean; features: boolean; cacheEntries: number } };
    expect(body.userId).toBe(userId);
    expect(new Set(body.removed.segments)).toEqual(victim.segments);
    expect(body.removed.segments).toHaveLength(victim.segments.size);
    expect(body.removed.userRecord).toBe(true);
    expect(body.removed.features).toBe(true);

    const afterScan = await findEverywhere(userId);
    expect(afterScan.hits).toEqual([]);
    expectError(await app.inject({ method: 'GET', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) }), 404, 'not_found');
    // Erasing again is harmless and says nothing was there.
    const again = await app.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
    expect(again.json()).toEqual({ userId, removed: { segments: [], userRecord: false, features: false, cacheEntries: 0 } });
    expected.users.delete(userId);
    return body.removed;
  };

  it('DELETE /v1/users/:id (user scored in a batch, in two rule segments): a full SCAN finds nothing', async () => {
    const victim = [...expected.users.values()].find((u) => u.segments.has('returning-warm') && u.segments.has('region1-or-traffic23'))!;
    expect(Number(victim.userId.slice(-6))).toBeLessThan(N_USERS - 50); // scored through /v1/predict/batch
    const removed = await eraseAndCheck(victim.userId);
    // Batch rows bypass the score cache (src/inference/scorer.ts), so there is no cached score to drop.
    expect(removed.cacheEntries).toBe(0);
    await expectSegmentsMatch(app, expected, personaCount);
  });

  it('DELETE /v1/users/:id (user scored by /v1/predict): the cached score of their last input is dropped too', async () => {
    const victim = [...expected.users.values()].find((u) => Number(u.userId.slice(-6)) >= N_USERS - 50 && u.userId.startsWith('user-') && u.segments.size >= 3)!;
    // The user record names the score-cache key of their last input; make sure its L2 copy landed.
    await app.services.segments.flush();
    const ck = await client.hget(`pi:user:${victim.userId}`, 'ck');
    expect(ck).toMatch(/^[\w-]{20,}$/);
    await app.services.cache.flush();
    expect(await client.exists(`pi:score:${ck}`)).toBe(1);
    const cacheKeysBefore = (await client.keys('pi:score:*')).length;
    const removed = await eraseAndCheck(victim.userId);
    // Both copies: the L1 entry and the Redis key.
    expect(removed.cacheEntries).toBe(2);
    expect(await client.exists(`pi:score:${ck}`)).toBe(0);
    expect((await client.keys('pi:score:*')).length).toBe(cacheKeysBefore - 1);
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('membership TTL (Redis): records older than MEMBERSHIP_TTL_DAYS=1 expire', () => {
  it('expire() drops old users everywhere and keeps recent ones', async () => {
    const seg = app.services.segments;
    const now = Date.now();
    const rec = (userId: string, probability: number, segments: string[], ageMs: number) => ({
      userId,
      probability,
      version: VERSION,
      persona: 1,
      segments: [...segments, 'persona-1'],
      at: now - ageMs,
      features: coerced(rows[0]),
    });
    await seg.store.record(
      [rec('old-000001', 0.91, ['high-intent', 'returning-warm'], 2 * 86_400_000), rec('old-000002', 0.11, ['low-intent'], 25 * 3_600_000), rec('fresh-000001', 0.92, ['high-intent'], 3_600_000)],
      seg.segmentIds(),
    );
    for (const id of ['old-000001', 'old-000002', 'fresh-000001']) expect(await getJson(app, `/v1/users/${id}`)).toMatchObject({ userId: id });
    expect((await allMembers(app, 'high-intent')).members.map((m) => m.userId)).toEqual(expect.arrayContaining(['old-000001', 'fresh-000001']));

    expect(await seg.expire()).toBe(2);
    for (const id of ['old-000001', 'old-000002']) {
      expectError(await app.inject({ method: 'GET', url: `/v1/users/${id}`, headers: bearer(KEY.segments) }), 404);
      expect((await findEverywhere(id)).hits).toEqual([]);
    }
    const high = (await allMembers(app, 'high-intent')).members.map((m) => m.userId);
    expect(high).toContain('fresh-000001');
    expect(high).not.toContain('old-000001');
    expect(await client.zscore('pi:seen', 'fresh-000001')).not.toBeNull();
    // Expiry is idempotent; the fresh user leaves through erasure so the model stays exact.
    expect(await seg.expire()).toBe(0);
    await app.inject({ method: 'DELETE', url: '/v1/users/fresh-000001', headers: bearer(KEY.segments) });
    await expectSegmentsMatch(app, expected, personaCount);
  });

  it('expiry also clears segments this replica does not know yet, and spares a user scored after it looked', async () => {
    const seg = app.services.segments;
    const old = Date.now() - 2 * 86_400_000;
    const base = { version: VERSION, persona: null, features: coerced(rows[0]) };
    // "elsewhere-rule" was created on another replica; this one has not loaded it yet.
    await seg.store.record([{ ...base, userId: 'old-elsewhere', probability: 0.2, segments: ['low-intent', 'elsewhere-rule'], at: old }], ['low-intent', 'elsewhere-rule']);
    await seg.store.record([{ ...base, userId: 'rescored-late', probability: 0.95, segments: ['high-intent'], at: old }], ['high-intent']);
    // Expiry reads its candidates, then the late user is scored again before it removes them.
    const redisClient = app.services.redis!;
    const read = redisClient.zrangebyscore.bind(redisClient);
    let first = true;
    (redisClient as unknown as { zrangebyscore: typeof read }).zrangebyscore = (async (...args: Parameters<typeof read>) => {
      const ids = await read(...args);
      if (first) {
        first = false;
        await seg.store.record([{ ...base, userId: 'rescored-late', probability: 0.95, segments: ['high-intent'], at: Date.now() }], ['high-intent']);
      }
      return ids;
    }) as typeof read;
    try {
      expect(await seg.expire()).toBe(1);
    } finally {
      (redisClient as unknown as { zrangebyscore: typeof read }).zrangebyscore = read;
    }
    expect(await client.zscore('pi:seg:elsewhere-rule', 'old-elsewhere')).toBeNull();
    expect(await client.exists('pi:user:old-elsewhere')).toBe(0);
    expect(await client.zscore('pi:seg:high-intent', 'rescored-late')).not.toBeNull();
    expect(await getJson(app, '/v1/users/rescored-late')).toMatchObject({ userId: 'rescored-late' });
    await app.inject({ method: 'DELETE', url: '/v1/users/rescored-late', headers: bearer(KEY.segments) });
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('Redis outage: predictions keep answering, membership writes are dropped and counted', () => {
  it('with redis-server killed, predictions with userIds are 200 and segments.dropped counts every lost record', async () => {
    await redis.stop();
    await until(() => app.services.redis!.status !== 'ready', 'the app to notice Redis is down');
    const dropped0 = app.services.segments.dropped;
    const users = usersOver(rows.slice(9000), 30, 30, 'outage-');
    const answers = await scoreUsers(app, null, users, { chunk: 10, singles: 5 });
    expect(answers.size).toBe(30);
    expect(app.services.segments.dropped - dropped0).toBe(30);

    // Redis comes back (empty: it has no persistence here): writes resume.
    await redis.startProcess();
    await until(() => app.services.redis!.status === 'ready', 'the app to reconnect');
    await scoreUsers(app, null, [{ userId: 'after-outage-000001', features: rows[42] }], { singles: 1 });
    expect(await getJson(app, '/v1/users/after-outage-000001')).toMatchObject({ userId: 'after-outage-000001' });
    expect(app.services.segments.dropped - dropped0).toBe(30);
  });
});

describe('ACCEPTANCE 3 (Redis): a profile’s distinctive features equal a direct computation over the members', () => {
  let redis2: TestRedis;
  let app2: FastifyInstance;
  let exp2: Expected;
  const NEW_WEEKEND: RuleCase = {
    id: 'new-weekend',
    name: 'New visitors at the weekend',
    rule: { all: [{ feature: 'VisitorType', eq: 'New_Visitor' }, { feature: 'Weekend', eq: true }] },
    matches: (f) => f.VisitorType === 'New_Visitor' && f.Weekend === true,
  };

  beforeAll(async () => {
    // Its own Redis and app: 3,000 scored users, so the profile's population sample (≤ 5,000) is everyone.
    redis2 = await TestRedis.start();
    app2 = await buildTestApp({ REDIS_URL: redis2.url, API_KEYS, CACHE_ADMISSION: 'all' });
    await app2.ready();
    const r = await app2.inject({ method: 'POST', url: '/v1/segments', headers: bearer(KEY.segments), payload: { id: NEW_WEEKEND.id, name: NEW_WEEKEND.name, rule: NEW_WEEKEND.rule } });
    expect(r.statusCode, r.body).toBe(201);
    exp2 = new Expected({ high: 0.6, medium: 0.3 }, [NEW_WEEKEND]);
    const spread = rows.filter((_, i) => i % 4 === 0).slice(0, 3000);
    await scoreUsers(app2, exp2, spread.map((features, i) => ({ userId: `p-${String(i).padStart(6, '0')}`, features })), { chunk: 1000, singles: 20 });
  });

  afterAll(async () => {
    await app2?.close();
    await redis2?.close();
  });

  it('memberships are exact here too', async () => {
    await expectSegmentsMatch(app2, exp2, personaCount);
  });

  it('rule, band and persona segments: top-5 distinctive features and values match', async () => {
    const p = await expectProfileMatches(app2, exp2, 'new-weekend');
    // The rule's own features are what make the segment distinctive.
    expect(p.distinctive!.slice(0, 2).map((d) => d.feature).sort()).toEqual(['VisitorType', 'Weekend']);
    await expectProfileMatches(app2, exp2, 'high-intent');
    await expectProfileMatches(app2, exp2, 'persona-2');
  });

  it('a profile of an unknown segment is 404', async () => {
    expectError(await app2.inject({ method: 'GET', url: '/v1/segments/nope/profile', headers: bearer(KEY.segments) }), 404, 'not_found');
  });
});
