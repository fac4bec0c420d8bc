import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { compileDenseChain, disposeDenseChain, runDenseChain } from '../src/inference/dense-chain.js';

/** Models that open with Dense layers (so the compiler keeps their weights) and then decline. */
const DECLINED: [string, () => tf.Sequential][] = [
  [
    'an unsupported activation (tanh)',
    () => tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'relu' }), tf.layers.dense({ units: 3, activation: 'tanh' }), tf.layers.dense({ units: 1, activation: 'sigmoid' })] }),
  ],
  [
    'a later BatchNormalization layer',
    () => tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'relu' }), tf.layers.dense({ units: 3, useBias: false }), tf.layers.batchNormalization(), tf.layers.dense({ units: 1, activation: 'sigmoid' })] }),
  ],
  [
    'a later Activation layer',
    () => tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3 }), tf.layers.activation({ activation: 'relu' }), tf.layers.dense({ units: 1, activation: 'sigmoid' })] }),
  ],
];

describe('compileDenseChain leaves no tensors behind when it declines a model', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it.each(DECLINED)('declined for %s: numTensors unchanged over 100 calls', (_, build) => {
    const model = build();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) expect(compileDenseChain(model)).toBeNull();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('a dense chain still compiles, keeps kernel, batch kernel and bias per layer, and matches the Layers API', () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [4], units: 3, activation: 'relu', biasInitializer: tf.initializers.randomNormal({ seed: 1 }) }),
        tf.layers.dropout({ rate: 0.5 }),
        tf.layers.dense({ units: 2, activation: 'elu', useBias: false }),
        tf.layers.dense({ units: 1, activation: 'sigmoid' }),
      ],
    });
    const before = tf.memory().numTensors;
    const chain = compileDenseChain(model)!;
    expect(chain).not.toBeNull();
    expect(chain.map((s) => s.activation)).toEqual(['relu', 'elu', 'sigmoid']);
    expect(tf.memory().numTensors - before).toBe(3 + 2 + 3);

    const x = Float32Array.from([0.5, -1, 2, 0.25, -0.75, 1.5, 0, -2]);
    const input = tf.tensor3d(x, [1, 2, 4]);
    const out = runDenseChain(chain, input);
    const fast = Array.from(out.dataSync());
    input.dispose();
    out.dispose();
    const reference = tf.tidy(() => Array.from((model.predict(tf.tensor2d(x, [2, 4])) as tf.Tensor).dataSync()));
    fast.forEach((v, i) => expect(v).toBeCloseTo(reference[i], 6));

    disposeDenseChain(chain);
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });
});
