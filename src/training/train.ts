import { createHash } from 'node:crypto';
import { tf } from '../inference/backend.js';
import { prepareDataset, type CleaningReport, type PrepareOptions } from '../dataset/prepare.js';
import type { CsvTable } from '../dataset/read-csv.js';
import { fitFeatureSpec, typedRows, unfittedColumns } from '../preprocessing/fit.js';
import { Encoder } from '../preprocessing/transform.js';
import type { FeatureSpec } from '../preprocessing/feature-spec.js';
import { bestF1Threshold, evaluate, type ClassificationMetrics } from './metrics.js';
import { DEFAULT_HYPERPARAMETERS, predictMatrix, trainMlp, type EpochReport, type Hyperparameters, type Matrix } from './mlp.js';
import { fitPlatt, foldCalibrationIntoOutput } from './calibrate.js';
import { stratifiedSplit } from './split.js';
import type { Pacer } from '../lib/pacer.js';

export interface TrainOptions extends PrepareOptions {
  seed?: number;
  hyperparameters?: Partial<Hyperparameters>;
  validationFraction?: number;
  testFraction?: number;
}

export interface TrainResult {
  model: tf.LayersModel;
  spec: FeatureSpec;
  metrics: { test: ClassificationMetrics; validation: ClassificationMetrics };
  cleaning: CleaningReport;
  history: EpochReport[];
  bestEpoch: number;
  hyperparameters: Hyperparameters;
  seed: number;
  dataFingerprint: string;
  split: { train: number; validation: number; test: number };
  calibration: { a: number; b: number };
  /** Encoded training matrix, for persona clustering and profiles. */
  trainMatrix: Matrix;
  /** The test split's raw (cleaned, unencoded) rows and labels, so another model can be scored on the same rows. */
  testSet: { rows: Record<string, string>[]; labels: Uint8Array };
}

export interface TrainHooks {
  onEpoch?: (r: EpochReport) => void | Promise<void>;
  onLog?: (msg: string) => void;
  shouldStop?: () => boolean;
  /** Paces the work to a share of one core (retraining beside serving); absent = full speed. */
  pacer?: Pacer;
}

/** The whole training pipeline, shared by the CLI and the retraining worker. */
export async function trainFromTable(table: CsvTable, opts: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const seed = opts.seed ?? 42;
  const hp = { ...DEFAULT_HYPERPARAMETERS, ...opts.hyperparameters };
  await hooks.pacer?.pause();
  const data = prepareDataset(table, opts);
  for (const w of data.report.warnings ?? []) hooks.onLog?.(`warning: ${w}`);
  await hooks.pacer?.pause();
  const split = stratifiedSplit(data.labels, { validation: opts.validationFraction ?? 0.15, test: opts.testFraction ?? 0.15 }, seed);
  const pick = (idx: number[]) => idx.map((i) => data.rows[i]);
  const labelsOf = (idx: number[]) => Uint8Array.from(idx, (i) => data.labels[i]);

  const spec = fitFeatureSpec(data.columnTypes, pick(split.train), { name: opts.label, positive: opts.positive }, {
    blankSomewhere: new Set(Object.keys(data.report.blankCells)),
  });
  // Columns with values only in validation/test rows are left out of the spec too: say so.
  const cleaning: CleaningReport = { ...data.report };
  const unfitted = unfittedColumns(data.columnTypes, spec);
  if (unfitted.length) cleaning.columnsLeftOut = { ...cleaning.columnsLeftOut, ...Object.fromEntries(unfitted.map((c) => [c, 'no value in the training split'])) };
  if (cleaning.columnsLeftOut) {
    hooks.onLog?.(`left out of the features (no values): ${Object.entries(cleaning.columnsLeftOut).map(([c, why]) => `${c} (${why})`).join(', ')}`);
  }
  const encoder = new Encoder(spec);
  const matrix = (idx: number[]): Matrix => ({
    data: encoder.encodeRows(typedRows(spec, pick(idx))),
    rows: idx.length,
    cols: encoder.width,
  });
  await hooks.pacer?.pause();
  const train = { x: matrix(split.train), y: labelsOf(split.train) };
  await hooks.pacer?.pause();
  const validation = { x: matrix(split.validation), y: labelsOf(split.validation) };
  const test = { x: matrix(split.test), y: labelsOf(split.test) };
  hooks.onLog?.(
    `rows ${data.report.rowsKept} (train ${train.x.rows}, validation ${validation.x.rows}, test ${test.x.rows}), inputs ${encoder.width}`,
  );

  const { model, history, bestEpoch } = await trainMlp(train, validation, hp, seed, hooks);

  const calibration = fitPlatt(await predictMatrix(model, validation.x), validation.y);
  foldCalibrationIntoOutput(model, calibration);
  const pVal = await predictMatrix(model, validation.x);
  spec.threshold = bestF1Threshold(validation.y, pVal);
  const pTest = await predictMatrix(model, test.x);

  return {
    model,
    spec,
    metrics: { test: evaluate(test.y, pTest, spec.threshold), validation: evaluate(validation.y, pVal, spec.threshold) },
    cleaning,
    history,
    bestEpoch,
    hyperparameters: hp,
    seed,
    dataFingerprint: fingerprint(table),
    split: { train: train.x.rows, validation: validation.x.rows, test: test.x.rows },
    calibration,
    trainMatrix: train.x,
    testSet: { rows: pick(split.test), labels: test.y },
  };
}

/** sha256 over the parsed table, so the same data in another file layout matches. */
export function fingerprint(table: CsvTable): string {
  const h = createHash('sha256');
  h.update(table.columns.join(','));
  for (const r of table.rows) h.update('\n' + table.columns.map((c) => r[c]).join(','));
  return h.digest('hex');
}
