import { z } from 'zod';

/**
 * The feature spec is stored with every model version (feature-spec.json). It is the single
 * source of truth for how raw values become the model's input vector, in training and serving.
 */
/**
 * JSON bodies cannot carry a `__proto__` key (the body parser refuses it, and assigning it would
 * set a prototype), so a feature of that name could never be sent: refused wherever specs are made.
 */
export const UNSENDABLE_NAME = '__proto__';

const base = {
  name: z
    .string()
    .min(1)
    .refine((n) => n !== UNSENDABLE_NAME, { message: `"${UNSENDABLE_NAME}" cannot be a feature name (no JSON body can carry it)` }),
  nullable: z.boolean().default(false),
};

export const NumericFeature = z.object({
  ...base,
  type: z.literal('numeric'),
  impute: z.number().default(0),
  clip: z.object({ min: z.number(), max: z.number() }).optional(),
  transform: z.enum(['none', 'log1p']).default('none'),
  mean: z.number().default(0),
  std: z.number().positive().default(1),
});

export const CategoricalFeature = z.object({
  ...base,
  type: z.literal('categorical'),
  impute: z.string().default(''),
  vocabulary: z.array(z.string()).min(1),
  /** Training share of each vocabulary entry (same order), for profiles and explanations. */
  frequencies: z.array(z.number()).optional(),
});

export const BooleanFeature = z.object({
  ...base,
  type: z.literal('boolean'),
  impute: z.boolean().default(false),
  /** Share of true in training data. */
  mean: z.number().optional(),
});

export const FeatureDef = z.discriminatedUnion('type', [NumericFeature, CategoricalFeature, BooleanFeature]);

export const FeatureSpecSchema = z.object({
  specVersion: z.literal(1).default(1),
  features: z.array(FeatureDef).min(1),
  label: z.object({ name: z.string(), positive: z.string() }).default({ name: 'label', positive: '1' }),
  threshold: z.number().min(0).max(1).default(0.5),
});

export type NumericFeature = z.infer<typeof NumericFeature>;
export type CategoricalFeature = z.infer<typeof CategoricalFeature>;
export type BooleanFeature = z.infer<typeof BooleanFeature>;
export type FeatureDef = z.infer<typeof FeatureDef>;
export type FeatureSpec = z.infer<typeof FeatureSpecSchema>;
export type FeatureValue = number | string | boolean | null;
export type FeatureValues = Record<string, FeatureValue>;

/** Number of model inputs a feature occupies: one-hot categoricals get one extra slot (OOV). */
export function featureWidth(f: FeatureDef): number {
  return f.type === 'categorical' ? f.vocabulary.length + 1 : 1;
}

export function inputWidth(spec: FeatureSpec): number {
  return spec.features.reduce((n, f) => n + featureWidth(f), 0);
}

export function parseFeatureSpec(json: unknown): FeatureSpec {
  const spec = FeatureSpecSchema.parse(json);
  const seen = new Set<string>();
  for (const f of spec.features) {
    if (seen.has(f.name)) throw new Error(`feature spec: duplicate feature "${f.name}"`);
    seen.add(f.name);
  }
  return spec;
}

/**
 * Bound on a standardized numeric input, in standard deviations. A spec without `clip` (an
 * imported one) lets a value far outside the training data through: with a small std it would
 * encode to ±Infinity in float32, and the network would answer NaN or a score that ignores the
 * input's sign. No training data comes near a million standard deviations, so this only ever
 * bounds such values.
 */
export const STANDARD_SCORE_LIMIT = 1e6;
