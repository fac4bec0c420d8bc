import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

/** Prometheus exposition (unauthenticated like the health probes; carries no user data). */
export const metricsRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const { metrics, segments } = app.services;
    const status = app.services.redisStatus();
    metrics.redisUp.set(status === 'up' ? 1 : status === 'down' ? 0 : -1);
    metrics.membershipDropped.set(segments.dropped);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
};
