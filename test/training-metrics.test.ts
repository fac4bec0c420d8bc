import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bestF1Threshold, evaluate, f1At } from '../src/training/metrics.js';

describe('decision threshold (best F1 on validation)', () => {
  it('finds thresholds between close probabilities, and below 0.0005, midway between the two scores the split falls between', () => {
    expect(bestF1Threshold([1, 0, 0, 0], [0.4996, 0.4994, 0.4994, 0.1])).toBe((0.4996 + 0.4994) / 2);
    const tiny = bestF1Threshold([1, 1, 0, 0, 0], [0.0003, 0.0002, 0.0001, 0.00005, 0.00001]);
    expect(tiny).toBe((0.0002 + 0.0001) / 2);
    expect(f1At([1, 1, 0, 0, 0], [0.0003, 0.0002, 0.0001, 0.00005, 0.00001], tiny)).toBe(1);
    // A score a few ulps off training's (another kernel) stays on its side.
    const p = [0.41355469822883606, 0.4135546, 0.2];
    const t = bestF1Threshold([1, 0, 0], p);
    expect(f1At([1, 0, 0], [0.41355466842651367, 0.41355463, 0.2], t)).toBe(1);
    // Everything positive: halfway below the lowest score; adjacent doubles: the higher one.
    expect(bestF1Threshold([1, 1], [0.9, 0.8])).toBe(0.4);
    expect(bestF1Threshold([1, 0], [0.5000000000000001, 0.5])).toBe(0.5000000000000001);
  });

  it('reaches the best F1 any threshold can, with ties among predictions', () => {
    const data = fc
      .array(fc.tuple(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 20 }).map((k) => k / 20)), { minLength: 2, maxLength: 60 })
      .filter((rows) => rows.some(([y]) => y === 1));
    fc.assert(
      fc.property(data, (rows) => {
        const y = rows.map(([v]) => v);
        const p = rows.map(([, v]) => v);
        const bestPossible = Math.max(...p.map((t) => f1At(y, p, t)));
        const t = bestF1Threshold(y, p);
        // On a score, or midway between two adjacent distinct ones.
        const distinct = [...new Set(p)].sort((a, b) => b - a);
        const between = [...distinct.slice(1), 0].map((lower, i) => (distinct[i] + lower) / 2);
        expect([...distinct, ...between]).toContain(t);
        expect(f1At(y, p, t)).toBeCloseTo(bestPossible, 12);
      }),
    );
  });
});

describe('calibration bins', () => {
  it('labels every bin with its own edges, for any bin count', () => {
    const y = [0, 1, 0, 1];
    const p = [0.01, 0.3, 0.6, 0.99];
    expect(evaluate(y, p, 0.5).calibration.map((b) => b.bin)).toEqual(Array.from({ length: 10 }, (_, i) => `${(i / 10).toFixed(1)}-${((i + 1) / 10).toFixed(1)}`));
    const twenty = evaluate(y, p, 0.5, 20).calibration.map((b) => b.bin);
    expect(twenty.slice(0, 3)).toEqual(['0.0-0.05', '0.05-0.1', '0.1-0.15']);
    expect(new Set(twenty).size).toBe(20);
    expect(evaluate(y, p, 0.5, 8).calibration[1].bin).toBe('0.125-0.25');
  });
});
