import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCsvText } from '../src/dataset/read-csv.js';
import { prepareDataset } from '../src/dataset/prepare.js';
import { stratifiedSplit } from '../src/training/split.js';
import { csvCellValue } from '../src/preprocessing/coerce.js';
import type { FeatureSpec } from '../src/preprocessing/feature-spec.js';
import { buildTestApp } from './helpers/app.js';

/**
 * The bundled version's metrics.json holds what serving answers: its validation and test rows,
 * scored through POST /v1/predict/batch and labelled by the served `label`, give the confusion
 * matrices training stored. (Training scores them through the tfjs Layers API, serving through
 * its own WASM calls: a threshold sitting on a validation score flipped that row.)
 */
describe('bundled model metrics, reproduced by serving', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await buildTestApp();
  });
  afterAll(async () => app?.close());

  it('the validation and test confusion matrices in metrics.json are what /v1/predict/batch labels', async () => {
    const dir = 'model-store/versions/shoppers-mlp-v1';
    const metrics = JSON.parse(readFileSync(`${dir}/metrics.json`, 'utf8')) as Record<'test' | 'validation', { confusion: Record<'tp' | 'fp' | 'fn' | 'tn', number> }>;
    const spec = JSON.parse(readFileSync(`${dir}/feature-spec.json`, 'utf8')) as FeatureSpec;
    const card = JSON.parse(readFileSync(`${dir}/card.json`, 'utf8')) as { parameters: { seed: number; categorical: string[] } };
    const table = parseCsvText(readFileSync('data/online_shoppers_intention.csv', 'utf8'));
    const data = prepareDataset(table, { label: 'Revenue', positive: 'TRUE', categorical: card.parameters.categorical });
    const split = stratifiedSplit(data.labels, { validation: 0.15, test: 0.15 }, card.parameters.seed);
    for (const part of ['validation', 'test'] as const) {
      const idx = split[part];
      const instances = idx.map((i) => ({ features: Object.fromEntries(spec.features.map((f) => [f.name, csvCellValue(f.type, data.rows[i][f.name])])) }));
      const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances } });
      expect(res.statusCode, res.body.slice(0, 300)).toBe(200);
      const labels = (res.json().predictions as { label: boolean }[]).map((p) => p.label);
      const c = { tp: 0, fp: 0, fn: 0, tn: 0 };
      labels.forEach((predicted, k) => {
        const actual = data.labels[idx[k]] === 1;
        c[predicted ? (actual ? 'tp' : 'fp') : actual ? 'fn' : 'tn']++;
      });
      expect(c, part).toEqual(metrics[part].confusion);
    }
  });
});
