import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../../src/inference/backend.js';
import type { Prediction } from '../../src/inference/scorer.js';
import { buildTestApp } from './app.js';
import { shopperFeatureRows } from './shoppers.js';

const VIA_BATCH_SHARE = 0.2; // through predictMany (one model call per request)
const CHUNK = 500; // concurrent predictOne calls: the micro-batcher coalesces them
const BATCH_SIZE = 1_000;

/**
 * Bytes of the WASM backend's heap (0 on other backends). The heap only grows, so this is a coarse
 * guard: a leak of WASM memory shows once it outgrows the free space (64 KB per model call does).
 */
function wasmHeapBytes(): number {
  const backend = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return backend.wasm?.HEAPU8?.byteLength ?? 0;
}

/**
 * The tensor-leak suite, run once per backend (each in its own test file, so each gets its own
 * process and backend): `total` predictions through the request paths, then model calls larger
 * than any direct-runner capacity, must leave tf.memory() (and the WASM heap) as they found it.
 */
export function describeTensorLeak(backend: 'wasm' | 'cpu', expectedPath: 'wasm-direct' | 'fused-chain', total: number): void {
  let app: FastifyInstance;
  let base: Record<string, unknown>[];

  /** Feature set number i: every i gives a different encoded vector (so no cache hits). */
  function featuresFor(i: number): Record<string, unknown> {
    return {
      ...base[i % base.length],
      PageValues: (i % 1000) * 0.1, // < clip max 172
      ProductRelated_Duration: Math.floor(i / 1000) * 100, // < clip max 17990
    };
  }

  function expectProbabilities(ps: Prediction[]): void {
    for (const p of ps) {
      expect(Number.isFinite(p.probability)).toBe(true);
      expect(p.probability).toBeGreaterThanOrEqual(0);
      expect(p.probability).toBeLessThanOrEqual(1);
      expect(p.cached).toBe(false);
    }
  }

  function memory() {
    const m = tf.memory();
    return { numTensors: m.numTensors, numBytes: m.numBytes, wasmHeap: wasmHeapBytes() };
  }

  beforeAll(async () => {
    app = await buildTestApp({ TF_BACKEND: backend, CACHE_MAX_ENTRIES: String(total + 1000) });
    await app.ready();
    base = shopperFeatureRows(1);
  });

  afterAll(async () => {
    await app?.close();
  });

  describe(`tensor memory (${backend} backend)`, () => {
    it(`holds no tensors after ${total.toLocaleString('en')} predictions (single, micro-batched and batch)`, async () => {
      const { scorer, models } = app.services;
      const model = models.active!;
      expect(tf.getBackend()).toBe(backend);
      // The path requests take on this backend (a tfjs upgrade that changes WASM internals shows here).
      expect(model.inferencePath).toBe(expectedPath);
      // Warm-up through both paths with inputs outside the measured range.
      const warm = Array.from({ length: 300 }, (_, i) => ({ features: { ...featuresFor(i), ExitRates: 0.123 } }));
      await Promise.all(warm.slice(0, 200).map((inst) => scorer.predictOne(inst)));
      await scorer.predictMany(warm.slice(200));

      const before = memory();
      expect(before.numTensors).toBeGreaterThan(0); // the model's weights
      const batchesBefore = model.batcher.batches;
      const rowsBefore = model.batcher.rowsScored;

      const single = Math.round(total * (1 - VIA_BATCH_SHARE));
      for (let start = 0; start < single; start += CHUNK) {
        const chunk = Array.from({ length: Math.min(CHUNK, single - start) }, (_, j) => scorer.predictOne({ features: featuresFor(start + j) }));
        const ps = await Promise.all(chunk);
        expect(ps).toHaveLength(chunk.length);
        if (start % 10_000 === 0) expectProbabilities(ps);
      }
      for (let start = single; start < total; start += BATCH_SIZE) {
        const instances = Array.from({ length: BATCH_SIZE }, (_, j) => ({ features: featuresFor(start + j) }));
        const out = await scorer.predictMany(instances);
        expect(out.predictions).toHaveLength(BATCH_SIZE);
        if (start % 10_000 === 0) expectProbabilities(out.predictions);
      }

      // Every single prediction went through the micro-batcher, coalesced into few model calls.
      expect(model.batcher.rowsScored - rowsBefore).toBe(single);
      const batches = model.batcher.batches - batchesBefore;
      expect(batches).toBeGreaterThan(0);
      expect(batches).toBeLessThanOrEqual(Math.ceil(single / 100));
      expect(models.active).toBe(model);

      expect(memory()).toEqual(before);
    });

    it('holds none after model calls too large for the direct runner (the tensor path)', () => {
      const model = app.services.models.active!;
      const width = model.encoder.width;
      const rows = 5_000; // above the direct runner's capacity (4,096 by default)
      const data = new Float32Array(rows * width);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 1000) / 500 - 1;
      const first = model.predictSync(data, rows);
      const before = memory();
      for (let i = 0; i < 20; i++) expect(model.predictSync(data, rows)).toEqual(first);
      expect(first).toHaveLength(rows);
      expect(memory()).toEqual(before);
    });

    it('holds none after failed requests either', async () => {
      const { scorer } = app.services;
      const before = memory();
      for (let i = 0; i < 50; i++) {
        await expect(scorer.predictOne({ features: { ...featuresFor(i), Weekend: 'maybe' } })).rejects.toMatchObject({ statusCode: 400 });
        await expect(scorer.predictMany([{ features: featuresFor(i) }, { features: null }])).rejects.toMatchObject({ statusCode: 400 });
      }
      expect(memory()).toEqual(before);
    });
  });
}
