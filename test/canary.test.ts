import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';

const A = BUNDLED_VERSION;
const B = 'shoppers-mlp-v2';
const ADMIN_KEY = 'admin-key-123';
const ADMIN = { authorization: `Bearer ${ADMIN_KEY}` };
const PREDICT = { authorization: 'Bearer pred-key-123' };
const fingerprint = (key: string) => `key:${createHash('sha256').update(key).digest('hex').slice(0, 8)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Features = Record<string, number | string | boolean>;
interface PredictionBody {
  probability: number;
  label: boolean;
  modelVersion: string;
}

describe('canary and shadow rollout (single replica)', () => {
  let app: FastifyInstance;
  let storeDir: string;
  const rows = shopperFeatureRows(1000);

  beforeAll(async () => {
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS: `admin:${ADMIN_KEY},predict:pred-key-123` });
    await app.ready();
  });

  afterAll(async () => {
    await app?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  async function predict(features: Features, userId?: string): Promise<PredictionBody> {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: userId === undefined ? { features } : { userId, features } });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as PredictionBody;
  }

  /** Runs `n` predictions, `concurrency` at a time, returning answers in index order. */
  async function many(n: number, make: (i: number) => { features: Features; userId?: string }, concurrency = 250): Promise<PredictionBody[]> {
    const out: PredictionBody[] = new Array(n);
    for (let start = 0; start < n; start += concurrency) {
      const idx = Array.from({ length: Math.min(concurrency, n - start) }, (_, k) => start + k);
      await Promise.all(
        idx.map(async (i) => {
          const { features, userId } = make(i);
          out[i] = await predict(features, userId);
        }),
      );
    }
    return out;
  }

  const post = (url: string, payload: unknown = {}) => app.inject({ method: 'POST', url, headers: ADMIN, payload: payload as Record<string, unknown> });
  const readyz = async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().model as { activeVersion: string; canaryVersion: string | null };

  it('rejects bad canary requests', async () => {
    expect((await post(`/v1/models/${A}/canary`, { percent: 20 })).statusCode).toBe(409); // already active
    expect((await post(`/v1/models/${B}/canary`, { percent: 0 })).statusCode).toBe(400);
    expect((await post(`/v1/models/${B}/canary`, { percent: 101 })).statusCode).toBe(400);
    expect((await post('/v1/models/no-such/canary', { percent: 10 })).statusCode).toBe(404);
    expect((await post('/v1/models/canary/promote')).statusCode).toBe(409); // no canary
    expect((await post('/v1/models/canary/abort')).statusCode).toBe(409);
    expect(await readyz()).toEqual({ activeVersion: A, canaryVersion: null, loaded: true, inferencePath: expect.any(String) });
  });

  it('a 20% canary serves 20% ± 3% of distinct users, sticky per user; without a userId both versions appear', async () => {
    const res = await post(`/v1/models/${B}/canary`, { percent: 20, reason: 'try v2 on a fifth of users' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: A, canary: { version: B, percent: 20, mode: 'split' } });
    expect((await readyz()).canaryVersion).toBe(B);
    const listed = (await app.inject({ method: 'GET', url: '/v1/models', headers: PREDICT })).json().models as { id: string; state: string }[];
    expect(listed.find((m) => m.id === B)?.state).toBe('canary');
    expect((await app.inject({ method: 'DELETE', url: `/v1/models/${B}`, headers: ADMIN })).statusCode).toBe(409);

    const USERS = 5000;
    const userId = (i: number) => `user-${i}`;
    const first = await many(USERS, (i) => ({ userId: userId(i), features: rows[i % rows.length] }));
    for (const p of first) expect([A, B]).toContain(p.modelVersion);
    const shareB = first.filter((p) => p.modelVersion === B).length / USERS;
    expect(shareB).toBeGreaterThanOrEqual(0.17);
    expect(shareB).toBeLessThanOrEqual(0.23);

    // Sticky: the same user gets the same version on every repeat (features vary, so this is routing, not caching).
    const sample = Array.from({ length: 60 }, (_, k) => k * 83);
    expect(new Set(sample.map((i) => first[i].modelVersion))).toEqual(new Set([A, B]));
    for (let rep = 0; rep < 10; rep++) {
      const again = await many(sample.length, (k) => ({ userId: userId(sample[k]), features: rows[(sample[k] + rep * 7 + 1) % rows.length] }));
      again.forEach((p, k) => expect(p.modelVersion, `user ${userId(sample[k])} repeat ${rep}`).toBe(first[sample[k]].modelVersion));
    }

    // No userId: routed at random, so both versions show up.
    const anonymous = await many(600, (i) => ({ features: rows[i % rows.length] }));
    const anonB = anonymous.filter((p) => p.modelVersion === B).length;
    expect(anonB).toBeGreaterThan(0);
    expect(anonB).toBeLessThan(anonymous.length);

    // A userId of the wrong type is a 400 naming it, as without a canary (it once reached the router: 500).
    for (const bad of [123, null, {}]) {
      const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { userId: bad, features: rows[0] } });
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().details.map((d: { path: string }) => d.path)).toEqual(['userId']);
    }
  });

  it('abort clears the canary: every user is back on the active version', async () => {
    const res = await post('/v1/models/canary/abort', { reason: 'enough' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: A, canary: null });
    expect(await readyz()).toEqual({ activeVersion: A, canaryVersion: null, loaded: true, inferencePath: expect.any(String) });
    expect(app.services.models.canary).toBeNull();
    const after = await many(500, (i) => ({ userId: `user-${i}`, features: rows[i % rows.length] }));
    expect(new Set(after.map((p) => p.modelVersion))).toEqual(new Set([A]));
    expect((await post('/v1/models/canary/abort')).statusCode).toBe(409);
  });

  // Shared by the shadow and promote steps: what A answered, and what the shadow recorded.
  let shadowed: { features: Features; active: PredictionBody }[] = [];
  let shadowStats: { n: number; meanAbsDiff: number; labelAgreement: number } | undefined;

  it('shadow mode answers from the active version and records agreement with the shadow', async () => {
    const res = await post(`/v1/models/${B}/canary`, { mode: 'shadow', reason: 'compare quietly' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: A, canary: { version: B, percent: 0, mode: 'shadow' } });
    const empty = (await app.inject({ method: 'GET', url: `/v1/models/${B}/shadow`, headers: PREDICT })).json();
    expect(empty).toMatchObject({ version: B, n: 0 });

    const N = 400;
    const answers = await many(N, (i) => ({ userId: `shadow-user-${i}`, features: rows[i] }), 100);
    expect(new Set(answers.map((p) => p.modelVersion))).toEqual(new Set([A]));
    shadowed = answers.map((active, i) => ({ features: rows[i], active }));

    // Shadow scoring happens off the request path: poll until every prediction is counted (a busy machine may take a while).
    let stats = { version: '', n: 0, meanAbsDiff: -1, labelAgreement: -1, incompatible: -1 };
    const deadline = performance.now() + 15_000;
    while (performance.now() < deadline) {
      stats = (await app.inject({ method: 'GET', url: `/v1/models/${B}/shadow`, headers: PREDICT })).json();
      if (stats.n >= N) break;
      await sleep(10);
    }
    expect(stats.version).toBe(B);
    expect(stats.n).toBe(N);
    expect(stats.incompatible).toBe(0);
    expect(stats.meanAbsDiff).toBeGreaterThanOrEqual(0);
    expect(stats.meanAbsDiff).toBeGreaterThan(0); // B's output bias differs, so its scores do
    expect(stats.labelAgreement).toBeGreaterThanOrEqual(0);
    expect(stats.labelAgreement).toBeLessThanOrEqual(1);
    // A version that is not shadowing reports nothing.
    expect((await app.inject({ method: 'GET', url: `/v1/models/${A}/shadow`, headers: PREDICT })).json()).toMatchObject({ version: A, n: 0 });
    shadowStats = stats;
  });

  it('promote makes the canary active and clears it; the shadow statistics match B scored directly', async () => {
    const res = await post('/v1/models/canary/promote', { reason: 'shadow looked fine' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: B, canary: null });
    expect(await readyz()).toEqual({ activeVersion: B, canaryVersion: null, loaded: true, inferencePath: expect.any(String) });
    expect(app.services.models.canary).toBeNull();
    expect(app.services.models.active?.id).toBe(B);

    const after = await many(300, (i) => ({ userId: `user-${i}`, features: rows[i % rows.length] }));
    expect(new Set(after.map((p) => p.modelVersion))).toEqual(new Set([B]));

    // The shadow's numbers are what B gives on the same inputs.
    const stats = shadowStats!;
    expect(stats.n).toBe(shadowed.length);
    const onB = await many(shadowed.length, (i) => ({ features: shadowed[i].features }));
    const meanAbsDiff = onB.reduce((s, p, i) => s + Math.abs(p.probability - shadowed[i].active.probability), 0) / onB.length;
    const agreement = onB.filter((p, i) => p.label === shadowed[i].active.label).length / onB.length;
    expect(stats.meanAbsDiff).toBeCloseTo(meanAbsDiff, 5);
    expect(stats.labelAgreement).toBeCloseTo(agreement, 10);

    const history = (await app.inject({ method: 'GET', url: '/v1/models/history', headers: PREDICT })).json().history as Record<string, unknown>[];
    expect(history.slice(0, 4)).toEqual([
      expect.objectContaining({ action: 'promote', version: B, previous: A, by: fingerprint(ADMIN_KEY), reason: 'shadow looked fine' }),
      expect.objectContaining({ action: 'canary:shadow', version: B, previous: A, reason: 'compare quietly' }),
      expect.objectContaining({ action: 'abort', version: B, previous: A, reason: 'enough' }),
      expect.objectContaining({ action: 'canary:split', version: B, previous: A, reason: 'try v2 on a fifth of users' }),
    ]);
    expect((await post('/v1/models/canary/promote')).statusCode).toBe(409);

    // Rolling back a promotion returns to A.
    const back = await post('/v1/models/rollback', { reason: 'undo promote' });
    expect(back.json()).toEqual({ active: A, canary: null });
  });
});
