import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

/** Prometheus exposition (unauthenticated like the health probes; carries no user data). */
export const metricsRoutes: FastifyPluginAsyncZod = async (app) => {
  const { metrics, scorer, segments } = app.services;
  // Running totals kept by the services, handed to their counters as deltas when scraped.
  metrics.observeJobRows(() => scorer.jobRows);
  metrics.observeMembershipDropped(() => segments.dropped);
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const status = app.services.redisStatus();
    metrics.redisUp.set(status === 'up' ? 1 : status === 'down' ? 0 : -1);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
};
