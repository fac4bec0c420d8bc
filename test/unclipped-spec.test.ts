import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildManifest } from '../src/registry/manifest.js';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { BUNDLED_VERSION } from './helpers/second-version.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

/**
 * A version whose spec does not clip a numeric feature (as an imported spec may): values far
 * outside the training data, up to the ±3.4e38 a request may send, still get a score that depends
 * on them, and explanations that add up.
 */
describe('a numeric feature without clip', () => {
  let app: FastifyInstance;
  let store: string;

  beforeAll(async () => {
    store = copyDefaultStore();
    const dir = join(store, 'versions', BUNDLED_VERSION);
    const spec = JSON.parse(readFileSync(join(dir, 'feature-spec.json'), 'utf8'));
    const rates = spec.features.find((f: { name: string }) => f.name === 'BounceRates');
    delete rates.clip;
    rates.transform = 'none';
    writeFileSync(join(dir, 'feature-spec.json'), JSON.stringify(spec));
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { files: Record<string, unknown> };
    const files = new Map(Object.keys(manifest.files).map((name) => [name, readFileSync(join(dir, name))]));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(buildManifest(BUNDLED_VERSION, files), null, 2));
    app = await buildTestApp({ MODEL_STORE: store });
    expect(app.services.models.active?.id).toBe(BUNDLED_VERSION);
  });
  afterAll(async () => {
    await app?.close();
    rmSync(store, { recursive: true, force: true });
  });

  const predict = async (BounceRates: number, explain = false) => {
    const [row] = shopperFeatureRows(1);
    const res = await app.inject({ method: 'POST', url: `/v1/predict${explain ? '?explain=true' : ''}`, payload: { features: { ...row, BounceRates } } });
    expect(res.statusCode, res.body).toBe(200);
    return res.json();
  };

  it('scores extreme values by their sign, and explains them with finite contributions that add up', async () => {
    const high = await predict(3e38);
    const low = await predict(-3e38);
    expect(Number.isFinite(high.probability) && Number.isFinite(low.probability)).toBe(true);
    expect(high.probability).not.toBe(low.probability);
    const explained = (await predict(3e38, true)).explanation;
    expect(Number.isFinite(explained.logitDelta)).toBe(true);
    const sum = explained.contributions.reduce((s: number, c: { contribution: number }) => s + c.contribution, 0);
    expect(sum).toBeCloseTo(explained.logitDelta, 1);
    expect(explained.contributions[0].feature).toBe('BounceRates');
  });
});
