import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { LoadedModel } from '../src/inference/loaded-model.js';
import { explain } from '../src/inference/explain.js';
import { parseFeatureSpec } from '../src/preprocessing/feature-spec.js';

/**
 * Explanations of models that are not plain dense chains (a BatchNormalization layer: integrated
 * gradients by the tfjs tape) add up to logitDelta, also where the probability saturates: both
 * are taken from the output before its final sigmoid, which has no float32 clip to cross.
 */
describe('explanations of a non-chain model', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  const spec = parseFeatureSpec({ features: ['a', 'b', 'c'].map((name) => ({ name, type: 'numeric', mean: 0, std: 1 })), threshold: 0.5 });
  const inputs = [[0.3, -0.2, 0.1], [1, 1, 1], [-2, 3, 0.5], [5, 5, 5], [-5, -5, -5], [8, -8, 8]];

  function check(model: tf.LayersModel): void {
    const loaded = new LoadedModel('bn', spec, model, { maxBatch: 8, maxWaitMs: 0 }, null, 'bn-scope');
    expect(loaded.chainGradient).toBeNull();
    let saturated = 0;
    for (const [a, b, c] of inputs) {
      const vector = Float32Array.from([a, b, c]);
      const probability = loaded.predictSync(vector, 1)[0];
      if (probability < 1e-7 || probability > 1 - 1e-7) saturated++;
      const e = explain(loaded, { a, b, c }, vector, probability);
      const sum = e.contributions.reduce((s, x) => s + x.contribution, 0);
      expect(Number.isFinite(e.logitDelta)).toBe(true);
      expect(Math.abs(sum - e.logitDelta), `${[a, b, c]}: p ${probability}, sum ${sum}, logitDelta ${e.logitDelta}`).toBeLessThan(Math.max(0.02, 0.002 * Math.abs(e.logitDelta)));
    }
    expect(saturated).toBeGreaterThan(0);
  }

  it('a sequential model ending in a sigmoid Dense layer, saturated by large output weights', () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ units: 6, activation: 'relu', inputShape: [3], kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
        tf.layers.batchNormalization(),
        tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
      ],
    });
    const [kernel, bias] = model.layers[2].getWeights();
    model.layers[2].setWeights([tf.mul(kernel, 40), bias]);
    check(model);
  });

  it('a functional model ending in a separate sigmoid Activation layer', () => {
    const input = tf.input({ shape: [3] });
    const h = tf.layers.dense({ units: 6, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(input) as tf.SymbolicTensor;
    const n = tf.layers.batchNormalization().apply(h) as tf.SymbolicTensor;
    const z = tf.layers.dense({ units: 1, kernelInitializer: tf.initializers.constant({ value: 12 }) }).apply(n) as tf.SymbolicTensor;
    const out = tf.layers.activation({ activation: 'sigmoid' }).apply(z) as tf.SymbolicTensor;
    check(tf.model({ inputs: input, outputs: out }));
  });

  it('leaves no tensors behind', () => {
    const model = tf.sequential({ layers: [tf.layers.dense({ units: 6, activation: 'relu', inputShape: [3] }), tf.layers.batchNormalization(), tf.layers.dense({ units: 1, activation: 'sigmoid' })] });
    const loaded = new LoadedModel('bn-leak', spec, model, { maxBatch: 8, maxWaitMs: 0 }, null, 'bn-leak-scope');
    const vector = Float32Array.from([1, 2, 3]);
    const once = () => explain(loaded, { a: 1, b: 2, c: 3 }, vector, loaded.predictSync(vector, 1)[0]);
    once();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) once();
    expect(tf.memory().numTensors).toBe(before);
  });
});
