import { hash } from 'node:crypto';
import type { ScoreCache } from '../cache/score-cache.js';
import type { ModelManager } from '../registry/model-manager.js';
import { DIRECT_ROWS, type LoadedModel } from './loaded-model.js';
import { coerceFeatures } from '../preprocessing/coerce.js';
import type { FeatureValues } from '../preprocessing/feature-spec.js';
import { ValidationError, unavailable, type FieldIssue } from '../lib/errors.js';
import { explain, type Explanation } from './explain.js';
import { cutText } from '../lib/cut-text.js';

export interface PredictInstance {
  userId?: string;
  sessionId?: string;
  features: unknown;
}

export interface Prediction {
  probability: number;
  label: boolean;
  threshold: number;
  modelVersion: string;
  cached: boolean;
  warnings: string[];
  persona: { id: number; label: string } | null;
  explanation?: Explanation;
}

/** What is known after scoring one instance; listeners (segments, shadow) run off the request path. */
export interface ScoredEvent {
  userId?: string;
  values: FeatureValues;
  prediction: Prediction;
  model: LoadedModel;
  /** The row's score-cache key; '' for batch rows and for rows without a userId that the cache did not admit. */
  cacheKey: string;
}

export type ModelRouter = (userId: string | undefined) => LoadedModel | null;

/**
 * Who asked for a batch: `request` rows are served predictions (counted by onCounted, handed to
 * onScored listeners); `job` rows (audience uploads, re-scores) are background work, tallied in
 * Scorer.jobRows only, and never handed to listeners (the job records memberships itself, and a
 * shadow compares served predictions only).
 */
export type PredictSource = 'request' | 'job';

/** Request-path orchestration: validate → encode → cache → micro-batched model call. */
export class Scorer {
  private listeners: ((e: ScoredEvent) => void)[] = [];
  private counters: ((modelVersion: string, cached: boolean, n: number) => void)[] = [];
  /** Rows scored for background jobs, by model version: cumulative, read by /metrics (not served predictions). */
  readonly jobRows = new Map<string, number>();
  router: ModelRouter;

  constructor(
    private readonly manager: ModelManager,
    private readonly cache: ScoreCache,
  ) {
    this.router = () => manager.active;
  }

  onScored(listener: (e: ScoredEvent) => void): void {
    this.listeners.push(listener);
  }

  /** Called once per answer (single) or once per batch request with its row count (for metrics); never for job rows. */
  onCounted(counter: (modelVersion: string, cached: boolean, n: number) => void): void {
    this.counters.push(counter);
  }

  private count(modelVersion: string, cached: boolean, n: number): void {
    for (const c of this.counters) c(modelVersion, cached, n);
  }

  private pick(userId: string | undefined): LoadedModel {
    const model = this.router(userId);
    if (!model) throw unavailable('no model is loaded');
    return model;
  }

  /** Always settles as a promise (a missing model is a rejection, not a throw). */
  predictOne(instance: PredictInstance, issuesSoFar: FieldIssue[] = [], opts: { explain?: boolean } = {}): Promise<Prediction> {
    let model: LoadedModel;
    try {
      model = this.pick(instance.userId);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.scoreOne(model, instance, issuesSoFar, opts);
  }

  private async scoreOne(model: LoadedModel, instance: PredictInstance, issuesSoFar: FieldIssue[], opts: { explain?: boolean }): Promise<Prediction> {
    // Pinned until answered, so a swap never disposes the weights under this request.
    model.pin();
    // A row read after an await needs a buffer of its own (other requests reuse scratchRow).
    const useL2 = this.cache.l2Enabled;
    const ownRow = opts.explain === true || useL2;
    const vector = ownRow ? model.takeRow() : model.scratchRow;
    try {
      const { values, oov, issues } = readFeatures(model, instance.features, vector, 0);
      if (issues.length || issuesSoFar.length) throw new ValidationError([...issuesSoFar, ...issues]);
      // A row the cache does not admit (first sighting) skips both levels and the store. Its key is
      // still computed for a user's request: the user's record keeps it, so erasing the user also
      // deletes that score wherever it is cached (another replica, or before this one forgot it).
      const admitted = this.cache.admits(vector);
      const key = admitted || instance.userId ? cacheKey(model.cacheScope, vector) : '';
      const persona = model.personaOf(vector);
      let probability = admitted ? this.cache.getL1(key) : undefined;
      if (probability === undefined && admitted && useL2) probability = await this.cache.getL2(key);
      const cached = probability !== undefined;
      if (probability === undefined) {
        // The batcher copies the row synchronously, so scratchRow is free again once score() returns.
        probability = await model.batcher.score(vector);
        if (admitted) this.cache.set(key, probability);
      }
      const prediction = this.toPrediction(model, probability, cached, oov, values, persona);
      this.count(model.id, cached, 1);
      this.emit({ userId: instance.userId, values, prediction, model, cacheKey: key });
      if (opts.explain) prediction.explanation = explain(model, values, vector, probability);
      return prediction;
    } finally {
      if (ownRow) model.giveRow(vector);
      model.unpin();
    }
  }

  /**
   * Scores many instances with one model call per chunk; every invalid instance is reported.
   * Batch rows bypass the score cache: they are bulk work whose rows rarely repeat, and hashing
   * plus caching each row would cost more than scoring it.
   */
  async predictMany(
    instances: PredictInstance[],
    issuesSoFar: FieldIssue[] = [],
    opts: {
      /** `active`: the active model even during a canary (background jobs whose results feed segments). */
      model?: 'routed' | 'active';
      /** `job`: background rows, not served predictions: not counted as predictions, not emitted to listeners. */
      source?: PredictSource;
    } = {},
  ): Promise<{ modelVersion: string; predictions: Prediction[] }> {
    const served = opts.source !== 'job';
    let picked: LoadedModel;
    if (opts.model === 'active') {
      const active = this.manager.active;
      if (!active) throw unavailable('no model is loaded');
      picked = active;
    } else picked = this.pick(undefined);
    // One model version per batch request, so every row is comparable.
    return picked.use(async (model) => {
      const issues = issuesSoFar.slice();
      const n = instances.length;
      const rows: FeatureValues[] = new Array(n);
      const w = model.encoder.width;
      const matrix = new Float32Array(n * w);
      const oov: (string[] | undefined)[] = new Array(n);
      for (let i = 0; i < n; i++) {
        // Encoded while the row is still in cache; the work is wasted only when the request is refused.
        const r = readFeatures(model, instances[i].features, matrix, i * w);
        rows[i] = r.values;
        oov[i] = r.oov;
        // Paths are rewritten only for bad rows: building a prefix for every row costs more than coercing it.
        for (const issue of r.issues) issues.push({ path: `instances[${i}].${issue.path}`, message: issue.message });
      }
      if (issues.length) throw new ValidationError(inInstanceOrder(issues));
      const CHUNK = DIRECT_ROWS;
      const probs = new Float32Array(n);
      for (let start = 0; start < n; start += CHUNK) {
        const end = Math.min(n, start + CHUNK);
        probs.set(model.predictSync(matrix.subarray(start * w, end * w), end - start), start);
      }
      const predictions: Prediction[] = new Array(n);
      for (let i = 0; i < n; i++) {
        const prediction = this.toPrediction(model, probs[i], false, oov[i], rows[i], model.personaOf(matrix, i * w));
        predictions[i] = prediction;
        if (served) this.emit({ userId: instances[i].userId, values: rows[i], prediction, model, cacheKey: '' });
      }
      if (served) this.count(model.id, false, n);
      else this.jobRows.set(model.id, (this.jobRows.get(model.id) ?? 0) + n);
      return { modelVersion: model.id, predictions };
    });
  }

  private toPrediction(model: LoadedModel, probability: number, cached: boolean, oov: string[] | undefined, values: FeatureValues, persona: Prediction['persona']): Prediction {
    const threshold = model.spec.threshold;
    return {
      probability,
      label: probability >= threshold,
      threshold,
      modelVersion: model.id,
      cached,
      warnings: oov ? oov.map((name) => `${name}: category ${shortJson(values[name])} is not in the model's vocabulary (unseen or rare in training); mapped to the out-of-vocabulary bucket`) : [],
      persona,
    };
  }

  private emit(e: ScoredEvent): void {
    if (this.listeners.length === 0) return;
    for (const l of this.listeners) l(e);
  }
}

const NO_ISSUES: readonly FieldIssue[] = Object.freeze([]);

/**
 * Typed values of one instance, encoded into `out` at `at`: by the compiled reader when the
 * features are clean, else by coerceFeatures, whose issues (if any) are returned for the caller
 * to refuse the request with.
 */
function readFeatures(model: LoadedModel, features: unknown, out: Float32Array, at: number): { values: FeatureValues; oov: string[] | undefined; issues: readonly FieldIssue[] } {
  const read = model.encoder.readInto(features, out, at);
  if (read) return { values: read.values, oov: read.oov, issues: NO_ISSUES };
  const { values, issues } = coerceFeatures(model.spec, features);
  return { values, oov: issues.length ? undefined : model.encoder.encodeInto(values, out, at), issues };
}

/** Cache scope → its UTF-8 bytes with a length prefix (scopes are few; encoded once). */
const scopeBytes = new Map<string, Uint8Array>();
let keyInput = new Uint8Array(1024);

/**
 * The score-cache key of an encoded row: sha1 over (scope, row bytes) as base64url, where the
 * scope is the model's LoadedModel.cacheScope (version id + manifest digest, so a version id
 * registered again with other weights never reads the old version's scores, while the same
 * version on another replica or after a restart has the same keys). One flat 27-character string
 * straight from the hash, with no concatenation: the key is hashed again by the L1 map and stored
 * there, so a short flat string is cheaper than a version-prefixed one.
 */
export function cacheKey(scope: string, vector: Float32Array): string {
  let prefix = scopeBytes.get(scope);
  if (!prefix) {
    const utf8 = new TextEncoder().encode(scope);
    prefix = new Uint8Array(2 + utf8.length);
    new DataView(prefix.buffer).setUint16(0, utf8.length);
    prefix.set(utf8, 2);
    if (scopeBytes.size > 1000) scopeBytes.clear();
    scopeBytes.set(scope, prefix);
  }
  const length = prefix.length + vector.byteLength;
  if (keyInput.length < length) keyInput = new Uint8Array(length * 2);
  keyInput.set(prefix, 0);
  keyInput.set(new Uint8Array(vector.buffer, vector.byteOffset, vector.byteLength), prefix.length);
  return hash('sha1', keyInput.subarray(0, length), 'base64url');
}

/** A value as JSON for a message, cut to 64 characters: a request may send a megabyte-long category. */
function shortJson(v: unknown): string {
  const json = JSON.stringify(v);
  return json.length <= 64 ? json : `${cutText(json, 61)}...`;
}

/** Issues sorted by the instance they name (`instances[i]…`; others first), each instance's in the order found. */
function inInstanceOrder(issues: FieldIssue[]): FieldIssue[] {
  const index = (i: FieldIssue) => Number(/^instances\[(\d+)\]/.exec(i.path)?.[1] ?? -1);
  return issues.map((issue, at) => ({ issue, at, n: index(issue) })).sort((a, b) => a.n - b.n || a.at - b.at).map((x) => x.issue);
}
