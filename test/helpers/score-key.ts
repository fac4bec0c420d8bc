import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import { cacheKey } from '../../src/inference/scorer.js';
import { coerceFeatures } from '../../src/preprocessing/coerce.js';

/** The score-cache key (without the Redis prefix `pi:score:`) the app's active model stores `features` under. */
export function scoreKeyFor(app: FastifyInstance, features: Record<string, unknown>): string {
  const model = app.services.models.active!;
  const { values, issues } = coerceFeatures(model.spec, features);
  expect(issues).toEqual([]);
  const vector = new Float32Array(model.encoder.width);
  model.encoder.encodeInto(values, vector, 0);
  return cacheKey(model.cacheScope, vector);
}
