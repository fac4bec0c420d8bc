import { tf } from '../inference/backend.js';

/**
 * Platt scaling: p' = sigmoid(a·logit(p) + b), fitted on validation by Newton's method.
 * Class weighting inflates positive probabilities; this restores calibrated ones.
 */
export function fitPlatt(p: ArrayLike<number>, y: ArrayLike<number>): { a: number; b: number } {
  const z = Array.from(p, (v) => logit(v));
  let a = 1;
  let b = 0;
  for (let iter = 0; iter < 50; iter++) {
    let ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0;
    for (let i = 0; i < z.length; i++) {
      const q = sigmoid(a * z[i] + b);
      const r = q - y[i];
      const w = Math.max(q * (1 - q), 1e-9);
      ga += r * z[i];
      gb += r;
      haa += w * z[i] * z[i];
      hab += w * z[i];
      hbb += w;
    }
    const det = haa * hbb - hab * hab;
    if (Math.abs(det) < 1e-12) break;
    const da = (hbb * ga - hab * gb) / det;
    const db = (haa * gb - hab * ga) / det;
    a -= da;
    b -= db;
    if (Math.abs(da) + Math.abs(db) < 1e-9) break;
  }
  return { a, b };
}

/** Folds Platt scaling into the final sigmoid Dense layer, so the saved model is calibrated itself. */
export function foldCalibrationIntoOutput(model: tf.LayersModel, { a, b }: { a: number; b: number }): void {
  const out = model.layers[model.layers.length - 1];
  const [kernel, bias] = out.getWeights();
  const newKernel = tf.mul(kernel, a);
  const newBias = tf.add(tf.mul(bias, a), b);
  out.setWeights([newKernel, newBias]);
  newKernel.dispose();
  newBias.dispose();
}

export const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
export const logit = (p: number) => {
  const q = Math.min(1 - 1e-7, Math.max(1e-7, p));
  return Math.log(q / (1 - q));
};
