import { z } from 'zod';
import { RuleSchema, type Rule } from './rules.js';

export const BAND_IDS = ['high-intent', 'medium-intent', 'low-intent'] as const;

export const BandsSchema = z
  .object({ high: z.number().gt(0).lt(1), medium: z.number().gt(0).lt(1) })
  .strict()
  .refine((b) => b.medium < b.high, { message: 'medium must be below high', path: ['medium'] });
export type Bands = z.infer<typeof BandsSchema>;
export const DEFAULT_BANDS: Bands = { high: 0.6, medium: 0.3 };

export const RuleSegmentInput = z
  .object({
    id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,63}$/, 'lowercase letters, digits and dashes, at most 64')
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
