import type { FastifyError, FastifyInstance, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { AppError, type FieldIssue } from '../lib/errors.js';

/** Schema-validation failures (from zod via Fastify) as the service's `details` list. */
export function schemaIssues(error: unknown): FieldIssue[] {
  if (!hasZodFastifySchemaValidationErrors(error)) return [];
  const context = (error as { validationContext?: string }).validationContext ?? 'body';
  return error.validation.flatMap((v) => {
    const path = v.instancePath
      .split('/')
      .filter(Boolean)
      .reduce((acc, seg) => (/^\d+$/.test(seg) ? `${acc}[${seg}]` : acc ? `${acc}.${seg}` : seg), '');
    // Unknown keys get one issue each, at their own path.
    const keys = v.keyword === 'unrecognized_keys' ? ((v.params as { keys?: string[] }).keys ?? []) : [];
    if (keys.length) return keys.map((k) => ({ path: path ? `${path}.${k}` : k, message: 'unknown field' }));
    return [{ path: path || context, message: v.message ?? 'invalid' }];
  });
}

/** The one error body: { error, message, details: [{ path, message }] }. 5xx never leak internals. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply) => {
    if (error instanceof AppError) {
      return reply.code(error.statusCode).send({ error: error.code, message: error.message, details: error.details });
    }
    const issues = schemaIssues(error);
    if (issues.length) {
      return reply.code(400).send({ error: 'validation_error', message: `${issues.length} invalid field${issues.length === 1 ? '' : 's'}`, details: issues });
    }
    const status = error.statusCode ?? 500;
    if (status < 500) {
      const code = status === 413 ? 'payload_too_large' : status === 415 ? 'unsupported_media_type' : status === 404 ? 'not_found' : 'bad_request';
      return reply.code(status).send({ error: code, message: error.message, details: [] });
    }
    request.log.error({ err: error }, 'unhandled error');
    return reply.code(500).send({ error: 'internal_error', message: 'internal error', details: [] });
  });
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}`, details: [] });
  });
}
