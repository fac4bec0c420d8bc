import { z } from 'zod';
import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { bodyErrorResponses, errorResponses, idIssues, Prediction, PredictRequest } from '../schemas.js';
import { schemaIssues, zodIssues } from '../error-handler.js';
import { ValidationError, type FieldIssue } from '../../lib/errors.js';
import type { PredictInstance } from '../../inference/scorer.js';
import { batchJson, predictionJson } from '../prediction-json.js';

/**
 * Predictions are built by our own typed code, so re-validating them with zod on the way out only
 * costs time on the hottest routes; the response schemas still document them. Answers are written
 * by prediction-json.ts, errors by JSON.stringify.
 */
const answerJson =
  <T>(write: (answer: T) => string) =>
  ({ httpStatus }: { httpStatus?: string }) =>
    httpStatus === '200' ? (data: unknown) => write(data as T) : (data: unknown) => JSON.stringify(data);

const ExplainQuery = z.object({ explain: z.enum(['true', 'false']).optional() });

/**
 * Features are checked against the model's spec (coerceFeatures), which names the problem
 * precisely; the schema's own report on them would only repeat it. Matched on the raw path, so an
 * unknown top-level key spelled "features.x" is still reported.
 */
const underFeatures = (path: readonly PropertyKey[]) => path[0] === 'features';
const underInstanceFeatures = (path: readonly PropertyKey[]) => path[0] === 'instances' && /^\d+$/.test(String(path[1])) && path[2] === 'features';

/**
 * Fastify stops validating at the first part that fails (the body before the query), and
 * attachValidation then leaves the query unchecked: check it here too, so one 400 names both.
 */
function requestIssues(request: FastifyRequest, skip: (path: readonly PropertyKey[]) => boolean, querySchema?: z.ZodType): FieldIssue[] {
  const error = request.validationError;
  if (!error) return [];
  const issues = schemaIssues(error, skip);
  if (querySchema && (error as { validationContext?: string }).validationContext !== 'querystring') {
    const query = querySchema.safeParse(request.query ?? {});
    if (!query.success) issues.push(...zodIssues(query.error, 'querystring'));
  }
  return issues;
}

const stringOrUndefined = (v: unknown) => (typeof v === 'string' ? v : undefined);

export const predictRoutes: FastifyPluginAsyncZod = async (app) => {
  const { scorer, auth, config, segments } = app.services;
  /**
   * A batch with userIds puts up to BATCH_MAX_INSTANCES membership records on the store's queue:
   * its answer waits while the store is behind (SegmentService.backpressure), so a client sending
   * batch after batch goes at the store's pace instead of having records dropped.
   */
  const atStorePace = async <T>(answer: Promise<T>, instances: readonly unknown[]): Promise<T> => {
    const result = await answer;
    if (instances.some((i) => typeof (i as { userId?: unknown } | null)?.userId === 'string')) await segments.backpressure();
    return result;
  };

  app.post(
    '/v1/predict',
    {
      onRequest: auth.require('predict'),
      // Schema errors are merged with feature errors so one 400 names every bad field.
      attachValidation: true,
      serializerCompiler: answerJson(predictionJson),
      schema: {
        tags: ['predict'],
        summary: 'Purchase probability for one session',
        description: 'With ?explain=true the answer adds per-feature contributions (integrated gradients against the training-mean input).',
        querystring: ExplainQuery,
        body: PredictRequest,
        response: { 200: Prediction, ...errorResponses, ...bodyErrorResponses },
      },
    },
    // Not async: the scorer's promise is returned as is, without wrapping it in another one.
    (request) => {
      const issues = requestIssues(request, underFeatures, ExplainQuery);
      const body = request.body as Partial<z.infer<typeof PredictRequest>> | undefined;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ValidationError(issues);
      if (body.userId !== undefined || body.sessionId !== undefined) issues.push(...idIssues(body));
      const explain = (request.query as { explain?: string } | undefined)?.explain === 'true';
      // A userId of the wrong type is already an issue; it must not reach the canary router either.
      return scorer.predictOne({ userId: stringOrUndefined(body.userId), sessionId: stringOrUndefined(body.sessionId), features: body.features }, issues, { explain });
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
      serializerCompiler: answerJson(batchJson),
      schema: {
        tags: ['predict'],
        summary: `Purchase probabilities for up to ${config.BATCH_MAX_INSTANCES} sessions, in request order`,
        body: BatchRequest,
        response: { 200: z.object({ modelVersion: z.string(), predictions: z.array(Prediction) }), ...errorResponses, ...bodyErrorResponses },
      },
    },
    async (request) => {
      const issues = requestIssues(request, underInstanceFeatures);
      // Other query parameters are ignored (cache busters and the like); this one would be silently.
      if ((request.query as Record<string, unknown> | undefined)?.explain !== undefined) {
        issues.push({ path: 'explain', message: 'not supported on batches: explanations are for single predictions (POST /v1/predict?explain=true)' });
      }
      const body = request.body as { instances?: unknown } | undefined;
      const instances = Array.isArray(body?.instances) ? (body.instances as { features?: unknown; userId?: string; sessionId?: string }[]) : [];
      instances.forEach((instance, i) => {
        if (instance?.userId !== undefined || instance?.sessionId !== undefined) issues.push(...idIssues(instance, `instances[${i}].`));
      });
      if (issues.some((i) => i.path === 'instances' || i.path === 'body')) {
        // The envelope itself is wrong: nothing per-instance to add.
        return scorer.predictMany([], issues);
      }
      if (issues.length === 0) return atStorePace(scorer.predictMany(instances as PredictInstance[]), instances); // schema-checked shape
      // An instance that is not an object is reported as such; its missing features would only repeat it.
      const notObjects = new Set(issues.filter((i) => /^instances\[\d+\]$/.test(i.path)).map((i) => `${i.path}.features`));
      const repeats = (path: string) => notObjects.has(path.replace(/^(instances\[\d+\]\.features).*$/, '$1'));
      return scorer
        .predictMany(
          instances.map((i) => ({ userId: stringOrUndefined(i?.userId), features: i?.features })),
          issues,
        )
        .catch((err: unknown) => {
          if (err instanceof ValidationError && notObjects.size) throw new ValidationError(err.details.filter((d) => !repeats(d.path)));
          throw err;
        });
    },
  );
};
