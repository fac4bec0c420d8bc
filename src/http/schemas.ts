import type { FieldIssue } from '../lib/errors.js';
import { z } from 'zod';
import { MAX_USER_ID_LENGTH, isWellFormedId } from '../lib/user-id.js';

/** Shared wire schemas (zod → validation and OpenAPI). */
export const ErrorBody = z
  .object({
    error: z.string(),
    message: z.string(),
    details: z.array(z.object({ path: z.string(), message: z.string() })),
  })
  .meta({ id: 'Error' });

export const errorResponses = {
  400: ErrorBody,
  401: ErrorBody,
  403: ErrorBody,
  503: ErrorBody,
} as const;

/** Added to routes that take a body: too large (BODY_LIMIT_BYTES), or not JSON. */
export const bodyErrorResponses = {
  413: ErrorBody,
  415: ErrorBody,
} as const;

// Values are checked against the active model's feature spec (coerceFeatures), which knows each
// feature's type and names the exact problem; the edge schema only requires an object. A custom
// check passes the object through as it is: no per-key walk, no copy (batch bodies hold 10,000).
const Features = z
  .custom<Record<string, unknown>>((v) => typeof v === 'object' && v !== null && !Array.isArray(v), {
    error: (issue) => (issue.input === undefined ? 'required: an object of feature values' : 'must be an object of feature values'),
  })
  .meta({ type: 'object', additionalProperties: { nullable: true, oneOf: [{ type: 'number' }, { type: 'string' }, { type: 'boolean' }] } })
  .describe('Feature name → number | string | boolean | null; see GET /v1/schema');

/** A userId or sessionId. Whether it is well-formed Unicode is checked by the predict routes (idIssues): a zod refinement costs far more per request than the check. */
const IdString = z.string().min(1).max(MAX_USER_ID_LENGTH);

/** The userId/sessionId of a predict instance that no URL could name (see isWellFormedId), at `prefix` + field. */
export function idIssues(instance: { userId?: unknown; sessionId?: unknown } | null | undefined, prefix = ''): FieldIssue[] {
  const issues: FieldIssue[] = [];
  for (const field of ['userId', 'sessionId'] as const) {
    const id = instance?.[field];
    if (typeof id === 'string' && !isWellFormedId(id)) issues.push({ path: `${prefix}${field}`, message: 'must be well-formed Unicode text (it has an unpaired surrogate)' });
  }
  return issues;
}

export const PredictRequest = z
  .object({
    userId: IdString.optional(),
    sessionId: IdString.optional(),
    features: Features,
  })
  .strict()
  .meta({ id: 'PredictRequest' });

export const Prediction = z
  .object({
    probability: z.number().describe('Calibrated purchase probability'),
    label: z.boolean().describe('probability ≥ threshold'),
    threshold: z.number(),
    modelVersion: z.string(),
    cached: z.boolean().describe('Answered from the score cache (a row is cached from its second sighting unless CACHE_ADMISSION=all)'),
    warnings: z.array(z.string()),
    persona: z.object({ id: z.number(), label: z.string() }).nullable().describe('Nearest learned persona of the serving version'),
    explanation: z
      .object({
        baselineProbability: z.number(),
        logitDelta: z.number().describe('logit(p) − logit(p at the training-mean baseline)'),
        method: z.string(),
        contributions: z.array(z.object({ feature: z.string(), value: z.union([z.number(), z.string(), z.boolean(), z.null()]), contribution: z.number(), text: z.string() })),
      })
      .optional()
      .describe('Present with ?explain=true'),
  })
  .meta({ id: 'Prediction' });

/**
 * Numbers in query strings, read strictly: `minScore=` or `limit=0x10` are errors, not 0 and 16
 * (z.coerce.number would take both).
 */
export const queryScore = z
  .string()
  .regex(/^(0|1)(\.\d+)?$|^\.\d+$/, 'must be a number from 0 to 1, such as 0.5')
  .transform(Number)
  .pipe(z.number().min(0).max(1))
  .meta({ description: 'a number from 0 to 1' });
export const queryLimit = (max: number) =>
  z
    .string()
    .regex(/^\d{1,7}$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(1).max(max))
    .meta({ description: `a whole number from 1 to ${max}` });
