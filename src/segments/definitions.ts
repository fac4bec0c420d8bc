import { z } from 'zod';
import { RuleSchema, type Rule } from './rules.js';

export const BAND_IDS = ['high-intent', 'medium-intent', 'low-intent'] as const;

export const BandsSchema = z
  .object({ high: z.number().gt(0).lt(1), medium: z.number().gt(0).lt(1) })
  .strict()
  .refine((b) => b.medium < b.high, { message: 'medium must be below high', path: ['medium'] });
export type Bands = z.infer<typeof BandsSchema>;
export const DEFAULT_BANDS: Bands = { high: 0.6, medium: 0.3 };

/**
 * Fixed routes under /v1/segments/: GET/PUT /v1/segments/bands shadow a segment named `bands`, so
 * it could not be read or changed. POST /v1/segments/score shadows no segment route today; it is
 * reserved so that a GET or PUT added on it later cannot strand an existing segment.
 */
export const RESERVED_SEGMENT_IDS: readonly string[] = ['bands', 'score'];

export const RuleSegmentInput = z
  .object({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes, at most 64')
      .refine((id) => !RESERVED_SEGMENT_IDS.includes(id), `${RESERVED_SEGMENT_IDS.join(' and ')} are reserved: they name routes under /v1/segments/`)
      .optional(),
    name: z.string().min(1).max(200),
    description: z.string().max(2000).optional(),
    rule: RuleSchema,
  })
  .strict();

export interface RuleSegment {
  id: string;
  name: string;
  description?: string;
  rule: Rule;
  created: string;
  updated: string;
}

export function bandOf(probability: number, bands: Bands): (typeof BAND_IDS)[number] {
  if (probability >= bands.high) return 'high-intent';
  if (probability >= bands.medium) return 'medium-intent';
  return 'low-intent';
}

export const personaSegmentId = (index: number) => `persona-${index}`;
export const isPersonaSegment = (id: string) => /^persona-\d+$/.test(id);
