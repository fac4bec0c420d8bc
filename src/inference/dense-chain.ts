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
 * returns null and is served by model.predictOnBatch.
 */
export function compileDenseChain(model: tf.LayersModel): DenseStep[] | null {
  if (model.inputs.length !== 1 || model.outputs.length !== 1) return null;
  const steps: DenseStep[] = [];
  // Every tensor kept so far: kept tensors escape tidy, so a model declined part-way (or a throw)
  // must free them here, or each load of it would leave the earlier layers' copies behind.
  const kept: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => (kept.push(t), tf.keep(t));
  let done = false;
  try {
    for (const layer of flattenLayers(model)) {
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
    done = steps.length > 0;
    return done ? steps : null;
  } finally {
    if (!done) for (const t of kept) t.dispose();
  }
}

function flattenLayers(model: tf.LayersModel): tf.layers.Layer[] {
  const out: tf.layers.Layer[] = [];
  for (const l of model.layers) {
    const nested = (l as unknown as { layers?: tf.layers.Layer[] }).layers;
    if (nested && (l.getClassName() === 'Sequential' || l.getClassName() === 'Model' || l.getClassName() === 'Functional')) out.push(...flattenLayers(l as unknown as tf.LayersModel));
    else out.push(l);
  }
  // A functional graph is only a chain when each layer feeds the next one.
  if (model.getClassName() !== 'Sequential') {
    for (const l of out) if ((l.inboundNodes?.[0]?.inboundLayers?.length ?? 0) > 1) return [{ getClassName: () => 'Merge' } as unknown as tf.layers.Layer];
  }
  return out;
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

