/**
 * Retraining worker (worker_threads entry). Runs the same pipeline as the CLI —
 * readCsvFile → trainFromTable → saveTrainedVersion — in its own isolate, so training never
 * blocks request handling. Talks to the JobManager only through the messages below.
 *
 * Started by src/training/job-manager.ts: from TypeScript sources with `--import tsx`, from dist plainly.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { basename } from 'node:path';
import { lowerThreadPriority, type ThreadPriority } from './thread-priority.js';
import { Pacer } from '../lib/pacer.js';
import { initBackend, tf, type BackendPreference } from '../inference/backend.js';
import { readCsvFile } from '../dataset/read-csv.js';
import { ModelStore, newVersionId } from '../registry/model-store.js';
import { loadLayersModelFromDir } from '../registry/keras-topology.js';
import { parseCsvRow } from '../preprocessing/coerce.js';
import { Encoder } from '../preprocessing/transform.js';
import type { FeatureSpec } from '../preprocessing/feature-spec.js';
import type { CleaningReport } from '../dataset/prepare.js';
import { trainFromTable, type TrainResult } from './train.js';
import { saveTrainedVersion } from './save-version.js';
import { rocAuc, type ClassificationMetrics } from './metrics.js';
import { predictMatrix, type Hyperparameters } from './mlp.js';

export type PromoteMode = 'never' | 'if-better' | 'always';

/** Default AUC margin a candidate must beat the active model by for promote "if-better". */
export const DEFAULT_PROMOTE_MARGIN = 0.002;

export interface WorkerInput {
  jobId: string;
  /** Absolute path of the CSV (already checked to be inside DATA_DIR). */
  datasetPath: string;
  /** Recorded in the version card (file name, or "upload:<id>"). */
  datasetName?: string;
  label: string;
  positive: string;
  categorical?: string[];
  /** Columns left out of the features (as the CLI's --exclude). */
  exclude?: string[];
  hyperparameters?: Partial<Pick<Hyperparameters, 'epochs' | 'hidden' | 'l2' | 'learningRate' | 'batchSize' | 'patience'>>;
  seed?: number;
  storeRoot: string;
  /** The version serving when the job started (compared against for "if-better"). */
  activeVersionId?: string | null;
  promote: PromoteMode;
  /** Candidate AUC must be ≥ active AUC + margin ("if-better"); default DEFAULT_PROMOTE_MARGIN. */
  promoteMargin?: number;
  backend?: BackendPreference;
  /** Share of one core the training may use (TRAINING_CPU_SHARE). */
  cpuShare?: number;
}

/** Test-split headline of the new version (the figures on its card, plus the confusion rates). */
export interface HeadlineMetrics {
  n: number;
  positives: number;
  auc: number | null;
  f1: number;
  brier: number;
  logLoss: number;
  accuracy: number;
  precision: number;
  recall: number;
  threshold: number;
}

/** Candidate vs active on the candidate's held-out test rows, each scored through its own feature spec. */
export interface PromotionComparison {
  activeVersion: string | null;
  rows: number;
  candidateAuc: number | null;
  activeAuc: number | null;
  margin: number;
  promote: boolean;
  reason: string;
}

export type WorkerMessage =
  | { type: 'started'; backend: string; priority: ThreadPriority }
  | { type: 'progress'; epoch: number; loss: number | null; validationAuc: number | null }
  | { type: 'log'; message: string }
  /** Sent just before the version is written, so a cancel can remove exactly what this job left behind. */
  | { type: 'saving'; versionId: string }
  | { type: 'result'; versionId: string; metrics: HeadlineMetrics; cleaning: CleaningReport; comparison?: PromotionComparison }
  | { type: 'error'; message: string };

const finite = (x: number): number | null => (Number.isFinite(x) ? x : null);

export function headlineOf(m: ClassificationMetrics): HeadlineMetrics {
  return {
    n: m.n,
    positives: m.positives,
    auc: finite(m.auc),
    f1: m.f1,
    brier: m.brier,
    logLoss: m.logLoss,
    accuracy: m.accuracy,
    precision: m.precision,
    recall: m.recall,
    threshold: m.threshold,
  };
}

/** Probabilities for raw CSV rows through a version's own feature spec (parse → impute/encode → predict). */
export async function scoreRows(model: tf.LayersModel, spec: FeatureSpec, rows: Record<string, string>[]): Promise<Float32Array> {
  const encoder = new Encoder(spec);
  const width = model.inputs[0]?.shape[1];
  if (width !== encoder.width) throw new Error(`model expects ${String(width)} inputs but its feature spec encodes ${encoder.width}`);
  const data = encoder.encodeRows(rows.map((r) => parseCsvRow(spec, r)));
  return predictMatrix(model, { data, rows: rows.length, cols: encoder.width });
}

/**
 * The "if-better" decision: both models score the candidate's held-out test rows (never seen in
 * its training or calibration); promote only if candidate AUC ≥ active AUC + margin.
 */
export async function compareWithActive(
  result: Pick<TrainResult, 'model' | 'spec' | 'testSet'>,
  store: ModelStore,
  activeId: string | null | undefined,
  datasetColumns: string[],
  margin: number,
): Promise<PromotionComparison> {
  const rows = result.testSet.rows;
  const y = result.testSet.labels;
  const candidateAuc = finite(rocAuc(y, await scoreRows(result.model, result.spec, rows)));
  const base = { activeVersion: activeId ?? null, rows: rows.length, candidateAuc, activeAuc: null, margin };
  if (candidateAuc === null) {
    return { ...base, promote: false, reason: 'AUC is undefined on the held-out rows (a single class): nothing to compare' };
  }
  if (!activeId) return { ...base, promote: true, reason: 'no active version to compare against' };
  if (!store.has(activeId)) return { ...base, promote: false, reason: `active version ${activeId} is not in the store` };

  let activeSpec: FeatureSpec;
  try {
    store.verify(activeId);
    activeSpec = store.spec(activeId);
  } catch (err) {
    return { ...base, promote: false, reason: `active version ${activeId} cannot be read: ${(err as Error).message}` };
  }
  const columns = new Set(datasetColumns);
  const missing = activeSpec.features.map((f) => f.name).filter((n) => !columns.has(n));
  if (missing.length) {
    return {
      ...base,
      promote: false,
      reason: `active version ${activeId} uses features missing from the dataset (${missing.join(', ')}): models cannot be compared on the same rows`,
    };
  }

  let activeAuc: number | null;
  let model: tf.LayersModel | undefined;
  try {
    model = await loadLayersModelFromDir(store.dir(activeId));
    activeAuc = finite(rocAuc(y, await scoreRows(model, activeSpec, rows)));
  } catch (err) {
    return { ...base, promote: false, reason: `active version ${activeId} could not score the held-out rows: ${(err as Error).message}` };
  } finally {
    model?.dispose();
  }
  if (activeAuc === null) return { ...base, promote: false, reason: 'active AUC is undefined on the held-out rows' };
  const promote = candidateAuc >= activeAuc + margin;
  const fmt = (x: number) => x.toFixed(4);
  return {
    ...base,
    activeAuc,
    promote,
    reason: promote
      ? `candidate AUC ${fmt(candidateAuc)} ≥ active AUC ${fmt(activeAuc)} + margin ${margin}`
      : `candidate AUC ${fmt(candidateAuc)} < active AUC ${fmt(activeAuc)} + margin ${margin}`,
  };
}

async function run(input: WorkerInput, post: (m: WorkerMessage) => void): Promise<void> {
  // Serving predictions on the event loop wins the CPU whenever both want it (see thread-priority.ts).
  const priority = lowerThreadPriority();
  const backend = await initBackend(input.backend ?? 'auto'); // a worker is a separate isolate: its own tfjs
  post({ type: 'started', backend, priority });
  const pacer = new Pacer(input.cpuShare ?? 1);
  const table = readCsvFile(input.datasetPath);
  const categorical = input.categorical ?? [];
  const result = await trainFromTable(
    table,
    { label: input.label, positive: input.positive, categorical, exclude: input.exclude, seed: input.seed, hyperparameters: input.hyperparameters },
    {
      pacer,
      onLog: (message) => post({ type: 'log', message }),
      onEpoch: (r) => post({ type: 'progress', epoch: r.epoch, loss: finite(r.loss), validationAuc: finite(r.validationAuc) }),
    },
  );
  const store = new ModelStore(input.storeRoot);
  const comparison =
    input.promote === 'if-better'
      ? await compareWithActive(result, store, input.activeVersionId, table.columns, input.promoteMargin ?? DEFAULT_PROMOTE_MARGIN)
      : undefined;
  // Random tail: two replicas retraining on the same data in the same second must not collide
  // (a failed write's cleanup would then remove the other job's version).
  const versionId = newVersionId(result.dataFingerprint);
  post({ type: 'saving', versionId });
  await saveTrainedVersion(store, result, { id: versionId, dataset: input.datasetName ?? basename(input.datasetPath), categorical, pacer });
  result.model.dispose();
  post({ type: 'result', versionId, metrics: headlineOf(result.metrics.test), cleaning: result.cleaning, comparison });
}

if (parentPort) {
  const port = parentPort;
  const post = (m: WorkerMessage) => port.postMessage(m);
  run(workerData as WorkerInput, post).catch((err: unknown) => {
    post({ type: 'error', message: err instanceof Error ? err.message : String(err) });
  });
}
