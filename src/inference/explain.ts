import { tf } from './backend.js';
import type { LoadedModel } from './loaded-model.js';
import { featureWidth, type FeatureSpec, type FeatureValues } from '../preprocessing/feature-spec.js';

export interface Explanation {
  baselineProbability: number;
  logitDelta: number;
  method: string;
  contributions: { feature: string; value: string | number | boolean | null; contribution: number; text: string }[];
}

/**
 * Midpoint-rule steps for models that are not relu dense chains (imported topologies): the
 * integrand jumps at every relu kink, so the error falls only as 1/STEPS. Dense chains (every
 * trained model) take the exact piecewise-linear path in DenseChainGradient instead.
 */
const STEPS = 64;
const baselines = new WeakMap<LoadedModel, Float32Array>();
const baselineProbability = new WeakMap<LoadedModel, number>();

/**
 * Integrated gradients of logit(p) along the straight line from the training-mean input
 * (standardized numerics at 0, category and boolean shares) to the request's encoded input.
 * Per-feature contributions (one-hot columns summed) add up to logit(p) − logit(p_baseline):
 * exactly (up to rounding) for relu dense chains, up to the discretization error otherwise.
 */
export function explain(model: LoadedModel, values: FeatureValues, vector: Float32Array, probability: number): Explanation {
  const spec = model.spec;
  const width = model.encoder.width;
  let baseline = baselines.get(model);
  if (!baseline) baselines.set(model, (baseline = baselineVector(spec, width)));
  const base = baseline;

  // For dense chains logitDelta is the model's own logit difference, which the contributions add up
  // to: taken from the returned probability instead, it would be cut off where a float32 probability
  // saturates (every p within 1e-7 of 1 gave one logitDelta, whatever the input). Otherwise it is
  // taken against the returned probability, and the baseline is scored by the same serving path.
  const pX = probability;
  let pBase = baselineProbability.get(model);
  if (pBase === undefined) baselineProbability.set(model, (pBase = model.predictSync(base, 1)[0]));
  const grads = pathGradient(model, vector, base, width);

  const contributions: Explanation['contributions'] = [];
  let at = 0;
  for (const f of spec.features) {
    let c = 0;
    for (let j = at; j < at + featureWidth(f); j++) c += grads[j] * (vector[j] - base[j]);
    at += featureWidth(f);
    const value = values[f.name] ?? null;
    const shown = typeof value === 'number' ? Number(value.toPrecision(4)) : value;
    contributions.push({ feature: f.name, value, contribution: c, text: `${f.name} = ${shown === null ? 'missing' : shown} ${c > 0 ? 'raises' : c < 0 ? 'lowers' : 'does not move'}` });
  }
  contributions.sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution));
  const chain = model.chainGradient;
  const logitDelta = chain ? chain.logitAt(vector) - chain.logitAt(base) : logit(pX) - logit(pBase);
  return { baselineProbability: pBase, logitDelta, method: model.chainGradient ? 'integrated-gradients(exact: piecewise-linear path)' : `integrated-gradients(${STEPS} steps)`, contributions };
}

/** Mean gradient of logit(p) along the path: plain arithmetic for sigmoid dense chains, else a tfjs gradient tape. */
function pathGradient(model: LoadedModel, vector: Float32Array, base: Float32Array, width: number): ArrayLike<number> {
  const fast = model.chainGradient;
  if (fast) return fast.exactPathGradient(vector, base);
  return tf.tidy(() => {
    const x = tf.tensor2d(vector, [1, width]);
    const b = tf.tensor2d(base, [1, width]);
    const alphas = tf.tensor2d(Array.from({ length: STEPS }, (_, k) => (k + 0.5) / STEPS), [STEPS, 1]);
    const path = b.add(alphas.mul(x.sub(b)));
    const logitOf = (input: tf.Tensor) => {
      const p = (model.layersModel.apply(input, { training: false }) as tf.Tensor).clipByValue(1e-7, 1 - 1e-7);
      return p.div(tf.sub(1, p)).log();
    };
    const g = tf.grad((input: tf.Tensor) => logitOf(input).sum())(path);
    return g.mean(0).dataSync() as Float32Array;
  });
}

/** The encoded training-mean input. */
export function baselineVector(spec: FeatureSpec, width: number): Float32Array {
  const out = new Float32Array(width);
  let at = 0;
  for (const f of spec.features) {
    if (f.type === 'numeric') out[at] = 0;
    else if (f.type === 'boolean') out[at] = f.mean ?? (f.impute ? 1 : 0);
    else {
      const freq = f.frequencies ?? f.vocabulary.map(() => 1 / (f.vocabulary.length + 1));
      freq.forEach((v, i) => (out[at + i] = v));
      out[at + f.vocabulary.length] = Math.max(0, 1 - freq.reduce((a, b) => a + b, 0));
    }
    at += featureWidth(f);
  }
  return out;
}

const logit = (p: number) => {
  const q = Math.min(1 - 1e-7, Math.max(1e-7, p));
  return Math.log(q / (1 - q));
};
