import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { filePart, multipartBody } from '../multipart-docs.js';
import { ErrorBody, errorResponses } from '../schemas.js';
import { AppError } from '../../lib/errors.js';
import { receiveOneFile } from '../receive-one-file.js';
import { MAX_AUDIENCE_JOBS } from '../../segments/scoring-jobs.js';

/** Audience builds: score a CSV of userId + features in the background, updating memberships. */
export const audienceScoringRoutes: FastifyPluginAsyncZod = async (app) => {
  const { auth, config, scoringJobs } = app.services;
  const limit = config.UPLOAD_LIMIT_BYTES;

  app.post(
    '/v1/segments/score',
    {
      onRequest: auth.require('segments'),
      config: { swaggerTransform: multipartBody({ file: filePart('The CSV: a userId column and the active model\'s feature columns, with a header row') }, ['file']) },
      schema: {
        tags: ['segments'],
        summary: 'Score an audience CSV (userId + feature columns) as a background job',
        description:
          'multipart/form-data with one CSV file part. Rows are scored in chunks of 1,000 with the active model and update ' +
          'segment memberships; invalid rows are counted and the first errors reported. Follow the job at GET /v1/jobs/:id. ' +
          `At most ${MAX_AUDIENCE_JOBS} audience jobs are queued or running at once; another answers 429.`,
        consumes: ['multipart/form-data'],
        response: { 202: z.object({ jobId: z.string(), statusUrl: z.string() }), ...errorResponses, 413: ErrorBody, 415: ErrorBody, 429: ErrorBody },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart()) throw new AppError(415, 'unsupported_media_type', 'send multipart/form-data with one CSV file part');
      scoringJobs.assertAudienceSlot(); // before taking the upload, not after
      const path = join(tmpdir(), `audience-${randomUUID()}.csv`); // removed by the job when done
      await receiveOneFile(request, path, limit);
      let job;
      try {
        job = scoringJobs.scoreCsv(path);
      } catch (err) {
        rmSync(path, { force: true }); // no job will remove it (no model loaded, or shutting down)
        throw err;
      }
      return reply.code(202).send({ jobId: job.id, statusUrl: `/v1/jobs/${job.id}` });
    },
  );
};
