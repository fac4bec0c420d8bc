import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  UnsupportedLayerError,
  assertSupportedLayers,
  loadLayersModelFromDir,
  loadLayersModelFromFiles,
  normalizeModelJson,
} from '../src/registry/keras-topology.js';
import { B1, B2, FIXTURE_ROOT, W1, W2, allFixtures, keras2Functional, keras3Functional, keras3Sequential } from './fixtures/keras/make-fixtures.js';

const INPUTS = [
  [1, 2, 3, 4],
  [-1, 0.5, 2, -3],
  [0, 0, 0, 0],
  [0.3, -1.7, 2.2, 0.9],
  [-2, -2, 1, 5],
];

/** sigmoid(relu(x·W1 + b1)·W2 + b2), in plain JS doubles. */
function expected(x: number[]): number {
  const h = B1.map((b, j) => Math.max(0, b + x.reduce((s, xi, i) => s + xi * W1[i][j], 0)));
  const z = B2[0] + h.reduce((s, hj, j) => s + hj * W2[j][0], 0);
  return 1 / (1 + Math.exp(-z));
}

function predict(model: tf.LayersModel): number[] {
  return tf.tidy(() => Array.from((model.predict(tf.tensor2d(INPUTS)) as tf.Tensor).dataSync()));
}

function expectMatchesHandComputation(model: tf.LayersModel): void {
  const got = predict(model);
  const want = INPUTS.map(expected);
  expect(got).toHaveLength(want.length);
  got.forEach((g, i) => expect(Math.abs(g - want[i])).toBeLessThan(1e-5));
}

const fixtureDir = (dir: string) => path.join(FIXTURE_ROOT, dir);

beforeAll(async () => {
  if (!(await tf.setBackend('wasm'))) await tf.setBackend('cpu');
  await tf.ready();
});

describe('fixtures', () => {
  it('committed files match make-fixtures.ts byte for byte', () => {
    for (const fx of allFixtures()) {
      const onDisk = JSON.parse(readFileSync(path.join(fixtureDir(fx.dir), 'model.json'), 'utf8'));
      expect(onDisk).toEqual(fx.modelJson);
      for (const [name, data] of fx.files) expect(readFileSync(path.join(fixtureDir(fx.dir), name)).equals(data)).toBe(true);
    }
  });

  it('the hand computation exercises relu clipping (some hidden unit is negative pre-activation)', () => {
    const pre = INPUTS.flatMap((x) => B1.map((b, j) => b + x.reduce((s, xi, i) => s + xi * W1[i][j], 0)));
    expect(pre.some((v) => v < 0)).toBe(true);
    expect(pre.some((v) => v > 0)).toBe(true);
  });

  it('stock tf.loadLayersModel rejects the raw Keras 3 exports (why normalization exists)', async () => {
    for (const fx of [keras3Functional(), keras3Sequential()]) {
      const topo = (fx.modelJson as { modelTopology: object }).modelTopology;
      await expect(tf.loadLayersModel(tf.io.fromMemory({ modelTopology: topo }))).rejects.toThrow();
    }
  });
});

describe('normalizeModelJson', () => {
  it('rewrites the Keras 3 functional topology into the Keras 2 form, without mutating its input', () => {
    const input = keras3Functional().modelJson;
    const before = structuredClone(input);
    const { modelJson, changes } = normalizeModelJson(input);
    expect(input).toEqual(before);

    const text = JSON.stringify(modelJson);
    for (const gone of ['__keras_tensor__', 'DTypePolicy', '"module"', 'registered_name', '"batch_shape"', '"L2"']) expect(text).not.toContain(gone);

    const cfg = (modelJson as any).modelTopology.model_config.config;
    expect(cfg.layers[0].config.batch_input_shape).toEqual([null, 4]);
    expect(cfg.layers[1].inbound_nodes).toEqual([[['input_layer', 0, 0, {}]]]);
    expect(cfg.layers[2].inbound_nodes).toEqual([[['dense', 0, 0, {}]]]);
    expect(cfg.input_layers).toEqual([['input_layer', 0, 0]]);
    expect(cfg.output_layers).toEqual([['dense_1', 0, 0]]);
    expect(cfg.layers[1].config.dtype).toBe('float32');
    expect(cfg.layers[1].config.kernel_initializer).toEqual({ class_name: 'GlorotUniform', config: { seed: null } });
    expect(cfg.layers[1].config.kernel_regularizer).toEqual({ class_name: 'L1L2', config: { l1: 0, l2: 0.001 } });

    expect(changes).toEqual(
      expect.arrayContaining([
        'input_layer: batch_shape → batch_input_shape',
        'dense: inbound_nodes {args,kwargs} → [[layer, node, tensor, kwargs]]',
        'kernel_regularizer: L2 → L1L2',
      ]),
    );
    expect(changes.some((c) => c.includes('output_layers'))).toBe(true);
    expect(changes.some((c) => c.includes('DTypePolicy'))).toBe(true);
  });

  it('is idempotent', () => {
    const once = normalizeModelJson(keras3Sequential().modelJson).modelJson;
    const twice = normalizeModelJson(once);
    expect(twice.changes).toEqual([]);
    expect(twice.modelJson).toEqual(once);
  });

  it('strips the model-name prefix Keras 3 puts on Sequential weight paths', () => {
    const { modelJson, changes } = normalizeModelJson(keras3Sequential().modelJson);
    const names = (modelJson as any).weightsManifest[0].weights.map((w: { name: string }) => w.name);
    expect(names).toEqual(['dense/kernel', 'dense/bias', 'dense_1/kernel', 'dense_1/bias']);
    expect(changes.some((c) => c.includes('sequential/dense/kernel → dense/kernel'))).toBe(true);
  });

  it('leaves a tf.keras 2 topology untouched', () => {
    const input = keras2Functional().modelJson;
    const { modelJson, changes } = normalizeModelJson(input);
    expect(changes).toEqual([]);
    expect(modelJson).toEqual(input);
    expect(modelJson).not.toBe(input); // still a deep copy
  });

  it('flattens list-valued args (Concatenate) and handles a topology without model_config and with to_json() metadata', async () => {
    const t = (name: string, units: number) => ({ class_name: '__keras_tensor__', config: { shape: [null, units], dtype: 'float32', keras_history: [name, 0, 0] } });
    const dense = (name: string, units: number) => ({
      module: 'keras.layers',
      class_name: 'Dense',
      config: { name, units, activation: 'linear', use_bias: true, dtype: { module: 'keras', class_name: 'DTypePolicy', config: { name: 'float32' }, registered_name: null } },
      registered_name: null,
      build_config: { input_shape: [null, 4] },
      name,
      inbound_nodes: [{ args: [t('in', 4)], kwargs: {} }],
    });
    const modelJson = {
      format: 'layers-model',
      modelTopology: {
        module: 'keras',
        class_name: 'Functional',
        registered_name: 'Functional',
        config: {
          name: 'branches',
          trainable: true,
          layers: [
            { module: 'keras.layers', class_name: 'InputLayer', config: { batch_shape: [null, 4], dtype: 'float32', name: 'in' }, registered_name: null, name: 'in', inbound_nodes: [] },
            dense('a', 2),
            dense('b', 3),
            { module: 'keras.layers', class_name: 'Concatenate', config: { name: 'cat', axis: -1 }, registered_name: null, name: 'cat', inbound_nodes: [{ args: [[t('a', 2), t('b', 3)]], kwargs: {} }] },
          ],
          input_layers: [['in', 0, 0]],
          output_layers: [['cat', 0, 0]],
        },
      },
    };
    const norm = normalizeModelJson(modelJson).modelJson as any;
    expect(norm.modelTopology.config.layers[3].inbound_nodes).toEqual([[['a', 0, 0, {}], ['b', 0, 0, {}]]]);
    expect(JSON.stringify(norm)).not.toMatch(/"module"|registered_name|build_config/);
    const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: norm.modelTopology }));
    expect(model.outputs[0].shape).toEqual([null, 5]);
    model.dispose();
  });
});

describe('loading', () => {
  it('loads the Keras 3 functional export (two shards) and predicts like the hand computation', async () => {
    const model = await loadLayersModelFromDir(fixtureDir('keras3/functional'));
    expectMatchesHandComputation(model);
    model.dispose();
  });

  it('loads the Keras 3 Sequential export (InputLayer first, prefixed weight names)', async () => {
    const model = await loadLayersModelFromDir(fixtureDir('keras3/sequential'));
    expect(model.getClassName()).toBe('Sequential');
    expectMatchesHandComputation(model);
    model.dispose();
  });

  it('loads weights by order when names carry no layer (bare "kernel"/"bias")', async () => {
    const fx = keras3Sequential();
    const mj = structuredClone(fx.modelJson) as any;
    for (const w of mj.weightsManifest[0].weights) w.name = w.name.split('/').pop();
    const model = await loadLayersModelFromFiles(mj, fx.files);
    expectMatchesHandComputation(model);
    model.dispose();
  });

  it('Keras 2: our loader and stock tf.loadLayersModel on the raw file agree, and match by hand', async () => {
    const ours = await loadLayersModelFromDir(fixtureDir('keras2/functional'));
    const fx = keras2Functional();
    const raw = fx.modelJson as any;
    const stock = await tf.loadLayersModel(
      tf.io.fromMemory({
        modelTopology: raw.modelTopology,
        weightSpecs: raw.weightsManifest[0].weights,
        weightData: new Uint8Array(fx.files.get('group1-shard1of1.bin')!).buffer,
      }),
    );
    expect(predict(ours)).toEqual(predict(stock));
    expectMatchesHandComputation(ours);
    ours.dispose();
    stock.dispose();
  });

  it('reports a missing weight shard', async () => {
    const fx = keras3Functional();
    const files = new Map(fx.files);
    files.delete('group1-shard2of2.bin');
    await expect(loadLayersModelFromFiles(fx.modelJson, files)).rejects.toThrow(/group1-shard2of2\.bin/);
  });
});

describe('assertSupportedLayers', () => {
  const withFancyLayer = () => {
    const mj = structuredClone(keras3Functional().modelJson) as any;
    const layers = mj.modelTopology.model_config.config.layers;
    layers[2].class_name = 'FancyAttention';
    layers[2].name = 'fancy';
    return mj;
  };

  it('accepts the fixtures (Functional, Sequential, InputLayer, Dense) before and after normalization', () => {
    for (const fx of allFixtures()) {
      expect(() => assertSupportedLayers(fx.modelJson)).not.toThrow();
      expect(() => assertSupportedLayers(normalizeModelJson(fx.modelJson).modelJson)).not.toThrow();
    }
  });

  it('accepts a Sequential nested inside a Functional model', () => {
    const mj = structuredClone(keras2Functional().modelJson) as any;
    const layers = mj.modelTopology.model_config.config.layers;
    layers[2] = { class_name: 'Sequential', name: 'head', config: { name: 'head', layers: [{ class_name: 'Dense', config: { name: 'x', units: 1 } }] }, inbound_nodes: [[['dense', 0, 0, {}]]] };
    expect(() => assertSupportedLayers(mj)).not.toThrow();
  });

  it('names the first layer class tfjs cannot deserialize', async () => {
    const mj = withFancyLayer();
    let err: unknown;
    try {
      assertSupportedLayers(mj);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnsupportedLayerError);
    expect((err as UnsupportedLayerError).layerClass).toBe('FancyAttention');
    expect((err as Error).message).toContain('"fancy"');
    await expect(loadLayersModelFromFiles(mj, keras3Functional().files)).rejects.toBeInstanceOf(UnsupportedLayerError);
  });

  it('checks layers wrapped by TimeDistributed/Bidirectional', () => {
    const mj = structuredClone(keras2Functional().modelJson) as any;
    mj.modelTopology.model_config.config.layers[1] = {
      class_name: 'TimeDistributed',
      name: 'td',
      config: { name: 'td', layer: { class_name: 'FancyAttention', config: { name: 'inner' } } },
      inbound_nodes: [[['input_1', 0, 0, {}]]],
    };
    expect(() => assertSupportedLayers(mj)).toThrow(expect.objectContaining({ layerClass: 'FancyAttention' }));
  });
});
