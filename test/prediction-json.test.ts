import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { batchJson, predictionJson } from '../src/http/prediction-json.js';
import type { Prediction } from '../src/inference/scorer.js';

// Personas are shared, frozen objects per loaded version; a few of them, reused across answers.
const personas = [Object.freeze({ id: 0, label: 'Engaged "browsers"' }), Object.freeze({ id: 1, label: 'low Informational · 日本' }), Object.freeze({ id: 2, label: '' })];

const prediction: fc.Arbitrary<Prediction> = fc
  .record({
    probability: fc.oneof(fc.double(), fc.double({ min: 0, max: 1 }), fc.constantFrom(0, -0, 1, Number.NaN, Infinity)),
    threshold: fc.oneof(fc.double({ min: 0, max: 1 }), fc.double()),
    modelVersion: fc.oneof(fc.string(), fc.constantFrom('shoppers-mlp-v1', 'v"2\\\n', '\u2028\ud800')),
    cached: fc.boolean(),
    warnings: fc.array(fc.string(), { maxLength: 3 }),
    persona: fc.option(fc.constantFrom(...personas), { nil: null }),
    explanation: fc.option(fc.record({ baseline: fc.double(), contributions: fc.array(fc.record({ feature: fc.string(), value: fc.double() }), { maxLength: 2 }) }), { nil: undefined }),
  })
  .map((r) => {
    // Field order as Scorer.toPrediction creates it; explanation is added only when asked for.
    const p: Prediction = { probability: r.probability, label: r.probability >= r.threshold, threshold: r.threshold, modelVersion: r.modelVersion, cached: r.cached, warnings: r.warnings, persona: r.persona };
    if (r.explanation) p.explanation = r.explanation as unknown as Prediction['explanation'];
    return p;
  });

describe('prediction JSON', () => {
  it('is byte for byte what JSON.stringify writes for any answer', () => {
    fc.assert(
      fc.property(prediction, (p) => {
        expect(predictionJson(p)).toBe(JSON.stringify(p));
      }),
      { numRuns: 2000 },
    );
  });

  it('falls back to JSON.stringify for a persona that is neither null nor an object', () => {
    const p = { probability: 0.5, label: true, threshold: 0.4, modelVersion: 'v', cached: false, warnings: [], persona: undefined } as unknown as Prediction;
    expect(predictionJson(p)).toBe(JSON.stringify(p));
  });

  it('is byte for byte what JSON.stringify writes for a batch answer', () => {
    fc.assert(
      fc.property(fc.string(), fc.array(prediction, { maxLength: 20 }), (modelVersion, predictions) => {
        const answer = { modelVersion, predictions };
        expect(batchJson(answer)).toBe(JSON.stringify(answer));
      }),
      { numRuns: 500 },
    );
  });
});
