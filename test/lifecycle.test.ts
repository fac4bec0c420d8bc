import { createHash } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { BUNDLED_VERSION, addSecondVersion, corruptWeights } from './helpers/second-version.js';
import type { LoadedModel } from '../src/inference/loaded-model.js';
import { coerceFeatures } from '../src/preprocessing/coerce.js';

const A = BUNDLED_VERSION;
const B = 'shoppers-mlp-v2';
const BROKEN = 'shoppers-mlp-broken';
const ADMIN_KEY = 'admin-key-123';
const PREDICT_KEY = 'pred-key-123';
const ADMIN = { authorization: `Bearer ${ADMIN_KEY}` };
const PREDICT = { authorization: `Bearer ${PREDICT_KEY}` };
const fingerprint = (key: string) => `key:${createHash('sha256').update(key).digest('hex').slice(0, 8)}`;

type Features = Record<string, number | string | boolean>;

/** Real shoppers rows made pairwise distinct (so the score cache never answers). */
function distinctRows(n: number): Features[] {
  const base = shopperFeatureRows(n);
  return base.map((r, i) => ({ ...r, ProductRelated_Duration: 10 + i }));
}

const rowKey = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');

interface Scored {
  model: LoadedModel;
  probability: number;
}

/**
 * Wraps predictSync of every LoadedModel this app serves (the current one, and each one swapped
 * in, at the moment it is swapped in — before any request can reach it), recording which rows
 * each instance scored and in which batch.
 */
function spyOnModels(app: FastifyInstance) {
  const instances: LoadedModel[] = [];
  const scoredBy = new Map<string, Scored[]>();
  const batches: { model: LoadedModel; keys: string[] }[] = [];
  const wrap = (m: LoadedModel | null) => {
    if (!m || instances.includes(m)) return;
    instances.push(m);
    const original = m.predictSync.bind(m);
    const width = m.encoder.width;
    m.predictSync = (data: Float32Array, rows: number) => {
      const out = original(data, rows);
      const keys: string[] = [];
      for (let r = 0; r < rows; r++) {
        const key = rowKey(data.subarray(r * width, (r + 1) * width));
        keys.push(key);
        const list = scoredBy.get(key) ?? [];
        list.push({ model: m, probability: out[r] });
        scoredBy.set(key, list);
      }
      batches.push({ model: m, keys });
      return out;
    };
  };
  const { models } = app.services;
  // At the swap the previous instance has just been retired: note whether requests were still on it.
  const atRetire: { id: string; inFlight: number; disposed: boolean }[] = [];
  wrap(models.active);
  models.on('active', () => {
    const prev = instances.at(-1)!;
    atRetire.push({ id: prev.id, inFlight: prev.inFlight, disposed: prev.isDisposed });
    wrap(models.active);
  });
  return { instances, scoredBy, batches, atRetire };
}

describe('model lifecycle (single replica, no Redis)', () => {
  let app: FastifyInstance;
  let storeDir: string;

  beforeAll(async () => {
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    addSecondVersion(storeDir, BROKEN, { biasShift: -1 });
    corruptWeights(storeDir, BROKEN);
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS: `admin:${ADMIN_KEY},predict:${PREDICT_KEY}` });
    await app.ready();
  });

  afterAll(async () => {
    await app?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  const activate = (version: string, reason?: string) =>
    app.inject({ method: 'POST', url: `/v1/models/${version}/activate`, headers: ADMIN, payload: reason ? { reason } : {} });
  const predict = (features: Features) => app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features } });
  const readyVersion = async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().model.activeVersion as string;

  it('starts on the bundled version with the second version listed as inactive', async () => {
    expect(await readyVersion()).toBe(A);
    const res = await app.inject({ method: 'GET', url: '/v1/models', headers: PREDICT });
    expect(res.statusCode).toBe(200);
    const models = res.json().models as { id: string; state: string }[];
    expect(Object.fromEntries(models.map((m) => [m.id, m.state]))).toEqual({ [A]: 'active', [B]: 'inactive', [BROKEN]: 'inactive' });
  });

  it('swaps B → A → B under ~2000 concurrent predictions: all 200, versions never mixed, retired models disposed', async () => {
    const spy = spyOnModels(app);
    const rows = distinctRows(6000);
    const spec = app.services.models.active!.spec;
    const width = app.services.models.active!.encoder.width;
    const encode = (f: Features) => {
      const { values, issues } = coerceFeatures(spec, f);
      expect(issues).toEqual([]);
      const v = new Float32Array(width);
      app.services.models.active!.encoder.encodeInto(values, v, 0);
      return rowKey(v);
    };
    const keys = rows.map(encode);
    expect(new Set(keys).size).toBe(rows.length); // every body is a cache miss

    const MIN_REQUESTS = 2000;
    const CONCURRENCY = 200;
    const results: { i: number; status: number; body: { modelVersion?: string; probability?: number; cached?: boolean } }[] = [];
    let next = 0;
    let activationsDone = false;
    const doneAt: number[] = [];
    const waitForCompleted = async (n: number) => {
      while (results.length < n) await new Promise((r) => setImmediate(r));
    };
    // Keeps CONCURRENCY requests in flight until at least MIN_REQUESTS were sent and every activation finished.
    const worker = async () => {
      while (next < rows.length && (next < MIN_REQUESTS || !activationsDone)) {
        const i = next++;
        const res = await predict(rows[i]);
        results.push({ i, status: res.statusCode, body: res.json() });
      }
    };
    const swaps = (async () => {
      for (const [at, version] of [[300, B], [800, A], [1300, B]] as const) {
        await waitForCompleted(at);
        const res = await activate(version, `swap under load to ${version}`);
        expect(res.statusCode, res.body).toBe(200);
        expect(res.json().active).toBe(version);
        doneAt.push(results.length);
      }
      activationsDone = true;
    })();
    await Promise.all([swaps, ...Array.from({ length: CONCURRENCY }, worker)]);

    expect(results.length).toBeGreaterThanOrEqual(MIN_REQUESTS);
    expect(results.length).toBeLessThan(rows.length); // the load outlasted the swaps
    for (const r of results) {
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect([A, B]).toContain(r.body.modelVersion);
      expect(r.body.cached).toBe(false);
    }
    // Requests completed while each activation was in progress and after the last one.
    expect(doneAt[0]).toBeLessThan(doneAt[1]);
    expect(doneAt[1]).toBeLessThan(doneAt[2]);
    expect(doneAt[2]).toBeLessThan(results.length);
    const versions = new Set(results.map((r) => r.body.modelVersion));
    expect(versions).toEqual(new Set([A, B]));

    // Four instances served: A (start), B, A (reloaded), B. Each has its own micro-batcher.
    expect(spy.instances.map((m) => m.id)).toEqual([A, B, A, B]);
    expect(new Set(spy.instances.map((m) => m.batcher)).size).toBe(4);

    // Each prediction was scored exactly once, by an instance of the version it reports, with that probability.
    for (const r of results) {
      const scored = spy.scoredBy.get(keys[r.i]);
      expect(scored, `row ${r.i} was never scored`).toBeDefined();
      expect(scored).toHaveLength(1);
      expect(scored![0].model.id).toBe(r.body.modelVersion);
      expect(scored![0].probability).toBeCloseTo(r.body.probability!, 6);
    }
    // A micro-batch never mixes versions: every row of a batch belongs to a response of that batch's model.
    const versionOfKey = new Map(results.map((r) => [keys[r.i], r.body.modelVersion]));
    expect(spy.batches.length).toBeGreaterThan(0);
    expect(spy.batches.some((b) => b.keys.length > 1)).toBe(true); // batching did happen
    for (const b of spy.batches) for (const k of b.keys) expect(versionOfKey.get(k)).toBe(b.model.id);

    expect(results.some((r) => r.body.modelVersion === B)).toBe(true);

    // After the last activation new requests say B.
    expect(await readyVersion()).toBe(B);
    // The same rows give different probabilities on A and B (the swap is observable): rows A
    // answered, asked again now, are scored by B (the cache key includes the version).
    const answeredByA = results.filter((r) => r.body.modelVersion === A).slice(0, 20);
    expect(answeredByA.length).toBeGreaterThan(0);
    for (const r of answeredByA) {
      const again = (await predict(rows[r.i])).json();
      expect(again.modelVersion).toBe(B);
      expect(again.cached).toBe(false);
      expect(Math.abs(again.probability - r.body.probability!)).toBeGreaterThan(1e-4);
    }
    for (let i = 0; i < 20; i++) {
      const res = await predict(rows[rows.length - 1 - i]);
      expect(res.statusCode).toBe(200);
      expect(res.json().modelVersion).toBe(B);
    }

    // Retired instances are disposed once drained (not while requests were still on them); the serving one is not.
    expect(spy.atRetire.map((r) => r.id)).toEqual([A, B, A]);
    for (const r of spy.atRetire) expect(r.disposed).toBe(r.inFlight === 0);
    const [a1, b1, a2, b2] = spy.instances;
    for (const retired of [a1, b1, a2]) {
      expect(retired.inFlight).toBe(0);
      expect(retired.isDisposed).toBe(true);
    }
    expect(b2.isDisposed).toBe(false);
    expect(app.services.models.active).toBe(b2);
  });

  it('a swapped-out model is disposed only once the request still running on it has finished', async () => {
    const old = app.services.models.active!;
    expect(old.id).toBe(B);
    // Pin the model exactly as a request does (LoadedModel.use) and keep that "request" open.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let scoredOnOld: number | undefined;
    const slow = old.use(async (m) => {
      await gate;
      const row = new Float32Array(m.encoder.width);
      scoredOnOld = await m.batcher.score(row);
    });
    const res = await activate(A, 'drain test');
    expect(res.statusCode, res.body).toBe(200);
    expect(app.services.models.active).not.toBe(old);
    expect(old.inFlight).toBe(1);
    expect(old.isDisposed).toBe(false);
    const p = await predict({ ...shopperFeatureRows(1)[0], ProductRelated_Duration: 98765 });
    expect(p.json().modelVersion).toBe(A);

    release();
    await slow;
    expect(scoredOnOld).toBeGreaterThanOrEqual(0); // the pinned work still completed on the old model
    expect(old.inFlight).toBe(0);
    expect(old.isDisposed).toBe(true);

    const back = await activate(B, 'drain test done');
    expect(back.statusCode).toBe(200);
    expect(await readyVersion()).toBe(B);
  });

  it('refuses a version whose weights fail verification (422 with the reason); the active model keeps answering', async () => {
    const before = app.services.models.active;
    const res = await activate(BROKEN, 'should fail');
    expect(res.statusCode).toBe(422);
    const body = res.json();
    expect(body.error).toBe('load_failed');
    expect(body.message).toContain(BROKEN);
    expect(body.message).toContain('group1-shard1of1.bin (checksum mismatch)');

    expect(app.services.models.active).toBe(before);
    expect(await readyVersion()).toBe(B);
    const state = await app.services.lifecycle.state();
    expect(state.active).toBe(B);
    expect(state.history.some((h) => h.version === BROKEN)).toBe(false);
    const p = await predict({ ...shopperFeatureRows(1)[0], ProductRelated_Duration: 123456 });
    expect(p.statusCode).toBe(200);
    expect(p.json().modelVersion).toBe(B);

    const missing = await activate('no-such-version');
    expect(missing.statusCode).toBe(404);
  });

  it('rolls back to the previous version and records who (key fingerprint) and why', async () => {
    // Re-activating the active version is recorded but is not a step to roll back to.
    const again = await activate(B, 're-activate');
    expect(again.statusCode).toBe(200);
    expect(again.json().active).toBe(B);
    const res = await app.inject({ method: 'POST', url: '/v1/models/rollback', headers: ADMIN, payload: { reason: 'B looks off' } });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: A, canary: null });
    expect(await readyVersion()).toBe(A);
    const p = await predict({ ...shopperFeatureRows(1)[0], ProductRelated_Duration: 654321 });
    expect(p.json().modelVersion).toBe(A);

    const hist = await app.inject({ method: 'GET', url: '/v1/models/history', headers: PREDICT });
    expect(hist.statusCode).toBe(200);
    const history = hist.json().history as { action: string; version: string; previous: string | null; by: string; reason?: string }[];
    expect(history[0]).toMatchObject({ action: 'rollback', version: A, previous: B, by: fingerprint(ADMIN_KEY), reason: 'B looks off' });
    expect(history[1]).toMatchObject({ action: 'activate', version: B, previous: B, reason: 're-activate' });
    expect(history[2]).toMatchObject({ action: 'activate', version: B, previous: A, reason: 'drain test done' });
    expect(history[3]).toMatchObject({ action: 'activate', version: A, previous: B, reason: 'drain test' });
    expect(history.slice(4, 7)).toEqual([
      expect.objectContaining({ action: 'activate', version: B, previous: A, by: fingerprint(ADMIN_KEY), reason: `swap under load to ${B}` }),
      expect.objectContaining({ action: 'activate', version: A, previous: B, by: fingerprint(ADMIN_KEY), reason: `swap under load to ${A}` }),
      expect.objectContaining({ action: 'activate', version: B, previous: A, by: fingerprint(ADMIN_KEY), reason: `swap under load to ${B}` }),
    ]);
    // The raw keys never appear, neither in the API nor in the persisted state.
    for (const text of [hist.body, readFileSync(join(storeDir, 'state.json'), 'utf8')]) {
      expect(text).not.toContain(ADMIN_KEY);
      expect(text).not.toContain(PREDICT_KEY);
      expect(text).toContain(fingerprint(ADMIN_KEY));
    }
  });

  it('serves the model card, the evaluation report and a comparison', async () => {
    const card = await app.inject({ method: 'GET', url: `/v1/models/${B}`, headers: PREDICT });
    expect(card.statusCode).toBe(200);
    const c = card.json();
    expect(c.card.id).toBe(B);
    expect(c.state).toBe('inactive');
    expect(c.spec.label).toEqual({ name: 'Revenue', positive: 'TRUE' });
    expect(c.spec.features.length).toBeGreaterThan(10);
    expect(c.metrics.test.auc).toBeGreaterThan(0.5);

    const report = await app.inject({ method: 'GET', url: `/v1/models/${A}/report`, headers: PREDICT });
    expect(report.statusCode).toBe(200);
    const r = report.json();
    expect(r.version).toBe(A);
    expect(r.confusionMatrix).toEqual({ tp: expect.any(Number), fp: expect.any(Number), tn: expect.any(Number), fn: expect.any(Number) });
    expect(Array.isArray(r.calibration) && r.calibration.length).toBeGreaterThan(0);
    expect(r.calibration[0]).toEqual(expect.objectContaining({ count: expect.any(Number), meanPredicted: expect.any(Number), observedRate: expect.any(Number) }));
    expect(Array.isArray(r.roc) && r.roc.length).toBeGreaterThan(1);
    expect(r.roc[0]).toEqual(expect.objectContaining({ tpr: expect.any(Number), fpr: expect.any(Number) }));

    const cmp = await app.inject({ method: 'GET', url: `/v1/models/compare?a=${A}&b=${B}`, headers: PREDICT });
    expect(cmp.statusCode).toBe(200);
    const d = cmp.json();
    expect(d.a.id).toBe(A);
    expect(d.a.state).toBe('active');
    expect(d.b.id).toBe(B);
    expect(d.difference.auc).toBeCloseTo(-0.01, 6);
    expect(d.difference.f1).toBe(0);

    expect((await app.inject({ method: 'GET', url: '/v1/models/nope', headers: PREDICT })).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: `/v1/models/compare?a=${A}&b=nope`, headers: PREDICT })).statusCode).toBe(404);
  });

  it('refuses admin routes to a predict-scoped key (403) and without a key (401)', async () => {
    const attempts = [
      { method: 'POST' as const, url: `/v1/models/${B}/activate`, payload: {} },
      { method: 'POST' as const, url: '/v1/models/rollback', payload: {} },
      { method: 'POST' as const, url: `/v1/models/${B}/canary`, payload: { percent: 10 } },
      { method: 'POST' as const, url: '/v1/models/canary/promote', payload: {} },
      { method: 'POST' as const, url: '/v1/models/canary/abort', payload: {} },
      { method: 'DELETE' as const, url: `/v1/models/${B}` },
    ];
    for (const a of attempts) {
      const res = await app.inject({ ...a, headers: PREDICT });
      expect(res.statusCode, `${a.method} ${a.url}`).toBe(403);
      const anon = await app.inject(a);
      expect(anon.statusCode, `${a.method} ${a.url}`).toBe(401);
    }
    // Nothing changed.
    expect(await readyVersion()).toBe(A);
    expect((await app.services.lifecycle.state()).history.at(-1)?.action).toBe('rollback');
    expect(app.services.store.has(B)).toBe(true);
  });

  it('refuses to delete the active version (409) and deletes an inactive one', async () => {
    const active = await app.inject({ method: 'DELETE', url: `/v1/models/${A}`, headers: ADMIN });
    expect(active.statusCode).toBe(409);
    expect(app.services.store.has(A)).toBe(true);

    const del = await app.inject({ method: 'DELETE', url: `/v1/models/${B}`, headers: ADMIN });
    expect(del.statusCode, del.body).toBe(200);
    expect(del.json()).toEqual({ deleted: B });
    const list = (await app.inject({ method: 'GET', url: '/v1/models', headers: PREDICT })).json().models as { id: string }[];
    expect(list.map((m) => m.id).sort()).toEqual([BROKEN, A].sort());
    expect((await app.inject({ method: 'GET', url: `/v1/models/${B}`, headers: PREDICT })).statusCode).toBe(404);
    expect((await app.inject({ method: 'DELETE', url: `/v1/models/${B}`, headers: ADMIN })).statusCode).toBe(404);

    // Serving is unaffected.
    const p = await predict({ ...shopperFeatureRows(1)[0], ProductRelated_Duration: 777 });
    expect(p.statusCode).toBe(200);
    expect(p.json().modelVersion).toBe(A);
  });
});
