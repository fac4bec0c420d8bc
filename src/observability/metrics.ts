import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics for the service (GET /metrics). One registry per app instance. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Counted in plain numbers on the request path and handed to prom-client when scraped:
  // a labelled inc() hashes its labels every time, which costs more than the rest of the counting.
  const pending = { true: new Map<string, { n: number }>(), false: new Map<string, { n: number }>() };
  const predictions = new Counter({
    name: 'intent_predictions_total',
    help: 'Predictions served',
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
  // Score cache L2 counters live in the cache; they are read when scraped.
  let cacheStats: (() => Record<string, number>) | undefined;
  const reported = new Map<string, number>();
  new Counter({
    name: 'intent_score_cache_l2_events_total',
    help: 'Score cache L2 (Redis): read round trips, hits, errors, timeouts, read suspensions (Redis slow), scores not written',
    labelNames: ['event'] as const,
    registers: [registry],
    collect() {
      for (const [event, value] of Object.entries(cacheStats?.() ?? {})) {
        const delta = value - (reported.get(event) ?? 0);
        if (delta > 0) this.inc({ event }, delta);
        reported.set(event, value);
      }
    },
  });
  return {
    registry,
    predictions,
    /** Where the L2 counters come from (the score cache). */
    observeCache(stats: () => Record<string, number>): void {
      cacheStats = stats;
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
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: [registry],
    }),
    membershipDropped: new Gauge({ name: 'intent_membership_records_dropped', help: 'Membership records dropped while the store was unavailable', registers: [registry] }),
    redisUp: new Gauge({ name: 'intent_redis_up', help: '1 when Redis is connected, 0 when down, -1 when disabled', registers: [registry] }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
