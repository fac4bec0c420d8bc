import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { coerceFeatures } from '../src/preprocessing/coerce.js';
import { compileRowReader } from '../src/preprocessing/compiled-row.js';
import { STANDARD_SCORE_LIMIT, parseFeatureSpec, type FeatureDef, type FeatureSpec } from '../src/preprocessing/feature-spec.js';
import { Encoder } from '../src/preprocessing/transform.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

/**
 * The compiled reader must be a pure shortcut: for any input it either answers exactly what
 * coerceFeatures + encodeInto answer (values, OOV names, encoded bytes), or null when they report
 * a problem (or the object is not a plain one).
 */

const bundled = parseFeatureSpec(JSON.parse(readFileSync('model-store/versions/shoppers-mlp-v1/feature-spec.json', 'utf8')));

/** Every feature shape the spec allows, including names that also exist on Object.prototype. */
const synthetic = parseFeatureSpec({
  features: [
    { name: 'visits', type: 'numeric', mean: 1.5, std: 2.25 },
    { name: 'duration', type: 'numeric', nullable: true, impute: 12.5, clip: { min: -1, max: 3600 }, transform: 'log1p', mean: 3.1, std: 1.7 },
    { name: 'offset', type: 'numeric', nullable: true, impute: -0, mean: -0, std: 0.5 },
    { name: 'toString', type: 'numeric', mean: 0, std: 1 },
    { name: 'weekend', type: 'boolean' },
    { name: 'returning', type: 'boolean', nullable: true, impute: true },
    { name: 'month', type: 'categorical', vocabulary: ['Feb', 'Mar', 'May'] },
    { name: 'region', type: 'categorical', nullable: true, impute: '3', vocabulary: ['1', '2', '3', '-4.5'] },
    { name: 'constructor', type: 'categorical', vocabulary: ['a', 'b'] },
    { name: 'label with "quotes" \u2028 and \\', type: 'boolean' },
  ],
});

function generic(spec: FeatureSpec, encoder: Encoder, input: unknown) {
  const { values, issues } = coerceFeatures(spec, input);
  const vector = new Float32Array(encoder.width).fill(7); // stale data must be overwritten
  const oov = issues.length ? undefined : encoder.encodeInto(values, vector, 0);
  return { values, issues, oov, vector };
}

function compiled(encoder: Encoder, input: unknown) {
  const vector = new Float32Array(encoder.width + 4).fill(7);
  const read = encoder.readInto(input, vector, 2);
  return { read, vector: vector.subarray(2, 2 + encoder.width), guards: [vector[0], vector[1], vector[encoder.width + 2], vector[encoder.width + 3]] };
}

function expectSame(spec: FeatureSpec, encoder: Encoder, input: unknown): void {
  const g = generic(spec, encoder, input);
  const c = compiled(encoder, input);
  if (g.issues.length) {
    expect(c.read).toBeNull();
    return;
  }
  expect(c.read).not.toBeNull();
  expect(c.read!.values).toEqual(g.values);
  expect(Object.keys(c.read!.values)).toEqual(Object.keys(g.values));
  expect(c.read!.oov).toEqual(g.oov);
  expect(Buffer.from(c.vector.slice().buffer).equals(Buffer.from(g.vector.buffer))).toBe(true);
  expect(c.guards).toEqual([7, 7, 7, 7]); // writes stay inside the row
}

const anyValue = fc.oneof(
  fc.double(),
  fc.integer({ min: -5, max: 5 }),
  fc.constantFrom(3.4e38, 3.5e38, -3.5e38, 1e39, -0, 0, -4.5, 0.1),
  fc.constantFrom('Feb', 'May', 'Jun', '1', '3', '-4.5', 'a', 'b', '', 'TRUE', 'true', 'True', 'false', 'FALSE', 'False', 'yes', 'constructor'),
  fc.string(),
  fc.boolean(),
  fc.constant(null),
  fc.constant([1]),
  fc.constant({ a: 1 }),
);

/** Values coerceFeatures accepts for `f` (nullable ones include null). */
function validFor(f: FeatureDef): fc.Arbitrary<unknown> {
  const valid =
    f.type === 'numeric'
      ? fc.oneof(fc.double({ noNaN: true, min: -3.4e38, max: 3.4e38 }), fc.integer({ min: -5, max: 5 }), fc.double({ min: -2, max: 5000, noNaN: true }), fc.constantFrom(-1, -0.5, -0, 0.25, 3600, 5000))
      : f.type === 'boolean'
        ? fc.constantFrom(true, false, 'TRUE', 'true', 'True', 'false', 'FALSE', 'False')
        : fc.oneof(fc.constantFrom(...f.vocabulary), fc.string({ maxLength: 4 }), fc.integer({ min: -5, max: 5 }), fc.constant(-4.5));
  return f.nullable ? fc.oneof(valid, fc.constant(null)) : valid;
}

function inputFor(spec: FeatureSpec) {
  // Mostly valid values, so that whole rows are often clean and their encodings get compared.
  const entries = spec.features.map((f) => [f.name, fc.oneof({ arbitrary: validFor(f), weight: 30 }, { arbitrary: anyValue, weight: 1 }, { arbitrary: fc.constant(undefined), weight: 1 })] as const);
  return fc
    .record(Object.fromEntries(entries) as Record<string, fc.Arbitrary<unknown>>)
    .chain((row) => fc.record({ row: fc.constant(row), extra: fc.option(fc.dictionary(fc.string({ maxLength: 6 }), anyValue, { maxKeys: 2 }), { freq: 20 }) }))
    .map(({ row, extra }) => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(row)) if (v !== undefined) out[k] = v; // absent, not undefined
      if (extra) for (const [k, v] of Object.entries(extra)) if (k !== '__proto__') out[k] = v;
      // Through JSON, like a request body.
      return JSON.parse(JSON.stringify(out)) as unknown;
    });
}

describe('compiled row reader', () => {
  it('matches coerceFeatures + encodeInto on the shoppers rows', () => {
    const encoder = new Encoder(bundled);
    for (const row of shopperFeatureRows(3000)) expectSame(bundled, encoder, row);
  });

  it('matches them on generated inputs, valid and invalid, for every feature shape', () => {
    const encoder = new Encoder(synthetic);
    let clean = 0;
    fc.assert(
      fc.property(inputFor(synthetic), (input) => {
        if (coerceFeatures(synthetic, input).issues.length === 0) clean++;
        expectSame(synthetic, encoder, input);
      }),
      { numRuns: 3000 },
    );
    // Both sides of the contract were exercised.
    expect(clean).toBeGreaterThan(300);
    expect(clean).toBeLessThan(2700);
  });

  it('bounds a standardized value at a million standard deviations (a spec without clip), on both paths alike', () => {
    const spec = parseFeatureSpec({ features: [{ name: 'rate', type: 'numeric', mean: 0.02, std: 0.042 }, { name: 'visits', type: 'numeric', mean: 1.5, std: 2.25 }] });
    const encoder = new Encoder(spec);
    for (const rate of [3e38, -3e38, 1e30, 0.5]) {
      expectSame(spec, encoder, { rate, visits: 3 });
      const { vector } = generic(spec, encoder, { rate, visits: 3 });
      const z = Math.fround((rate - 0.02) / 0.042);
      expect(vector[0], String(rate)).toBe(Math.abs(z) > STANDARD_SCORE_LIMIT ? Math.sign(z) * STANDARD_SCORE_LIMIT : z);
      expect(vector[1]).toBe(Math.fround((3 - 1.5) / 2.25));
    }
  });

  it('accepts and refuses the same concrete cases', () => {
    const encoder = new Encoder(synthetic);
    const valid = {
      visits: 3,
      duration: null,
      offset: null,
      toString: 1,
      weekend: 'TRUE',
      returning: null,
      month: 'Jun',
      region: -4.5,
      constructor: 'b',
      'label with "quotes" \u2028 and \\': false,
    };
    const read = encoder.readInto(valid, new Float32Array(encoder.width), 0);
    expect(read?.oov).toEqual(['month']);
    expect(read?.values).toEqual({ ...valid, weekend: true, region: '-4.5' });
    expectSame(synthetic, encoder, valid);
    // Missing names that Object.prototype also has, one at a time.
    for (const name of ['toString', 'constructor']) {
      const missing: Record<string, unknown> = { ...valid };
      delete missing[name];
      expect(encoder.readInto(missing, new Float32Array(encoder.width), 0)).toBeNull();
      expect(coerceFeatures(synthetic, missing).issues).toEqual([{ path: `features.${name}`, message: expect.stringMatching(/^missing required/) }]);
    }
    for (const bad of [{ ...valid, extra: 1 }, { ...valid, visits: '3' }, { ...valid, weekend: null }, null, [valid], 'x']) {
      expect(encoder.readInto(bad, new Float32Array(encoder.width), 0)).toBeNull();
      expectSame(synthetic, encoder, bad);
    }
  });

  it('refuses values reached through a prototype other than a plain object', () => {
    const encoder = new Encoder(bundled);
    const [row] = shopperFeatureRows(1);
    const inherited = Object.create(row) as Record<string, unknown>;
    expect(encoder.readInto(inherited, new Float32Array(encoder.width), 0)).toBeNull();
    expect(encoder.readInto(Object.assign(Object.create(null), row), new Float32Array(encoder.width), 0)).not.toBeNull();
  });

  it('is not compiled for a spec it cannot express safely; the encoder then always takes the generic path', () => {
    // parseFeatureSpec refuses this name; the reader must still not trust a spec built without it.
    expect(() => parseFeatureSpec({ features: [{ name: '__proto__', type: 'numeric' }] })).toThrow(/cannot be a feature name/);
    const spec: FeatureSpec = {
      specVersion: 1,
      features: [{ name: '__proto__', type: 'numeric', nullable: false, impute: 0, transform: 'none', mean: 0, std: 1 }],
      label: { name: 'y', positive: '1' },
      threshold: 0.5,
    };
    expect(compileRowReader(spec)).toBeUndefined();
    expect(new Encoder(spec).readInto({ ['__proto__']: 1 }, new Float32Array(1), 0)).toBeNull();
    expect(compileRowReader(synthetic)).toBeTypeOf('function');
  });
});
