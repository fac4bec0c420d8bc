import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { evaluateRule, featureReferences, RuleSchema, type Rule } from '../src/segments/rules.js';
import { RuleSegmentInput } from '../src/segments/definitions.js';
import type { FeatureValues } from '../src/preprocessing/feature-spec.js';

const valid = (r: unknown) => RuleSchema.safeParse(r).success;

describe('rule language: validation', () => {
  it('accepts every operator on a feature leaf and on the score', () => {
    const leaves: unknown[] = [
      { feature: 'Month', eq: 'Nov' },
      { feature: 'OperatingSystems', eq: 2 },
      { feature: 'Weekend', eq: true },
      { feature: 'VisitorType', ne: 'New_Visitor' },
      { feature: 'PageValues', gt: 0 },
      { feature: 'PageValues', gte: 10.5 },
      { feature: 'BounceRates', lt: 0.1 },
      { feature: 'BounceRates', lte: 0.1 },
      { feature: 'Browser', in: [1, '2', true] },
      { feature: 'ProductRelated', between: [5, 50] },
      { feature: 'ProductRelated', between: [5, 5] },
      { score: { gte: 0.6 } },
      { score: { between: [0.3, 0.6] } },
      { score: { lt: 0.3 } },
    ];
    for (const l of leaves) expect(valid(l), JSON.stringify(l)).toBe(true);
  });

  it('accepts nested all / any / not', () => {
    const rule = {
      all: [
        { feature: 'VisitorType', in: ['Returning_Visitor'] },
        { any: [{ score: { gte: 0.6 } }, { not: { feature: 'Month', in: ['Feb', 'Mar'] } }] },
        { not: { not: { all: [{ feature: 'Weekend', eq: true }] } } },
      ],
    };
    const parsed = RuleSchema.safeParse(rule);
    expect(parsed.success).toBe(true);
    expect(parsed.data).toEqual(rule);
    expect(featureReferences(rule)).toEqual([
      { feature: 'VisitorType', path: 'rule.all[0].feature' },
      { feature: 'Month', path: 'rule.all[1].any[1].not.feature' },
      { feature: 'Weekend', path: 'rule.all[2].not.not.all[0].feature' },
    ]);
  });

  it('a leaf needs exactly one operator', () => {
    expect(valid({ feature: 'PageValues' })).toBe(false);
    expect(valid({ feature: 'PageValues', gt: 1, lt: 5 })).toBe(false);
    expect(valid({ feature: 'Month', eq: 'Nov', ne: 'Dec' })).toBe(false);
    expect(valid({ score: {} })).toBe(false);
    expect(valid({ score: { gte: 0.1, lt: 0.9 } })).toBe(false);
    const msg = RuleSchema.safeParse({ feature: 'PageValues', gt: 1, lt: 5 }).error?.issues.map((i) => JSON.stringify(i)).join('\n');
    expect(msg).toMatch(/exactly one operator/);
  });

  it('rejects bad shapes', () => {
    const bad: unknown[] = [
      null,
      'PageValues > 3',
      [],
      {},
      { all: [] },
      { any: [] },
      { all: { feature: 'Month', eq: 'Nov' } },
      { any: 'x' },
      { not: [{ feature: 'Month', eq: 'Nov' }] },
      { all: [{ feature: 'Month', eq: 'Nov' }], any: [{ feature: 'Month', eq: 'Nov' }] },
      { feature: '', eq: 1 },
      { feature: 3, eq: 1 },
      { feature: 'Month', eq: 'Nov', extra: 1 },
      { feature: 'Month', eq: 'Nov', score: { gte: 0.5 } },
      { feature: 'Month', eq: null },
      { feature: 'Month', eq: { a: 1 } },
      { feature: 'PageValues', gt: '3' },
      { feature: 'PageValues', between: [1] },
      { feature: 'PageValues', between: [1, 2, 3] },
      { feature: 'PageValues', between: ['1', '2'] },
      { feature: 'PageValues', between: [5, 1] },
      { feature: 'Month', in: [] },
      { feature: 'Month', in: 'Nov' },
      { feature: 'Month', like: 'No%' },
      { score: 0.5 },
      { score: { gte: '0.5' } },
      { score: { eq: 'abc' } }, // the score is a number: a string could never match
      { score: { in: [0.5, true] } },
      { score: { gte: 0.5 }, feature: 'Month' },
      { all: [{ feature: 'Month', eq: 'Nov' }, { feature: 'Month' }] },
      { not: { any: [{ score: { gte: 0.1, lte: 0.2 } }] } },
      { all: Array.from({ length: 101 }, () => ({ score: { gte: 0.5 } })) },
    ];
    for (const r of bad) expect(valid(r), JSON.stringify(r)).toBe(false);
  });

  it('a rule segment body validates its rule, id and name', () => {
    expect(RuleSegmentInput.safeParse({ name: 'Warm returning', rule: { score: { gte: 0.3 } } }).success).toBe(true);
    expect(RuleSegmentInput.safeParse({ id: 'warm-returning', name: 'x', rule: { score: { gte: 0.3 } } }).success).toBe(true);
    expect(RuleSegmentInput.safeParse({ id: 'Warm Returning', name: 'x', rule: { score: { gte: 0.3 } } }).success).toBe(false);
    expect(RuleSegmentInput.safeParse({ name: '', rule: { score: { gte: 0.3 } } }).success).toBe(false);
    expect(RuleSegmentInput.safeParse({ name: 'x', rule: { score: { gte: 0.3, lt: 1 } } }).success).toBe(false);
    expect(RuleSegmentInput.safeParse({ name: 'x' }).success).toBe(false);
  });
});

describe('rule language: evaluation', () => {
  const values: FeatureValues = { OperatingSystems: '2', Month: 'Nov', PageValues: 12.5, Weekend: true, Administrative: null, Count: '7' };
  const ev = (r: Rule, score = 0.5) => evaluateRule(r, values, score);

  it('categories compare as strings: 2 == "2"', () => {
    expect(ev({ feature: 'OperatingSystems', eq: 2 })).toBe(true);
    expect(ev({ feature: 'OperatingSystems', eq: '2' })).toBe(true);
    expect(ev({ feature: 'OperatingSystems', in: [1, 2] })).toBe(true);
    expect(ev({ feature: 'OperatingSystems', in: ['3', 4] })).toBe(false);
    expect(ev({ feature: 'OperatingSystems', ne: 2 })).toBe(false);
    expect(ev({ feature: 'OperatingSystems', ne: 3 })).toBe(true);
    expect(ev({ feature: 'Month', eq: 'Nov' })).toBe(true);
    expect(ev({ feature: 'Month', eq: 'nov' })).toBe(false);
    expect(evaluateRule({ feature: 'OperatingSystems', eq: '2' }, { OperatingSystems: 2 }, 0)).toBe(true);
    // Numeric on both sides: equal as numbers, however they are written.
    expect(ev({ feature: 'PageValues', eq: '12.50' })).toBe(true);
    expect(ev({ feature: 'PageValues', in: ['1e1', '12.5'] })).toBe(true);
    expect(ev({ feature: 'PageValues', ne: 12.5 })).toBe(false);
    expect(ev({ feature: 'OperatingSystems', eq: '2.0' })).toBe(true);
    expect(ev({ feature: 'Weekend', eq: true })).toBe(true);
    expect(ev({ feature: 'Weekend', eq: 'true' })).toBe(true);
  });

  it('booleans compare with booleans and their string form', () => {
    expect(ev({ feature: 'Weekend', eq: true })).toBe(true);
    expect(ev({ feature: 'Weekend', eq: false })).toBe(false);
    expect(ev({ feature: 'Weekend', eq: 'true' })).toBe(true);
    expect(ev({ feature: 'Weekend', ne: true })).toBe(false);
  });

  it('numeric comparisons, numeric strings compare as numbers', () => {
    expect(ev({ feature: 'PageValues', gt: 12 })).toBe(true);
    expect(ev({ feature: 'PageValues', gt: 12.5 })).toBe(false);
    expect(ev({ feature: 'PageValues', gte: 12.5 })).toBe(true);
    expect(ev({ feature: 'PageValues', lt: 12.5 })).toBe(false);
    expect(ev({ feature: 'PageValues', lte: 12.5 })).toBe(true);
    expect(ev({ feature: 'Count', gt: 6 })).toBe(true);
    expect(ev({ feature: 'Count', lt: 10 })).toBe(true);
    // A non-numeric value fails every ordering comparison.
    expect(ev({ feature: 'Month', gt: 0 })).toBe(false);
    expect(ev({ feature: 'Month', lt: 1e9 })).toBe(false);
  });

  it('between is inclusive at both ends', () => {
    expect(ev({ feature: 'PageValues', between: [12.5, 20] })).toBe(true);
    expect(ev({ feature: 'PageValues', between: [0, 12.5] })).toBe(true);
    expect(ev({ feature: 'PageValues', between: [12.5, 12.5] })).toBe(true);
    expect(ev({ feature: 'PageValues', between: [12.51, 20] })).toBe(false);
    expect(ev({ feature: 'PageValues', between: [0, 12.49] })).toBe(false);
    expect(ev({ score: { between: [0.5, 0.6] } }, 0.5)).toBe(true);
    expect(ev({ score: { between: [0.5, 0.6] } }, 0.6)).toBe(true);
    expect(ev({ score: { between: [0.5, 0.6] } }, 0.6000001)).toBe(false);
  });

  it('a missing value (null or absent) is "not equal" to anything and fails every other operator', () => {
    for (const feature of ['Administrative', 'NotThere']) {
      expect(ev({ feature, ne: 1 })).toBe(true);
      expect(ev({ feature, ne: 'x' })).toBe(true);
      expect(ev({ feature, eq: 1 })).toBe(false);
      expect(ev({ feature, eq: 'null' })).toBe(false);
      expect(ev({ feature, in: [0, 1, 'null'] })).toBe(false);
      expect(ev({ feature, gt: -Infinity })).toBe(false);
      expect(ev({ feature, gte: -1e9 })).toBe(false);
      expect(ev({ feature, lt: 1e9 })).toBe(false);
      expect(ev({ feature, lte: 1e9 })).toBe(false);
      expect(ev({ feature, between: [-1e9, 1e9] })).toBe(false);
      expect(ev({ not: { feature, eq: 1 } })).toBe(true);
    }
  });

  it('score leaves read the score, not the features', () => {
    expect(ev({ score: { gte: 0.6 } }, 0.6)).toBe(true);
    expect(ev({ score: { gte: 0.6 } }, 0.5999)).toBe(false);
    expect(ev({ score: { lt: 0.3 } }, 0.1)).toBe(true);
    expect(ev({ all: [{ feature: 'Month', eq: 'Nov' }, { score: { gte: 0.3 } }] }, 0.31)).toBe(true);
    expect(ev({ all: [{ feature: 'Month', eq: 'Nov' }, { score: { gte: 0.3 } }] }, 0.29)).toBe(false);
    expect(ev({ any: [{ feature: 'Month', eq: 'Dec' }, { score: { gte: 0.3 } }] }, 0.31)).toBe(true);
    expect(ev({ any: [{ feature: 'Month', eq: 'Dec' }, { score: { gte: 0.3 } }] }, 0.29)).toBe(false);
    expect(ev({ not: { score: { gte: 0.3 } } }, 0.29)).toBe(true);
  });
});

// ---- property-based: generated rules over generated feature values ----

const FEATURES = ['a', 'b', 'c'];
const scalar = fc.oneof(fc.integer({ min: -3, max: 3 }), fc.constantFrom('0', '1', '2', 'x', 'y', ''), fc.boolean());
const num = fc.double({ min: -4, max: 4, noNaN: true });
/** Operators over `operand` values (feature leaves take any scalar, score leaves numbers only). */
const opsOver = <T,>(operand: fc.Arbitrary<T>) =>
  fc.oneof(
    operand.map((v) => ({ eq: v })),
    operand.map((v) => ({ ne: v })),
    num.map((v) => ({ gt: v })),
    num.map((v) => ({ gte: v })),
    num.map((v) => ({ lt: v })),
    num.map((v) => ({ lte: v })),
    fc.array(operand, { minLength: 1, maxLength: 4 }).map((v) => ({ in: v })),
    fc.tuple(num, num).map(([x, y]) => ({ between: [Math.min(x, y), Math.max(x, y)] as [number, number] })),
  );
const ops = opsOver(scalar);
const scoreOps = opsOver(fc.oneof(fc.integer({ min: -3, max: 3 }), num));
const { rule: ruleArb } = fc.letrec<{ rule: Rule; leaf: Rule }>((tie) => ({
  leaf: fc.oneof(
    fc.tuple(fc.constantFrom(...FEATURES), ops).map(([feature, o]) => ({ feature, ...o }) as Rule),
    scoreOps.map((o) => ({ score: o }) as Rule),
  ),
  rule: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    tie('leaf'),
    fc.array(tie('rule'), { minLength: 1, maxLength: 3 }).map((all) => ({ all })),
    fc.array(tie('rule'), { minLength: 1, maxLength: 3 }).map((any) => ({ any })),
    tie('rule').map((r) => ({ not: r })),
  ),
}));
const valueArb = fc.oneof(fc.constant(null), fc.integer({ min: -3, max: 3 }), fc.double({ min: -4, max: 4, noNaN: true }), fc.constantFrom('0', '1', '2', 'x', '3.5'), fc.boolean());
const valuesArb = fc.record({ a: valueArb, b: valueArb, c: valueArb }, { requiredKeys: [] }) as fc.Arbitrary<FeatureValues>;
const scoreArb = fc.double({ min: 0, max: 1, noNaN: true });

describe('rule language: properties', () => {
  it('every generated rule is accepted by the schema and parses to itself', () => {
    fc.assert(
      fc.property(ruleArb, (r) => {
        const parsed = RuleSchema.safeParse(r);
        expect(parsed.success).toBe(true);
        expect(parsed.data).toEqual(r);
      }),
      { numRuns: 300 },
    );
  });

  it('not(not(r)) ≡ r', () => {
    fc.assert(
      fc.property(ruleArb, valuesArb, scoreArb, (r, v, s) => evaluateRule({ not: { not: r } }, v, s) === evaluateRule(r, v, s)),
      { numRuns: 1000 },
    );
  });

  it('all([r]) ≡ r and any([r]) ≡ r', () => {
    fc.assert(
      fc.property(ruleArb, valuesArb, scoreArb, (r, v, s) => {
        const base = evaluateRule(r, v, s);
        return evaluateRule({ all: [r] }, v, s) === base && evaluateRule({ any: [r] }, v, s) === base;
      }),
      { numRuns: 1000 },
    );
  });

  it('De Morgan: not(all(rs)) ≡ any(not r for r in rs)', () => {
    fc.assert(
      fc.property(fc.array(ruleArb, { minLength: 1, maxLength: 4 }), valuesArb, scoreArb, (rs, v, s) =>
        evaluateRule({ not: { all: rs } }, v, s) === evaluateRule({ any: rs.map((r) => ({ not: r })) }, v, s),
      ),
      { numRuns: 500 },
    );
  });

  it('eq and ne are complements on present values; ne alone holds on missing ones', () => {
    fc.assert(
      fc.property(fc.constantFrom(...FEATURES), scalar, valuesArb, (feature, x, v) => {
        const eq = evaluateRule({ feature, eq: x }, v, 0);
        const ne = evaluateRule({ feature, ne: x }, v, 0);
        const missing = v[feature] === null || v[feature] === undefined;
        return missing ? !eq && ne : eq !== ne;
      }),
      { numRuns: 1000 },
    );
  });
});
