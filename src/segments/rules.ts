import { z } from 'zod';
import type { FeatureValues } from '../preprocessing/feature-spec.js';
import { NUMERIC_TEXT } from '../lib/numeric-text.js';
import { booleanWord } from '../preprocessing/category.js';

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
 * raw JSON and without recursion. `operands` caps the `in` items summed over the rule: each list
 * is hashed once per rule, so this bounds the memory and compile time a rule can cost.
 */
export const RULE_LIMITS = { depth: 16, nodes: 200, operands: 1000 } as const;

/** Why a raw rule value is too large or too deep, or null when it is within RULE_LIMITS. */
export function ruleSizeIssue(value: unknown): string | null {
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 1 }];
  let nodes = 0;
  let operands = 0;
  while (stack.length) {
    const { v, depth } = stack.pop()!;
    if (Array.isArray(v)) {
      // Not a rule (a list where one is expected), but it nests all the same: bounded like one,
      // since everything that reads a refused rule (featureReferences) walks it.
      if (depth > RULE_LIMITS.depth) return `a rule may nest at most ${RULE_LIMITS.depth} levels deep`;
      for (const c of v) stack.push({ v: c, depth: depth + 1 });
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    const o = v as Record<string, unknown>;
    if (!('all' in o || 'any' in o || 'not' in o || 'feature' in o || 'score' in o)) continue;
    if (++nodes > RULE_LIMITS.nodes) return `a rule may have at most ${RULE_LIMITS.nodes} conditions and groups`;
    if (depth > RULE_LIMITS.depth) return `a rule may nest at most ${RULE_LIMITS.depth} levels deep`;
    const scoreIn = o.score !== null && typeof o.score === 'object' ? (o.score as { in?: unknown }).in : undefined;
    for (const list of [o.in, scoreIn]) if (Array.isArray(list)) operands += list.length;
    if (operands > RULE_LIMITS.operands) return `a rule may have at most ${RULE_LIMITS.operands} "in" operands in all`;
    for (const key of ['all', 'any'] as const) {
      const children = o[key];
      // A group's list holds its children; anything else there is still walked by featureReferences.
      if (Array.isArray(children)) for (const c of children) stack.push({ v: c, depth: depth + 1 });
      else if (key in o) stack.push({ v: children, depth: depth + 1 });
    }
    if ('not' in o) stack.push({ v: o.not, depth: depth + 1 });
  }
  return null;
}

/**
 * Every `feature` a rule names, with its path (`rule.all[0].feature`), read from the JSON as sent:
 * it works on a rule that fails the schema too, so one 400 can name a bad operator and an unknown
 * feature together. Callers bound the rule's size first (ruleSizeIssue).
 */
export function featureReferences(rule: unknown, path = 'rule'): { feature: string; path: string }[] {
  if (Array.isArray(rule)) return rule.flatMap((r, i) => featureReferences(r, `${path}[${i}]`));
  if (rule === null || typeof rule !== 'object') return [];
  const out: { feature: string; path: string }[] = [];
  for (const [k, v] of Object.entries(rule)) {
    if (k === 'feature' && typeof v === 'string') out.push({ feature: v, path: `${path}.feature` });
    else if (k === 'all' || k === 'any' || k === 'not') out.push(...featureReferences(v, `${path}.${k}`));
  }
  return out;
}

type Value = string | number | boolean | null;
type Predicate = (values: FeatureValues, score: number) => boolean;

/**
 * Rules compiled to predicates, once per rule object: every scored user is checked against every
 * rule on the request path, so `in` lists are hashed here rather than scanned per evaluation.
 * Stored rules are never mutated (an update stores a new object), so the cache cannot go stale.
 */
const compiled = new WeakMap<Rule, Predicate>();

export function evaluateRule(rule: Rule, values: FeatureValues, score: number): boolean {
  let predicate = compiled.get(rule);
  if (!predicate) compiled.set(rule, (predicate = compileRule(rule)));
  return predicate(values, score);
}

function compileRule(rule: Rule): Predicate {
  if ('all' in rule) {
    const parts = rule.all.map(compileRule);
    return (values, score) => parts.every((p) => p(values, score));
  }
  if ('any' in rule) {
    const parts = rule.any.map(compileRule);
    return (values, score) => parts.some((p) => p(values, score));
  }
  if ('not' in rule) {
    const inner = compileRule(rule.not);
    return (values, score) => !inner(values, score);
  }
  if ('score' in rule) {
    const test = compileOps(rule.score);
    return (_values, score) => test(score);
  }
  const test = compileOps(rule);
  const feature = rule.feature;
  return (values) => test(values[feature] ?? null);
}

/**
 * The number a value or operand stands for, or NaN. Only numbers and decimal number text count
 * (the project's NUMERIC_TEXT): "0x10", " 12 ", "" and "Infinity" are categories, not numbers.
 */
function numberOf(x: Value): number {
  if (typeof x === 'number') return x;
  if (typeof x !== 'string' || !NUMERIC_TEXT.test(x)) return NaN;
  const n = Number(x);
  return Number.isFinite(n) ? n : NaN;
}

/** The boolean words requests accept (booleanWord), so "TRUE" in a rule means what it means in a request. */
const booleanOf = (x: Value): boolean | undefined => (typeof x === 'boolean' ? x : typeof x === 'string' ? booleanWord(x) : undefined);

/**
 * Equality with any of `operands`, in constant time per check. A boolean value (boolean features
 * arrive as booleans) equals true/false and the boolean words; a numeric value equals operands of
 * the same number ("1.50" and 1.5); any other value compares as text (2 == "2", "Nov").
 */
function equalsAny(operands: readonly (string | number | boolean)[]): (v: string | number | boolean) => boolean {
  const numbers = new Set<number>();
  const texts = new Set<string>();
  const booleans = new Set<boolean>();
  for (const x of operands) {
    const n = numberOf(x);
    if (!Number.isNaN(n)) numbers.add(n);
    texts.add(String(x));
    const b = booleanOf(x);
    if (b !== undefined) booleans.add(b);
  }
  return (v) => {
    if (typeof v === 'boolean') return booleans.has(v);
    const n = numberOf(v);
    // A numeric value's text is decimal, which no non-numeric operand's text is: numbers suffice.
    return Number.isNaN(n) ? texts.has(String(v)) : numbers.has(n);
  };
}

/** A missing value (null) is "not equal" to anything, and fails every other operator. */
function compileOps(o: Ops): (v: Value) => boolean {
  const { eq, ne, in: anyOf, gt, gte, lt, lte, between } = o;
  if (eq !== undefined) {
    const equals = equalsAny([eq]);
    return (v) => v !== null && equals(v);
  }
  if (ne !== undefined) {
    const equals = equalsAny([ne]);
    return (v) => v === null || !equals(v);
  }
  if (anyOf !== undefined) {
    const equals = equalsAny(anyOf);
    return (v) => v !== null && equals(v);
  }
  // Ordering: a value that is not a number (NaN) fails every comparison.
  if (gt !== undefined) return (v) => numberOf(v) > gt;
  if (gte !== undefined) return (v) => numberOf(v) >= gte;
  if (lt !== undefined) return (v) => numberOf(v) < lt;
  if (lte !== undefined) return (v) => numberOf(v) <= lte;
  if (between !== undefined) {
    const [lo, hi] = between;
    return (v) => {
      const n = numberOf(v);
      return n >= lo && n <= hi;
    };
  }
  return () => false;
}
