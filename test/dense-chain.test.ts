import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { compileDenseChain, disposeDenseChain, runDenseChain } from '../src/inference/dense-chain.js';
import { WasmDenseRunner } from '../src/inference/wasm-dense.js';

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

  it('the direct WASM runner gives the fast lane\'s outputs bit for bit, for any row count up to its capacity', () => {
    const width = 9;
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [width], units: 16, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 11 }), biasInitializer: tf.initializers.randomNormal({ seed: 12 }) }),
        tf.layers.dense({ units: 8, activation: 'elu', useBias: false, kernelInitializer: tf.initializers.glorotUniform({ seed: 13 }) }),
        tf.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: tf.initializers.glorotUniform({ seed: 14 }), biasInitializer: tf.initializers.randomNormal({ seed: 15 }) }),
      ],
    });
    const chain = compileDenseChain(model)!;
    const before = tf.memory().numTensors;
    const runner = WasmDenseRunner.create(chain, width, 100)!;
    expect(runner).not.toBeNull();
    const allocated = tf.memory().numTensors;
    // Row counts up and down (each call overwrites the previous one's buffers), then again after
    // the WASM memory has grown (the runner must not keep stale views of it).
    const counts = [1, 37, 3, 100, 2];
    const check = () => {
      for (const rows of counts) {
        const x = randomInput(rows, width, 100 + rows);
        const input = tf.tensor3d(x, [1, rows, width]);
        const out = runDenseChain(chain, input);
        const expected = Float32Array.from(out.dataSync());
        input.dispose();
        out.dispose();
        const direct = runner.run(x, rows);
        expect(direct).toHaveLength(rows);
        expect(Buffer.from(direct.buffer).equals(Buffer.from(expected.buffer)), `${rows} rows`).toBe(true);
      }
    };
    check();
    const heap = () => (tf.backend() as unknown as { wasm: { HEAPF32: Float32Array } }).wasm.HEAPF32.buffer;
    const heapBefore = heap();
    const big = tf.zeros([64, 1024, 1024]); // 256 MiB: the WASM heap has to grow
    expect(heap()).not.toBe(heapBefore);
    check();
    big.dispose();
    expect(() => runner.run(randomInput(101, width, 1), 101)).toThrow(/at most 100 rows/);
    // Its buffers are allocated once, not per call.
    expect(tf.memory().numTensors).toBe(allocated);
    runner.dispose();
    expect(tf.memory().numTensors).toBe(before);
    expect(() => runner.run(randomInput(1, width, 1), 1)).toThrow(/disposed/);
    disposeDenseChain(chain);
    model.dispose();
  });

  it('the direct runner declines other backends, and backend records it cannot read (leaving nothing allocated)', async () => {
    const width = 4;
    const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [width], units: 1, activation: 'sigmoid' })] });
    const chain = compileDenseChain(model)!;
    await tf.setBackend('cpu');
    try {
      expect(WasmDenseRunner.create(chain, width, 8)).toBeNull();
    } finally {
      await tf.setBackend('wasm');
    }
    const before = tf.memory().numTensors;
    const broken = [{ ...chain[0], batchKernel: tf.zeros([1, width, 1]) as tf.Tensor3D }];
    broken[0].batchKernel.dispose(); // the backend no longer has a record for it
    expect(WasmDenseRunner.create(broken, width, 8)).toBeNull();
    expect(tf.memory().numTensors).toBe(before);
    disposeDenseChain(chain);
    model.dispose();
  });
});
