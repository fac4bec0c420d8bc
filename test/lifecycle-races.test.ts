import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { TestRedis } from './helpers/redis-server.js';
import type { ModelManager } from '../src/registry/model-manager.js';

const A = BUNDLED_VERSION;
const B = 'race-b';
const C = 'race-c';
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const ADMIN = { authorization: 'Bearer admin-key-123' };

interface StateBody {
  active: string | null;
  canary: { version: string } | null;
  history: { action: string; version: string }[];
}

const post = (app: FastifyInstance, url: string, payload: Record<string, unknown> = {}) => app.inject({ method: 'POST', url, headers: ADMIN, payload });
/** The fleet state as the replica reads it (Redis when configured, else the store's state.json). */
const state = async (app: FastifyInstance) => (await app.services.lifecycle.state()) as StateBody;

/**
 * Holds the loading of `version` in this replica until the returned release() is called (`reached`
 * resolves once a change is held there): the
 * slow part of a lifecycle change (loading and warming a model) made as slow as a test needs,
 * so another change can land meanwhile. The real load still runs; only its start waits.
 */
function holdLoading(models: ModelManager, version: string, when: 'before' | 'after' = 'before'): { reached: Promise<void>; release: () => void; restore: () => void } {
  const original = models.prepare.bind(models);
  let release!: () => void;
  let arrive!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const reached = new Promise<void>((r) => (arrive = r));
  models.prepare = async (id: string) => {
    if (id === version && when === 'before') {
      arrive();
      await gate;
    }
    const loaded = await original(id);
    if (id === version && when === 'after') {
      arrive();
      await gate;
    }
    return loaded;
  };
  return { reached, release, restore: () => (models.prepare = original) };
}

function makeStore(): string {
  const dir = copyDefaultStore();
  addSecondVersion(dir, B);
  addSecondVersion(dir, C, { biasShift: -1 });
  return dir;
}

describe('lifecycle changes that overlap (one replica, no Redis)', () => {
  let app: FastifyInstance;
  let storeDir: string;
  let restore = () => {};

  beforeAll(async () => {
    storeDir = makeStore();
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS });
    await app.ready();
  });
  afterEach(() => restore());
  afterAll(async () => {
    await app?.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  it('an activation requested while a canary is loading is applied after it, not lost', async () => {
    expect((await state(app)).active).toBe(A);
    await app.services.models.prepare(C); // C loads instantly, B is held
    const held = holdLoading(app.services.models, B);
    restore = held.restore;
    const canary = post(app, `/v1/models/${B}/canary`, { percent: 10 });
    await held.reached;
    const activation = post(app, `/v1/models/${C}/activate`);
    await new Promise((r) => setTimeout(r, 50)); // time for the activation to finish, were it not queued
    held.release();
    const [canaryRes, activationRes] = await Promise.all([canary, activation]);
    expect(canaryRes.statusCode, canaryRes.body).toBe(200);
    expect(activationRes.statusCode, activationRes.body).toBe(200);
    expect(activationRes.json().active).toBe(C);

    const s = await state(app);
    expect(s.active).toBe(C);
    expect(s.canary?.version).toBe(B);
    expect(s.history.slice(-2).map((h) => `${h.action}:${h.version}`)).toEqual([`canary:split:${B}`, `activate:${C}`]);
    const ready = (await app.inject({ method: 'GET', url: '/readyz' })).json();
    expect(ready.model).toMatchObject({ activeVersion: C, canaryVersion: B });
  });
});

describe('deleting a version while it is being activated', () => {
  let app: FastifyInstance;
  let storeDir: string;

  beforeAll(async () => {
    storeDir = makeStore();
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  it('on the same replica: the delete waits for the activation, then is refused (409); the version stays', async () => {
    const held = holdLoading(app.services.models, B);
    try {
      const activation = post(app, `/v1/models/${B}/activate`);
      await held.reached;
      const del = app.inject({ method: 'DELETE', url: `/v1/models/${B}`, headers: ADMIN });
      await new Promise((r) => setTimeout(r, 50)); // time for the delete to run, were it not queued (either way it must not succeed)
      held.release();
      expect((await activation).statusCode).toBe(200);
      const res = await del;
      expect(res.statusCode, res.body).toBe(409);
      expect(app.services.store.has(B)).toBe(true);
      expect((await state(app)).active).toBe(B);
    } finally {
      held.restore();
    }
  });

  it('deleted by someone else once loaded: the activation is refused (409) and the state unchanged', async () => {
    const before = (await state(app)).active;
    const held = holdLoading(app.services.models, C, 'after');
    try {
      const activation = post(app, `/v1/models/${C}/activate`);
      await held.reached;
      app.services.store.deleteVersion(C); // as another replica sharing the store volume would
      held.release();
      const res = await activation;
      expect(res.statusCode, res.body).toBe(409);
      expect(res.json().message).toContain('deleted meanwhile');
      expect((await state(app)).active).toBe(before);
    } finally {
      held.restore();
    }
  });
});

describe('lifecycle changes on two replicas at once (shared Redis)', () => {
  let redis: TestRedis;
  let storeDir: string;
  const apps: FastifyInstance[] = [];
  let restore = () => {};

  beforeAll(async () => {
    redis = await TestRedis.start();
    storeDir = makeStore();
    for (let i = 0; i < 2; i++) {
      const app = await buildTestApp({ MODEL_STORE: storeDir, REDIS_URL: redis.url, API_KEYS });
      await app.ready();
      apps.push(app);
    }
  });
  afterEach(() => restore());
  afterAll(async () => {
    for (const app of apps) await app.close();
    await redis?.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  it("a change computed on one replica does not overwrite one another replica made meanwhile", async () => {
    const [one, two] = apps;
    expect((await state(one)).active).toBe(A);
    const held = holdLoading(one.services.models, B);
    restore = held.restore;
    // Replica one reads the state (active A) and starts loading B for a canary ...
    const canary = post(one, `/v1/models/${B}/canary`, { percent: 10 });
    await held.reached;
    // ... while replica two activates C and finishes.
    const activation = await post(two, `/v1/models/${C}/activate`);
    expect(activation.statusCode, activation.body).toBe(200);
    held.release();
    const canaryRes = await canary;
    expect(canaryRes.statusCode, canaryRes.body).toBe(200);

    for (const app of apps) {
      const s = await state(app);
      expect(s.active).toBe(C);
      expect(s.canary?.version).toBe(B);
      expect(s.history.map((h) => `${h.action}:${h.version}`)).toEqual(expect.arrayContaining([`activate:${C}`, `canary:split:${B}`]));
    }
  });

  it('a rollback chosen from a state that changed while its model loaded is refused (409), not applied', async () => {
    const [one, two] = apps;
    // History now ends with A → C: a rollback from C goes to A.
    const held = holdLoading(one.services.models, A);
    restore = held.restore;
    const rollback = post(one, '/v1/models/rollback');
    await held.reached;
    const promote = await post(two, '/v1/models/canary/promote'); // active becomes B meanwhile
    expect(promote.statusCode, promote.body).toBe(200);
    held.release();
    const res = await rollback;
    expect(res.statusCode, res.body).toBe(409);
    expect(res.json().message).toMatch(/changed meanwhile/);
    expect((await state(one)).active).toBe(B);
  });
});
