import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

const Readiness = z.object({
  status: z.enum(['ready', 'not_ready', 'shutting_down']).describe('shutting_down: a SIGTERM arrived; requests are still served for SHUTDOWN_GRACE_MS, so take this replica out of rotation'),
  model: z.object({
    loaded: z.boolean(),
    activeVersion: z.string().nullable(),
    canaryVersion: z.string().nullable(),
    inferencePath: z
      .enum(['wasm-direct', 'fused-chain', 'layers'])
      .nullable()
      .describe("How the active version's model calls run: direct WASM kernel calls, fused dense-chain ops, or the Layers API"),
  }),
  backend: z.string(),
  redis: z.enum(['up', 'down', 'disabled']),
});

export const healthRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get('/healthz', { schema: { tags: ['health'], security: [], response: { 200: z.object({ status: z.literal('ok') }) } } }, async () => ({
    status: 'ok' as const,
  }));

  // Ready means a model can answer; Redis being down degrades caching but does not make us unready.
  app.get('/readyz', { schema: { tags: ['health'], security: [], response: { 200: Readiness, 503: Readiness } } }, async (_req, reply) => {
    const { models, backend } = app.services;
    const ready = Boolean(models.active) && !app.services.shuttingDown;
    const body = {
      status: app.services.shuttingDown ? ('shutting_down' as const) : models.active ? ('ready' as const) : ('not_ready' as const),
      model: {
        loaded: Boolean(models.active),
        activeVersion: models.active?.id ?? null,
        canaryVersion: models.canary?.id ?? null,
        inferencePath: models.active?.inferencePath ?? null,
      },
      backend,
      redis: app.services.redisStatus(),
    };
    return reply.code(ready ? 200 : 503).send(body);
  });
};
