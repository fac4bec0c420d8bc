import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { compileDenseChain, disposeDenseChain, runDenseChain } from '../src/inference/dense-chain.js';

/** Runs the fast lane on a [rows, in] matrix and returns its outputs as numbers. */
function fastLane(model: tf.LayersModel, x: Float32Array, rows: number, width: number): number[] {
  const chain = compileDenseChain(model);
  if (!chain) throw new Error('expected a dense chain');
  const input = tf.tensor3d(x, [1, rows, width]);
  const out = runDenseChain(chain, input);
  const values = Array.from(out.dataSync());
  input.dispose();
  out.dispose();
  disposeDenseChain(chain);
  return values;
}

function layersOutput(model: tf.LayersModel, x: Float32Array, rows: number, width: number): number[] {
  return tf.tidy(() => Array.from((model.predict(tf.tensor2d(x, [rows, width])) as tf.Tensor).dataSync()));
}

function randomInput(rows: number, width: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: rows * width }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2);
}

describe('dense-chain fast lane', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('matches the Layers API for every fusable activation, with and without bias, dropout skipped', () => {
    const width = 9;
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [width], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }), biasInitializer: tf.initializers.randomNormal({ seed: 2 }) }),
        tf.layers.dropout({ rate: 0.5 }),
        tf.layers.dense({ units: 8, activation: 'elu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }), biasInitializer: tf.initializers.randomNormal({ seed: 4 }) }),
        tf.layers.dense({ units: 8, activation: 'relu6', useBias: false, kernelInitializer: tf.initializers.glorotUniform({ seed: 5 }) }),
        tf.layers.dense({ units: 4, activation: 'linear', kernelInitializer: tf.initializers.glorotUniform({ seed: 6 }), biasInitializer: tf.initializers.randomNormal({ seed: 7 }) }),
        tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: 8 }) }),
      ],
    });
    for (const rows of [1, 3, 64]) {
      const x = randomInput(rows, width, rows);
      const before = tf.memory().numTensors;
      const fast = fastLane(model, x, rows, width);
      expect(tf.memory().numTensors).toBe(before);
      const reference = layersOutput(model, x, rows, width);
      expect(fast).toHaveLength(rows);
      fast.forEach((v, i) => expect(v).toBeCloseTo(reference[i], 6));
    }
    model.dispose();
  });

  it('declines models that are not a plain dense chain (they are served by predictOnBatch)', () => {
    const input = tf.input({ shape: [4] });
    const a = tf.layers.dense({ units: 3, activation: 'relu' }).apply(input) as tf.SymbolicTensor;
    const b = tf.layers.dense({ units: 3, activation: 'relu' }).apply(input) as tf.SymbolicTensor;
    const merged = tf.layers.add().apply([a, b]) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 1, activation: 'sigmoid' }).apply(merged) as tf.SymbolicTensor;
    const branching = tf.model({ inputs: input, outputs: out });
    expect(compileDenseChain(branching)).toBeNull();

    const softmax = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 2, activation: 'softmax' })] });
    expect(compileDenseChain(softmax)).toBeNull();
    branching.dispose();
    softmax.dispose();
  });
});
