import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { batchScores } from './helpers/http.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { loadVersion } from '../src/registry/load-version.js';
import { coerceFeatures } from '../src/preprocessing/coerce.js';

/**
 * A replica that missed the fleet states between "B active, old files" and "B active, new files"
 * (B deactivated, deleted and registered again with other weights elsewhere, then activated
 * again) sees the same id in the state as before. It must serve the files now stored under that
 * id, not the model it loaded from the old ones. Here the files are replaced behind the app's
 * back, which is exactly what such a replica observes, and reconcile() applies the state.
 */

const A = BUNDLED_VERSION;
const B = 'reg-active';
const C = 'reg-canary';
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const PREDICT = { authorization: 'Bearer pred-key-123' };
// Copies of A with the output bias shifted: OLD_SHIFT is what was loaded, NEW_SHIFT what replaces it.
const OLD_SHIFT = 2;
const NEW_SHIFT = -2;

const rows = shopperFeatureRows(50);

const batch = (app: FastifyInstance) => batchScores(app, rows, PREDICT);

/** Deletes a version's files and registers the id again with other weights, as another replica would. */
function reRegister(storeDir: string, id: string, biasShift: number): void {
  rmSync(join(storeDir, 'versions', id), { recursive: true, force: true });
  addSecondVersion(storeDir, id, { biasShift });
}

function expectLike(actual: number[], expected: number[]): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((p, i) => expect(p, `row ${i}`).toBeCloseTo(expected[i], 5));
}

describe('a served version whose id was re-registered with other files is reloaded', () => {
  let storeDir: string;
  let app: FastifyInstance;
  /** What the batch route answers for `rows` with weights shifted by OLD_SHIFT / NEW_SHIFT. */
  let oldWeights: number[];
  let newWeights: number[];

  /** Scores `rows` with a version loaded on its own (not through the app's model manager). */
  async function reference(id: string): Promise<number[]> {
    const model = await loadVersion(app.services.models.store, id, { maxBatch: 64, maxWaitMs: 1 });
    try {
      const w = model.encoder.width;
      const matrix = new Float32Array(rows.length * w);
      rows.forEach((features, i) => {
        const { values, issues } = coerceFeatures(model.spec, features);
        expect(issues).toEqual([]);
        model.encoder.encodeInto(values, matrix, i * w);
      });
      return Array.from(model.predictSync(matrix, rows.length));
    } finally {
      model.retire();
    }
  }

  beforeAll(async () => {
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B, { biasShift: OLD_SHIFT });
    addSecondVersion(storeDir, C, { biasShift: OLD_SHIFT });
    addSecondVersion(storeDir, 'ref-old', { biasShift: OLD_SHIFT });
    addSecondVersion(storeDir, 'ref-new', { biasShift: NEW_SHIFT });
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS });
    await app.ready();
    oldWeights = await reference('ref-old');
    newWeights = await reference('ref-new');
    // The two weight sets answer differently for every row (else the test would prove nothing).
    oldWeights.forEach((p, i) => expect(Math.abs(p - newWeights[i]), `row ${i}`).toBeGreaterThan(1e-3));
  });
  afterAll(async () => {
    await app?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  it('active: reconcile swaps in the new files (new cache scope), the old model is freed once its requests finish', async () => {
    const { lifecycle, models } = app.services;
    await lifecycle.activate(B, { by: 'test' });
    const before = await batch(app);
    expect(before.modelVersion).toBe(B);
    expectLike(before.probabilities, oldWeights);
    const old = models.active!;
    expect(old.id).toBe(B);
    old.pin(); // a request still running on the old files

    reRegister(storeDir, B, NEW_SHIFT);
    await lifecycle.reconcile();

    const now = models.active!;
    expect(now).not.toBe(old);
    expect(now.id).toBe(B);
    expect(now.cacheScope).not.toBe(old.cacheScope);
    const after = await batch(app);
    expect(after.modelVersion).toBe(B);
    expectLike(after.probabilities, newWeights);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json().model.activeVersion).toBe(B);

    expect(old.isDisposed).toBe(false); // never freed under a request ...
    old.unpin();
    expect(old.isDisposed).toBe(true); // ... but freed once it finishes

    // Unchanged files: the served model is kept (no reload on every reconcile).
    await lifecycle.reconcile();
    expect(models.active).toBe(now);
  });

  it('active: a missing manifest (version deleted meanwhile) keeps the served model; the re-added files are loaded', async () => {
    const { models } = app.services;
    const served = models.active!;
    expect(served.id).toBe(B);
    rmSync(join(storeDir, 'versions', B), { recursive: true, force: true });
    // Called directly: reconcile itself falls back to another stored version once B is gone from the store.
    expect(await models.serveActive(B)).toBe(served);
    expect(await models.prepare(B)).toBe(served);
    expect(served.isDisposed).toBe(false);
    expectLike((await batch(app)).probabilities, newWeights);

    addSecondVersion(storeDir, B, { biasShift: OLD_SHIFT });
    const reloaded = await models.serveActive(B);
    expect(reloaded).not.toBe(served);
    expect(models.active).toBe(reloaded);
    expect(reloaded.cacheScope).not.toBe(served.cacheScope);
    expect(served.isDisposed).toBe(true);
    expectLike((await batch(app)).probabilities, oldWeights);
  });

  it('canary: reconcile swaps in the new files of a re-registered canary id; the active model is untouched', async () => {
    const { lifecycle, models } = app.services;
    await lifecycle.activate(A, { by: 'test' });
    await lifecycle.startCanary(C, { percent: 100, mode: 'split' }, { by: 'test' }); // every batch goes to the canary
    const active = models.active!;
    const before = await batch(app);
    expect(before.modelVersion).toBe(C);
    expectLike(before.probabilities, oldWeights);
    const old = models.canary!;
    expect(old.id).toBe(C);
    old.pin();

    reRegister(storeDir, C, NEW_SHIFT);
    await lifecycle.reconcile();

    const now = models.canary!;
    expect(now).not.toBe(old);
    expect(now.id).toBe(C);
    expect(now.cacheScope).not.toBe(old.cacheScope);
    expect(models.active).toBe(active);
    const after = await batch(app);
    expect(after.modelVersion).toBe(C);
    expectLike(after.probabilities, newWeights);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).json().model.canaryVersion).toBe(C);

    expect(old.isDisposed).toBe(false);
    old.unpin();
    expect(old.isDisposed).toBe(true);
    expect(active.isDisposed).toBe(false);
  });
});
