/**
 * Quality evaluation as a client would run it: drop exact duplicate rows (as training's cleaning
 * does), split the rest 80/20 (stratified, seeded), train with the CLI's pipeline on the 80 % only,
 * serve the result, score the unseen 20 % through POST /v1/predict/batch and report AUC and
 * friends. De-duplicating first keeps copies of training rows out of the hold-out.
 *
 *   npm run evaluate -- [--data data/online_shoppers_intention.csv] [--label Revenue] [--positive TRUE]
 *                       [--categorical OperatingSystems,Browser,Region,TrafficType] [--seed 42] [--splits 1]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { readCsvFile, type CsvTable } from '../src/dataset/read-csv.js';
import { labelMatcher } from '../src/dataset/infer-types.js';
import { dropDuplicateRows } from '../src/dataset/prepare.js';
import { parseCell } from '../src/preprocessing/coerce.js';
import { stratifiedSplit } from '../src/training/split.js';
import { trainFromTable } from '../src/training/train.js';
import { saveTrainedVersion } from '../src/training/save-version.js';
import { ModelStore } from '../src/registry/model-store.js';
import { evaluate } from '../src/training/metrics.js';
import { initBackend } from '../src/inference/backend.js';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/env.js';

const { values } = parseArgs({
  options: {
    data: { type: 'string', default: 'data/online_shoppers_intention.csv' },
    label: { type: 'string', default: 'Revenue' },
    positive: { type: 'string', default: 'TRUE' },
    categorical: { type: 'string', default: 'OperatingSystems,Browser,Region,TrafficType' },
    seed: { type: 'string', default: '42' },
    splits: { type: 'string', default: '1' },
  },
});

await initBackend((process.env.TF_BACKEND as 'auto') ?? 'auto');
const raw = readCsvFile(values.data!);
// The same de-duplication as training's cleaning, before the split: otherwise a row and its copy
// can land on both sides, and the hold-out scores rows the model was trained on.
const deduped = dropDuplicateRows(raw, { label: values.label! });
const table: CsvTable = { ...raw, rows: deduped.rows };
console.log(`${raw.rows.length} rows read, ${deduped.duplicatesDropped} exact duplicates dropped before splitting`);
const isPositive = labelMatcher(values.positive!);
const labels = Uint8Array.from(table.rows, (r) => (isPositive(r[values.label!] ?? '') ? 1 : 0));
const categorical = values.categorical ? values.categorical.split(',') : [];
const aucs: number[] = [];

for (let s = 0; s < Number(values.splits); s++) {
  const seed = Number(values.seed) + s;
  const split = stratifiedSplit(labels, { validation: 0, test: 0.2 }, seed);
  const part = (idx: number[]): CsvTable => ({ ...table, rows: idx.map((i) => table.rows[i]) });
  const trainPart = part(split.train);
  const holdout = part(split.test);

  const storeDir = mkdtempSync(join(tmpdir(), 'evaluate-'));
  const store = new ModelStore(storeDir);
  const result = await trainFromTable(trainPart, { label: values.label!, positive: values.positive!, categorical, seed });
  const id = await saveTrainedVersion(store, result, { id: 'holdout-eval', categorical });
  result.model.dispose();

  const app = await buildApp(loadConfig({ MODEL_STORE: storeDir, LOG_LEVEL: 'silent', BATCH_MAX_INSTANCES: '10000' }));
  const spec = app.services.models.active!.spec;
  const rows = holdout.rows.filter((r) => (r[values.label!] ?? '').trim() !== '');
  const instances = rows.map((r) => ({
    features: Object.fromEntries(spec.features.map((f) => [f.name, parseCell(f.type, r[f.name])])),
  }));
  const probs: number[] = [];
  for (let i = 0; i < instances.length; i += 1000) {
    const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: instances.slice(i, i + 1000) } });
    if (res.statusCode !== 200) throw new Error(`batch failed: ${res.statusCode} ${res.body.slice(0, 500)}`);
    for (const p of res.json().predictions) probs.push(p.probability);
  }
  const y = rows.map((r) => (isPositive(r[values.label!]) ? 1 : 0));
  const m = evaluate(y, probs, spec.threshold);
  aucs.push(m.auc);
  console.log(
    `split seed ${seed}: trained on ${trainPart.rows.length} rows (${id}), scored ${rows.length} unseen rows via /v1/predict/batch: ` +
      `AUC ${m.auc.toFixed(4)}  F1 ${m.f1.toFixed(4)}  precision ${m.precision.toFixed(4)}  recall ${m.recall.toFixed(4)}  Brier ${m.brier.toFixed(4)}  threshold ${m.threshold}`,
  );
  await app.close();
  rmSync(storeDir, { recursive: true, force: true });
}
if (aucs.length > 1) console.log(`mean AUC over ${aucs.length} splits: ${(aucs.reduce((a, b) => a + b, 0) / aucs.length).toFixed(4)} (min ${Math.min(...aucs).toFixed(4)})`);
