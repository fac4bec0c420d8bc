import { randomUUID } from 'node:crypto';
import { mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { filePart, multipartBody } from '../multipart-docs.js';
import { ErrorBody, errorResponses } from '../schemas.js';
import { AppError, ValidationError } from '../../lib/errors.js';
import { readCsvFileStreaming } from '../../dataset/read-csv.js';
import { inferColumnType } from '../../dataset/infer-types.js';
import { namelessColumnProblem } from '../../dataset/prepare.js';
import { parseCell } from '../../preprocessing/coerce.js';
import { uploadPath, uploadsDir } from '../../dataset/resolve-path.js';
import { receiveOneFile } from '../receive-one-file.js';

const DatasetSummary = z
  .object({
    uploadId: z.string().describe('Pass as dataset.uploadId to POST /v1/models/retrain'),
    bytes: z.number(),
    columns: z.array(z.object({ name: z.string(), type: z.enum(['numeric', 'boolean', 'categorical']), blanks: z.number() })),
    rows: z.number(),
    delimiter: z.string(),
  })
  .meta({ id: 'DatasetUpload' });

/** CSV uploads (admin) for retraining: streamed to DATA_DIR/uploads/<uploadId>.csv, then schema-inferred. */
export const datasetRoutes: FastifyPluginAsyncZod = async (app) => {
  const { auth, config } = app.services;
  const limit = config.UPLOAD_LIMIT_BYTES;

  app.post(
    '/v1/datasets',
    {
      onRequest: auth.require('admin'),
      config: { swaggerTransform: multipartBody({ file: filePart('The CSV, with a header row (any part name)') }, ['file']) },
      schema: {
        tags: ['datasets'],
        summary: 'Upload a CSV for retraining; answers its inferred schema',
        description:
          `multipart/form-data with one file part (any field name) holding a comma-, semicolon- or tab-separated CSV with a header row. ` +
          `At most ${limit} bytes (UPLOAD_LIMIT_BYTES); larger uploads answer 413 and nothing is kept.`,
        consumes: ['multipart/form-data'],
        response: { 201: DatasetSummary, ...errorResponses, 413: ErrorBody, 415: ErrorBody },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart()) throw new AppError(415, 'unsupported_media_type', 'send multipart/form-data with one CSV file part');
      const dir = uploadsDir(config.DATA_DIR);
      mkdirSync(dir, { recursive: true });
      const uploadId = randomUUID();
      const partial = join(dir, `.${uploadId}.csv.part`); // renamed into place only when complete
      await receiveOneFile(request, partial, limit);

      const bytes = statSync(partial).size;
      let summary: z.infer<typeof DatasetSummary>;
      try {
        const table = await readCsvFileStreaming(partial);
        if (table.rows.length === 0) throw new Error('the CSV has a header but no rows');
        const nameless = namelessColumnProblem(table);
        if (nameless) throw new Error(nameless);
        summary = {
          uploadId,
          bytes,
          rows: table.rows.length,
          delimiter: table.delimiter,
          columns: table.columns.map((name) => {
            const values = table.rows.map((r) => r[name] ?? '');
            const type = inferColumnType(values);
            // Counted as training counts them: missing-value markers in a numeric or boolean column are blanks.
            return { name, type, blanks: values.filter((v) => parseCell(type, v) === null).length };
          }),
        };
      } catch (err) {
        rmSync(partial, { force: true });
        throw new ValidationError([{ path: 'file', message: `not a usable CSV: ${(err as Error).message}` }]);
      }
      renameSync(partial, uploadPath(config.DATA_DIR, uploadId));
      request.log.info({ uploadId, bytes, rows: summary.rows, by: request.actor }, 'dataset uploaded');
      return reply.code(201).send(summary);
    },
  );
};
