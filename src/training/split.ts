import { createRng, shuffleInPlace } from '../lib/random.js';

export interface SplitIndices {
  train: number[];
  validation: number[];
  test: number[];
}

/** Stratified split by label, reproducible from the seed. */
export function stratifiedSplit(labels: ArrayLike<number>, fractions: { validation: number; test: number }, seed: number): SplitIndices {
  const rng = createRng(seed);
  const out: SplitIndices = { train: [], validation: [], test: [] };
  for (const cls of [0, 1]) {
    const idx = [];
    for (let i = 0; i < labels.length; i++) if (labels[i] === cls) idx.push(i);
    shuffleInPlace(idx, rng);
    const nTest = Math.round(idx.length * fractions.test);
    const nVal = Math.round(idx.length * fractions.validation);
    out.test.push(...idx.slice(0, nTest));
    out.validation.push(...idx.slice(nTest, nTest + nVal));
    out.train.push(...idx.slice(nTest + nVal));
  }
  for (const k of ['train', 'validation', 'test'] as const) out[k].sort((a, b) => a - b);
  return out;
}
