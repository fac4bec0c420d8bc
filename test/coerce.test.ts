import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { coerceFeatures } from '../src/preprocessing/coerce.js';
import { parseFeatureSpec } from '../src/preprocessing/feature-spec.js';

const spec = parseFeatureSpec(JSON.parse(readFileSync('model-store/versions/shoppers-mlp-v1/feature-spec.json', 'utf8')));
const example = Object.fromEntries(spec.features.map((f) => [f.name, f.impute]));

describe('coerceFeatures', () => {
  it('accepts the spec example as is', () => {
    expect(coerceFeatures(spec, example).issues).toEqual([]);
  });

  it('refuses numbers beyond float32 range, which would encode to Infinity', () => {
    const { issues } = coerceFeatures(spec, { ...example, PageValues: 1e39, ExitRates: -1e39 });
    expect(issues.map((i) => i.path).sort()).toEqual(['features.ExitRates', 'features.PageValues']);
    expect(coerceFeatures(spec, { ...example, PageValues: 3.4e38 }).issues).toEqual([]);
  });

  it('reports every problem at once, with one issue per field', () => {
    const { issues } = coerceFeatures(spec, { ...example, Month: null, Weekend: 'maybe', Region: { a: 1 }, Extra: 1 });
    expect(issues.map((i) => i.path).sort()).toEqual(['features.Extra', 'features.Month', 'features.Region', 'features.Weekend']);
  });
});
