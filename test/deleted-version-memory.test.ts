import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { batchScores } from './helpers/http.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { AppError } from '../src/lib/errors.js';

/**
 * A version loaded by a change that was then refused (409 `active_changed` here; a 503 during a
 * Redis outage or a rollback's 409 leave the same state) stays prepared in memory. Deleted and
 * registered again under the same id with other weights, the id must serve the new weights.
 */

const A = BUNDLED_VERSION;
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const ADMIN = { authorization: 'Bearer admin-key-123' };
const PREDICT = { authorization: 'Bearer pred-key-123' };
// The copies shift the output bias: +2 scores every row above A, -2 below it.
const OLD_SHIFT = 2;
const NEW_SHIFT = -2;

const rows = shopperFeatureRows(50);

const batch = (app: FastifyInstance) => batchScores(app, rows, PREDICT);

/** A refused activation of `id` that loaded it first (it stays prepared). */
async function refusedActivation(app: FastifyInstance, id: string): Promise<void> {
  const err = await app.services.lifecycle.activate(id, { by: 'test' }, { ifActive: 'someone-else' }).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(AppError);
  expect((err as AppError).statusCode).toBe(409);
  expect((err as AppError).code).toBe('active_changed');
}

describe('a deleted version is never served from memory under a re-registered id', () => {
  let storeDir: string;
  const apps: FastifyInstance[] = [];
  let baseline: number[];

  beforeAll(async () => {
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, 'x', { biasShift: OLD_SHIFT });
    addSecondVersion(storeDir, 'y', { biasShift: OLD_SHIFT });
    // Two replicas sharing the store volume (fleet state in its state.json: no Redis).
    for (let i = 0; i < 2; i++) {
      const app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS });
      await app.ready();
      apps.push(app);
    }
    const a = await batch(apps[0]);
    expect(a.modelVersion).toBe(A);
    baseline = a.probabilities;
  });
  afterAll(async () => {
    for (const app of apps) await app.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  it('deleted on this replica: the prepared model is dropped and freed (after the request pinning it), the new weights are served', async () => {
    const [app] = apps;
    await refusedActivation(app, 'x');
    const old = await app.services.models.prepare('x'); // the prepared instance
    old.pin(); // a request still on it
    const del = await app.inject({ method: 'DELETE', url: '/v1/models/x', headers: ADMIN });
    expect(del.statusCode, del.body).toBe(200);
    expect(old.isDisposed).toBe(false); // never freed under a request ...
    old.unpin();
    expect(old.isDisposed).toBe(true); // ... but freed once it finishes

    addSecondVersion(storeDir, 'x', { biasShift: NEW_SHIFT }); // registered again, other weights
    const res = await app.inject({ method: 'POST', url: '/v1/models/x/activate', headers: ADMIN, payload: {} });
    expect(res.statusCode, res.body).toBe(200);
    const served = await batch(app);
    expect(served.modelVersion).toBe('x');
    expect(app.services.models.active).not.toBe(old);
    served.probabilities.forEach((p, i) => expect(p, `row ${i}`).toBeLessThan(baseline[i]));
  });

  it('deleted and registered again by another replica sharing the store: this one reloads instead of serving what it had loaded', async () => {
    const [one, two] = apps;
    await refusedActivation(two, 'y');
    const old = await two.services.models.prepare('y');
    const del = await one.inject({ method: 'DELETE', url: '/v1/models/y', headers: ADMIN });
    expect(del.statusCode, del.body).toBe(200);
    addSecondVersion(storeDir, 'y', { biasShift: NEW_SHIFT });

    const res = await two.inject({ method: 'POST', url: '/v1/models/y/activate', headers: ADMIN, payload: {} });
    expect(res.statusCode, res.body).toBe(200);
    const served = await batch(two);
    expect(served.modelVersion).toBe('y');
    served.probabilities.forEach((p, i) => expect(p, `row ${i}`).toBeLessThan(baseline[i]));
    expect(old.isDisposed).toBe(true);
  });
});
