import fc from 'fast-check';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { compiledSerializer } from '../src/http/compiled-serializer.js';
import { Prediction } from '../src/http/schemas.js';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

/** The predict routes' compiled serializer must write exactly what JSON.stringify writes. */

const Batch = z.object({ modelVersion: z.string(), predictions: z.array(Prediction) });

const finite = fc.double({ noNaN: true, noDefaultInfinity: true });
const prediction = fc.record(
  {
    probability: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom(0, 1, 1e-7, 5e-324, Math.fround(0.1))),
    label: fc.boolean(),
    threshold: fc.double({ min: 0, max: 1, noNaN: true }),
    modelVersion: fc.string(),
    cached: fc.boolean(),
    warnings: fc.array(fc.oneof(fc.string(), fc.string({ unit: 'grapheme' }), fc.constantFrom('a "quoted" \\ value\n', '\u2028\u0000é'))),
    persona: fc.option(fc.record({ id: fc.integer({ min: 0, max: 20 }), label: fc.string() }), { nil: null }),
    explanation: fc.record({
      baselineProbability: finite,
      logitDelta: finite,
      method: fc.string(),
      contributions: fc.array(fc.record({ feature: fc.string(), value: fc.oneof(finite, fc.string(), fc.boolean(), fc.constant(null)), contribution: finite, text: fc.string() }), { maxLength: 4 }),
    }),
  },
  { requiredKeys: ['probability', 'label', 'threshold', 'modelVersion', 'cached', 'warnings', 'persona'] },
);

describe('compiled response serializer', () => {
  it('writes single predictions byte for byte like JSON.stringify', () => {
    const write = compiledSerializer({ schema: Prediction, httpStatus: '200' });
    fc.assert(fc.property(prediction, (p) => {
        expect(write(p)).toBe(JSON.stringify(p));
      }), { numRuns: 1000 });
  });

  it('writes batch answers byte for byte like JSON.stringify', () => {
    const write = compiledSerializer({ schema: Batch, httpStatus: '200' });
    fc.assert(fc.property(fc.string(), fc.array(prediction, { maxLength: 20 }), (modelVersion, predictions) => {
        expect(write({ modelVersion, predictions })).toBe(JSON.stringify({ modelVersion, predictions }));
      }), { numRuns: 300 });
  });

  it('is compiled from the schema for 2xx (fields outside it are not written), JSON.stringify otherwise', () => {
    const p = { probability: 0.5, label: true, threshold: 0.4, modelVersion: 'v', cached: false, warnings: [], persona: null, internal: 'x' };
    expect(JSON.parse(compiledSerializer({ schema: Prediction, httpStatus: '200' })(p))).not.toHaveProperty('internal');
    expect(JSON.parse(compiledSerializer({ schema: Prediction, httpStatus: '400' })(p))).toHaveProperty('internal', 'x');
  });

  it('the routes answer with it: bodies equal JSON.stringify of what they parse to', async () => {
    const app = await buildTestApp();
    try {
      const [a, b] = shopperFeatureRows(2);
      for (const [url, payload] of [
        ['/v1/predict', { features: { ...a, Month: 'Smarch' } }],
        ['/v1/predict?explain=true', { features: a }],
        ['/v1/predict/batch', { instances: [{ features: a }, { features: { ...b, VisitorType: 'Alien' } }] }],
      ] as const) {
        const res = await app.inject({ method: 'POST', url, payload });
        expect(res.statusCode, res.body).toBe(200);
        expect(res.body).toBe(JSON.stringify(res.json()));
      }
    } finally {
      await app.close();
    }
  });
});
