import { tf } from './backend.js';
import { MicroBatcher } from './micro-batcher.js';
import { compileDenseChain, disposeDenseChain, runDenseChain, type DenseStep } from './dense-chain.js';
import { WasmDenseRunner } from './wasm-dense.js';
import { DenseChainGradient } from './dense-gradient.js';
import { Encoder } from '../preprocessing/transform.js';
import type { FeatureSpec } from '../preprocessing/feature-spec.js';
import { assignPersona, type Personas } from '../segments/personas.js';

/** Rows the direct WASM path takes per call (the batch route scores in chunks of this size). */
export const DIRECT_ROWS = 4096;

/** Row buffers kept for reuse: more than the requests one process has in flight at once. */
const MAX_FREE_ROWS = 1024;

/**
 * One model version in memory: weights, its feature spec and encoder, and its own micro-batcher
 * (so a batch never mixes versions). Reference-counted so a swapped-out version is disposed only
 * after the requests that started on it have finished.
 */
export class LoadedModel {
  readonly encoder: Encoder;
  readonly batcher: MicroBatcher;
  /** A request's encoded row, when nothing reads it after an await (see Scorer): no allocation per request. */
  readonly scratchRow: Float32Array;
  private readonly freeRows: Float32Array[] = [];
  private refs = 0;
  private retired = false;
  private disposed = false;
  private readonly chain: DenseStep[] | null;
  /** The chain as direct WASM kernel calls, for calls of up to its capacity (WASM backend only). */
  private readonly runner: WasmDenseRunner | null;
  /** One answer object per persona, shared by every prediction (serialized, never mutated). */
  private readonly personaRefs: readonly { id: number; label: string }[];

  constructor(
    readonly id: string,
    readonly spec: FeatureSpec,
    private readonly model: tf.LayersModel,
    batching: { maxBatch: number; maxWaitMs: number; onBatch?: (rows: number) => void },
    /** Learned personas stored with the version (null for imported models). */
    readonly personas: Personas | null,
    /**
     * What this version's score-cache keys are made from: its id plus a digest of its manifest
     * (see cacheScope in src/cache/cache-scope.ts). Ids are reusable, so the id alone would let a
     * version registered again under a deleted id be answered with the old version's scores.
     */
    readonly cacheScope: string,
  ) {
    this.encoder = new Encoder(spec);
    const outShape = model.outputs[0]?.shape;
    if (model.inputs.length !== 1 || model.inputs[0].shape[1] !== this.encoder.width) {
      throw new Error(
        `model input width ${model.inputs[0]?.shape[1]} does not match the feature spec's encoded width ${this.encoder.width}`,
      );
    }
    if (outShape?.[1] !== 1) throw new Error(`model must output one probability per row, output shape is ${JSON.stringify(outShape)}`);
    this.scratchRow = new Float32Array(this.encoder.width);
    this.chain = compileDenseChain(model);
    this.runner = this.chain ? WasmDenseRunner.create(this.chain, this.encoder.width, Math.max(batching.maxBatch, DIRECT_ROWS)) : null;
    this.personaRefs = (personas?.centroids ?? []).map((_, id) => Object.freeze({ id, label: personas?.personas[id]?.label ?? `persona ${id + 1}` }));
    this.batcher = new MicroBatcher(this.encoder.width, (data, rows) => this.predictSync(data, rows), batching);
  }

  /** Scores an encoded matrix in one model call. */
  predictSync(data: Float32Array, rows: number): Float32Array {
    if (this.disposed) throw new Error(`model ${this.id} is disposed`);
    if (this.runner && rows <= this.runner.capacity) return this.runner.run(data, rows);
    // Explicit disposal instead of tf.tidy: tidy's scope bookkeeping and its walk over the
    // returned array cost more than the whole model call for the small batches of the request path.
    const x = this.chain ? tf.tensor3d(data, [1, rows, this.encoder.width]) : tf.tensor2d(data, [rows, this.encoder.width]);
    let out: tf.Tensor | undefined;
    try {
      out = this.chain ? runDenseChain(this.chain, x as tf.Tensor3D) : (this.model.predictOnBatch(x) as tf.Tensor);
      return out.dataSync() as Float32Array;
    } finally {
      x.dispose();
      out?.dispose();
    }
  }

  /**
   * A row buffer for a request that reads its row after an await (L2 lookup, explanation); hand
   * it back with giveRow once nothing reads it any more. Reused, so busy traffic allocates none.
   */
  takeRow(): Float32Array {
    return this.freeRows.pop() ?? new Float32Array(this.encoder.width);
  }

  giveRow(row: Float32Array): void {
    if (this.freeRows.length < MAX_FREE_ROWS) this.freeRows.push(row);
  }

  /** Nearest persona for an encoded row, or null when the version has none. */
  personaOf(row: Float32Array, offset = 0): { id: number; label: string } | null {
    if (!this.personas) return null;
    return this.personaRefs[assignPersona(this.personas.centroids, row, offset)];
  }

  /** Runs `fn` with the model pinned; retire() waits for pinned work before freeing tensors. */
  async use<T>(fn: (m: LoadedModel) => Promise<T>): Promise<T> {
    this.pin();
    try {
      return await fn(this);
    } finally {
      this.unpin();
    }
  }

  /** Pins the model for work in flight; every pin() must be followed by one unpin(). */
  pin(): void {
    this.refs++;
  }

  unpin(): void {
    this.refs--;
    if (this.retired && this.refs === 0) this.dispose();
  }

  retire(): void {
    this.retired = true;
    if (this.refs === 0) {
      this.batcher.flush();
      this.dispose();
    }
  }

  get inFlight(): number {
    return this.refs;
  }

  private gradient: DenseChainGradient | null | undefined;

  /** Plain-arithmetic path gradients for sigmoid dense chains (explanations); null otherwise. */
  get chainGradient(): DenseChainGradient | null {
    if (this.gradient === undefined) this.gradient = this.chain && DenseChainGradient.supports(this.chain) ? new DenseChainGradient(this.chain) : null;
    return this.gradient;
  }

  /**
   * How model calls run: direct WASM kernel calls, fused dense-chain ops through tfjs-core
   * (other backends, or WASM internals not as expected), or the Layers API (not a dense chain).
   */
  get inferencePath(): 'wasm-direct' | 'fused-chain' | 'layers' {
    return this.runner ? 'wasm-direct' : this.chain ? 'fused-chain' : 'layers';
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** For explanations: the underlying layers model (read-only use). */
  get layersModel(): tf.LayersModel {
    return this.model;
  }

  private dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.runner?.dispose();
    disposeDenseChain(this.chain);
    this.model.dispose();
  }
}
