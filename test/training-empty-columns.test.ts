import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/inference/backend.js';
import { parseCsvText } from '../src/dataset/read-csv.js';
import { prepareDataset } from '../src/dataset/prepare.js';
import { fitFeatureSpec } from '../src/preprocessing/fit.js';
import { trainFromTable, type TrainOptions } from '../src/training/train.js';
import { saveTrainedVersion } from '../src/training/save-version.js';
import { stratifiedSplit } from '../src/training/split.js';
import { ModelStore } from '../src/registry/model-store.js';
import { createRng } from '../src/lib/random.js';
import { buildTestApp } from './helpers/app.js';

/**
 * A column with no values in the training rows used to give a categorical feature with an empty
 * vocabulary: training "succeeded" but the version could not be loaded (the spec needs at least
 * one vocabulary entry). Such columns are left out of the features and reported; the trained
 * version must load and serve.
 */

const SEED = 5;
const OPTS: TrainOptions = { label: 'label', positive: '1', seed: SEED, hyperparameters: { epochs: 2, patience: 1 } };

/** `rows` unique rows of a,b (label from a and b) plus the extra columns `extra(i)` gives row i. */
function csv(rows: number, extraHeader: string[], extra: (i: number) => string[]): { text: string; labels: Uint8Array } {
  const rng = createRng(11);
  const lines = [['a', 'b', ...extraHeader, 'label'].join(',')];
  const labels = new Uint8Array(rows);
  for (let i = 0; i < rows; i++) {
    const a = rng();
    const b = rng();
    labels[i] = a + 0.3 * b > 0.6 ? 1 : 0;
    lines.push([a.toFixed(6), b.toFixed(6), ...extra(i), labels[i]].join(','));
  }
  return { text: lines.join('\n') + '\n', labels };
}

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Trains, saves into a fresh store, and serves it through the real app (the production load path). */
async function trainAndServe(text: string) {
  const result = await trainFromTable(parseCsvText(text), OPTS);
  const dir = mkdtempSync(join(tmpdir(), 'empty-columns-'));
  dirs.push(dir);
  const id = await saveTrainedVersion(new ModelStore(dir), result, { id: 'with-empty-column', personas: 2 });
  result.model.dispose();
  const app = await buildTestApp({ MODEL_STORE: dir });
  await app.ready();
  return { result, id, app };
}

describe('columns without values in the training rows', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('a column blank in every row is left out of the features and reported; the version loads and predicts', async () => {
    const { text } = csv(200, ['empty'], () => ['']);
    const { result, id, app } = await trainAndServe(text);
    try {
      expect(app.services.models.active?.id).toBe(id);
      const res = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: { a: 0.9, b: 0.8 } } });
      expect(res.statusCode, res.body).toBe(200);
      const p = res.json().probability as number;
      expect(p).toBeGreaterThanOrEqual(0);
      expect(p).toBeLessThanOrEqual(1);
      expect(result.spec.features.map((f) => f.name)).toEqual(['a', 'b']);
      expect(result.cleaning.columnsLeftOut).toEqual({ empty: 'blank in every row' });
      expect(result.cleaning.blankCells).toEqual({});
      // Not a feature of the model: a request naming it is refused like any unknown feature.
      expect((await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: { a: 0.9, b: 0.8, empty: null } } })).statusCode).toBe(400);
    } finally {
      await app.close();
    }
  });

  it('a column with values only in validation/test rows is left out too (as "no value in the training split"); the version loads and predicts', async () => {
    // The split training will make: rows are unique and all labeled, so its indices are the CSV's.
    const { labels } = csv(240, [], () => []);
    const split = stratifiedSplit(labels, { validation: 0.15, test: 0.15 }, SEED);
    const training = new Set(split.train);
    const { text } = csv(240, ['late', 'lateNum'], (i) => (training.has(i) ? ['', ''] : [i % 2 ? 'x' : 'y', String(i)]));
    const { result, id, app } = await trainAndServe(text);
    try {
      expect(app.services.models.active?.id).toBe(id);
      const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: [{ features: { a: 0.1, b: 0.2 } }, { features: { a: 0.9, b: 0.9 } }] } });
      expect(res.statusCode, res.body).toBe(200);
      const [low, high] = (res.json().predictions as { probability: number }[]).map((p) => p.probability);
      expect(high).toBeGreaterThanOrEqual(low);
      expect(result.spec.features.map((f) => f.name)).toEqual(['a', 'b']);
      expect(result.cleaning.columnsLeftOut).toEqual({ late: 'no value in the training split', lateNum: 'no value in the training split' });
    } finally {
      await app.close();
    }
  });

  it('no feature column left to train on is a clear error, not a model that cannot load', async () => {
    const { text } = csv(100, ['empty'], () => ['']);
    const table = parseCsvText(text);
    expect(() => prepareDataset(table, { ...OPTS, exclude: ['a', 'b'] })).toThrow(/no feature columns to train on: .*blank in every row \(empty\)/);
    // Only reachable past prepareDataset when the training split has no value at all.
    const rows = [{ late: '', label: '1' }, { late: ' ', label: '0' }];
    expect(() => fitFeatureSpec([{ name: 'late', type: 'categorical' }], rows, { name: 'label', positive: '1' })).toThrow(
      /no feature column has a value in the training rows \(late\)/,
    );
  });
});
