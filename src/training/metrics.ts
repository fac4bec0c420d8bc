/** Evaluation metrics for a binary classifier's probabilities. */

export interface ClassificationMetrics {
  n: number;
  positives: number;
  auc: number;
  accuracy: number;
  precision: number;
  recall: number;
  f1: number;
  brier: number;
  logLoss: number;
  threshold: number;
  confusion: { tp: number; fp: number; tn: number; fn: number };
  calibration: { bin: string; count: number; meanPredicted: number; observedRate: number }[];
  roc: { fpr: number; tpr: number; threshold: number }[];
}

/** ROC AUC with ties handled by average rank (Mann–Whitney U). */
export function rocAuc(y: ArrayLike<number>, p: ArrayLike<number>): number {
  const n = y.length;
  const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => p[a] - p[b]);
  let rankSumPos = 0;
  let pos = 0;
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && p[idx[j + 1]] === p[idx[i]]) j++;
    const avgRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) if (y[idx[k]] === 1) {
      rankSumPos += avgRank;
      pos++;
    }
    i = j + 1;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0) return NaN;
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

export function confusionAt(y: ArrayLike<number>, p: ArrayLike<number>, threshold: number) {
  let tp = 0, fp = 0, tn = 0, fn = 0;
  for (let i = 0; i < y.length; i++) {
    const hit = p[i] >= threshold;
    if (hit && y[i] === 1) tp++;
    else if (hit) fp++;
    else if (y[i] === 1) fn++;
    else tn++;
  }
  return { tp, fp, tn, fn };
}

export function f1At(y: ArrayLike<number>, p: ArrayLike<number>, threshold: number): number {
  const { tp, fp, fn } = confusionAt(y, p, threshold);
  return tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
}

/**
 * Threshold with the best F1 among the distinct predicted values (validation split), labelling
 * `p >= threshold` positive; ties go to the highest such threshold. One sort and a sweep from the
 * top, so every distinct value is tried, however close together (no rounding grid to fall
 * between, or below).
 */
export function bestF1Threshold(y: ArrayLike<number>, p: ArrayLike<number>): number {
  const order = Array.from(p, (_, i) => i).sort((a, b) => p[b] - p[a]);
  let positives = 0;
  for (let i = 0; i < y.length; i++) if (y[i] === 1) positives++;
  let best = 0.5;
  let bestF1 = -1;
  let tp = 0;
  let fp = 0;
  for (let k = 0; k < order.length; k++) {
    const i = order[k];
    if (y[i] === 1) tp++;
    else fp++;
    // Evaluate once all rows with this value are on the positive side.
    if (k + 1 < order.length && p[order[k + 1]] === p[i]) continue;
    const f = tp === 0 ? 0 : (2 * tp) / (tp + fp + positives);
    if (f > bestF1) {
      bestF1 = f;
      // Midway to the next lower score, not on this one: serving may compute a score a few ulps
      // off training's (another kernel, another summation order), and a row right on the
      // threshold would then change sides. The split of these rows is the same either way.
      // Every row positive: halfway to 0 below the lowest score, for the same reason.
      const lower = k + 1 < order.length ? p[order[k + 1]] : 0;
      const mid = (p[i] + lower) / 2;
      best = mid > lower ? mid : p[i]; // two adjacent doubles have no double between them
    }
  }
  return best;
}

export function evaluate(y: ArrayLike<number>, p: ArrayLike<number>, threshold: number, bins = 10): ClassificationMetrics {
  const n = y.length;
  const c = confusionAt(y, p, threshold);
  const eps = 1e-7;
  let brier = 0;
  let logLoss = 0;
  let positives = 0;
  for (let i = 0; i < n; i++) {
    const q = Math.min(1 - eps, Math.max(eps, p[i]));
    brier += (p[i] - y[i]) ** 2;
    logLoss -= y[i] === 1 ? Math.log(q) : Math.log(1 - q);
    positives += y[i];
  }
  const precision = c.tp + c.fp ? c.tp / (c.tp + c.fp) : 0;
  const recall = c.tp + c.fn ? c.tp / (c.tp + c.fn) : 0;
  return {
    n,
    positives,
    auc: rocAuc(y, p),
    accuracy: (c.tp + c.tn) / n,
    precision,
    recall,
    f1: precision + recall ? (2 * precision * recall) / (precision + recall) : 0,
    brier: brier / n,
    logLoss: logLoss / n,
    threshold,
    confusion: c,
    calibration: calibrationBins(y, p, bins),
    roc: rocPoints(y, p),
  };
}

function calibrationBins(y: ArrayLike<number>, p: ArrayLike<number>, bins: number) {
  const count = new Array(bins).fill(0);
  const sumP = new Array(bins).fill(0);
  const sumY = new Array(bins).fill(0);
  for (let i = 0; i < y.length; i++) {
    const b = Math.min(bins - 1, Math.floor(p[i] * bins));
    count[b]++;
    sumP[b] += p[i];
    sumY[b] += y[i];
  }
  return count.map((n, b) => ({
    bin: `${binEdge(b / bins)}-${binEdge((b + 1) / bins)}`,
    count: n,
    meanPredicted: n ? sumP[b] / n : 0,
    observedRate: n ? sumY[b] / n : 0,
  }));
}

/** ROC curve at 21 evenly spaced thresholds (enough for a report chart). */
function rocPoints(y: ArrayLike<number>, p: ArrayLike<number>) {
  const pts = [];
  for (let k = 0; k <= 20; k++) {
    const t = 1 - k / 20;
    const c = confusionAt(y, p, t);
    pts.push({ threshold: t, tpr: c.tp / Math.max(1, c.tp + c.fn), fpr: c.fp / Math.max(1, c.fp + c.tn) });
  }
  return pts;
}

/** A bin edge with as few decimals (at least one) as it needs: 0.0, 0.1, 0.05, 0.125. */
function binEdge(x: number): string {
  for (let d = 1; d < 6; d++) if (Math.abs(Number(x.toFixed(d)) - x) < 1e-9) return x.toFixed(d);
  return x.toFixed(6);
}
