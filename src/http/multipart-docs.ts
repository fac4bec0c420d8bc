import type { SwaggerTransform } from '@fastify/swagger';
import { jsonSchemaTransform } from 'fastify-type-provider-zod';

/** A multipart part in the OpenAPI document: a file, or a text field. */
export const filePart = (description: string) => ({ type: 'string', format: 'binary', description });
export const textPart = (description: string) => ({ type: 'string', description });

/**
 * A route's `config.swaggerTransform` documenting its multipart/form-data body. Upload routes read
 * their parts as streams (@fastify/multipart), so they declare no body schema for Fastify to
 * validate, and without one the document would say they take no body at all.
 */
export function multipartBody(properties: Record<string, object>, required: string[]): SwaggerTransform {
  return (doc) => {
    const out = jsonSchemaTransform(doc as Parameters<typeof jsonSchemaTransform>[0]);
    if (out.schema && !(out.schema as { hide?: boolean }).hide) {
      out.schema = { ...out.schema, body: { type: 'object', properties, required } };
    }
    return out;
  };
}
