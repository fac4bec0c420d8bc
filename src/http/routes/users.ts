import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { ErrorBody, errorResponses } from '../schemas.js';
import { notFound } from '../../lib/errors.js';
import { MAX_USER_ID_LENGTH } from '../../lib/user-id.js';

const UserParam = z.object({ userId: z.string().min(1).max(MAX_USER_ID_LENGTH) });

/** Per-user view and erasure (right to be forgotten). */
export const userRoutes: FastifyPluginAsyncZod = async (app) => {
  const { auth, segments } = app.services;

  app.get(
    '/v1/users/:userId',
    {
      onRequest: auth.require('segments'),
      schema: {
        tags: ['users'],
        summary: "A user's latest score, model version, persona and segments",
        params: UserParam,
        response: {
          200: z.object({
            userId: z.string(),
            probability: z.number(),
            modelVersion: z.string(),
            scoredAt: z.string().meta({ description: 'When this probability and these segments were computed (a live prediction, or a re-score)' }),
            lastSeenAt: z.string().meta({ description: "When the user was last scored live (POST /v1/predict or a batch with userIds); the record's expiry runs from it" }),
            persona: z.number().nullable(),
            segments: z.array(z.string()),
            featuresRetained: z.boolean(),
          }),
          ...errorResponses,
          404: ErrorBody,
        },
      },
    },
    async (request, reply) => {
      void reply.header('cache-control', 'no-store'); // personal data: no shared cache may keep it
      await segments.settled();
      const u = await segments.store.user(request.params.userId);
      if (!u) throw notFound(`user ${request.params.userId}`);
      return { userId: u.userId, probability: u.probability, modelVersion: u.version, scoredAt: new Date(u.scoredAt ?? u.at).toISOString(), lastSeenAt: new Date(u.at).toISOString(), persona: u.persona, segments: segments.currentSegmentsOf(u), featuresRetained: Boolean(u.features) };
    },
  );

  app.delete(
    '/v1/users/:userId',
    {
      onRequest: auth.require('segments'),
      schema: {
        tags: ['users'],
        summary: 'Erase the user from every store: memberships, user record, kept features, cached scores of their last input',
        params: UserParam,
        response: {
          200: z.object({ userId: z.string(), removed: z.object({ segments: z.array(z.string()), userRecord: z.boolean(), features: z.boolean(), cacheEntries: z.number() }) }),
          ...errorResponses,
        },
      },
    },
    async (request) => ({ userId: request.params.userId, removed: await segments.eraseUser(request.params.userId) }),
  );
};
