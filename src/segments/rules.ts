import { z } from 'zod';
import type { FeatureValues } from '../preprocessing/feature-spec.js';

/**
 * Rule language for segments, over features and the score:
 *   { "all": [ { "feature": "VisitorType", "in": ["Returning_Visitor"] }, { "score": { "gte": 0.6 } } ] }
 * Leaves take exactly one operator: eq ne gt gte lt lte in between.
 */
const Scalar = z.union([z.string(), z.number(), z.boolean()]);
const Ops = z
  .object({
    eq: Scalar.optional(),
    ne: Scalar.optional(),
    gt: z.number().optional(),
    gte: z.number().optional(),
    lt: z.number().optional(),
    lte: z.number().optional(),
    in: z.array(Scalar).min(1).max(1000).optional(),
    // A reversed range can never match: reject it rather than store a segment that is always empty.
    between: z
      .tuple([z.number(), z.number()])
      .refine(([lo, hi]) => lo <= hi, 'between takes [low, high] with low ≤ high')
      .optional(),
  })
  .strict();
type Ops = z.infer<typeof Ops>;

const exactlyOneOp = (o: Record<string, unknown>) => Object.values(o).filter((v) => v !== undefined).length === 1;

const FeatureLeaf = Ops.extend({ feature: z.string().min(1) })
  .strict()
  .refine((o) => exactlyOneOp({ ...o, feature: undefined }), 'a feature condition needs exactly one operator (eq ne gt gte lt lte in between)');
/** The score is a number: string or boolean operands could never match it. */
const ScoreOps = z
  .object({
    eq: z.number().optional(),
    ne: z.number().optional(),
    gt: z.number().optional(),
    gte: z.number().optional(),
    lt: z.number().optional(),
    lte: z.number().optional(),
    in: z.array(z.number()).min(1).max(1000).optional(),
    between: Ops.shape.between,
  })
  .strict();
const ScoreLeaf = z
  .object({ score: ScoreOps.refine(exactlyOneOp, 'a score condition needs exactly one operator') })
  .strict();

export type Rule =
  | { all: Rule[] }
  | { any: Rule[] }
  | { not: Rule }
  | ({ feature: string } & Ops)
  | { score: Ops };

export const RuleSchema: z.ZodType<Rule> = z.lazy(() =>
  z.union([
    z.object({ all: z.array(RuleSchema).min(1).max(100) }).strict(),
    z.object({ any: z.array(RuleSchema).min(1).max(100) }).strict(),
    z.object({ not: RuleSchema }).strict(),
    FeatureLeaf,
    ScoreLeaf,
  ]),
).meta({ id: 'SegmentRule' }) as z.ZodType<Rule>;

/**
 * Bounds on a rule's shape. Every scored user is checked against every rule on the request path,
 * and a deeply nested rule would exhaust the validator's stack, so size is checked first, on the
 * raw JSON and without recursion.
 */
export const RULE_LIMITS = { depth: 16, nodes: 200 } as const;

/** Why a raw rule value is too large or too deep, or null when it is within RULE_LIMITS. */
export function ruleSizeIssue(value: unknown): string | null {
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 1 }];
  let nodes = 0;
  while (stack.length) {
    const { v, depth } = stack.pop()!;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) continue;
    const o = v as Record<string, unknown>;
    if (!('all' in o || 'any' in o || 'not' in o || 'feature' in o || 'score' in o)) continue;
    if (++nodes > RULE_LIMITS.nodes) return `a rule may have at most ${RULE_LIMITS.nodes} conditions and groups`;
    if (depth > RULE_LIMITS.depth) return `a rule may nest at most ${RULE_LIMITS.depth} levels deep`;
    for (const key of ['all', 'any'] as const) {
      const children = o[key];
      if (Array.isArray(children)) for (const c of children) stack.push({ v: c, depth: depth + 1 });
    }
    if ('not' in o) stack.push({ v: o.not, depth: depth + 1 });
  }
  return null;
}

export function referencedFeatures(rule: Rule, out = new Set<string>()): Set<string> {
  if ('all' in rule) rule.all.forEach((r) => referencedFeatures(r, out));
  else if ('any' in rule) rule.any.forEach((r) => referencedFeatures(r, out));
  else if ('not' in rule) referencedFeatures(rule.not, out);
  else if ('feature' in rule) out.add(rule.feature);
  return out;
}

export function evaluateRule(rule: Rule, values: FeatureValues, score: number): boolean {
  if ('all' in rule) return rule.all.every((r) => evaluateRule(r, values, score));
  if ('any' in rule) return rule.any.some((r) => evaluateRule(r, values, score));
  if ('not' in rule) return !evaluateRule(rule.not, values, score);
  if ('score' in rule) return applyOps(rule.score, score);
  return applyOps(rule, values[rule.feature] ?? null);
}

/** Numbers and numeric strings compare as numbers; categories compare as strings (2 == "2"). */
function applyOps(o: Ops, v: string | number | boolean | null): boolean {
  if (v === null) return o.ne !== undefined; // a missing value is "not equal" to anything, and fails the rest
  const num = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v)) ? Number(v) : NaN;
  // Equal as numbers when both sides are numeric ("1.50" and 1.5), as text otherwise ("Nov", true).
  const same = (x: string | number | boolean) => {
    const xNum = typeof x === 'number' ? x : typeof x === 'string' && x.trim() !== '' ? Number(x) : NaN;
    return Number.isFinite(xNum) && Number.isFinite(num) ? xNum === num : String(x) === String(v);
  };
  if (o.eq !== undefined) return same(o.eq);
  if (o.ne !== undefined) return !same(o.ne);
  if (o.in !== undefined) return o.in.some(same);
  if (o.gt !== undefined) return num > o.gt;
  if (o.gte !== undefined) return num >= o.gte;
  if (o.lt !== undefined) return num < o.lt;
  if (o.lte !== undefined) return num <= o.lte;
  if (o.between !== undefined) return num >= o.between[0] && num <= o.between[1];
  return false;
}
