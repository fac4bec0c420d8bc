import { Readable } from 'node:stream';
import type { FastifyRequest, preValidationHookHandler } from 'fastify';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { bodyErrorResponses, ErrorBody, errorResponses, queryLimit, queryScore } from '../schemas.js';
import { BandsSchema, RuleSegmentInput } from '../../segments/definitions.js';
import { RuleSchema, ruleSizeIssue } from '../../segments/rules.js';
import { computeProfile } from '../../segments/profile.js';
import { decodeCursor } from '../../segments/membership-store.js';
import { ValidationError } from '../../lib/errors.js';
import { schemaIssues } from '../error-handler.js';

const SegmentId = z.object({ id: z.string().min(1).max(100) });
const Segment = z
  .object({
    id: z.string(),
    kind: z.enum(['score-band', 'rule', 'persona']),
    name: z.string(),
    description: z.string().optional(),
    size: z.number(),
    updated: z.string().nullable(),
    rule: z.unknown().optional(),
    bounds: z.object({ min: z.number(), max: z.number() }).optional(),
  })
  .meta({ id: 'Segment' });
const RuleSegmentBody = z.object({ id: z.string(), name: z.string(), description: z.string().optional(), rule: z.unknown(), created: z.string(), updated: z.string() });
/** A created or changed rule (or bands), with the re-score that applies it to stored users. */
const RuleSegmentChange = RuleSegmentBody.extend({
  rescoreJob: z
    .object({ jobId: z.string(), statusUrl: z.string() })
    .nullable()
    .describe('the job re-scoring users with kept features under the new definitions, so stored members follow them; null with FEATURE_RETENTION=off (members then follow as users are scored)'),
});
const withNotFound = { ...errorResponses, 404: ErrorBody, 409: ErrorBody };
const PROFILE_SAMPLE = 5000;
const EXPORT_PAGE = 5000;

/** Refuses an oversized or over-deep rule, or one with too many `in` operands, before schema validation walks it (see RULE_LIMITS). */
const boundedRule: preValidationHookHandler = (request, _reply, done) => {
  const body = request.body as { rule?: unknown } | null;
  const issue = body && typeof body === 'object' ? ruleSizeIssue(body.rule) : null;
  done(issue ? new ValidationError([{ path: 'rule', message: issue }]) : undefined);
};

/** Marketing API: segment definitions, membership lists, exports and profiles (segments scope). */
export const segmentRoutes: FastifyPluginAsyncZod = async (app) => {
  const { auth, segments, models, scoringJobs, config } = app.services;
  /** Applies a rule or band change to stored users: a re-score under the new definitions (see ScoringJobs.rescoreAll). */
  const rescoreAfter = (what: string) => {
    if (config.FEATURE_RETENTION === 'off') return null;
    const job = scoringJobs.rescoreAll(what);
    app.log.info({ job: job.id, reason: what }, 're-scoring users with kept features');
    return { jobId: job.id, statusUrl: `/v1/jobs/${job.id}` };
  };
  const read = auth.require('segments');
  const admin = auth.require('admin');

  /**
   * A body that fails the schema is refused with the features its rule names that the model lacks
   * listed too, so one 400 names every problem. (A body that passes leaves the feature check to
   * the service, after a missing segment's 404.)
   */
  const refuseWithEveryIssue = (request: FastifyRequest): void => {
    if (!request.validationError) return;
    const body = request.body as { rule?: unknown } | null;
    const issues = [...schemaIssues(request.validationError), ...segments.unknownFeatureIssues(body && typeof body === 'object' ? body.rule : undefined)];
    throw issues.length ? new ValidationError(issues) : request.validationError;
  };

  app.get('/v1/segments', { onRequest: read, schema: { tags: ['segments'], summary: 'All segments with their sizes', response: { 200: z.object({ segments: z.array(Segment) }), ...errorResponses } } }, async () => ({
    segments: await segments.list(),
  }));

  app.get('/v1/segments/bands', { onRequest: read, schema: { tags: ['segments'], summary: 'Score-band thresholds', response: { 200: BandsSchema, ...errorResponses } } }, async () => segments.currentBands);

  app.put(
    '/v1/segments/bands',
    {
      onRequest: admin,
      schema: {
        tags: ['segments'],
        summary: 'Change score-band thresholds (stored users are re-scored into the new bands by the job named)',
        body: BandsSchema,
        response: { 200: BandsSchema.extend({ rescoreJob: RuleSegmentChange.shape.rescoreJob }), ...errorResponses, ...bodyErrorResponses },
      },
    },
    async (request) => {
      await segments.setBands(request.body);
      return { ...segments.currentBands, rescoreJob: rescoreAfter('score bands changed') };
    },
  );

  app.post(
    '/v1/segments',
    {
      onRequest: read,
      preValidation: boundedRule,
      attachValidation: true,
      schema: { tags: ['segments'], summary: 'Create a rule segment (stored users are re-scored into it by the job named)', body: RuleSegmentInput, response: { 201: RuleSegmentChange, ...withNotFound, ...bodyErrorResponses } },
    },
    async (request, reply) => {
      refuseWithEveryIssue(request);
      const created = await segments.createRule(request.body);
      return reply.code(201).send({ ...created, rescoreJob: rescoreAfter(`rule segment ${created.id} created`) });
    },
  );

  app.get('/v1/segments/:id', { onRequest: read, schema: { tags: ['segments'], params: SegmentId, response: { 200: Segment, ...withNotFound } } }, async (request) =>
    segments.get(request.params.id),
  );

  app.put(
    '/v1/segments/:id',
    {
      onRequest: read,
      preValidation: boundedRule,
      attachValidation: true,
      schema: {
        tags: ['segments'],
        summary: 'Replace a rule segment (stored users are re-scored under it by the job named)',
        params: SegmentId,
        body: z.object({ name: z.string().min(1).max(200), description: z.string().max(2000).optional(), rule: RuleSchema }).strict(),
        response: { 200: RuleSegmentChange, ...withNotFound, ...bodyErrorResponses },
      },
    },
    async (request) => {
      refuseWithEveryIssue(request);
      const updated = await segments.updateRule(request.params.id, request.body);
      return { ...updated, rescoreJob: rescoreAfter(`rule segment ${updated.id} changed`) };
    },
  );

  app.delete('/v1/segments/:id', { onRequest: read, schema: { tags: ['segments'], params: SegmentId, response: { 200: z.object({ deleted: z.string() }), ...withNotFound } } }, async (request) => {
    await segments.deleteRule(request.params.id);
    return { deleted: request.params.id };
  });

  app.get(
    '/v1/segments/:id/members',
    {
      onRequest: read,
      schema: {
        tags: ['segments'],
        summary: 'Members by score, descending, with a stable cursor',
        params: SegmentId,
        querystring: z.object({
          limit: queryLimit(1000).optional().meta({ description: 'page size, 1 to 1000 (default 100)' }),
          cursor: z.string().max(1000).optional(),
          minScore: queryScore.optional(),
        }),
        response: { 200: z.object({ segment: z.string(), members: z.array(z.object({ userId: z.string(), score: z.number() })), nextCursor: z.string().nullable() }), ...withNotFound },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      await segments.get(id); // 404 for unknown segments
      const { limit, cursor, minScore } = request.query;
      if (cursor && !decodeCursor(cursor)) throw new ValidationError([{ path: 'cursor', message: 'not a cursor returned by this endpoint' }]);
      const page = await segments.store.page(id, { limit: limit ?? 100, cursor, minScore });
      void reply.header('cache-control', 'no-store'); // userIds and scores: no shared cache may keep them
      return { segment: id, ...page };
    },
  );

  app.get(
    '/v1/segments/:id/export',
    {
      onRequest: read,
      schema: {
        tags: ['segments'],
        summary: 'All members, streamed as CSV or NDJSON (score descending)',
        params: SegmentId,
        querystring: z.object({ format: z.enum(['csv', 'ndjson']).default('csv'), minScore: queryScore.optional() }),
        description:
          'Responds 200 with text/csv (header userId,score) or application/x-ndjson ({"userId","score"} per line), streamed. ' +
          "In CSV, a userId that starts like a spreadsheet formula (= + - @, tab, CR) gets a leading ' (NDJSON carries userIds exactly).",
        produces: ['text/csv', 'application/x-ndjson'],
        response: { 200: z.string().describe('the members: CSV (userId,score) or NDJSON ({"userId","score"} per line), streamed'), ...withNotFound },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      await segments.get(id);
      const { format, minScore } = request.query;
      const store = segments.store;
      // Pages are pulled only as fast as the client reads, so memory stays flat for any size.
      async function* lines() {
        if (format === 'csv') yield 'userId,score\n';
        if (store.exportChunks) {
          yield* store.exportChunks(id, format, minScore);
          return;
        }
        let cursor: string | undefined;
        do {
          const page = await store.page(id, { limit: EXPORT_PAGE, cursor, minScore });
          let chunk = '';
          for (const m of page.members) chunk += format === 'csv' ? `${csvCell(m.userId)},${m.score}\n` : JSON.stringify(m) + '\n';
          if (chunk) yield chunk;
          cursor = page.nextCursor ?? undefined;
        } while (cursor);
      }
      reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson')
        .header('content-disposition', `attachment; filename="${id}.${format === 'csv' ? 'csv' : 'ndjson'}"`)
        .header('cache-control', 'no-store'); // a list of users: no shared cache may keep it
      // A stream is piped as-is; the type provider only knows the JSON error bodies of this route.
      return reply.send(Readable.from(lines(), { objectMode: false }) as never);
    },
  );

  app.get(
    '/v1/segments/:id/profile',
    {
      onRequest: read,
      schema: {
        tags: ['segments'],
        summary: 'Profile (画像): score distribution, per-feature comparison with all scored users, most distinctive features',
        description: `Computed on random samples of up to ${PROFILE_SAMPLE} members and ${PROFILE_SAMPLE} scored users; the sample sizes are reported.`,
        params: SegmentId,
        response: { 200: z.record(z.string(), z.unknown()), ...withNotFound },
      },
    },
    async (request) => {
      const { id } = request.params;
      const seg = await segments.get(id);
      const store = segments.store;
      const [members, population, scoredUsers] = await Promise.all([store.sample(id, PROFILE_SAMPLE), store.sample(null, PROFILE_SAMPLE), store.scoredUsers()]);
      const profile = computeProfile(models.active?.spec ?? null, members, population, { size: seg.size, scoredUsers }, models.active?.id ?? null);
      return { segment: { id: seg.id, kind: seg.kind, name: seg.name }, ...profile };
    },
  );
};

/**
 * A userId as a CSV cell. One that starts like a spreadsheet formula (= + - @, tab, CR) gets a
 * leading apostrophe, so opening the export in a spreadsheet shows it instead of evaluating it
 * (OWASP's CSV-injection advice); NDJSON exports carry ids unchanged. Kept in step with the Redis
 * store's renderer (EXPORT_PAGE in redis-membership-store.ts).
 */
function csvCell(s: string): string {
  const cell = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return /[",\n\r]/.test(cell) ? `"${cell.replace(/"/g, '""')}"` : cell;
}
