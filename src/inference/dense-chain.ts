import { tf } from './backend.js';

type FusedActivation = 'linear' | 'relu' | 'sigmoid' | 'elu' | 'relu6';
const FUSABLE = new Set<string>(['linear', 'relu', 'sigmoid', 'elu', 'relu6']);
/** Layers that are the identity at inference time. */
const PASS_THROUGH = new Set(['InputLayer', 'Dropout', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'ActivityRegularization']);

export interface DenseStep {
  kernel: tf.Tensor2D;
  /** The kernel as [1, in, out]: the shape the _FusedMatMul kernel computes with. */
  batchKernel: tf.Tensor3D;
  bias: tf.Tensor1D | undefined;
  activation: FusedActivation;
}

/**
 * The request path's fast lane: a model that is a plain chain of Dense layers (what the trainer
 * writes, and most tabular Keras MLPs) runs as fused matMul+bias+activation ops on the same backend,
 * skipping the Layers API's per-call bookkeeping, which dominates for small batches. Anything else
 * returns null and is served by model.predictOnBatch. A compiled chain is checked once against
 * model.predict on probe rows, so a graph the walk below misreads is declined, not served wrong.
 */
export function compileDenseChain(model: tf.LayersModel): DenseStep[] | null {
  const layers = chainLayers(model);
  const width = model.inputs[0]?.shape[1];
  if (!layers || typeof width !== 'number') return null;
  const steps: DenseStep[] = [];
  // Every tensor kept so far: kept tensors escape tidy, so a model declined part-way (or a throw)
  // must free them here, or each load of it would leave the earlier layers' copies behind.
  const kept: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => (kept.push(t), tf.keep(t));
  let done = false;
  try {
    for (const layer of layers) {
      const cls = layer.getClassName();
      if (PASS_THROUGH.has(cls)) continue;
      if (cls !== 'Dense') return null;
      const config = layer.getConfig() as { activation?: string; use_bias?: boolean; useBias?: boolean };
      const activation = String(config.activation ?? 'linear');
      if (!FUSABLE.has(activation)) return null;
      const weights = layer.getWeights();
      const kernel = keep(weights[0].clone() as tf.Tensor2D);
      steps.push({
        kernel,
        batchKernel: keep(kernel.reshape([1, ...kernel.shape]) as tf.Tensor3D),
        bias: weights[1] ? keep(weights[1].clone() as tf.Tensor1D) : undefined,
        activation: activation as FusedActivation,
      });
    }
    done = steps.length > 0 && matchesModel(model, steps, width);
    return done ? steps : null;
  } finally {
    if (!done) for (const t of kept) t.dispose();
  }
}

type Container = tf.layers.Layer & { inputs: tf.SymbolicTensor[]; outputs: tf.SymbolicTensor[]; layers: tf.layers.Layer[] };
const isContainer = (l: tf.layers.Layer): l is Container => Array.isArray((l as Partial<Container>).layers) && Array.isArray((l as Partial<Container>).outputs);

/**
 * The model's layers in call order when its graph is a true chain: walking back from the single
 * output, every call takes one rank-2 tensor from the call before, ends at the single input, uses
 * every layer of the model and calls no layer twice (a reused layer appears once in model.layers,
 * which is how a shared Dense used to be served once). Nested Sequential/Functional models are
 * walked the same way. Null for anything else.
 */
function chainLayers(model: Container | tf.LayersModel, seen = new Set<tf.layers.Layer>()): tf.layers.Layer[] | null {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) return null;
  const input = model.inputs[0];
  const order: tf.layers.Layer[] = [];
  const visited = new Set<tf.layers.Layer>();
  let t = model.outputs[0];
  while (t !== input) {
    const layer = t.sourceLayer;
    const node = layer?.inboundNodes[t.nodeIndex];
    if (!node || node.inputTensors.length !== 1 || node.outputTensors.length !== 1 || seen.has(layer)) return null;
    seen.add(layer);
    visited.add(layer);
    const inner = isContainer(layer) ? chainLayers(layer, seen) : [layer];
    if (!inner) return null;
    order.unshift(...inner);
    t = node.inputTensors[0];
    if (t.shape.length !== 2) return null;
  }
  // A layer of the model off the walked path (a dead branch, or one the walk could not see) is not a chain.
  for (const l of model.layers) if (!visited.has(l) && l.getClassName() !== 'InputLayer') return null;
  return order;
}

const PROBE_ROWS = 8;

/** Whether the chain gives model.predict's outputs on deterministic probe rows of mixed scale. */
function matchesModel(model: tf.LayersModel, steps: DenseStep[], width: number): boolean {
  let seed = 0x2545f491;
  const x = Float32Array.from({ length: PROBE_ROWS * width }, (_, i) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const scale = [0.1, 1, 4, 16][Math.floor(i / width) % 4]; // several scales, so some units switch on for each layer
    return ((seed / 2 ** 32) * 2 - 1) * scale;
  });
  let want: Float32Array;
  let got: Float32Array;
  try {
    want = tf.tidy(() => (model.predict(tf.tensor2d(x, [PROBE_ROWS, width])) as tf.Tensor).dataSync() as Float32Array);
    const input = tf.tensor3d(x, [1, PROBE_ROWS, width]);
    let out: tf.Tensor | undefined;
    try {
      out = runDenseChain(steps, input);
      got = out.dataSync() as Float32Array;
    } finally {
      input.dispose();
      out?.dispose();
    }
  } catch {
    return false;
  }
  return want.length === got.length && got.every((g, i) => Math.abs(g - want[i]) <= 1e-5 + 1e-4 * Math.abs(want[i]));
}

/**
 * Runs the chain on a [1, rows, in] input. Each layer goes straight to the backend's _FusedMatMul
 * kernel, as tf.fused.matMul itself does after reshaping to 3-D, but without the op's gradient
 * bookkeeping (customGrad), which is half the cost of a small call. Intermediate activations are
 * disposed; the input and the returned [1, rows, out] output are the caller's.
 */
export function runDenseChain(steps: DenseStep[], x: tf.Tensor3D): tf.Tensor3D {
  const engine = tf.engine();
  let h = x;
  for (const s of steps) {
    const inputs = s.bias ? { a: h, b: s.batchKernel, bias: s.bias } : { a: h, b: s.batchKernel };
    const attrs = { transposeA: false, transposeB: false, activation: s.activation, leakyreluAlpha: 0 };
    const next = engine.runKernel(tf._FusedMatMul, inputs as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor3D;
    if (h !== x) h.dispose();
    h = next;
  }
  return h;
}

export function disposeDenseChain(steps: DenseStep[] | null): void {
  for (const s of steps ?? []) {
    s.kernel.dispose();
    s.batchKernel.dispose();
    s.bias?.dispose();
  }
}

