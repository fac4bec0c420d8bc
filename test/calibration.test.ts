import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend, tf } from '../src/inference/backend.js';
import { fitPlatt, foldCalibrationIntoOutput, logit, sigmoid } from '../src/training/calibrate.js';
import { rocAuc } from '../src/training/metrics.js';
import { createRng } from '../src/lib/random.js';
import { parseCsvText } from '../src/dataset/read-csv.js';
import { trainFromTable } from '../src/training/train.js';
import { typedRows } from '../src/preprocessing/fit.js';
import { Encoder } from '../src/preprocessing/transform.js';

/** The calibrated probabilities as the saved model computes them: float32 outputs. */
const calibrate = (p: number[], { a, b }: { a: number; b: number }) => p.map((v) => Math.fround(sigmoid(a * logit(v) + b)));

describe('Platt scaling (fitPlatt)', () => {
  it('stays finite and keeps the ranking when validation is perfectly separable', () => {
    // Raw scores: every positive above every negative, with margins as a well-trained model gives.
    const p: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < 30; i++) {
      p.push(Math.fround(sigmoid(1 + i / 4)));
      y.push(1);
      p.push(Math.fround(sigmoid(-1 - i / 4)));
      y.push(0);
    }
    const fit = fitPlatt(p, y);
    expect(Number.isFinite(fit.a) && Number.isFinite(fit.b)).toBe(true);
    expect(fit.a).toBeGreaterThan(0);
    expect(fit.a).toBeLessThan(10); // unsmoothed Newton runs off to a ≈ 10³ here
    const q = calibrate(p, fit);
    expect(new Set(q).size).toBe(new Set(p).size); // no ties from saturation
    expect(rocAuc(y, q)).toBe(1);
    // Platt's smoothed targets: nothing is pushed to certainty on 30 examples of each class.
    expect(Math.max(...q)).toBeLessThan(0.9999);
    expect(Math.min(...q)).toBeGreaterThan(1e-4);
  });

  it('pulls back a slope that would saturate distinct scores into float32 ties', () => {
    // Separable scores bunched near 0.5, plus a few far above: the smoothed fit wants a slope of
    // about 50, which would map every high score to exactly 1.
    const p: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < 200; i++) {
      p.push(Math.fround(sigmoid(0.01 + i * 0.001)), Math.fround(sigmoid(-0.01 - i * 0.001)));
      y.push(1, 0);
    }
    for (let i = 0; i < 5; i++) {
      p.push(Math.fround(sigmoid(12 + i * 0.3)));
      y.push(1);
    }
    const fit = fitPlatt(p, y);
    expect(fit.a).toBeGreaterThan(1); // pulled back, not abandoned
    expect(fit.a).toBeLessThan(50);
    expect(new Set(calibrate(p, fit)).size).toBe(new Set(p).size);
  });

  it('scores the logit clamp merges (float32 1.0 and 0.99999994, or below 1e-7) do not make it give up the fit', () => {
    const rng = createRng(11);
    const p: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < 1800; i++) {
      const z = (rng() - 0.5) * 6;
      p.push(Math.fround(sigmoid(z)));
      y.push(rng() < sigmoid(1.3 * z - 2) ? 1 : 0);
    }
    const plain = fitPlatt(p, y);
    expect(plain.a).toBeGreaterThan(1.1);
    for (const [extra, labels] of [[[1, 0.99999994], [1, 1]], [[1e-9, 1e-8], [0, 0]]] as const) {
      const fit = fitPlatt([...p, ...extra], [...y, ...labels]);
      expect(fit.a).toBeCloseTo(plain.a, 1);
      expect(fit.b).toBeCloseTo(plain.b, 1);
    }
  });

  it('scores without spread still get their intercept fitted (the slope is left at 1)', () => {
    const p = Array.from({ length: 500 }, () => 0.6);
    const y = Array.from({ length: 500 }, (_, i) => (i % 5 === 0 ? 1 : 0)); // 20 % positive
    const fit = fitPlatt(p, y);
    expect(fit.a).toBe(1);
    expect(sigmoid(fit.a * logit(0.6) + fit.b)).toBeCloseTo(101 / 502, 2); // the smoothed positive rate
  });

  it('recovers a known miscalibration on ordinary (overlapping) scores', () => {
    const rng = createRng(7);
    const p: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < 20000; i++) {
      const z = (rng() - 0.5) * 8;
      p.push(sigmoid(z));
      y.push(rng() < sigmoid(0.5 * z - 1) ? 1 : 0);
    }
    const fit = fitPlatt(p, y);
    expect(fit.a).toBeCloseTo(0.5, 1);
    expect(fit.b).toBeCloseTo(-1, 1);
  });

  it('never turns the ranking round: scores no better than chance get only an intercept', () => {
    const rng = createRng(3);
    const p: number[] = [];
    const y: number[] = [];
    for (let i = 0; i < 400; i++) {
      const z = (rng() - 0.5) * 6;
      p.push(sigmoid(z));
      y.push(rng() < sigmoid(-z) ? 1 : 0); // anti-correlated
    }
    const fit = fitPlatt(p, y);
    expect(fit.a).toBe(1);
    expect(rocAuc(y, calibrate(p, fit))).toBe(rocAuc(y, p));
  });
});

describe('calibration inside training', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('a perfectly separable validation split does not lower test AUC through saturation ties', async () => {
    // label = a > 0.5: the model separates validation perfectly within 30 epochs.
    let s = 3 * 7919;
    const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
    const lines = ['a,b,label'];
    for (let i = 0; i < 400; i++) {
      const a = rnd();
      const b = rnd();
      lines.push(`${a.toFixed(4)},${b.toFixed(4)},${a > 0.5 ? 1 : 0}`);
    }
    const result = await trainFromTable(parseCsvText(lines.join('\n')), { label: 'label', positive: '1', seed: 42, hyperparameters: { epochs: 30 } });
    const { model, spec, calibration, metrics, testSet } = result;
    try {
      // The uncalibrated model's test scores: fold the inverse of the calibration back in.
      const encoder = new Encoder(spec);
      const x = tf.tensor2d(encoder.encodeRows(typedRows(spec, testSet.rows)), [testSet.rows.length, encoder.width]);
      foldCalibrationIntoOutput(model, { a: 1 / calibration.a, b: -calibration.b / calibration.a });
      const out = model.predict(x) as tf.Tensor;
      const raw = Array.from(await out.data());
      tf.dispose([x, out]);
      // Calibration is monotone: it must leave test AUC where the raw scores put it.
      expect(metrics.test.auc).toBeCloseTo(rocAuc(testSet.labels, raw), 6);
      expect(metrics.validation.auc).toBe(1);
      expect(calibration.a).toBeGreaterThan(0);
      expect(calibration.a).toBeLessThan(20);
      expect(metrics.test.threshold).toBeLessThan(0.99);
      expect(metrics.test.logLoss).toBeLessThan(0.3);
    } finally {
      model.dispose();
    }
  });
});
