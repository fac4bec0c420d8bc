/**
 * Keras models that were once served with wrong numbers, or accepted although they cannot be
 * served faithfully. Each goes through the real import (importVersion) and load (loadVersion)
 * paths and is compared with a hand computation in plain JS doubles.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { compileDenseChain, disposeDenseChain } from '../src/inference/dense-chain.js';
import type { LoadedModel } from '../src/inference/loaded-model.js';
import { AppError } from '../src/lib/errors.js';
import { importVersion } from '../src/registry/import-version.js';
import { KerasSemanticsError, assertKerasSemantics, isKeras3, loadLayersModelFromFiles, normalizeModelJson } from '../src/registry/keras-topology.js';
import { loadVersion } from '../src/registry/load-version.js';
import { ModelStore } from '../src/registry/model-store.js';
import { keras2Functional, keras3Functional, keras3Sequential, type Fixture } from './fixtures/keras/make-fixtures.js';
import {
  expectedLeakyRelu,
  expectedLogit,
  expectedSharedDense,
  keras2SharedDense,
  keras3LeakyRelu,
  keras3LogitsThenDropout,
  keras3SequentialWith,
} from './fixtures/keras/serving-fixtures.js';

const BATCHING = { maxBatch: 64, maxWaitMs: 0 };
/** Four numeric features with the default encoding (value passes through), so rows are model inputs. */
const SPEC = { features: [1, 2, 3, 4].map((i) => ({ name: `x${i}`, type: 'numeric' })) };
const ROWS = [
  [1, 2, 3, 4],
  [-1, 0.5, 2, -3],
  [0, 0, 0, 0],
  [0.3, -1.7, 2.2, 0.9],
  [-2, -2, 1, 5],
  [5, -2, -6, 1],
];

let dir: string;
let store: ModelStore;
let n = 0;

beforeAll(async () => {
  await initBackend('wasm');
  dir = mkdtempSync(join(tmpdir(), 'keras-serving-'));
  store = new ModelStore(dir);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function importFixture(fx: Pick<Fixture, 'modelJson' | 'files'>) {
  return importVersion(store, {
    modelJson: Buffer.from(JSON.stringify(fx.modelJson)),
    shards: new Map(fx.files),
    featureSpec: Buffer.from(JSON.stringify(SPEC)),
    id: `regression-${++n}`,
  });
}

/** Imports, loads and serves ROWS one request at a time and as one batch, as the scorer does. */
async function serve(fx: Fixture): Promise<{ single: number[]; batch: number[]; predict: number[]; path: LoadedModel['inferencePath'] }> {
  const card = await importFixture(fx);
  const loaded = await loadVersion(store, card.id, BATCHING);
  try {
    const single = ROWS.map((r) => loaded.predictSync(Float32Array.from(r), 1)[0]);
    const batch = Array.from(loaded.predictSync(Float32Array.from(ROWS.flat()), ROWS.length));
    const predict = tf.tidy(() => Array.from((loaded.layersModel.predict(tf.tensor2d(ROWS)) as tf.Tensor).dataSync()));
    return { single, batch, predict, path: loaded.inferencePath };
  } finally {
    loaded.retire();
  }
}

function expectClose(got: number[], want: number[], tol = 1e-5): void {
  expect(got).toHaveLength(want.length);
  got.forEach((g, i) => expect(Math.abs(g - want[i]), `row ${i}: got ${g}, want ${want[i]}`).toBeLessThan(tol));
}

async function importError(fx: Pick<Fixture, 'modelJson' | 'files'>): Promise<AppError> {
  const err = await importFixture(fx).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AppError);
  return err as AppError;
}

describe('a functional model that calls one Dense layer twice', () => {
  it('is served like model.predict and the hand computation (the fast path does not drop the second call)', async () => {
    const want = ROWS.map(expectedSharedDense);
    const { single, batch, predict, path } = await serve(keras2SharedDense());
    expectClose(predict, want);
    expectClose(single, want);
    expectClose(batch, want);
    expect(path).toBe('layers');
  });

  it('compileDenseChain declines a reused layer but still compiles true functional and nested chains', () => {
    const input = tf.input({ shape: [4] });
    const shared = tf.layers.dense({ units: 4, activation: 'relu' });
    const h = shared.apply(shared.apply(input)) as tf.SymbolicTensor;
    const reused = tf.model({ inputs: input, outputs: tf.layers.dense({ units: 1, activation: 'sigmoid' }).apply(h) as tf.SymbolicTensor });
    expect(compileDenseChain(reused)).toBeNull();

    const chainIn = tf.input({ shape: [4] });
    const inner = tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2, activation: 'relu' }), tf.layers.dropout({ rate: 0.5 })] });
    const mid = inner.apply(tf.layers.dense({ units: 3, activation: 'elu' }).apply(chainIn)) as tf.SymbolicTensor;
    const chain = tf.model({ inputs: chainIn, outputs: tf.layers.dense({ units: 1, activation: 'sigmoid' }).apply(mid) as tf.SymbolicTensor });
    const steps = compileDenseChain(chain);
    expect(steps?.map((s) => s.activation)).toEqual(['elu', 'relu', 'sigmoid']);
    disposeDenseChain(steps);
    for (const m of [reused, chain]) m.dispose();
  });

  it('compileDenseChain refuses a chain that disagrees with model.predict (checked once, on probe rows)', () => {
    const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'relu' }), tf.layers.dense({ units: 1, activation: 'sigmoid' })] });
    const last = model.layers[1];
    const real = last.getWeights.bind(last);
    const doubled: tf.Tensor[] = [];
    // A chain built from weights the model does not use stands in for any misread graph.
    const spy = vi.spyOn(last, 'getWeights').mockImplementation(() => real().map((w) => (doubled.push(w.mul(2)), doubled.at(-1)!)));
    const before = tf.memory().numTensors;
    expect(compileDenseChain(model)).toBeNull();
    expect(tf.memory().numTensors - before).toBe(doubled.length); // the declined chain's copies are freed
    spy.mockRestore();
    tf.dispose(doubled);
    const steps = compileDenseChain(model); // unmocked: compiles
    expect(steps).not.toBeNull();
    disposeDenseChain(steps);
    model.dispose();
  });
});

describe('Keras 3 LeakyReLU', () => {
  it('normalization renames negative_slope to alpha, which tfjs reads', () => {
    const { modelJson, changes } = normalizeModelJson(keras3LeakyRelu(0.1).modelJson);
    const layer = (modelJson as any).modelTopology.model_config.config.layers[2];
    expect(layer.class_name).toBe('LeakyReLU');
    expect(layer.config.alpha).toBe(0.1);
    expect(layer.config).not.toHaveProperty('negative_slope');
    expect(changes).toContain('leaky_re_lu: negative_slope → alpha');
    expect(normalizeModelJson(modelJson).changes).toEqual([]); // idempotent
  });

  it('a 0.1 slope is served as 0.1, not tfjs\'s default 0.3', async () => {
    const want = ROWS.map((x) => expectedLeakyRelu(x, 0.1));
    // The rows must reach the negative side, or the slope would not matter.
    expect(ROWS.some((x) => Math.abs(expectedLeakyRelu(x, 0.1) - expectedLeakyRelu(x, 0.3)) > 1e-3)).toBe(true);
    const { single, batch, predict } = await serve(keras3LeakyRelu(0.1));
    expectClose(predict, want);
    expectClose(single, want);
    expectClose(batch, want);
  });
});

describe('activations tfjs computes differently', () => {
  const hardSigmoidOutput = (fx: Fixture): Fixture => {
    const mj = structuredClone(fx.modelJson) as any;
    mj.modelTopology.model_config.config.layers.at(-1).config.activation = 'hard_sigmoid';
    return { ...fx, modelJson: mj };
  };

  it('a Keras 3 hard_sigmoid output is refused on import and on load, naming the difference', async () => {
    for (const fx of [keras3Sequential(), keras3Functional()].map(hardSigmoidOutput)) {
      const err = await importError(fx);
      expect(err.statusCode).toBe(400);
      expect(err.code).toBe('invalid_model');
      expect(err.message).toMatch(/"dense_1".*"hard_sigmoid".*Keras 3.*relu6\(x \+ 3\) \/ 6/);
      await expect(loadLayersModelFromFiles(fx.modelJson, fx.files)).rejects.toThrow(/hard_sigmoid/);
    }
  });

  it('Keras 3 is recognized without keras_version, and hard_sigmoid in an Activation layer or a recurrent_activation counts too', async () => {
    const fx = hardSigmoidOutput(keras3Sequential());
    const mj = fx.modelJson as any;
    delete mj.modelTopology.keras_version;
    delete mj.generatedBy;
    expect(isKeras3(mj)).toBe(true); // InputLayer batch_shape, DTypePolicy objects
    expect((await importError(fx)).message).toMatch(/hard_sigmoid/);

    const viaLayer = keras3SequentialWith('keras3/activation-layer', (layers) => {
      layers.push({ class_name: 'Activation', config: { name: 'activation', trainable: true, activation: 'hard_sigmoid' } });
    });
    expect((await importError(viaLayer)).message).toMatch(/layer "activation" uses activation "hard_sigmoid"/);
    expect(isKeras3(keras2Functional().modelJson)).toBe(false);

    const lstm = { modelTopology: { keras_version: '3.10.0', model_config: { class_name: 'Sequential', config: { layers: [{ class_name: 'LSTM', config: { name: 'lstm', units: 2, activation: 'tanh', recurrent_activation: 'hard_sigmoid' } }] } } } };
    expect(() => assertKerasSemantics(lstm)).toThrow(KerasSemanticsError);
    expect(() => assertKerasSemantics(lstm)).toThrow(/layer "lstm" uses recurrent_activation "hard_sigmoid"/);
    lstm.modelTopology.keras_version = '2.15.0'; // Keras 2's hard_sigmoid is the one tfjs computes
    expect(() => assertKerasSemantics(lstm)).not.toThrow();
  });

  it('a Keras 2 hard_sigmoid output is still accepted and served with the Keras 2 formula', async () => {
    const fx = hardSigmoidOutput(keras2Functional());
    const want = ROWS.map((x) => Math.min(1, Math.max(0, 0.2 * expectedLogit(x) + 0.5)));
    const { single, predict } = await serve(fx);
    expectClose(predict, want);
    expectClose(single, want);
  });

  it('a ReLU layer with a negative_slope or threshold is refused (tfjs ignores both), in Keras 2 and 3', async () => {
    for (const extra of [{ negative_slope: 0.1 }, { threshold: 0.5 }]) {
      const k3 = keras3SequentialWith('keras3/relu', (layers) => {
        layers[1].config.activation = 'linear';
        layers.splice(2, 0, { class_name: 'ReLU', config: { name: 're_lu', trainable: true, max_value: null, negative_slope: 0, threshold: 0, ...extra } });
      });
      const err = await importError(k3);
      expect(err.code).toBe('invalid_model');
      expect(err.message).toMatch(/ReLU layer "re_lu".*ignores/);
    }
    const k2 = structuredClone(keras2Functional().modelJson) as any;
    const layers = k2.modelTopology.model_config.config.layers;
    layers[1].config.activation = 'linear';
    layers.splice(2, 0, { class_name: 'ReLU', name: 're_lu', config: { name: 're_lu', trainable: true, dtype: 'float32', max_value: null, negative_slope: 0.2, threshold: 0 }, inbound_nodes: [[['dense', 0, 0, {}]]] });
    layers[3].inbound_nodes = [[['re_lu', 0, 0, {}]]];
    expect((await importError({ modelJson: k2, files: keras2Functional().files })).message).toMatch(/ReLU layer "re_lu"/);
  });
});

describe('the output must be a probability', () => {
  it('a logits Dense followed by Dropout is refused, though its warm-up value falls in [0, 1]', async () => {
    const fx = keras3LogitsThenDropout();
    expect(expectedLogit([0, 0, 0, 0])).toBeGreaterThan(0); // the warm-up row (imputation values) …
    expect(expectedLogit([0, 0, 0, 0])).toBeLessThan(1); // … gives a logit that looks like a probability
    expect(ROWS.some((x) => expectedLogit(x) < 0 || expectedLogit(x) > 1)).toBe(true);
    const err = await importError(fx);
    expect(err.code).toBe('invalid_model');
    expect(err.message).toMatch(/layer "dense_1" that sets the model output \(reached through "dropout"\) has activation "linear"/);
  });

  it('still accepts a sigmoid Dense followed by Dropout, and a linear Dense followed by Activation("sigmoid")', async () => {
    const want = ROWS.map((x) => 1 / (1 + Math.exp(-expectedLogit(x))));
    const dropout = keras3SequentialWith('keras3/sigmoid-dropout', (layers) => {
      layers.push({ class_name: 'Dropout', config: { name: 'dropout', trainable: true, rate: 0.2, seed: null, noise_shape: null } });
    });
    const activation = keras3SequentialWith('keras3/linear-activation', (layers) => {
      layers[2].config.activation = 'linear';
      layers.push({ class_name: 'Activation', config: { name: 'activation', trainable: true, activation: 'sigmoid' } });
    });
    for (const fx of [dropout, activation]) {
      const { single, batch } = await serve(fx);
      expectClose(single, want);
      expectClose(batch, want);
    }
  });

  it('refuses an output layer with no activation at all (here a BatchNormalization after the sigmoid)', async () => {
    const fx = keras3SequentialWith('keras3/bn-last', (layers) => {
      layers.push({ class_name: 'BatchNormalization', config: { name: 'batch_normalization', trainable: true, axis: -1, momentum: 0.99, epsilon: 0.001, center: false, scale: false } });
    });
    const mj = fx.modelJson as any;
    // center/scale off: only the moving statistics, mean 0 and variance 1 (so values stay in [0, 1]).
    mj.weightsManifest[0].weights.push(
      { name: 'sequential/batch_normalization/moving_mean', shape: [1], dtype: 'float32' },
      { name: 'sequential/batch_normalization/moving_variance', shape: [1], dtype: 'float32' },
    );
    const tail = Buffer.alloc(8);
    tail.writeFloatLE(0, 0);
    tail.writeFloatLE(1, 4);
    const files = new Map([['group1-shard1of1.bin', Buffer.concat([fx.files.get('group1-shard1of1.bin')!, tail])]]);
    const err = await importError({ modelJson: mj, files });
    expect(err.message).toMatch(/"batch_normalization" is a BatchNormalization layer, which has no activation/);
  });
});
