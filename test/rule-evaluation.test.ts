import { describe, expect, it } from 'vitest';
import { evaluateRule, RULE_LIMITS, ruleSizeIssue, type Rule } from '../src/segments/rules.js';
import { RESERVED_SEGMENT_IDS, RuleSegmentInput } from '../src/segments/definitions.js';
import type { FeatureValues } from '../src/preprocessing/feature-spec.js';

/** An array that counts reads of its elements (how often evaluation looks at the operands). */
function counted<T>(items: T[]): { list: T[]; reads: () => number } {
  let reads = 0;
  const list = new Proxy(items, {
    get(target, key, receiver) {
      if (typeof key === 'string' && /^\d+$/.test(key)) reads++;
      return Reflect.get(target, key, receiver);
    },
  });
  return { list, reads: () => reads };
}

describe('rule evaluation cost', () => {
  it('reads a rule\'s "in" operands once (compiled), not on every evaluation', () => {
    const lists = Array.from({ length: 5 }, (_, k) => counted(Array.from({ length: 1000 }, (_, i) => `m${k}-${i}`)));
    const rule: Rule = { any: lists.map(({ list }) => ({ feature: 'Month', in: list })) };
    const miss: FeatureValues = { Month: 'Nov' };
    const hit: FeatureValues = { Month: 'm4-999' }; // the last operand of the last list
    for (let i = 0; i < 200; i++) {
      expect(evaluateRule(rule, miss, 0.5)).toBe(false);
      expect(evaluateRule(rule, hit, 0.5)).toBe(true);
    }
    const reads = lists.reduce((n, l) => n + l.reads(), 0);
    // Scanning per evaluation would read up to 400 × 5,000 elements; compiling reads each once.
    expect(reads).toBeLessThanOrEqual(5 * 1000);
  });

  it('bounds the "in" operands summed over a rule (RULE_LIMITS.operands)', () => {
    const strings = (n: number) => Array.from({ length: n }, (_, i) => `v${i}`);
    expect(RULE_LIMITS.operands).toBe(1000);
    expect(ruleSizeIssue({ all: [{ feature: 'Month', in: strings(500) }, { feature: 'Month', in: strings(500) }] })).toBeNull();
    expect(ruleSizeIssue({ all: [{ feature: 'Month', in: strings(500) }, { not: { feature: 'Month', in: strings(501) } }] })).toMatch(/at most 1000 "in" operands/);
    // Score lists count too.
    const scores = Array.from({ length: 600 }, (_, i) => i / 1000);
    expect(ruleSizeIssue({ any: [{ score: { in: scores } }, { feature: 'Month', in: strings(401) }] })).toMatch(/at most 1000 "in" operands/);
    // The reported shape: ~200 leaves of 1,000 strings each, within the depth and condition limits.
    const leaves = (n: number) => Array.from({ length: n }, () => ({ feature: 'Month', in: strings(1000) }));
    expect(ruleSizeIssue({ any: [...leaves(98), { any: leaves(100) }] })).toMatch(/at most 1000 "in" operands/);
  });
});

describe('rule comparison: boolean words', () => {
  const ev = (rule: Rule, Weekend: FeatureValues[string]) => evaluateRule(rule, { Weekend }, 0.5);

  it('a boolean value equals the words requests accept for it ("TRUE", "true", "True" and the false forms)', () => {
    for (const word of ['TRUE', 'true', 'True']) {
      expect(ev({ feature: 'Weekend', eq: word }, true), word).toBe(true);
      expect(ev({ feature: 'Weekend', eq: word }, false), word).toBe(false);
      expect(ev({ feature: 'Weekend', ne: word }, true), word).toBe(false);
      expect(ev({ feature: 'Weekend', in: ['x', word] }, true), word).toBe(true);
    }
    for (const word of ['FALSE', 'false', 'False']) {
      expect(ev({ feature: 'Weekend', eq: word }, false), word).toBe(true);
      expect(ev({ feature: 'Weekend', eq: word }, true), word).toBe(false);
      expect(ev({ feature: 'Weekend', ne: word }, true), word).toBe(true);
    }
    expect(ev({ feature: 'Weekend', eq: true }, true)).toBe(true);
    expect(ev({ feature: 'Weekend', eq: false }, false)).toBe(true);
  });

  it('other operands never equal a boolean; categories stay case-sensitive text', () => {
    for (const x of ['yes', '1', 1, 0, 'truth', '']) expect(ev({ feature: 'Weekend', eq: x }, true), String(x)).toBe(false);
    // Requests accept true/false in any case (booleanWord), and so do rules.
    for (const x of ['tRuE', ' true ']) expect(ev({ feature: 'Weekend', eq: x }, true), x).toBe(true);
    expect(ev({ feature: 'Weekend', eq: 'true' }, 'TRUE')).toBe(false); // a category "TRUE" is text, not a boolean
    expect(ev({ feature: 'Weekend', eq: 'TRUE' }, 'TRUE')).toBe(true);
  });
});

describe('rule comparison: only decimal number text is numeric', () => {
  const ev = (rule: Rule, C: FeatureValues[string]) => evaluateRule(rule, { C }, 0.5);

  it('a category that merely converts with Number() is text', () => {
    expect(ev({ feature: 'C', eq: 16 }, '0x10')).toBe(false);
    expect(ev({ feature: 'C', eq: 12 }, ' 12 ')).toBe(false);
    expect(ev({ feature: 'C', eq: 0 }, '')).toBe(false);
    expect(ev({ feature: 'C', in: [0, 16, 12] }, '0x10')).toBe(false);
    expect(ev({ feature: 'C', ne: 16 }, '0x10')).toBe(true);
    expect(ev({ feature: 'C', gt: 5 }, '0x10')).toBe(false);
    expect(ev({ feature: 'C', lt: 100 }, ' 12 ')).toBe(false);
    expect(ev({ feature: 'C', lte: 0 }, '')).toBe(false);
    expect(ev({ feature: 'C', between: [0, 1e9] }, 'Infinity')).toBe(false);
    // They still equal themselves as text.
    expect(ev({ feature: 'C', eq: '0x10' }, '0x10')).toBe(true);
    expect(ev({ feature: 'C', eq: '' }, '')).toBe(true);
    expect(ev({ feature: 'C', eq: ' 12 ' }, ' 12 ')).toBe(true);
  });

  it('an operand that merely converts with Number() is text', () => {
    expect(ev({ feature: 'C', eq: '0x10' }, 16)).toBe(false);
    expect(ev({ feature: 'C', eq: ' 12 ' }, 12)).toBe(false);
    expect(ev({ feature: 'C', in: ['0x10', ' 12 '] }, '16')).toBe(false);
    expect(ev({ feature: 'C', eq: '0x10' }, '16')).toBe(false);
  });

  it('decimal number text (NUMERIC_TEXT) still compares as a number', () => {
    expect(ev({ feature: 'C', eq: 16 }, '16')).toBe(true);
    expect(ev({ feature: 'C', eq: '16.0' }, '16')).toBe(true);
    expect(ev({ feature: 'C', eq: 0.5 }, '.5')).toBe(true);
    expect(ev({ feature: 'C', eq: -0.5 }, '-0.5')).toBe(true);
    expect(ev({ feature: 'C', eq: 1000 }, '1e3')).toBe(true); // exponent form is decimal text in NUMERIC_TEXT
    expect(ev({ feature: 'C', gt: 5 }, '16')).toBe(true);
    expect(ev({ feature: 'C', between: [10, 20] }, '+16')).toBe(true);
  });
});

describe('rule segment ids', () => {
  it('refuses ids that name fixed routes under /v1/segments/', () => {
    expect([...RESERVED_SEGMENT_IDS].sort()).toEqual(['bands', 'score']);
    for (const id of RESERVED_SEGMENT_IDS) {
      const parsed = RuleSegmentInput.safeParse({ id, name: 'x', rule: { score: { gte: 0.3 } } });
      expect(parsed.success, id).toBe(false);
      expect(parsed.error?.issues.map((i) => i.path.join('.'))).toEqual(['id']);
    }
    expect(RuleSegmentInput.safeParse({ id: 'bands-2', name: 'x', rule: { score: { gte: 0.3 } } }).success).toBe(true);
  });
});
