import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { FastifyRequest } from 'fastify';
import { Authenticator } from '../auth.js';
import { notFound } from '../../lib/errors.js';
import { bodyErrorResponses, ErrorBody, errorResponses } from '../schemas.js';
import type { JobEvent } from '../../training/job-manager.js';
import { isTerminal } from '../../lib/job-status.js';
import { resolveDatasetPath, resolveUpload } from '../../dataset/resolve-path.js';
import { DEFAULT_PROMOTE_MARGIN } from '../../training/worker.js';

const column = z.string().min(1).max(200);

const RetrainRequest = z
  .object({
    dataset: z
      .union([
        z.object({ path: z.string().min(1).max(1000).describe('CSV path relative to DATA_DIR') }).strict(),
        z.object({ uploadId: z.string().min(1).max(100).describe('From POST /v1/datasets') }).strict(),
      ])
      .describe('A CSV inside DATA_DIR, or an uploaded one'),
    label: column.describe('Label column'),
    positive: z.string().min(1).max(200).describe('Label value meaning "purchased" (true/yes/1 match each other)'),
    categorical: z.array(column).max(500).optional().describe('Columns to treat as categories even if numeric (codes)'),
    exclude: z.array(column).max(500).optional().describe('Columns to leave out of the features (ids, free text, leaks of the label)'),
    hyperparameters: z
      .object({
        epochs: z.number().int().min(1).max(1000).optional(),
        hidden: z.array(z.number().int().min(1).max(1024)).min(1).max(6).optional(),
        l2: z.number().min(0).max(1).optional(),
        learningRate: z.number().gt(0).max(1).optional(),
        batchSize: z.number().int().min(1).max(65536).optional(),
        patience: z.number().int().min(1).max(1000).optional(),
      })
      .strict()
      .optional(),
    seed: z.number().int().min(0).max(2 ** 31 - 1).optional(),
    promote: z.enum(['never', 'if-better', 'always']).default('never'),
    promoteMargin: z
      .number()
      .min(-1)
      .max(1)
      .optional()
      .describe(`"if-better": promote only if candidate AUC ≥ active AUC + margin on the held-out rows (default ${DEFAULT_PROMOTE_MARGIN})`),
  })
  .strict()
  .meta({ id: 'RetrainRequest' });

const num = z.number().nullable();
const Comparison = z.object({
  activeVersion: z.string().nullable(),
  rows: z.number(),
  candidateAuc: num,
  activeAuc: num,
  margin: z.number(),
  promote: z.boolean(),
  reason: z.string(),
});
const Job = z
  .object({
    id: z.string(),
    status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
    dataset: z.union([z.object({ path: z.string() }), z.object({ uploadId: z.string() })]),
    label: z.string(),
    positive: z.string(),
    promote: z.enum(['never', 'if-better', 'always']),
    requestedBy: z.string(),
    epoch: num,
    epochs: num.describe('Requested maximum (early stopping may end sooner); null = default'),
    loss: num,
    validationAuc: num,
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    version: z.string().nullable().describe('The version this job wrote'),
    metrics: z
      .object({
        n: z.number(),
        positives: z.number(),
        auc: num,
        f1: z.number(),
        brier: z.number(),
        logLoss: z.number(),
        accuracy: z.number(),
        precision: z.number(),
        recall: z.number(),
        threshold: z.number(),
      })
      .nullable()
      .describe('Test-split headline of the new version'),
    cleaning: z
      .object({
        rowsRead: z.number(),
        duplicatesDropped: z.number(),
        unlabeledDropped: z.number(),
        blankCells: z.record(z.string(), z.number()),
        rowsKept: z.number(),
        positives: z.number(),
        labelValues: z.record(z.string(), z.number()).optional().describe('Rows per label value as written (blank is ""), the 20 most frequent'),
        warnings: z.array(z.string()).optional().describe('Likely mistakes in the data: a label with more than two values, label cells that are missing-value markers, numbers written with commas, id-like columns'),
        columnsLeftOut: z.record(z.string(), z.string()).optional().describe('Columns with no value to learn from, and why they were left out'),
      })
      .nullable(),
    promotion: z
      .object({ mode: z.enum(['never', 'if-better', 'always']), promoted: z.boolean(), reason: z.string(), comparison: Comparison.nullable() })
      .nullable(),
    error: z.string().nullable(),
  })
  .meta({ id: 'RetrainJob' });

const ScoringJob = z
  .object({
    id: z.string(),
    kind: z.enum(['score-audience', 'rescore']),
    status: z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']),
    modelVersion: z.string().nullable(),
    rowsDone: z.number().describe('rows read so far: scored + invalid'),
    scored: z.number(),
    invalid: z.number().describe('rows refused: a missing or over-long userId, or features that do not fit the model'),
    recordsDropped: z.number().describe('membership records not confirmed stored while the job ran (the store failed or hung, or a write timed out; the service log says why)'),
    errors: z.array(z.object({ row: z.number(), path: z.string(), message: z.string() })),
    segments: z
      .record(z.string(), z.number())
      .describe("scored rows per segment they put their user in (a userId on two rows counts twice; the user's membership is that of its last row)"),
    createdAt: z.string(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    error: z.string().nullable(),
  })
  .meta({ id: 'ScoringJob' });

const JobId = z.object({ id: z.string().min(1).max(100) });
const withJobErrors = { ...errorResponses, 404: ErrorBody, 409: ErrorBody };

/**
 * Retraining (admin): POST starts a job in a worker thread (one at a time: a second POST while one
 * is queued/running answers 409 naming it), GET polls it, GET …/events streams it (SSE), DELETE cancels.
 */
export const jobRoutes: FastifyPluginAsyncZod = async (app) => {
  const { auth, config, jobs, scoringJobs } = app.services;
  const admin = auth.require('admin');
  // Job routes serve retraining jobs (admin) and audience/re-scoring jobs (segments or admin).
  const anyKey = auth.require('read');
  const authorize = (request: FastifyRequest, id: string) => {
    if (scoringJobs.has(id)) {
      if (!request.scopes?.has('segments') && !request.scopes?.has('admin')) Authenticator.assertScope(request, 'segments', 'this scoring job');
    } else if (jobs.has(id)) Authenticator.assertScope(request, 'admin', 'a retraining job');
    else throw notFound(`job ${id}`); // unknown (or finished long ago and forgotten)
  };
  // Open event streams are ended before the server closes, or a graceful shutdown would wait on
  // them. Jobs are stopped first, so each stream still carries its job's final status.
  const streams = new Set<() => void>();
  app.addHook('preClose', async () => {
    await Promise.all([jobs.close(), scoringJobs.close()]);
    for (const end of [...streams]) end();
  });

  app.post(
    '/v1/models/retrain',
    {
      onRequest: admin,
      schema: {
        tags: ['models'],
        summary: 'Retrain on a CSV in a worker thread; optionally promote the new version',
        description:
          '`dataset` is `{ path }` (relative to DATA_DIR; absolute paths, `..` and symlinks leaving DATA_DIR are refused) or ' +
          '`{ uploadId }` from POST /v1/datasets. `promote`: "never" (default) leaves the version inactive; "always" activates it; ' +
          '"if-better" scores the candidate and the active model on the candidate\'s held-out test rows and activates only if ' +
          `candidate AUC ≥ active AUC + promoteMargin (default ${DEFAULT_PROMOTE_MARGIN}). One training at a time: 409 while another job is queued or running.`,
        body: RetrainRequest,
        response: { 202: z.object({ jobId: z.string(), statusUrl: z.string() }), ...withJobErrors, ...bodyErrorResponses },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const datasetPath =
        'path' in body.dataset ? resolveDatasetPath(config.DATA_DIR, body.dataset.path) : resolveUpload(config.DATA_DIR, body.dataset.uploadId);
      const job = jobs.start(
        {
          datasetPath,
          dataset: body.dataset,
          label: body.label,
          positive: body.positive,
          categorical: body.categorical,
          exclude: body.exclude,
          hyperparameters: body.hyperparameters,
          seed: body.seed,
          promote: body.promote,
          promoteMargin: body.promoteMargin,
        },
        request.actor ?? 'unknown',
      );
      const statusUrl = `/v1/jobs/${job.id}`;
      return reply.code(202).header('location', statusUrl).send({ jobId: job.id, statusUrl });
    },
  );

  app.get(
    '/v1/jobs/:id',
    {
      onRequest: anyKey,
      schema: {
        tags: ['jobs'],
        summary: 'A job: retraining (status, progress, result, promotion decision) or scoring (rows done, scored, invalid, segment counts)',
        params: JobId,
        response: { 200: z.union([Job, ScoringJob]), ...withJobErrors },
      },
    },
    async (request) => {
      const id = request.params.id;
      authorize(request, id);
      return scoringJobs.has(id) ? scoringJobs.get(id) : jobs.get(id);
    },
  );

  app.delete(
    '/v1/jobs/:id',
    {
      onRequest: anyKey,
      schema: {
        tags: ['jobs'],
        summary: 'Cancel a queued or running job (a retraining worker is terminated; no partial version remains)',
        description: '409 if a retraining job already finished or is past training (promoting its version).',
        params: JobId,
        response: { 200: z.union([Job, ScoringJob]), ...withJobErrors },
      },
    },
    async (request) => {
      const id = request.params.id;
      authorize(request, id);
      return scoringJobs.has(id) ? scoringJobs.cancel(id) : jobs.cancel(id, request.actor);
    },
  );

  app.get(
    '/v1/jobs/:id/events',
    {
      onRequest: anyKey,
      schema: {
        tags: ['jobs'],
        summary: 'Server-sent events: the current status, then `progress` per epoch and `status` on each change; ends when the job finishes',
        params: JobId,
        produces: ['text/event-stream'],
        response: { 200: z.string().describe('text/event-stream'), ...withJobErrors },
      },
    },
    async (request, reply) => {
      const id = request.params.id;
      authorize(request, id);
      const source = scoringJobs.has(id) ? scoringJobs : jobs;
      const first = source === scoringJobs ? scoringJobs.get(id) : jobs.get(id); // 404 before any streaming starts
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      const send = (event: string, data: unknown) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      let ended = false;
      const end = () => {
        if (ended) return;
        ended = true;
        streams.delete(end);
        source.off('job', onJob);
        source.off('close', end);
        clearInterval(keepAlive);
        res.end();
      };
      const onJob = (e: JobEvent) => {
        if (e.jobId !== id || ended) return;
        if (e.type === 'progress') send('progress', { jobId: id, epoch: e.epoch, loss: e.loss, validationAuc: e.validationAuc });
        else {
          send('status', e.job);
          if (isTerminal(e.job.status)) end();
        }
      };
      // Comment lines keep proxies from closing an idle stream during long epochs.
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), 15_000).unref();
      send('status', first);
      if (isTerminal(first.status)) return end();
      streams.add(end);
      source.on('job', onJob);
      source.on('close', end);
      res.on('close', end); // client went away
    },
  );
};
