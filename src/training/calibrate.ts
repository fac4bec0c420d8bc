import { tf } from '../inference/backend.js';

/**
 * Platt scaling: p' = sigmoid(a·logit(p) + b), fitted on validation by Newton's method.
 * Class weighting inflates positive probabilities; this restores calibrated ones.
 *
 * Fitted as in Platt (1999) and Lin, Lin & Weng (2007): the 0/1 labels are replaced by the
 * smoothed targets t+ = (N+ + 1)/(N+ + 2) and t- = 1/(N- + 2), and every Newton step is
 * backtracked until it lowers the loss. Without the smoothing a validation split the model
 * separates perfectly has no finite optimum: the slope runs off (a ≈ 10³), every prediction
 * saturates to 0 or 1 and the ties this makes lower AUC on unseen rows. With it the loss is
 * bounded below and strictly convex, so the fit converges to a moderate slope.
 *
 * The calibration is monotone and must not make ranking worse: a non-positive slope (a model no
 * better than chance on validation) is not used (only the intercept is fitted), and a slope above 1
 * that would make distinct validation scores equal in float32 (saturation) is pulled back towards
 * 1 until none does.
 */
export function fitPlatt(p: ArrayLike<number>, y: ArrayLike<number>): { a: number; b: number } {
  const z = Array.from(p, (v) => logit(v));
  let positives = 0;
  for (let i = 0; i < y.length; i++) if (y[i] === 1) positives++;
  const negatives = y.length - positives;
  const hi = (positives + 1) / (positives + 2);
  const lo = 1 / (negatives + 2);
  const t = Array.from(y, (v) => (v === 1 ? hi : lo));
  if (z.length === 0) return { a: 1, b: 0 };

  let fit = newton(z, t, 1, 0, true);
  if (!(fit.a > 0) || !Number.isFinite(fit.a) || !Number.isFinite(fit.b)) fit = newton(z, t, 1, 0, false);
  // A slope above 1 spreads the scores apart, so the only ties it can make are saturation at 0 or 1:
  // pull such a slope back towards 1, refitting the intercept each time. (A slope below 1 can merge
  // only scores within a float32 step or so of each other, which no calibration avoids.)
  for (let k = 0; k < 40 && fit.a > 1 && createsTies(p, z, fit); k++) {
    fit = newton(z, t, 1 + (fit.a - 1) / 2, fit.b, false);
  }
  // Slope 1 spreads nothing: keep the intercept (it undoes the class weighting), never drop it.
  if (fit.a > 1 && createsTies(p, z, fit)) fit = newton(z, t, 1, 0, false);
  return fit;
}

/**
 * Minimises the cross-entropy of sigmoid(a·z + b) against the targets t: Newton steps with a
 * backtracking line search; the slope stays at its start when `fitSlope` is false.
 */
function newton(z: number[], t: number[], a0: number, b0: number, fitSlopeAtStart: boolean): { a: number; b: number } {
  // Scores with (almost) no spread leave the slope undetermined: then only the intercept is fitted.
  let fitSlope = fitSlopeAtStart;
  let a = a0;
  let b = b0;
  let f = loss(z, t, a, b);
  for (let iter = 0; iter < 100; iter++) {
    let ga = 0, gb = 0, haa = 1e-12, hab = 0, hbb = 1e-12;
    for (let i = 0; i < z.length; i++) {
      const q = sigmoid(a * z[i] + b);
      const r = q - t[i];
      const w = q * (1 - q);
      ga += r * z[i];
      gb += r;
      haa += w * z[i] * z[i];
      hab += w * z[i];
      hbb += w;
    }
    if (!fitSlope) ga = hab = 0;
    if (Math.abs(ga) < 1e-9 * z.length && Math.abs(gb) < 1e-9 * z.length) break;
    let da: number, db: number;
    if (fitSlope) {
      const det = haa * hbb - hab * hab;
      if (!(det > 1e-12 * haa * hbb)) {
        fitSlope = false;
        continue;
      }
      da = -(hbb * ga - hab * gb) / det;
      db = -(haa * gb - hab * ga) / det;
    } else {
      da = 0;
      db = -gb / hbb;
    }
    const slope = ga * da + gb * db; // directional derivative, < 0 for a descent direction
    let step = 1;
    let next = f;
    while (step >= 1e-10) {
      next = loss(z, t, a + step * da, b + step * db);
      if (next <= f + 1e-4 * step * slope) break;
      step /= 2;
    }
    if (step < 1e-10) break; // no step lowers the loss: converged as far as float64 allows
    a += step * da;
    b += step * db;
    const done = Math.abs(step * da) + Math.abs(step * db) < 1e-9 || f - next < 1e-12 * Math.max(1, Math.abs(f));
    f = next;
    if (done) break;
  }
  return { a, b };
}

/** Cross-entropy of sigmoid(a·z + b) against soft targets, computed without overflow. */
function loss(z: number[], t: number[], a: number, b: number): number {
  let sum = 0;
  for (let i = 0; i < z.length; i++) {
    const s = a * z[i] + b;
    sum += softplus(s) - t[i] * s;
  }
  return sum;
}

const softplus = (s: number) => (s > 0 ? s + Math.log1p(Math.exp(-s)) : Math.log1p(Math.exp(s)));

/**
 * Whether calibrating makes two validation scores that differ (as the model's float32 outputs)
 * equal as float32 outputs: a tie the raw scores did not have, which can only lower AUC.
 */
function createsTies(p: ArrayLike<number>, z: number[], { a, b }: { a: number; b: number }): boolean {
  const order = Array.from(z, (_, i) => i).sort((i, j) => p[i] - p[j]);
  for (let k = 1; k < order.length; k++) {
    const i = order[k - 1];
    const j = order[k];
    // Scores the logit clamp (1e-7) already merges are tied before calibration too; the saved
    // model calibrates its unclamped logits, where they stay apart.
    if (!(p[i] < p[j]) || z[i] === z[j]) continue;
    if (Math.fround(sigmoid(a * z[i] + b)) === Math.fround(sigmoid(a * z[j] + b))) return true;
  }
  return false;
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
