import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

describe('GET /metrics', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await buildTestApp({ CACHE_ADMISSION: 'all' });
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
    // Buckets reach the largest BATCH_MAX_SIZE allowed (10,000).
    expect(res.body).toContain('intent_micro_batch_rows_bucket{le="10000"}');
  });

  it('keeps prediction counts cumulative across scrapes, counting each prediction once', async () => {
    const scrape = async (cached: boolean) => {
      const body = (await app.inject('/metrics')).body;
      const l = body.split('\n').find((x) => x.startsWith(`intent_predictions_total{version="shoppers-mlp-v1",cached="${cached}"}`));
      return Number(l?.split(' ').at(-1) ?? 0);
    };
    const before = { computed: await scrape(false), cached: await scrape(true) };
    const rows = shopperFeatureRows(40).slice(25);
    await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: rows.map((features) => ({ features })) } });
    expect(await scrape(false)).toBe(before.computed + rows.length);
    expect(await scrape(false)).toBe(before.computed + rows.length); // a second scrape adds nothing
    await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: rows[0] } });
    await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: rows[0] } });
    expect(await scrape(false)).toBe(before.computed + rows.length + 1);
    expect(await scrape(true)).toBe(before.cached + 1);
  });

  it('exposes dropped membership records as a counter (_total) that follows the running total, adding each drop once', async () => {
    const dropped = async () => {
      const body = (await app.inject('/metrics')).body;
      expect(body).toMatch(/^# TYPE intent_membership_records_dropped_total counter$/m);
      expect(body).not.toMatch(/^intent_membership_records_dropped /m); // the old gauge is gone
      return Number(body.match(/^intent_membership_records_dropped_total (\S+)$/m)?.[1]);
    };
    const segments = app.services.segments;
    const base = segments.dropped;
    expect(await dropped()).toBe(base);
    segments.dropped += 7; // as the segment service counts a dropped write batch
    expect(await dropped()).toBe(base + 7);
    expect(await dropped()).toBe(base + 7); // a second scrape adds nothing
    segments.dropped += 5;
    expect(await dropped()).toBe(base + 12);
  });

  it('counts every answered request by method, route template, status and latency (http_request_duration_seconds)', async () => {
    const series = async () => {
      const body = (await app.inject('/metrics')).body;
      expect(body).toMatch(/^# TYPE http_request_duration_seconds histogram$/m);
      const value = (name: string, labels: string) => Number(body.match(new RegExp(`^${name}\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\S+)$`, 'm'))?.[1] ?? 0);
      return { body, value };
    };
    const ok = 'method="POST",route="/v1/predict",status_code="200"';
    const bad = 'method="POST",route="/v1/predict",status_code="400"';
    const lost = 'method="GET",route="unmatched",status_code="404"';
    const before = await series();
    const [features] = shopperFeatureRows(1);
    for (let i = 0; i < 3; i++) await app.inject({ method: 'POST', url: '/v1/predict', payload: { features } });
    await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: { nope: 1 } } });
    await app.inject('/no/such/route');
    const after = await series();
    expect(after.value('http_request_duration_seconds_count', ok)).toBe(before.value('http_request_duration_seconds_count', ok) + 3);
    expect(after.value('http_request_duration_seconds_count', bad)).toBe(before.value('http_request_duration_seconds_count', bad) + 1);
    expect(after.value('http_request_duration_seconds_count', lost)).toBe(before.value('http_request_duration_seconds_count', lost) + 1);
    // Buckets are cumulative and end at the count; the sum is a plausible total of seconds.
    const buckets = [...after.body.matchAll(new RegExp(`^http_request_duration_seconds_bucket\\{${ok},le="([^"]+)"\\} (\\S+)$`, 'gm'))].map((m) => [m[1], Number(m[2])] as const);
    expect(buckets.at(-1)).toEqual(['+Inf', after.value('http_request_duration_seconds_count', ok)]);
    expect(buckets.length).toBeGreaterThan(10);
    for (let i = 1; i < buckets.length; i++) expect(buckets[i][1]).toBeGreaterThanOrEqual(buckets[i - 1][1]);
    const sum = after.value('http_request_duration_seconds_sum', ok);
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(60);
  });
});
