import { tf } from './backend.js';

type FusedActivation = 'linear' | 'relu' | 'sigmoid' | 'elu' | 'relu6';
const FUSABLE = new Set<string>(['linear', 'relu', 'sigmoid', 'elu', 'relu6']);
/** Layers that are the identity at inference time. */
const PASS_THROUGH = new Set(['InputLayer', 'Dropout', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'ActivityRegularization']);

export interface DenseStep {
  kernel: tf.Tensor2D;
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
  for (const layer of flattenLayers(model)) {
    const cls = layer.getClassName();
    if (PASS_THROUGH.has(cls)) continue;
    if (cls !== 'Dense') return null;
    const config = layer.getConfig() as { activation?: string; use_bias?: boolean; useBias?: boolean };
    const activation = String(config.activation ?? 'linear');
    if (!FUSABLE.has(activation)) return null;
    const weights = layer.getWeights();
    steps.push({
      kernel: tf.keep(weights[0].clone()) as tf.Tensor2D,
      bias: weights[1] ? (tf.keep(weights[1].clone()) as tf.Tensor1D) : undefined,
      activation: activation as FusedActivation,
    });
  }
  return steps.length ? steps : null;
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

/** Runs the chain; intermediate activations are disposed, the input and the returned output are the caller's. */
export function runDenseChain(steps: DenseStep[], x: tf.Tensor2D): tf.Tensor2D {
  let h = x;
  for (const s of steps) {
    const next = tf.fused.matMul({ a: h, b: s.kernel, bias: s.bias, activation: s.activation }) as tf.Tensor2D;
    if (h !== x) h.dispose();
    h = next;
  }
  return h;
}

export function disposeDenseChain(steps: DenseStep[] | null): void {
  for (const s of steps ?? []) {
    s.kernel.dispose();
    s.bias?.dispose();
  }
}

