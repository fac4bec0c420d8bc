import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { filePart, multipartBody, textPart } from '../multipart-docs.js';
import { ErrorBody, errorResponses } from '../schemas.js';
import { AppError, ValidationError } from '../../lib/errors.js';
import { importVersion, scanStore } from '../../registry/import-version.js';

const VersionCardBody = z
  .object({
    id: z.string(),
    created: z.string(),
    source: z.enum(['trained', 'imported']),
    dataFingerprint: z.string().optional(),
    parameters: z.record(z.string(), z.unknown()).optional(),
    headline: z.record(z.string(), z.number()).optional(),
    notes: z.string().optional(),
  })
  .meta({ id: 'VersionCard' });

const ScanResultBody = z.object({
  added: z.array(z.string()).describe('Version ids registered by this scan (inactive)'),
  invalid: z.array(z.object({ id: z.string(), reason: z.string() })).describe('Directories left untouched, with why'),
});

const fileName = (name: string) => name.replaceAll('\\', '/').split('/').pop() ?? name;

/**
 * Model import (admin): upload a tensorflowjs layers-model export with its feature spec, or
 * register version directories copied into the store by hand. Imported versions are inactive
 * until POST /v1/models/:version/activate.
 */
export const modelImportRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, auth, config } = app.services;
  const admin = auth.require('admin');
  const limit = config.UPLOAD_LIMIT_BYTES;

  app.post(
    '/v1/models',
    {
      onRequest: admin,
      config: {
        swaggerTransform: multipartBody(
          {
            'model.json': filePart('The tensorflowjs layers-model topology and weights manifest'),
            'group1-shard1of1.bin': filePart("A weight shard, one part per path in model.json's weightsManifest, named as there"),
            featureSpec: filePart('The feature spec (or a file part named feature-spec.json); see docs/importing-models.md'),
            id: textPart('Version id (default: generated)'),
            notes: textPart('Free text kept in the version card'),
          },
          ['model.json', 'featureSpec'],
        ),
      },
      schema: {
        tags: ['models'],
        summary: 'Import a Keras model (tensorflowjs layers-model export) as a new inactive version',
        description:
          'multipart/form-data with: a `model.json` file part; one file part per weight shard, named as in the ' +
          "manifest's weightsManifest paths (e.g. group1-shard1of1.bin); the feature spec as a part named " +
          '`featureSpec` or a file named `feature-spec.json`; optional `id` and `notes` fields. ' +
          `Total upload at most ${limit} bytes. See docs/importing-models.md.`,
        consumes: ['multipart/form-data'],
        response: { 201: VersionCardBody, ...errorResponses, 409: ErrorBody, 413: ErrorBody, 415: ErrorBody },
      },
    },
    async (request, reply) => {
      if (!request.isMultipart()) {
        throw new AppError(415, 'unsupported_media_type', 'send multipart/form-data with model.json, its weight shards and featureSpec');
      }
      let modelJson: Buffer | undefined;
      let featureSpec: Buffer | undefined;
      const shards = new Map<string, Buffer>();
      const fields: { id?: string; notes?: string } = {};
      let total = 0;
      const count = (n: number) => {
        total += n;
        if (total > limit) throw new AppError(413, 'payload_too_large', `upload exceeds UPLOAD_LIMIT_BYTES (${limit} bytes)`);
      };
      const once = (what: string, existing: unknown) => {
        if (existing !== undefined) throw new ValidationError([{ path: what, message: 'sent more than once' }]);
      };

      for await (const part of request.parts({ limits: { fileSize: limit, fieldSize: limit, files: 1000, fields: 20 } })) {
        if (part.type === 'file') {
          let buf: Buffer;
          try {
            buf = await part.toBuffer();
          } catch (err) {
            if ((err as { statusCode?: number }).statusCode === 413) {
              throw new AppError(413, 'payload_too_large', `file "${part.filename}" exceeds UPLOAD_LIMIT_BYTES (${limit} bytes)`);
            }
            throw err;
          }
          count(buf.byteLength);
          const name = fileName(part.filename ?? '');
          if (part.fieldname === 'featureSpec' || name === 'feature-spec.json') {
            once('featureSpec', featureSpec);
            featureSpec = buf;
          } else if (part.fieldname === 'modelJson' || name === 'model.json') {
            once('model.json', modelJson);
            modelJson = buf;
          } else {
            if (!name) throw new ValidationError([{ path: part.fieldname, message: 'weight shard file parts need a file name' }]);
            if (shards.has(name)) throw new ValidationError([{ path: `files.${name}`, message: 'sent more than once' }]);
            shards.set(name, buf);
          }
        } else {
          const raw = part.value;
          const text = typeof raw === 'string' ? raw : JSON.stringify(raw);
          count(Buffer.byteLength(text));
          if (part.fieldname === 'featureSpec') {
            once('featureSpec', featureSpec);
            featureSpec = Buffer.from(text);
          } else if (part.fieldname === 'modelJson') {
            once('model.json', modelJson);
            modelJson = Buffer.from(text);
          } else if (part.fieldname === 'id' || part.fieldname === 'notes') {
            once(part.fieldname, fields[part.fieldname]);
            fields[part.fieldname] = text.trim();
          } else {
            throw new ValidationError([{ path: part.fieldname, message: 'unknown field (expected id, notes, featureSpec or file parts)' }]);
          }
        }
      }

      const missing = [
        ...(modelJson ? [] : [{ path: 'model.json', message: 'required: a file part named model.json' }]),
        ...(featureSpec ? [] : [{ path: 'featureSpec', message: 'required: a part named featureSpec or a file named feature-spec.json' }]),
      ];
      if (missing.length) throw new ValidationError(missing);
      if (fields.notes !== undefined && fields.notes.length > 2000) throw new ValidationError([{ path: 'notes', message: 'at most 2000 characters' }]);

      const card = await importVersion(store, {
        modelJson: modelJson!,
        featureSpec: featureSpec!,
        shards,
        id: fields.id || undefined,
        notes: fields.notes || undefined,
      });
      request.log.info({ version: card.id, by: request.actor }, 'model imported');
      return reply.code(201).send(card);
    },
  );

  app.post(
    '/v1/models/scan',
    {
      onRequest: admin,
      schema: {
        tags: ['models'],
        summary: 'Register version directories copied into the store by hand (those without manifest.json)',
        response: { 200: ScanResultBody, ...errorResponses },
      },
    },
    async (request) => {
      const result = await scanStore(store);
      if (result.added.length || result.invalid.length) request.log.info({ ...result, by: request.actor }, 'model store scanned');
      return result;
    },
  );
};
