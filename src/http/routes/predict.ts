import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { errorResponses, Prediction, PredictRequest } from '../schemas.js';
import { schemaIssues } from '../error-handler.js';
import { ValidationError } from '../../lib/errors.js';
import type { PredictInstance } from '../../inference/scorer.js';

/**
 * Predictions are built by our own typed code, so re-validating them with zod on the way out only
 * costs time on the hottest routes; the response schemas still document them.
 */
const plainJson = () => (data: unknown) => JSON.stringify(data);

export const predictRoutes: FastifyPluginAsyncZod = async (app) => {
  const { scorer, auth, config } = app.services;

  app.post(
    '/v1/predict',
    {
      onRequest: auth.require('predict'),
      // Schema errors are merged with feature errors so one 400 names every bad field.
      attachValidation: true,
      serializerCompiler: plainJson,
      schema: {
        tags: ['predict'],
        summary: 'Purchase probability for one session',
        description: 'With ?explain=true the answer adds per-feature contributions (integrated gradients against the training-mean input).',
        querystring: z.object({ explain: z.enum(['true', 'false']).optional() }),
        body: PredictRequest,
        response: { 200: Prediction, ...errorResponses },
      },
    },
    // Not async: the scorer's promise is returned as is, without wrapping it in another one.
    (request) => {
      // Features are checked against the model's spec (coerceFeatures), which names the problem
      // precisely; the schema's own report on them would only repeat it.
      const issues = request.validationError ? schemaIssues(request.validationError).filter((i) => !/^features(\.|$)/.test(i.path)) : [];
      const body = request.body as Partial<z.infer<typeof PredictRequest>> | undefined;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ValidationError(issues);
      const explain = (request.query as { explain?: string } | undefined)?.explain === 'true';
      return scorer.predictOne({ userId: body?.userId, sessionId: body?.sessionId, features: body?.features }, issues, { explain });
    },
  );

  const BatchRequest = z
    .object({ instances: z.array(PredictRequest).min(1).max(config.BATCH_MAX_INSTANCES) })
    .strict()
    .meta({ id: 'BatchPredictRequest' });

  app.post(
    '/v1/predict/batch',
    {
      onRequest: auth.require('predict'),
      attachValidation: true,
      serializerCompiler: plainJson,
      schema: {
        tags: ['predict'],
        summary: `Purchase probabilities for up to ${config.BATCH_MAX_INSTANCES} sessions, in request order`,
        body: BatchRequest,
        response: { 200: z.object({ modelVersion: z.string(), predictions: z.array(Prediction) }), ...errorResponses },
      },
    },
    async (request) => {
      const issues = schemaIssues(request.validationError).filter((i) => !/^instances\[\d+\]\.features(\.|$)/.test(i.path));
      const body = request.body as { instances?: unknown } | undefined;
      const instances = Array.isArray(body?.instances) ? (body.instances as { features?: unknown; userId?: string }[]) : [];
      if (issues.some((i) => i.path === 'instances' || i.path === 'body')) {
        // The envelope itself is wrong: nothing per-instance to add.
        return scorer.predictMany([], issues);
      }
      if (issues.length === 0) return scorer.predictMany(instances as PredictInstance[]); // schema-checked shape
      return scorer.predictMany(
        instances.map((i) => ({ userId: typeof i?.userId === 'string' ? i.userId : undefined, features: i?.features })),
        issues,
      );
    },
  );
};
