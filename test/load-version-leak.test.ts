import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { LoadedModel } from '../src/inference/loaded-model.js';
import { loadVersion } from '../src/registry/load-version.js';
import { ModelStore } from '../src/registry/model-store.js';
import { modelToFiles } from '../src/registry/version-files.js';

const WIDTH = 4;
const BATCHING = { maxBatch: 64, maxWaitMs: 0 };
const spec = { features: Array.from({ length: WIDTH }, (_, i) => ({ name: `x${i + 1}`, type: 'numeric', impute: i })) };

/** A layer whose forward pass always fails: a real warm-up throw, not a stub. */
class ExplodingLayer extends tf.layers.Layer {
  static className = 'ExplodingLayerForLeakTest';
  override call(): tf.Tensor {
    throw new Error('exploding layer');
  }
}
tf.serialization.registerClass(ExplodingLayer);

const denseChain = () =>
  tf.sequential({ layers: [tf.layers.dense({ inputShape: [WIDTH], units: 3, activation: 'relu' }), tf.layers.dense({ units: 1, activation: 'sigmoid' })] });

describe('loadVersion frees the version when its warm-up throws', () => {
  let dir: string;
  let store: ModelStore;
  let n = 0;

  /** Writes `model` as a new version (then disposes it), so only loadVersion's tensors remain. */
  async function writeVersion(model: tf.LayersModel): Promise<string> {
    const files = await modelToFiles(model);
    model.dispose();
    files.set('feature-spec.json', Buffer.from(JSON.stringify(spec)));
    return store.writeVersion({ id: `leak-${++n}`, created: new Date().toISOString(), source: 'imported' }, files);
  }

  beforeAll(async () => {
    await initBackend('wasm');
    dir = mkdtempSync(join(tmpdir(), 'load-version-leak-'));
    store = new ModelStore(dir);
  });

  afterEach(() => {
    vi.restoreAllMocks();
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('a version that loads keeps its tensors until retired (the measurement sees them)', async () => {
    const id = await writeVersion(denseChain());
    const before = tf.memory().numTensors;
    const loaded = await loadVersion(store, id, BATCHING);
    expect(loaded.inferencePath).toBe('wasm-direct');
    expect(tf.memory().numTensors).toBeGreaterThan(before);
    loaded.retire();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a model whose forward pass throws (Layers API path): weights freed', async () => {
    const id = await writeVersion(
      tf.sequential({ layers: [tf.layers.dense({ inputShape: [WIDTH], units: 3, activation: 'relu' }), new ExplodingLayer({}), tf.layers.dense({ units: 1, activation: 'sigmoid' })] }),
    );
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) await expect(loadVersion(store, id, BATCHING)).rejects.toThrow(/exploding layer/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a dense chain whose warm-up call throws (direct WASM path): runner, chain and weights freed', async () => {
    const id = await writeVersion(denseChain());
    const before = tf.memory().numTensors;
    // Only the call fails: the constructor still builds the runner and chain that must be freed.
    let seen: LoadedModel | undefined;
    vi.spyOn(LoadedModel.prototype, 'predictSync').mockImplementation(function (this: LoadedModel) {
      seen = this;
      expect(tf.memory().numTensors).toBeGreaterThan(before);
      throw new Error('warm-up call failed');
    });
    await expect(loadVersion(store, id, BATCHING)).rejects.toThrow(/warm-up call failed/);
    expect(tf.memory().numTensors).toBe(before);
    expect(seen?.inferencePath).toBe('wasm-direct');
    expect(seen?.isDisposed).toBe(true);
  });

  it('personas.json without centroids is refused (every answer names a persona) and frees the weights', async () => {
    const model = denseChain();
    const files = await modelToFiles(model);
    model.dispose();
    files.set('feature-spec.json', Buffer.from(JSON.stringify(spec)));
    files.set('personas.json', Buffer.from(JSON.stringify({ method: 'kmeans-encoded-input', k: 1, silhouette: 0, centroids: [], personas: [] })));
    const id = store.writeVersion({ id: `leak-${++n}`, created: new Date().toISOString(), source: 'imported' }, files);
    const before = tf.memory().numTensors;
    await expect(loadVersion(store, await id, BATCHING)).rejects.toThrow(/personas.json has no centroids/);
    expect(tf.memory().numTensors).toBe(before);
  });
});
