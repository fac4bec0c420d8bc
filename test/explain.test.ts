import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

interface Contribution {
  feature: string;
  value: string | number | boolean | null;
  contribution: number;
  text: string;
}
interface Explained {
  probability: number;
  explanation?: { baselineProbability: number; logitDelta: number; method: string; contributions: Contribution[] };
}

const logit = (p: number) => Math.log(p / (1 - p));

/**
 * Tolerance for Σ contributions vs logitDelta: 0.02 absolute or 1 % of |logitDelta|, whichever is
 * larger (the brief's bound). Worst errors observed over these 200 rows: 0.040 with a 48-step
 * midpoint rule (fails this bound), 0.020 at 128 steps, 0.007 at 256, 0.028 at 64; with the exact
 * piecewise-linear path integral used for relu→sigmoid dense chains, rounding only (printed below).
 */
const tolerance = (logitDelta: number) => Math.max(0.02, 0.01 * Math.abs(logitDelta));

let app: FastifyInstance;
let rows: Record<string, number | string | boolean>[];
let featureNames: string[];
const answers: { row: Record<string, number | string | boolean>; body: Explained }[] = [];

beforeAll(async () => {
  app = await buildTestApp({});
  await app.ready();
  const all = shopperFeatureRows();
  // 200 rows spread over the whole file (months, visitor types and page values all vary).
  const step = Math.floor(all.length / 200);
  rows = Array.from({ length: 200 }, (_, i) => all[i * step]);
  featureNames = app.services.models.active!.spec.features.map((f) => f.name);
  for (const row of rows) {
    const res = await app.inject({ method: 'POST', url: '/v1/predict?explain=true', payload: { features: row } });
    expect(res.statusCode, res.body).toBe(200);
    answers.push({ row, body: res.json() as Explained });
  }
});

afterAll(async () => {
  await app?.close();
});

describe('ACCEPTANCE 5: ?explain=true on 200 real rows', () => {
  it('the rows cover both low and high probabilities', () => {
    const ps = answers.map((a) => a.body.probability);
    expect(Math.min(...ps)).toBeLessThan(0.1);
    expect(Math.max(...ps)).toBeGreaterThan(0.6);
  });

  it('contributions sum to logitDelta within max(0.02, 1 % of |logitDelta|)', () => {
    let maxAbs = 0;
    let worst = { error: 0, logitDelta: 0, allowed: 0 };
    for (const { body } of answers) {
      const e = body.explanation!;
      const sum = e.contributions.reduce((a, c) => a + c.contribution, 0);
      const error = Math.abs(sum - e.logitDelta);
      if (error > maxAbs) {
        maxAbs = error;
        worst = { error, logitDelta: e.logitDelta, allowed: tolerance(e.logitDelta) };
      }
      expect(error, `Σ=${sum} logitDelta=${e.logitDelta}`).toBeLessThanOrEqual(tolerance(e.logitDelta));
    }
    // The observed figure, for the report (not an assertion beyond the tolerance above).
    console.log(`explain: max |Σ contributions − logitDelta| over ${answers.length} rows = ${maxAbs.toExponential(2)} (logitDelta ${worst.logitDelta.toFixed(3)}, allowed ${worst.allowed.toFixed(4)})`);
  });

  it('logitDelta equals logit(probability) − logit(baselineProbability), the baseline is one fixed input', () => {
    const baselines = new Set<number>();
    for (const { body } of answers) {
      const e = body.explanation!;
      baselines.add(e.baselineProbability);
      expect(e.baselineProbability).toBeGreaterThan(0);
      expect(e.baselineProbability).toBeLessThan(1);
      // The model's own logit difference; the returned probabilities are float32, so their logits agree to ~1e-5.
      expect(Math.abs(e.logitDelta - (logit(body.probability) - logit(e.baselineProbability)))).toBeLessThan(2e-5);
    }
    expect(baselines.size).toBe(1);
  });

  it('one contribution per feature, with the request value, sorted by |contribution| descending', () => {
    for (const { row, body } of answers) {
      const cs = body.explanation!.contributions;
      expect(cs.map((c) => c.feature).sort()).toEqual([...featureNames].sort());
      for (const c of cs) {
        const sent = row[c.feature];
        // Categories are echoed as strings (the coerced value), numbers and booleans as sent.
        expect(c.value).toEqual(typeof c.value === 'string' ? String(sent) : sent);
      }
      for (let i = 1; i < cs.length; i++) expect(Math.abs(cs[i - 1].contribution)).toBeGreaterThanOrEqual(Math.abs(cs[i].contribution));
    }
  });

  it('text names the feature and says raises / lowers consistently with the sign', () => {
    let raises = 0;
    let lowers = 0;
    for (const { body } of answers) {
      for (const c of body.explanation!.contributions) {
        expect(c.text.startsWith(`${c.feature} = `)).toBe(true);
        if (c.contribution > 0) {
          expect(c.text).toMatch(/ raises$/);
          raises++;
        } else if (c.contribution < 0) {
          expect(c.text).toMatch(/ lowers$/);
          lowers++;
        } else expect(c.text).not.toMatch(/ (raises|lowers)$/);
      }
    }
    expect(raises).toBeGreaterThan(0);
    expect(lowers).toBeGreaterThan(0);
  });

  it('a high-probability session is explained mostly by what raises it', () => {
    const top = answers.reduce((a, b) => (b.body.probability > a.body.probability ? b : a));
    const e = top.body.explanation!;
    expect(e.logitDelta).toBeGreaterThan(0);
    expect(e.contributions[0].contribution).toBeGreaterThan(0);
  });
});

describe('without the flag', () => {
  it('the explanation is absent (no query, explain=false), and the probability is the same', async () => {
    for (const { row, body } of answers.slice(0, 20)) {
      for (const url of ['/v1/predict', '/v1/predict?explain=false']) {
        const res = await app.inject({ method: 'POST', url, payload: { features: row } });
        expect(res.statusCode, res.body).toBe(200);
        const plain = res.json() as Explained;
        expect('explanation' in plain).toBe(false);
        expect(plain.probability).toBe(body.probability);
      }
    }
  });

  it('batch answers carry no explanation', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: rows.slice(0, 5).map((features) => ({ features })) } });
    expect(res.statusCode, res.body).toBe(200);
    for (const p of (res.json() as { predictions: Explained[] }).predictions) expect('explanation' in p).toBe(false);
  });

  it('a bad explain value is a 400', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict?explain=yes', payload: { features: rows[0] } });
    expect(res.statusCode).toBe(400);
  });
});
