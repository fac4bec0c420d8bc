import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { addSecondVersion, BUNDLED_VERSION } from './helpers/second-version.js';
import { until } from './helpers/http.js';

const SHADOW = 'shadow-metrics-b';
const ADMIN = { authorization: 'Bearer adm-key-1234' };
const PRED = { authorization: 'Bearer pred-key-1234' };
const SEG = { authorization: 'Bearer seg-key-1234' };

/**
 * Background job rows (audience uploads, re-scores) are not served predictions: they are not
 * counted in intent_predictions_total, not compared by a shadow version, and shadow model calls
 * do not show up in the serving micro-batch histogram.
 */
describe('job rows and shadow scoring in the metrics', () => {
  let app: FastifyInstance;
  let store: string;
  let dir: string;
  const rows = shopperFeatureRows(320);
  const columns = Object.keys(rows[0]);

  beforeAll(async () => {
    store = copyDefaultStore();
    dir = mkdtempSync(join(tmpdir(), 'job-rows-metrics-'));
    addSecondVersion(store, SHADOW);
    app = await buildTestApp({ MODEL_STORE: store, API_KEYS: 'admin:adm-key-1234,predict:pred-key-1234,segments:seg-key-1234' });
    await app.ready();
    const res = await app.inject({ method: 'POST', url: `/v1/models/${SHADOW}/canary`, headers: ADMIN, payload: { mode: 'shadow', reason: 'metrics test' } });
    expect(res.statusCode, res.body).toBe(200);
  });
  afterAll(async () => {
    await app?.close();
    rmSync(store, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  });

  const scrape = async () => (await app.inject({ url: '/metrics' })).body;
  const value = (body: string, series: string) => Number(body.split('\n').find((l) => l.startsWith(`${series} `))?.split(' ').at(-1) ?? 0);
  const served = async () => value(await scrape(), `intent_predictions_total{version="${BUNDLED_VERSION}",cached="false"}`);
  const shadowN = async () => ((await app.inject({ url: `/v1/models/${SHADOW}/shadow`, headers: PRED })).json() as { n: number }).n;
  /** Single-row predictions served (each a distinct row, so each computed by the serving micro-batcher). */
  let singles = 0;
  const predict = async (i: number) => {
    singles++;
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId: `served-${i}`, features: rows[i] } });
    expect(res.statusCode, res.body).toBe(200);
  };
  /** Shadow scoring is off the request path: a further served prediction, once compared, shows that everything before it was. */
  const shadowSettled = async (expected: number, next: number) => {
    await predict(next);
    await until(async () => (await shadowN()) >= expected, `shadow n to reach ${expected}`);
    return shadowN();
  };

  it('an audience job neither adds to intent_predictions_total nor to the shadow statistics; it is counted as job rows', async () => {
    for (let i = 0; i < 3; i++) await predict(i);
    await until(async () => (await shadowN()) >= 3, 'the three predictions to be shadowed');
    expect(await served()).toBe(3);
    expect(await shadowN()).toBe(3);

    const csv = [['userId', ...columns].join(',')];
    for (let i = 0; i < 300; i++) csv.push([`job-${i}`, ...columns.map((c) => String(rows[10 + i][c]).replace('true', 'TRUE').replace('false', 'FALSE'))].join(','));
    const path = join(dir, 'audience.csv');
    writeFileSync(path, csv.join('\n') + '\n');
    const job = app.services.scoringJobs.scoreCsv(path);
    await until(() => ['succeeded', 'failed', 'cancelled'].includes(app.services.scoringJobs.get(job.id).status), 'the audience job to finish', 30_000);
    expect(app.services.scoringJobs.get(job.id)).toMatchObject({ status: 'succeeded', scored: 300 });

    // The fourth served prediction is compared once everything queued before it is.
    expect(await shadowSettled(4, 3)).toBe(4);
    const body = await scrape();
    expect(value(body, `intent_predictions_total{version="${BUNDLED_VERSION}",cached="false"}`)).toBe(4);
    expect(value(body, `intent_job_rows_scored_total{version="${BUNDLED_VERSION}"}`)).toBe(300);
    // The job still records its users itself.
    expect((await app.inject({ url: '/v1/users/job-7', headers: SEG })).statusCode).toBe(200);
  });

  it('a re-score job is not counted as served either', async () => {
    const before = { served: await served(), shadow: await shadowN() };
    const job = app.services.scoringJobs.rescoreAll();
    await until(() => ['succeeded', 'failed', 'cancelled'].includes(app.services.scoringJobs.get(job.id).status), 'the re-score job to finish', 30_000);
    const done = app.services.scoringJobs.get(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.scored).toBeGreaterThanOrEqual(300);
    expect(await shadowSettled(before.shadow + 1, 4)).toBe(before.shadow + 1);
    expect(await served()).toBe(before.served + 1);
    expect(value(await scrape(), `intent_job_rows_scored_total{version="${BUNDLED_VERSION}"}`)).toBe(300 + done.scored);
  });

  it('a batch request is served: counted and shadowed', async () => {
    const before = { served: await served(), shadow: await shadowN() };
    const instances = rows.slice(200, 205).map((features, i) => ({ userId: `batch-${i}`, features }));
    const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: PRED, payload: { instances } });
    expect(res.statusCode, res.body).toBe(200);
    expect(await served()).toBe(before.served + 5);
    await until(async () => (await shadowN()) >= before.shadow + 5, 'the batch rows to be shadowed');
    expect(await shadowN()).toBe(before.shadow + 5);
  });

  it('shadow model calls stay out of the serving micro-batch histogram', async () => {
    // Every single-row prediction so far (one computed row each) went through the serving micro-batcher;
    // the shadow scored each of them (and the batch rows) too, on its own.
    expect(singles).toBe(5);
    expect(value(await scrape(), 'intent_micro_batch_rows_sum')).toBe(singles);
  });
});
