import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { expectError, until } from './helpers/http.js';
import { API_KEYS, KEY, bearer, rescoreFinished } from './helpers/segments.js';

const rows = shopperFeatureRows(200);
const MAX_RULES = 100; // README: "at most 100"

/**
 * Rule segments are created, changed and deleted while users are being scored, by concurrent
 * requests and (with Redis) by several replicas: uniqueness, the limit and existence must hold,
 * and a deleted segment must not fill up again from membership writes that were already queued.
 */
describe.each([{ store: 'memory' as const }, { store: 'redis' as const }])('rule segment writes ($store store)', ({ store }) => {
  let redis: TestRedis | undefined;
  let client: Redis | undefined;
  let app: FastifyInstance;
  /** A second replica on the same Redis (the memory store has none: it is one process). */
  let replica: FastifyInstance | undefined;

  beforeAll(async () => {
    if (store === 'redis') {
      redis = await TestRedis.start();
      client = new Redis(redis.url);
    }
    app = await buildTestApp({ API_KEYS, REDIS_URL: redis?.url });
    await app.ready();
    expect(app.services.segments.store.kind).toBe(store);
    if (redis) {
      replica = await buildTestApp({ API_KEYS, REDIS_URL: redis.url });
      await replica.ready();
    }
  });
  afterEach(async () => {
    // Every rule goes, through the API, so each test starts with none.
    for (const r of await app.services.segments.store.rules()) await app.inject({ method: 'DELETE', url: `/v1/segments/${r.id}`, headers: bearer(KEY.segments) });
    expect(await app.services.segments.store.rules()).toEqual([]);
  });
  afterAll(async () => {
    await replica?.close();
    await app?.close();
    client?.disconnect();
    await redis?.close();
  });

  const create = (id: string, rule: object, on: FastifyInstance = app) =>
    on.inject({ method: 'POST', url: '/v1/segments', headers: bearer(KEY.segments), payload: { id, name: id, rule } });
  const update = (id: string, rule: object) => app.inject({ method: 'PUT', url: `/v1/segments/${id}`, headers: bearer(KEY.segments), payload: { name: `${id} v2`, rule } });
  const remove = (id: string) => app.inject({ method: 'DELETE', url: `/v1/segments/${id}`, headers: bearer(KEY.segments) });
  const get = (url: string) => app.inject({ url, headers: bearer(KEY.segments) });
  const codes = (rs: LightMyRequestResponse[]) => rs.map((r) => r.statusCode).sort();

  it('creating or changing a rule re-scores stored users into it: members follow the new definition without new traffic', async () => {
    const scored = await app.inject({ method: 'POST', url: '/v1/predict', headers: bearer(KEY.predict), payload: { userId: 'stored-user', features: rows[1] } });
    expect(scored.statusCode).toBe(200);
    const probability = scored.json().probability as number;
    await app.services.segments.flush();
    const memberIds = async (id: string) => ((await get(`/v1/segments/${id}/members?limit=1000`)).json().members as { userId: string }[]).map((m) => m.userId);
    const created = await create('r-follow', { score: { gte: 0 } });
    expect(created.statusCode, created.body).toBe(201);
    expect(created.json().rescoreJob.statusUrl).toBe(`/v1/jobs/${created.json().rescoreJob.jobId}`);
    await rescoreFinished(app, created);
    expect(await memberIds('r-follow')).toContain('stored-user');
    const changed = await update('r-follow', { score: { gt: probability } });
    expect(changed.statusCode, changed.body).toBe(200);
    await rescoreFinished(app, changed);
    expect(await memberIds('r-follow')).not.toContain('stored-user');
    expect((await get('/v1/users/stored-user')).json().segments).not.toContain('r-follow');
    // Readable by the key that changed the rule.
    expect((await get(changed.json().rescoreJob.statusUrl)).json()).toMatchObject({ kind: 'rescore', status: 'succeeded' });
  });

  it('rapid changes run one re-score: a newer one cancels a re-score still running', async () => {
    const instances = rows.slice(0, 50).map((features, i) => ({ userId: `rapid-${i}`, features }));
    expect((await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: bearer(KEY.predict), payload: { instances } })).statusCode).toBe(200);
    await app.services.segments.flush();
    const jobs = app.services.scoringJobs;
    const first = jobs.rescoreAll('rule segment a changed');
    const second = jobs.rescoreAll('rule segment b changed');
    await until(() => ['succeeded', 'failed', 'cancelled'].includes(jobs.get(second.id).status), 'the newer re-score to finish', 30_000);
    expect(jobs.get(second.id).status).toBe('succeeded');
    expect(jobs.get(first.id)).toMatchObject({ status: 'cancelled', error: 'superseded: rule segment b changed' });
  });

  it("a user's record stops listing a rule once it is deleted, and does not list a rule created again under its id until re-scored into it", async () => {
    expect((await create('r-listed', { score: { gte: 0 } })).statusCode).toBe(201);
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: bearer(KEY.predict), payload: { userId: 'listed-user', features: rows[0] } });
    expect(res.statusCode).toBe(200);
    const userView = async () => (await get('/v1/users/listed-user')).json() as { segments: string[]; scoredAt: string; lastSeenAt: string };
    const segmentsOf = async () => (await userView()).segments;
    expect(await segmentsOf()).toContain('r-listed');
    const seen = await userView();
    expect(seen.scoredAt).toBe(seen.lastSeenAt); // scored live
    expect((await remove('r-listed')).statusCode).toBe(200);
    expect(await segmentsOf()).not.toContain('r-listed');
    await new Promise((r) => setTimeout(r, 5)); // created strictly after the user's score
    // Created without the route's re-score: the stored record still names the old rule's id.
    await app.services.segments.createRule({ id: 'r-listed', name: 'r-listed', rule: { score: { gte: 0 } } });
    expect(await segmentsOf()).not.toContain('r-listed');
    // A re-score under the new rule puts the user in it, keeping when they were last seen.
    await rescoreFinished(app, await update('r-listed', { score: { gte: 0 } }));
    const rescored = await userView();
    expect(rescored.segments).toContain('r-listed');
    expect(rescored.lastSeenAt).toBe(seen.lastSeenAt);
    expect(Date.parse(rescored.scoredAt)).toBeGreaterThan(Date.parse(seen.scoredAt));
    expect((await get('/v1/segments/r-listed/members?limit=1000')).json().members.map((m: { userId: string }) => m.userId)).toContain('listed-user');
  });

  it('a new rule lists the stored users its re-score put in it, in their user records too', async () => {
    const instances = rows.slice(0, 30).map((features, i) => ({ userId: `fresh-${i}`, features }));
    expect((await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: bearer(KEY.predict), payload: { instances } })).statusCode).toBe(200);
    await app.services.segments.flush();
    await new Promise((r) => setTimeout(r, 5)); // the rule is created strictly after the users were scored
    const created = await create('r-everyone', { score: { gte: 0 } });
    expect(created.statusCode, created.body).toBe(201);
    await rescoreFinished(app, created);
    for (const { userId } of instances) expect((await get(`/v1/users/${userId}`)).json().segments, userId).toContain('r-everyone');
  });

  it('a rule segment deleted under load does not fill up again; created again, it starts empty', async () => {
    expect((await create('r1', { score: { gte: 0 } })).statusCode).toBe(201);
    let stop = false;
    let requests = 0;
    const load = async (lane: number) => {
      while (!stop) {
        const k = requests++;
        const instances = rows.map((features, i) => ({ userId: `load-${lane}-${k}-${i}`, features }));
        const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: bearer(KEY.predict), payload: { instances } });
        expect(res.statusCode).toBe(200);
      }
    };
    const lanes = [load(0), load(1)];
    try {
      await until(async () => (await app.services.segments.store.size('r1')) >= 1000, 'the load to fill r1');
      const res = await remove('r1');
      expect(res.statusCode, res.body).toBe(200);
      // Still under load for a while after the delete answered.
      const after = requests;
      await until(() => requests >= after + 4, 'more load after the delete');
    } finally {
      stop = true;
      await Promise.all(lanes);
    }
    await app.services.segments.flush();
    expectError(await get('/v1/segments/r1'), 404, 'not_found');
    expect(await app.services.segments.store.size('r1')).toBe(0);
    if (client) expect(await client.exists('pi:seg:r1')).toBe(0);

    // Matches nobody: any member would be left over from the deleted segment.
    expect((await create('r1', { score: { lt: 0 } })).statusCode).toBe(201);
    const seg = (await get('/v1/segments/r1')).json() as { size: number; updated: string | null };
    expect(seg).toMatchObject({ size: 0, updated: null });
    expect((await get('/v1/segments/r1/members?limit=10')).json().members).toEqual([]);
  });

  it('members written under a deleted rule id (by a replica with stale definitions) are gone when it is created again', async () => {
    expect((await create('r2', { score: { gte: 0 } })).statusCode).toBe(201);
    expect((await remove('r2')).statusCode).toBe(200);
    // What a replica that still has r2 (it refreshes definitions every 2 s) writes meanwhile.
    await app.services.segments.store.record([{ userId: 'straggler', probability: 0.2, version: 'v', persona: null, segments: ['low-intent', 'r2'], at: Date.now() }], ['low-intent', 'r2']);
    // Redis refuses writes to a deleted rule id (other replicas may still assign it); the embedded
    // store has no other replicas, and its own writes stop at the delete.
    expect(await app.services.segments.store.size('r2')).toBe(store === 'redis' ? 0 : 1);

    expect((await create('r2', { score: { lt: 0 } })).statusCode).toBe(201);
    expect((await get('/v1/segments/r2')).json()).toMatchObject({ size: 0, updated: null });
    expect(await app.services.segments.store.size('low-intent')).toBeGreaterThanOrEqual(1); // only the rule's members went
  });

  it(`150 concurrent creates with distinct ids: exactly ${MAX_RULES} are created (across replicas with Redis), the rest 409`, async () => {
    const on = (i: number) => (replica && i % 2 ? replica : app);
    const res = await Promise.all(Array.from({ length: 150 }, (_, i) => create(`many-${i}`, { score: { gte: i / 150 } }, on(i))));
    expect(res.filter((r) => r.statusCode === 201)).toHaveLength(MAX_RULES);
    for (const r of res.filter((x) => x.statusCode !== 201)) expect(expectError(r, 409, 'conflict').message).toContain(`at most ${MAX_RULES}`);
    expect(await app.services.segments.store.rules()).toHaveLength(MAX_RULES);
    const listed = (await get('/v1/segments')).json().segments as { kind: string }[];
    expect(listed.filter((s) => s.kind === 'rule')).toHaveLength(MAX_RULES);
  });

  it('two concurrent creates with the same id (on one replica, or on two with Redis): one 201, the other 409, and the first is kept', async () => {
    for (const [id, other] of [['same', app], ['same-elsewhere', replica ?? app]] as const) {
      const [a, b] = await Promise.all([create(id, { score: { gte: 0.1 } }), create(id, { score: { gte: 0.9 } }, other)]);
      expect(codes([a, b]), id).toEqual([201, 409]);
      const won = a.statusCode === 201 ? a : b;
      expect(expectError(won === a ? b : a, 409, 'conflict').message).toContain('already exists');
      const stored = (await app.services.segments.store.rules()).filter((r) => r.id === id);
      const { rescoreJob: _job, ...definition } = won.json();
      expect(stored).toEqual([definition]);
    }
  });

  it('concurrent DELETE and PUT of one rule: the rule is gone afterwards (PUT is 404 if it came second)', async () => {
    for (let i = 0; i < 5; i++) {
      const id = `contested-${i}`;
      expect((await create(id, { score: { gte: 0.5 } })).statusCode).toBe(201);
      const [del, put] = await Promise.all([remove(id), update(id, { score: { gte: 0.7 } })]);
      expect(del.statusCode, del.body).toBe(200);
      expect([200, 404]).toContain(put.statusCode);
      expectError(await get(`/v1/segments/${id}`), 404, 'not_found');
      expect((await app.services.segments.store.rules()).map((r) => r.id)).not.toContain(id);
    }
  });

  it('an update keeps the rule’s created time; a missing rule is 404 before its body is checked; bands cannot be deleted', async () => {
    const made = (await create('kept', { score: { gte: 0.5 } })).json() as { created: string };
    await new Promise((r) => setTimeout(r, 5));
    const res = await update('kept', { score: { gte: 0.8 } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toMatchObject({ id: 'kept', name: 'kept v2', rule: { score: { gte: 0.8 } }, created: made.created });
    expect(res.json().updated).not.toBe(made.created);
    expect((await get('/v1/segments/kept')).json()).toMatchObject({ rule: { score: { gte: 0.8 } } });
    expectError(await update('no-such-rule', { feature: 'NotAFeature', eq: 1 }), 404, 'not_found');
    expectError(await update('kept', { feature: 'NotAFeature', eq: 1 }), 400, 'validation_error');

    await app.services.segments.store.record([{ userId: 'banded', probability: 0.9, version: 'v', persona: null, segments: ['high-intent'], at: Date.now() }], ['high-intent']);
    expectError(await remove('high-intent'), 404, 'not_found');
    expectError(await remove('no-such-rule'), 404, 'not_found');
    expect(await app.services.segments.store.size('high-intent')).toBeGreaterThanOrEqual(1);
  });
});
