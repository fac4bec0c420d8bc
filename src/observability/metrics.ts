import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { HttpRequestMetrics } from './http-metrics.js';

/**
 * A running total kept elsewhere (a plain number the code increments) handed to a Counter as the
 * increase since the last scrape. Reading totals at scrape keeps prom-client off the hot paths.
 */
function deltaSince(reported: Map<string, number>, key: string, total: number): number {
  const delta = total - (reported.get(key) ?? 0);
  reported.set(key, total);
  return delta > 0 ? delta : 0;
}

/**
 * A Counter fed at scrape time from running totals kept elsewhere, one series per key (labelled
 * `label`, or a single unlabelled series under the key ''). Returns where to plug the totals in.
 */
function totalsCounter(registry: Registry, name: string, help: string, label?: string): (totals: () => Iterable<readonly [string, number]>) => void {
  let source: (() => Iterable<readonly [string, number]>) | undefined;
  const reported = new Map<string, number>();
  new Counter({
    name,
    help,
    labelNames: label ? [label] : [],
    registers: [registry],
    collect() {
      for (const [key, total] of source?.() ?? []) {
        const delta = deltaSince(reported, key, total);
        if (delta > 0) {
          if (label) this.inc({ [label]: key }, delta);
          else this.inc(delta);
        }
      }
    },
  });
  return (totals) => {
    source = totals;
  };
}

/** Prometheus metrics for the service (GET /metrics). One registry per app instance. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Counted in plain numbers on the request path and handed to prom-client when scraped:
  // a labelled inc() hashes its labels every time, which costs more than the rest of the counting.
  const pending = { true: new Map<string, { n: number }>(), false: new Map<string, { n: number }>() };
  const predictions = new Counter({
    name: 'intent_predictions_total',
    help: 'Predictions served (single and batch requests; background job rows are in intent_job_rows_scored_total)',
    labelNames: ['version', 'cached'] as const,
    registers: [registry],
    collect() {
      for (const cached of ['true', 'false'] as const) {
        for (const [version, c] of pending[cached]) {
          if (c.n > 0) this.inc({ version, cached }, c.n);
          c.n = 0;
        }
      }
    },
  });
  // Running totals kept by the score cache, the scorer and the segment service, read when scraped.
  const cacheEvents = totalsCounter(registry, 'intent_score_cache_l2_events_total', 'Score cache L2 (Redis): read round trips, hits, errors, timeouts, read suspensions (Redis slow), scores not written', 'event');
  // Rows scored by background jobs (audience uploads, re-scores): not served predictions, so apart
  // from intent_predictions_total.
  const jobRows = totalsCounter(registry, 'intent_job_rows_scored_total', 'Rows scored by background jobs (audience uploads, re-scores); not served predictions', 'version');
  const membershipDropped = totalsCounter(registry, 'intent_membership_records_dropped_total', 'Membership records dropped while the store was unavailable or not keeping up');
  return {
    registry,
    predictions,
    /** Requests answered, by method, route and status, with their latency (fed by the request log controller). */
    http: new HttpRequestMetrics(registry),
    /** Where the L2 counters come from (the score cache). */
    observeCache(stats: () => Record<string, number>): void {
      cacheEvents(() => Object.entries(stats()));
    },
    /** Where the job row totals come from (the scorer's cumulative rows per version). */
    observeJobRows(totals: () => ReadonlyMap<string, number>): void {
      jobRows(totals);
    },
    /** Where the dropped membership records total comes from (the segment service). */
    observeMembershipDropped(total: () => number): void {
      membershipDropped(() => [['', total()]]);
    },
    /** Adds n predictions of a model version, answered from the cache or computed. */
    countPredictions(version: string, cached: boolean, n: number): void {
      const byVersion = cached ? pending.true : pending.false;
      const c = byVersion.get(version);
      if (c) c.n += n;
      else byVersion.set(version, { n });
    },
    batchSize: new Histogram({
      name: 'intent_micro_batch_rows',
      help: 'Rows per model call from the micro-batcher',
      // Up to BATCH_MAX_SIZE's upper bound, so no configured size lands only in +Inf.
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 10_000],
      registers: [registry],
    }),
    redisUp: new Gauge({ name: 'intent_redis_up', help: '1 when Redis is connected, 0 when down, -1 when disabled', registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
