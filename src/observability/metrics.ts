import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics for the service (GET /metrics). One registry per app instance. */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return {
    registry,
    predictions: new Counter({ name: 'intent_predictions_total', help: 'Predictions served', labelNames: ['version', 'cached'] as const, registers: [registry] }),
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
