import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DenseChainGradient } from '../src/inference/dense-gradient.js';
import type { DenseStep } from '../src/inference/dense-chain.js';

/**
 * The exact path gradient's defining property: for a relu/linear chain ending in a sigmoid,
 * Σ_j gradient_j · (x_j − base_j) equals logit(f(x)) − logit(f(base)), up to rounding.
 */

interface Layer {
  w: Float32Array;
  b: Float32Array;
  inSize: number;
  outSize: number;
  activation: 'relu' | 'linear' | 'sigmoid';
}

function steps(layers: Layer[]): DenseStep[] {
  return layers.map((l) => ({
    kernel: { dataSync: () => l.w, shape: [l.inSize, l.outSize] },
    batchKernel: undefined,
    bias: { dataSync: () => l.b },
    activation: l.activation,
  })) as unknown as DenseStep[];
}

/** The chain's pre-sigmoid output, in doubles (the logit of its probability). */
function logit(layers: Layer[], x: ArrayLike<number>): number {
  let h = Array.from(x);
  for (const l of layers) {
    const out = Array.from(l.b, Number);
    for (let i = 0; i < l.inSize; i++) for (let o = 0; o < l.outSize; o++) out[o] += h[i] * l.w[i * l.outSize + o];
    h = l.activation === 'relu' ? out.map((v) => Math.max(0, v)) : out;
  }
  return h[0];
}

const weight = fc.float({ min: -2, max: 2, noNaN: true });

/** A chain of the given hidden sizes and activations plus a 1-unit sigmoid output, with weights. */
function chain(inSize: number, hidden: { size: number; activation: 'relu' | 'linear' }[]) {
  const sizes = [inSize, ...hidden.map((h) => h.size), 1];
  return fc.tuple(
    ...sizes.slice(1).map((out, k) =>
      fc.record({ w: fc.float32Array({ minLength: sizes[k] * out, maxLength: sizes[k] * out, min: -2, max: 2, noNaN: true }), b: fc.float32Array({ minLength: out, maxLength: out, min: -1, max: 1, noNaN: true }) }),
    ),
  ).map((params) =>
    params.map((p, k): Layer => ({ w: p.w, b: p.b, inSize: sizes[k], outSize: sizes[k + 1], activation: k < hidden.length ? hidden[k].activation : 'sigmoid' })),
  );
}

const point = (n: number) => fc.array(weight, { minLength: n, maxLength: n }).map((a) => Float32Array.from(a));

describe('DenseChainGradient.exactPathGradient', () => {
  const shapes: [string, { size: number; activation: 'relu' | 'linear' }[]][] = [
    ['two relu layers (what the trainer writes)', [{ size: 8, activation: 'relu' }, { size: 5, activation: 'relu' }]],
    ['three relu layers', [{ size: 6, activation: 'relu' }, { size: 5, activation: 'relu' }, { size: 4, activation: 'relu' }]],
    ['a linear layer between relu layers', [{ size: 6, activation: 'relu' }, { size: 4, activation: 'linear' }, { size: 5, activation: 'relu' }]],
    ['a linear first layer', [{ size: 5, activation: 'linear' }, { size: 6, activation: 'relu' }]],
    ['no hidden layer (logistic regression)', []],
  ];
  for (const [name, hidden] of shapes) {
    it(`integrated gradients add up to the logit difference: ${name}`, () => {
      const inSize = 7;
      fc.assert(
        fc.property(chain(inSize, hidden), point(inSize), point(inSize), (layers, x, base) => {
          const g = new DenseChainGradient(steps(layers)).exactPathGradient(x, base);
          let sum = 0;
          for (let j = 0; j < inSize; j++) sum += g[j] * (x[j] - base[j]);
          const delta = logit(layers, x) - logit(layers, base);
          expect(Math.abs(sum - delta)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(delta)));
        }),
        { numRuns: 300 },
      );
    });
  }
});

describe('DenseChainGradient.logitAt', () => {
  it('is the chain\'s pre-sigmoid output, also where the probability saturates (weights ×20: logits in the tens)', () => {
    fc.assert(
      fc.property(chain(7, [{ size: 8, activation: 'relu' }, { size: 5, activation: 'relu' }]), point(7), fc.constantFrom(1, 20), (layers, x, scale) => {
        const scaled = layers.map((l) => ({ ...l, w: l.w.map((v) => v * scale), b: l.b.map((v) => v * scale) }));
        const expected = logit(scaled, x);
        expect(Math.abs(new DenseChainGradient(steps(scaled)).logitAt(x) - expected)).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(expected)));
      }),
      { numRuns: 200 },
    );
  });
});
