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
  const chain = model.chainGradient;
  const pre = chain ? null : preSigmoid(model.layersModel);
  const grads = pathGradient(model, vector, base, width, pre);

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
  const logitDelta = chain ? chain.logitAt(vector) - chain.logitAt(base) : pre ? preSigmoidDelta(pre, vector, base, width) : logit(pX) - logit(pBase);
  return { baselineProbability: pBase, logitDelta, method: model.chainGradient ? 'integrated-gradients(exact: piecewise-linear path)' : `integrated-gradients(${STEPS} steps)`, contributions };
}

type LogitFn = (input: tf.Tensor) => tf.Tensor;
const preSigmoids = new WeakMap<tf.LayersModel, LogitFn | null>();

/**
 * The model's output before its final sigmoid (a sigmoid Dense layer, or a sigmoid Activation
 * layer), as a function of the input; null for any other output. Integrated along the path it has
 * no float32 clip to cross where the probability saturates, so the contributions add up to its
 * difference up to the integral's discretization.
 */
function preSigmoid(lm: tf.LayersModel): LogitFn | null {
  if (preSigmoids.has(lm)) return preSigmoids.get(lm)!;
  let fn: LogitFn | null = null;
  try {
    const last = lm.layers[lm.layers.length - 1];
    const cls = last.getClassName();
    const activation = (last.getConfig() as { activation?: unknown }).activation;
    if ((cls === 'Dense' || cls === 'Activation') && activation === 'sigmoid' && !Array.isArray(last.input)) {
      const inner = tf.model({ inputs: lm.inputs, outputs: last.input as tf.SymbolicTensor });
      const [kernel, bias] = cls === 'Dense' ? last.getWeights() : [];
      const useBias = (last.getConfig() as { useBias?: unknown }).useBias !== false;
      fn = (input) => {
        const h = inner.apply(input, { training: false }) as tf.Tensor2D;
        if (!kernel) return h;
        const z = tf.matMul(h, kernel as tf.Tensor2D);
        return useBias && bias ? z.add(bias) : z;
      };
    }
  } catch {
    fn = null; // an output this cannot take apart: the clipped logit of the probability instead
  }
  preSigmoids.set(lm, fn);
  return fn;
}

function preSigmoidDelta(pre: LogitFn, vector: Float32Array, base: Float32Array, width: number): number {
  return tf.tidy(() => {
    const z = pre(tf.tensor2d([...base, ...vector], [2, width])).dataSync();
    return z[1] - z[0];
  });
}

/** Mean gradient of logit(p) along the path: plain arithmetic for sigmoid dense chains, else a tfjs gradient tape. */
function pathGradient(model: LoadedModel, vector: Float32Array, base: Float32Array, width: number, pre: LogitFn | null): ArrayLike<number> {
  const fast = model.chainGradient;
  if (fast) return fast.exactPathGradient(vector, base);
  return tf.tidy(() => {
    const x = tf.tensor2d(vector, [1, width]);
    const b = tf.tensor2d(base, [1, width]);
    const alphas = tf.tensor2d(Array.from({ length: STEPS }, (_, k) => (k + 0.5) / STEPS), [STEPS, 1]);
    const path = b.add(alphas.mul(x.sub(b)));
    const logitOf = (input: tf.Tensor) => {
      if (pre) return pre(input);
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
