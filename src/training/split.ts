import { createRng, shuffleInPlace } from '../lib/random.js';

export interface SplitIndices {
  train: number[];
  validation: number[];
  test: number[];
}

/** Rows of each class needed so that train, validation and test each get at least one. */
export const MIN_ROWS_PER_CLASS = 3;

/**
 * Stratified split by label, reproducible from the seed. Every split gets at least one row of each
 * class (validation AUC, early stopping and the threshold need both); fewer than
 * MIN_ROWS_PER_CLASS rows of a class is an error that says so.
 */
export function stratifiedSplit(labels: ArrayLike<number>, fractions: { validation: number; test: number }, seed: number): SplitIndices {
  const rng = createRng(seed);
  const out: SplitIndices = { train: [], validation: [], test: [] };
  for (const cls of [0, 1]) {
    const idx = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] === cls) idx.push(i);
    if (idx.length < MIN_ROWS_PER_CLASS) {
      throw new Error(`only ${idx.length} ${cls ? 'positive' : 'negative'} row(s): training needs at least ${MIN_ROWS_PER_CLASS} of each class (one each for train, validation and test)`);
    }
    shuffleInPlace(idx, rng);
    const nTest = Math.max(1, Math.round(idx.length * fractions.test));
    const nVal = Math.max(1, Math.round(idx.length * fractions.validation));
    out.test.push(...idx.slice(0, nTest));
    out.validation.push(...idx.slice(nTest, nTest + nVal));
    out.train.push(...idx.slice(nTest + nVal));
  }
  for (const k of ['train', 'validation', 'test'] as const) out[k].sort((a, b) => a - b);
  return out;
}
