import { createRng, shuffleInPlace } from '../lib/random.js';

export interface SplitIndices {
  train: number[];
  validation: number[];
  test: number[];
}

/**
 * Stratified split by label, reproducible from the seed. Every split asked for (a fraction above 0)
 * gets at least one row of each class: validation AUC, early stopping and the threshold need both.
 * A class too small for that is an error that says so.
 */
export function stratifiedSplit(labels: ArrayLike<number>, fractions: { validation: number; test: number }, seed: number): SplitIndices {
  const rng = createRng(seed);
  const out: SplitIndices = { train: [], validation: [], test: [] };
  const atLeast = (fraction: number, n: number) => (fraction > 0 ? Math.max(1, Math.round(n * fraction)) : 0);
  if (!(fractions.validation >= 0 && fractions.test >= 0 && fractions.validation + fractions.test < 1)) {
    throw new Error(`validation and test fractions must be ≥ 0 and leave rows for training (got ${fractions.validation} and ${fractions.test})`);
  }
  const needed = 1 + (fractions.validation > 0 ? 1 : 0) + (fractions.test > 0 ? 1 : 0);
  for (const cls of [0, 1]) {
    const idx = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] === cls) idx.push(i);
    if (idx.length < needed) {
      throw new Error(`only ${idx.length} ${cls ? 'positive' : 'negative'} row(s): training needs at least ${needed} of each class (one for each split)`);
    }
    shuffleInPlace(idx, rng);
    // Rounding up to one row each must still leave one for training.
    const nTest = Math.min(atLeast(fractions.test, idx.length), idx.length - needed + 1);
    const nVal = Math.min(atLeast(fractions.validation, idx.length), idx.length - nTest - 1);
    out.test.push(...idx.slice(0, nTest));
    out.validation.push(...idx.slice(nTest, nTest + nVal));
    out.train.push(...idx.slice(nTest + nVal));
  }
  for (const k of ['train', 'validation', 'test'] as const) out[k].sort((a, b) => a - b);
  return out;
}
