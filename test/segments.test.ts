import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { expectError, pathsOf } from './helpers/http.js';
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
  type ProfileBody,
  type Row,
  expectFormulaIdsDefused,
  rescoreFinished,
} from './helpers/segments.js';

/**
 * The same core checks as test/segments-redis.test.ts, on the embedded (no Redis) store and at
 * 1,000 users, so both MembershipStore implementations are covered.
 */
const N_USERS = 1000;
const VERSION = 'shoppers-mlp-v1';

let app: FastifyInstance;
let rows: Row[];
let personaCount: number;
let expected: Expected;

const post = (url: string, payload: object, key: string = KEY.segments) => app.inject({ method: 'POST', url, headers: bearer(key), payload });
const put = (url: string, payload: object, key: string) => app.inject({ method: 'PUT', url, headers: bearer(key), payload });

beforeAll(async () => {
  app = await buildTestApp({ API_KEYS, MEMBERSHIP_TTL_DAYS: '1', CACHE_ADMISSION: 'all' });
  await app.ready();
  // Spread over the file (it is ordered by month) so rules and personas all get members.
  rows = shopperFeatureRows().filter((_, i) => i % 7 === 0);
  personaCount = app.services.models.active!.personas!.personas.length;
});

afterAll(async () => {
  await app?.close();
});

describe('ACCEPTANCE 1 (embedded store): 1,000 scored users, every segment equals the independently computed set', () => {
  it('runs on the embedded store', () => {
    expect(app.services.redis).toBeUndefined();
    expect(app.services.segments.store.kind).toBe('memory');
  });

  it('rule segments are defined first; an unknown feature is a 400 naming it', async () => {
    const bad = expectError(await post('/v1/segments', { name: 'bad', rule: { any: [{ feature: 'Colour', eq: 'red' }, { feature: 'Month', eq: 'Nov' }] } }), 400, 'validation_error');
    expect(bad.details.map((d) => d.message).join(' ')).toContain('"Colour"');
    expect(bad.details.map((d) => d.message).join(' ')).not.toContain('"Month"');
    expect(pathsOf(bad)).toEqual(['rule.any[0].feature']);
    // A body failing the schema names the unknown feature in the same 400.
    const both = expectError(await post('/v1/segments', { id: 'BAD ID', name: 'bad', rule: { all: [{ feature: 'Nope', eq: 1 }, { feature: 'Month', gt: 'x' }] } }), 400, 'validation_error');
    expect(pathsOf(both)).toEqual(['id', 'rule.all[0].feature', 'rule.all[1].gt']);
    for (const r of RULE_CASES) expect((await post('/v1/segments', { id: r.id, name: r.name, rule: r.rule })).statusCode).toBe(201);
    const bands = await getJson<Bands>(app, '/v1/segments/bands');
    expect(bands).toEqual({ high: 0.6, medium: 0.3 });
    expected = new Expected(bands, RULE_CASES);
  });

  it('scores 1,000 users (batches of 250, the last 20 one by one); every membership matches', async () => {
    const answers = await scoreUsers(app, expected, usersOver(rows, N_USERS, 800), { chunk: 250, singles: 20 });
    expect(answers.size).toBe(N_USERS);
    expect(await app.services.segments.store.scoredUsers()).toBe(N_USERS);
    await expectSegmentsMatch(app, expected, personaCount);
    for (const seg of ['high-intent', 'medium-intent', 'low-intent', ...RULE_CASES.map((r) => r.id)]) expect(expected.members(seg).size, seg).toBeGreaterThan(10);
  });

  it('pagination: small pages equal large pages across ties; bad cursor 400, unknown segment 404', async () => {
    for (const seg of ['low-intent', 'returning-warm', 'persona-1']) {
      const big = await allMembers(app, seg, { limit: 1000 });
      const small = await allMembers(app, seg, { limit: 7 });
      expect(small.members).toEqual(big.members);
    }
    const low = (await allMembers(app, 'low-intent')).members;
    expect(low.filter((m, i) => i > 0 && low[i - 1].score === m.score).length).toBeGreaterThan(10);
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/low-intent/members?cursor=xyz', headers: bearer(KEY.segments) }), 400);
    expectError(await app.inject({ method: 'GET', url: '/v1/segments/nope/members', headers: bearer(KEY.segments) }), 404, 'not_found');
  });

  it('the cursor is stable when members are added between pages', async () => {
    const seg = 'medium-intent';
    const old = (await allMembers(app, seg)).members;
    const first = await page(app, seg, { limit: 20 });
    const cursor = first.members[first.members.length - 1];
    const donor = (pick: (m: Member) => boolean) => expected.users.get(old.find(pick)!.userId)!.features;
    const newcomers = [
      { userId: 'zz-above-000001', features: donor((m) => m.score > cursor.score) },
      { userId: 'zz-tie-000001', features: donor((m) => m.userId === cursor.userId) },
      { userId: 'late-tie-000001', features: donor((m) => m.userId === cursor.userId) },
      { userId: 'late-below-000001', features: donor((m) => m.score < cursor.score) },
    ];
    const added = await scoreUsers(app, expected, newcomers, { singles: 2 });
    expect(added.get('late-tie-000001')!.probability).toBe(cursor.score);
    const rest = await allMembers(app, seg, { cursor: first.nextCursor, limit: 20 });
    const all = [...first.members, ...rest.members];
    expect(new Set(all.map((m) => m.userId)).size).toBe(all.length);
    const want = [...old, ...['late-tie-000001', 'late-below-000001'].map((userId) => ({ userId, score: added.get(userId)!.probability }))].sort((a, b) =>
      before(a, b) ? -1 : before(b, a) ? 1 : 0,
    );
    expect(all).toEqual(want);
  });

  it('minScore filters members', async () => {
    for (const [seg, min] of [['low-intent', 0.1], ['returning-warm', 0.5]] as const) {
      const want = [...expected.members(seg)].filter(([, p]) => p >= min);
      const { members } = await allMembers(app, seg, { minScore: min, limit: 50 });
      expect(new Map(members.map((m) => [m.userId, m.score]))).toEqual(new Map(want));
    }
  });

  it('re-scoring moves a user from low-intent to high-intent', async () => {
    const all = [...expected.users.values()];
    const low = all.reduce((a, b) => (b.probability < a.probability ? b : a));
    const high = all.reduce((a, b) => (b.probability > a.probability ? b : a));
    const userId = 'mover-000001';
    await scoreUsers(app, expected, [{ userId, features: low.features }], { singles: 1 });
    expect((await allMembers(app, 'low-intent')).members.some((m) => m.userId === userId)).toBe(true);
    await scoreUsers(app, expected, [{ userId, features: high.features }]);
    expect((await allMembers(app, 'low-intent')).members.some((m) => m.userId === userId)).toBe(false);
    expect((await allMembers(app, 'high-intent')).members.find((m) => m.userId === userId)).toEqual({ userId, score: high.probability });
    const u = await getJson<{ segments: string[] }>(app, `/v1/users/${userId}`);
    expect(u.segments).toContain('high-intent');
    expect(u.segments).not.toContain('low-intent');
    const raw = await app.inject({ method: 'GET', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
    expect(raw.headers['cache-control']).toBe('no-store'); // personal data
  });

  it('bands changed at run time (admin only) apply to new predictions, and stored users are re-scored into them', async () => {
    const next: Bands = { high: 0.5, medium: 0.2 };
    expectError(await put('/v1/segments/bands', next, KEY.segments), 403, 'forbidden');
    const changed = await put('/v1/segments/bands', next, KEY.admin);
    expect(changed.json()).toMatchObject(next);
    await rescoreFinished(app, changed);
    expected.bands = next;
    expected.rescored();
    const wasMedium = [...expected.users.values()].find((u) => u.probability >= 0.5 && u.probability < 0.6)!;
    await scoreUsers(app, expected, [{ userId: 'bands-high-000001', features: wasMedium.features }]);
    expect((await getJson<{ segments: string[] }>(app, '/v1/users/bands-high-000001')).segments).toContain('high-intent');
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('export (embedded store)', () => {
  it('CSV and NDJSON equal the paginated list', async () => {
    for (const seg of ['high-intent', 'long-browse-weekend']) {
      const listed = (await allMembers(app, seg)).members;
      const csv = await app.inject({ method: 'GET', url: `/v1/segments/${seg}/export?format=csv`, headers: bearer(KEY.segments) });
      expect(csv.statusCode).toBe(200);
      expect(csv.headers['cache-control']).toBe('no-store');
      const members = await app.inject({ method: 'GET', url: `/v1/segments/${seg}/members?limit=1`, headers: bearer(KEY.segments) });
      expect(members.headers['cache-control']).toBe('no-store');
      expect(parseCsvExport(csv.body)).toEqual(listed);
      const nd = await app.inject({ method: 'GET', url: `/v1/segments/${seg}/export?format=ndjson`, headers: bearer(KEY.segments) });
      expect(parseNdjsonExport(nd.body)).toEqual(listed);
    }
  });

  it('a userId that starts like a spreadsheet formula gets an apostrophe in CSV; NDJSON carries it exactly', async () => {
    await expectFormulaIdsDefused(app, expected);
  });
});

describe('ACCEPTANCE 3 (embedded store): profile', () => {
  it('top-5 distinctive features and values equal a direct computation (the whole segment and population are used)', async () => {
    await expectProfileMatches(app, expected, 'long-browse-weekend');
    await expectProfileMatches(app, expected, 'high-intent');
  });
});

describe('erasure (embedded store)', () => {
  it('DELETE /v1/users/:id removes the user from every segment and the record; GET is 404 after', async () => {
    // One of the users scored by /v1/predict (batch rows bypass the score cache, so only these have a cached score).
    const victim = [...expected.users.values()].find((u) => u.userId.startsWith('user-') && Number(u.userId.slice(-6)) >= N_USERS - 20 && u.segments.size >= 3)!;
    const { userId } = victim;
    const res = await app.inject({ method: 'DELETE', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { removed: { segments: string[]; userRecord: boolean; features: boolean; cacheEntries: number } };
    expect(new Set(body.removed.segments)).toEqual(victim.segments);
    expect(body.removed).toMatchObject({ userRecord: true, features: true });
    expect(body.removed.cacheEntries).toBeGreaterThanOrEqual(1);
    expect(await app.services.segments.store.user(userId)).toBeNull();
    expectError(await app.inject({ method: 'GET', url: `/v1/users/${userId}`, headers: bearer(KEY.segments) }), 404, 'not_found');
    const { segments } = await getJson<{ segments: { id: string }[] }>(app, '/v1/segments');
    for (const s of segments) expect((await allMembers(app, s.id)).members.some((m) => m.userId === userId), s.id).toBe(false);
    expected.users.delete(userId);
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('membership TTL (embedded store)', () => {
  it('expire() drops users older than MEMBERSHIP_TTL_DAYS and keeps the rest', async () => {
    const seg = app.services.segments;
    const now = Date.now();
    await seg.store.record(
      [
        { userId: 'old-000001', probability: 0.93, version: VERSION, persona: 0, segments: ['high-intent', 'persona-0'], at: now - 2 * 86_400_000, features: coerced(rows[0]) },
        { userId: 'fresh-000001', probability: 0.94, version: VERSION, persona: 0, segments: ['high-intent', 'persona-0'], at: now - 60_000, features: coerced(rows[0]) },
      ],
      seg.segmentIds(),
    );
    expect((await allMembers(app, 'persona-0')).members.map((m) => m.userId)).toEqual(expect.arrayContaining(['old-000001', 'fresh-000001']));
    expect(await seg.expire()).toBe(1);
    expect(await seg.store.user('old-000001')).toBeNull();
    expect(await seg.store.user('fresh-000001')).not.toBeNull();
    const ids = (await allMembers(app, 'persona-0')).members.map((m) => m.userId);
    expect(ids).not.toContain('old-000001');
    expect(ids).toContain('fresh-000001');
    await app.inject({ method: 'DELETE', url: '/v1/users/fresh-000001', headers: bearer(KEY.segments) });
    await expectSegmentsMatch(app, expected, personaCount);
  });
});

describe('FEATURE_RETENTION=off', () => {
  let off: FastifyInstance;
  beforeAll(async () => {
    off = await buildTestApp({ API_KEYS, FEATURE_RETENTION: 'off' });
    await off.ready();
  });
  afterAll(async () => {
    await off?.close();
  });

  it('user records keep no features, and profiles have no feature section', async () => {
    const exp = new Expected({ high: 0.6, medium: 0.3 }, []);
    await scoreUsers(off, exp, usersOver(rows, 200, 200, 'nofeat-'), { chunk: 100, singles: 5 });
    for (const id of ['nofeat-000000', 'nofeat-000199']) {
      const u = await off.services.segments.store.user(id);
      expect(u).not.toBeNull();
      expect(u!.features).toBeUndefined();
      expect(await getJson(off, `/v1/users/${id}`)).toMatchObject({ userId: id, featuresRetained: false });
    }
    for await (const chunk of off.services.segments.store.users(50)) for (const u of chunk) expect(u.features).toBeUndefined();
    for (const seg of ['high-intent', 'low-intent', 'persona-1']) {
      const p = await getJson<ProfileBody>(off, `/v1/segments/${seg}/profile`);
      expect(p).not.toHaveProperty('features');
      expect(p).not.toHaveProperty('distinctive');
      // Score distribution and personas are still there.
      expect(p.size).toBe(exp.members(seg).size);
      expect(p.score.histogram.reduce((n, b) => n + b.count, 0)).toBe(p.size);
      expect(p.personas.length).toBeGreaterThan(0);
    }
    await expectSegmentsMatch(off, exp, personaCount);
    // Erasure reports no features to remove.
    const del = await off.inject({ method: 'DELETE', url: '/v1/users/nofeat-000000', headers: bearer(KEY.segments) });
    expect((del.json() as { removed: { features: boolean; userRecord: boolean } }).removed).toMatchObject({ userRecord: true, features: false });
  });
});
