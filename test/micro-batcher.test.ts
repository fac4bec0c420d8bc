import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MicroBatcher } from '../src/inference/micro-batcher.js';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

/** A "model" whose answer for a row is the sum of its values, recording each call's row count. */
function summingBatcher(width: number, maxBatch: number) {
  const calls: number[] = [];
  const batcher = new MicroBatcher(
    width,
    (data, rows) => {
      calls.push(rows);
      return Float32Array.from({ length: rows }, (_, r) => data.subarray(r * width, (r + 1) * width).reduce((a, b) => a + b, 0));
    },
    { maxBatch, maxWaitMs: 0 },
  );
  return { batcher, calls };
}

describe('MicroBatcher', () => {
  it('answers the batch even when its observer throws', async () => {
    const batcher = new MicroBatcher(2, (data, rows) => Float32Array.from({ length: rows }, (_, r) => data[r * 2] + data[r * 2 + 1]), {
      maxBatch: 8,
      maxWaitMs: 0,
      onBatch: () => {
        throw new Error('metrics broke');
      },
    });
    await expect(Promise.all([batcher.score(Float32Array.of(1, 2)), batcher.score(Float32Array.of(3, 4))])).resolves.toEqual([3, 7]);
    await expect(batcher.score(Float32Array.of(5, 5))).resolves.toBe(10);
  });

  it('copies a row when it is queued, so the caller may reuse its buffer at once', async () => {
    const { batcher, calls } = summingBatcher(3, 16);
    const buffer = new Float32Array(3);
    const answers: Promise<number>[] = [];
    for (let i = 0; i < 5; i++) {
      buffer.set([i, 10 * i, 100 * i]);
      answers.push(batcher.score(buffer));
    }
    buffer.fill(-1);
    expect(await Promise.all(answers)).toEqual([0, 111, 222, 333, 444]);
    expect(calls).toEqual([5]); // one model call for the turn
  });

  it('flushes at maxBatch and answers every request in order', async () => {
    const { batcher, calls } = summingBatcher(2, 4);
    const answers = Array.from({ length: 10 }, (_, i) => batcher.score(Float32Array.from([i, 1])));
    expect(await Promise.all(answers)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));
    expect(calls).toEqual([4, 4, 2]);
    expect(batcher.pending).toBe(0);
  });

  it('rejects every request of a batch whose model call fails, and keeps serving afterwards', async () => {
    let fail = true;
    const batcher = new MicroBatcher(
      1,
      (data, rows) => {
        if (fail) throw new Error('model failed');
        return data.slice(0, rows);
      },
      { maxBatch: 8, maxWaitMs: 0 },
    );
    const failed = [batcher.score(Float32Array.of(1)), batcher.score(Float32Array.of(2))];
    for (const f of failed) await expect(f).rejects.toThrow('model failed');
    fail = false;
    expect(await batcher.score(Float32Array.of(7))).toBe(7);
  });
});

describe('concurrent single predictions', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await buildTestApp({ BATCH_MAX_SIZE: '7' });
  });
  afterAll(async () => {
    await app.close();
  });

  it('each answer is its own row’s score (shared encode buffer and micro-batches never mix rows)', async () => {
    const rows = shopperFeatureRows(300).map((r, i) => ({ ...r, ProductRelated_Duration: 1000 + i }));
    const { scorer } = app.services;
    const single = await Promise.all(rows.map((features) => scorer.predictOne({ features })));
    const batch = await scorer.predictMany(rows.map((features) => ({ features })));
    expect(single.map((p) => p.cached)).toEqual(rows.map(() => false));
    expect(single.map((p) => p.probability)).toEqual(batch.predictions.map((p) => p.probability));
    expect(new Set(single.map((p) => p.probability)).size).toBeGreaterThan(200);
  });
});
