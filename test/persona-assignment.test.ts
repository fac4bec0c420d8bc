import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assignPersona } from '../src/segments/personas.js';

/** The plain definition: every full distance, the first smallest wins. */
function nearest(centroids: number[][], row: Float32Array, offset: number): number {
  const distances = centroids.map((c) => c.reduce((sum, v, j) => sum + (row[offset + j] - v) ** 2, 0));
  return distances.indexOf(Math.min(...distances));
}

describe('assignPersona', () => {
  it('picks the nearest centroid, the first one on a tie, as full distances would', () => {
    const value = fc.oneof(fc.double({ min: -5, max: 5, noNaN: true }), fc.constantFrom(0, 1));
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 12 }).chain((width) =>
          fc.record({
            centroids: fc.array(fc.array(value, { minLength: width, maxLength: width }), { minLength: 1, maxLength: 8 }),
            row: fc.array(value, { minLength: width + 3, maxLength: width + 3 }),
            offset: fc.integer({ min: 0, max: 3 }),
          }),
        ),
        ({ centroids, row, offset }) => {
          // Duplicated centroids make ties happen.
          const withTies = [...centroids, ...centroids.slice(0, 2)];
          const r = Float32Array.from(row);
          expect(assignPersona(withTies, r, offset)).toBe(nearest(withTies, r, offset));
        },
      ),
      { numRuns: 3000 },
    );
  });
});
