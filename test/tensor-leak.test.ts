import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/inference/backend.js';
import type { Prediction } from '../src/inference/scorer.js';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

const TOTAL = 100_000;
const VIA_BATCH = 20_000; // through predictMany (one model call per request)
const CHUNK = 500; // concurrent predictOne calls: the micro-batcher coalesces them
const BATCH_SIZE = 1_000;

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

beforeAll(async () => {
  app = await buildTestApp({ CACHE_MAX_ENTRIES: String(TOTAL + 1000) });
  await app.ready();
  base = shopperFeatureRows(1);
});

afterAll(async () => {
  await app?.close();
});

describe('tensor memory', () => {
  it(`holds no tensors after ${TOTAL.toLocaleString('en')} predictions (single, micro-batched and batch)`, async () => {
    const { scorer, models } = app.services;
    const model = models.active!;
    // The path requests take on this backend (a tfjs upgrade that changes WASM internals shows here).
    expect(model.inferencePath).toBe(tf.getBackend() === 'wasm' ? 'wasm-direct' : 'fused-chain');
    // Warm-up through both paths with inputs outside the measured range.
    const warm = Array.from({ length: 300 }, (_, i) => ({ features: { ...featuresFor(i), ExitRates: 0.123 } }));
    await Promise.all(warm.slice(0, 200).map((inst) => scorer.predictOne(inst)));
    await scorer.predictMany(warm.slice(200));

    const before = tf.memory().numTensors;
    expect(before).toBeGreaterThan(0); // the model's weights
    const batchesBefore = model.batcher.batches;
    const rowsBefore = model.batcher.rowsScored;

    const single = TOTAL - VIA_BATCH;
    for (let start = 0; start < single; start += CHUNK) {
      const chunk = Array.from({ length: Math.min(CHUNK, single - start) }, (_, j) => scorer.predictOne({ features: featuresFor(start + j) }));
      const ps = await Promise.all(chunk);
      expect(ps).toHaveLength(chunk.length);
      if (start % 10_000 === 0) expectProbabilities(ps);
    }
    for (let start = single; start < TOTAL; start += BATCH_SIZE) {
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

    expect(tf.memory().numTensors).toBe(before);
  });

  it('holds none after failed requests either', async () => {
    const { scorer } = app.services;
    const before = tf.memory().numTensors;
    for (let i = 0; i < 50; i++) {
      await expect(scorer.predictOne({ features: { ...featuresFor(i), Weekend: 'maybe' } })).rejects.toMatchObject({ statusCode: 400 });
      await expect(scorer.predictMany([{ features: featuresFor(i) }, { features: null }])).rejects.toMatchObject({ statusCode: 400 });
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
