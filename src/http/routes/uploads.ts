import type { FastifyPluginAsync } from 'fastify';
import multipart from '@fastify/multipart';
import { audienceScoringRoutes } from './audience-scoring.js';
import { modelImportRoutes } from './models-import.js';
import { datasetRoutes } from './datasets.js';

/**
 * The routes that take multipart uploads, in one encapsulated context: the multipart parser and
 * its per-request hooks (preValidation, onResponse) run only here, never on the JSON routes such
 * as /v1/predict. Elsewhere a multipart body gets 415.
 */
export const uploadRoutes: FastifyPluginAsync = async (app) => {
  const limit = app.services.config.UPLOAD_LIMIT_BYTES;
  // Per-file and field sizes capped by UPLOAD_LIMIT_BYTES; routes narrow further per request.
  await app.register(multipart, { limits: { fileSize: limit, fieldSize: limit } });
  await app.register(audienceScoringRoutes);
  await app.register(modelImportRoutes);
  await app.register(datasetRoutes);
};
