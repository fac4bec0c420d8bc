import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

describe('GET /metrics', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await buildTestApp();
  });
  afterAll(async () => app.close());

  it('counts predictions by version and cache outcome, and micro-batch sizes', async () => {
    const rows = shopperFeatureRows(20);
    await Promise.all(rows.map((features) => app.inject({ method: 'POST', url: '/v1/predict', payload: { features } })));
    await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: rows[0] } }); // a cache hit
    const res = await app.inject('/metrics');
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/text\/plain/);
    const line = (name: string) => res.body.split('\n').find((l) => l.startsWith(name))?.split(' ').at(-1);
    expect(Number(line('intent_predictions_total{version="shoppers-mlp-v1",cached="false"}'))).toBe(20);
    expect(Number(line('intent_predictions_total{version="shoppers-mlp-v1",cached="true"}'))).toBe(1);
    // 20 concurrent requests were coalesced: fewer model calls than rows.
    const calls = Number(line('intent_micro_batch_rows_count'));
    expect(calls).toBeGreaterThan(0);
    expect(calls).toBeLessThan(20);
    expect(Number(line('intent_micro_batch_rows_sum'))).toBe(20); // the warm-up at load time bypasses the batcher
    expect(line('intent_redis_up')).toBe('-1');
  });
});
