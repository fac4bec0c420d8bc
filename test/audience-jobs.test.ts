import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { addSecondVersion, BUNDLED_VERSION } from './helpers/second-version.js';
import { until } from './helpers/http.js';
import { MAX_AUDIENCE_JOBS, type ScoringJobView } from '../src/segments/scoring-jobs.js';
import { parseCsvText } from '../src/dataset/read-csv.js';
import { trainFromTable } from '../src/training/train.js';
import { saveTrainedVersion } from '../src/training/save-version.js';
import { ModelStore } from '../src/registry/model-store.js';

const SEG = 'Bearer seg-key-1234';
const ADMIN = 'Bearer adm-key-1234';
const PRED = 'Bearer pred-key-1234';

function multipartCsv(csv: string, filename = 'audience.csv') {
  const boundary = '----audience' + Math.random().toString(16).slice(2);
  const payload = Buffer.from(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${filename}"\r\nContent-Type: text/csv\r\n\r\n${csv}\r\n--${boundary}--\r\n`,
  );
  return { payload, headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } };
}

describe('audience scoring and re-scoring jobs', () => {
  let app: FastifyInstance;
  const rows = shopperFeatureRows(300);
  const columns = Object.keys(rows[0]);

  let store: string;

  beforeAll(async () => {
    store = copyDefaultStore();
    addSecondVersion(store, 'audience-b');
    app = await buildTestApp({ MODEL_STORE: store, API_KEYS: 'segments:seg-key-1234,admin:adm-key-1234,predict:pred-key-1234' });
  });
  afterAll(async () => {
    await app?.close();
    rmSync(store, { recursive: true, force: true });
  });

  const job = async (id: string, auth = SEG) => (await app.inject({ url: `/v1/jobs/${id}`, headers: { authorization: auth } })).json() as ScoringJobView;
  const finished = async (id: string) => {
    await until(async () => ['succeeded', 'failed', 'cancelled'].includes((await job(id)).status), `job ${id} to finish`, 30_000);
    return job(id);
  };

  it('a CSV naming a column twice fails with the name, instead of silently using one of them', async () => {
    const lines = [['userId', ...columns, 'userId'].join(','), ['dup-1', ...columns.map((c) => String(rows[0][c])), 'dup-2'].join(',')];
    const { payload, headers } = multipartCsv(lines.join('\n') + '\n');
    const res = await app.inject({ method: 'POST', url: '/v1/segments/score', payload, headers: { ...headers, authorization: SEG } });
    expect(res.statusCode, res.body).toBe(202);
    const done = await finished(res.json().jobId as string);
    expect(done.status).toBe('failed');
    expect(done.error).toContain('"userId" more than once');
    expect(done.scored).toBe(0);
  });

  it('scores a CSV of userId + features in the background and records memberships like /v1/predict', async () => {
    const lines = [['userId', ...columns].join(',')];
    rows.forEach((r, i) => lines.push([`aud-${i}`, ...columns.map((c) => String(r[c]).replace('true', 'TRUE').replace('false', 'FALSE'))].join(',')));
    lines.push(['aud-bad', ...columns.map((c) => (c === 'PageValues' ? 'lots' : String(rows[0][c])))].join(',')); // unparsable number
    lines.push([',', ...columns.slice(1).map(() => '0')].join(',')); // no userId
    lines.push(['u'.repeat(257), ...columns.map((c) => String(rows[0][c]))].join(',')); // could never be looked up or erased by URL
    lines.push(','.repeat(columns.length), ','.repeat(columns.length)); // a spreadsheet's blank rows: skipped, not invalid
    const { payload, headers } = multipartCsv(lines.join('\n') + '\n');
    const res = await app.inject({ method: 'POST', url: '/v1/segments/score', payload, headers: { ...headers, authorization: SEG } });
    expect(res.statusCode, res.body).toBe(202);
    const { jobId, statusUrl } = res.json() as { jobId: string; statusUrl: string };
    expect(statusUrl).toBe(`/v1/jobs/${jobId}`);

    const done = await finished(jobId);
    expect(done.status).toBe('succeeded');
    expect(done.kind).toBe('score-audience');
    expect(done.scored).toBe(rows.length);
    expect(done.invalid).toBe(3);
    expect(done.rowsDone).toBe(done.scored + done.invalid); // refused userIds are rows done too
    expect(done.errors.map((e) => e.path)).toEqual(expect.arrayContaining(['userId', 'features.PageValues']));
    expect(done.errors.map((e) => e.message)).toContain('userId longer than 256 characters');
    const bandTotal = (done.segments['high-intent'] ?? 0) + (done.segments['medium-intent'] ?? 0) + (done.segments['low-intent'] ?? 0);
    expect(bandTotal).toBe(rows.length);

    // The same user scored through /v1/predict gets the same probability the job recorded.
    const user = (await app.inject({ url: '/v1/users/aud-7', headers: { authorization: SEG } })).json() as { probability: number; segments: string[]; modelVersion: string };
    const direct = (await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: rows[7] }, headers: { authorization: PRED } })).json() as { probability: number };
    expect(user.probability).toBe(direct.probability);
    expect(user.modelVersion).toBe(BUNDLED_VERSION);
    const high = (await app.inject({ url: '/v1/segments/high-intent', headers: { authorization: SEG } })).json() as { size: number };
    expect(high.size).toBe(done.segments['high-intent'] ?? 0);
  });

  it('a cancel is seen however many rows in a row are refused for their userId, and one during the last chunk ends the job cancelled', async () => {
    const jobs = app.services.scoringJobs;
    const dir = mkdtempSync(join(tmpdir(), 'audience-cancel-'));
    try {
      // Every row refused (the header says user_id): the job still goes chunk by chunk and stops when cancelled.
      const refused = join(dir, 'refused.csv');
      writeFileSync(refused, ['user_id,PageValues', ...Array.from({ length: 20_000 }, (_, i) => `u${i},1`)].join('\n'));
      const a = jobs.scoreCsv(refused);
      jobs.cancel(a.id);
      const doneA = await finished(a.id);
      expect(doneA.status).toBe('cancelled');
      expect(doneA.rowsDone).toBeLessThan(20_000);
      expect(doneA.rowsDone).toBe(doneA.invalid);
      // A small file is one chunk: a cancel while it is being scored is not lost.
      const small = join(dir, 'small.csv');
      writeFileSync(small, [['userId', ...columns].join(','), ...rows.slice(0, 5).map((r, i) => [`last-chunk-${i}`, ...columns.map((c) => String(r[c]))].join(','))].join('\n'));
      const b = jobs.scoreCsv(small);
      const onJob = (e: { jobId: string; job: ScoringJobView }) => {
        if (e.jobId === b.id && e.job.rowsDone > 0) jobs.cancel(b.id);
      };
      jobs.on('job', onJob);
      const doneB = await finished(b.id);
      jobs.off('job', onJob);
      expect(doneB).toMatchObject({ status: 'cancelled', rowsDone: 5, scored: 5 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it(`at most ${MAX_AUDIENCE_JOBS} audience jobs are queued or running at once; another is refused with 429`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'audience-slots-'));
    const csv = ['userId,' + columns.join(','), 'slot,' + columns.map((c) => String(rows[2][c])).join(',')].join('\n');
    const paths = Array.from({ length: MAX_AUDIENCE_JOBS + 1 }, (_, i) => join(dir, `${i}.csv`));
    for (const p of paths) writeFileSync(p, csv);
    try {
      // Jobs start on a later tick, so all of these are still queued when the last one asks.
      const started = paths.slice(0, MAX_AUDIENCE_JOBS).map((p) => app.services.scoringJobs.scoreCsv(p));
      let refused: unknown;
      try {
        app.services.scoringJobs.scoreCsv(paths[MAX_AUDIENCE_JOBS]);
      } catch (err) {
        refused = err;
      }
      expect(refused).toMatchObject({ statusCode: 429, code: 'too_many_jobs' });
      for (const j of started) expect((await finished(j.id)).status).toBe('succeeded');
      // A slot is free again.
      expect((await finished(app.services.scoringJobs.scoreCsv(paths[MAX_AUDIENCE_JOBS]).id)).status).toBe('succeeded');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a scoring job is readable with a segments or admin key, not a predict key; an unknown id is 404', async () => {
    const { payload, headers } = multipartCsv(['userId,' + columns.join(','), 'one,' + columns.map((c) => String(rows[1][c])).join(',')].join('\n'));
    const res = await app.inject({ method: 'POST', url: '/v1/segments/score', payload, headers: { ...headers, authorization: SEG } });
    const { jobId } = res.json() as { jobId: string };
    expect((await app.inject({ url: `/v1/jobs/${jobId}`, headers: { authorization: PRED } })).statusCode).toBe(403);
    expect((await app.inject({ url: `/v1/jobs/${jobId}`, headers: { authorization: ADMIN } })).statusCode).toBe(200);
    expect((await app.inject({ url: `/v1/jobs/${jobId}`, headers: { authorization: SEG } })).statusCode).toBe(200);
    expect((await app.inject({ url: '/v1/jobs/not-a-job', headers: { authorization: SEG } })).statusCode).toBe(404);
    await finished(jobId);
  });

  it('a re-score after activating a version that dropped a feature scores every kept user (the dropped feature is left out)', async () => {
    const table = parseCsvText(readFileSync('data/online_shoppers_intention.csv', 'utf8'));
    const result = await trainFromTable(table, {
      label: 'Revenue',
      positive: 'TRUE',
      categorical: ['OperatingSystems', 'Browser', 'Region', 'TrafficType'],
      exclude: ['SpecialDay'],
      seed: 1,
      hyperparameters: { epochs: 1, patience: 1 },
    });
    const id = await saveTrainedVersion(new ModelStore(store), result, { id: 'no-special-day', personas: 3 });
    result.model.dispose();
    const kept = (await app.services.segments.store.user('aud-5'))?.features;
    expect(kept && Object.hasOwn(kept, 'SpecialDay')).toBe(true);
    const jobs: ScoringJobView[] = [];
    const onJob = (e: { job: ScoringJobView }) => e.job.kind === 'rescore' && jobs.push(e.job);
    app.services.scoringJobs.on('job', onJob);
    try {
      const act = await app.inject({ method: 'POST', url: `/v1/models/${id}/activate`, payload: { reason: 'test' }, headers: { authorization: ADMIN } });
      expect(act.statusCode, act.body).toBe(200);
      await until(() => jobs.some((j) => j.status === 'succeeded'), 're-score job to finish', 30_000);
      const done = jobs.find((j) => j.status === 'succeeded')!;
      expect(done.invalid).toBe(0);
      expect(done.scored).toBeGreaterThanOrEqual(rows.length);
      const user = (await app.inject({ url: '/v1/users/aud-5', headers: { authorization: SEG } })).json() as { modelVersion: string };
      expect(user.modelVersion).toBe(id);
      // The kept features stay whole, so a later version that takes SpecialDay again can re-score them.
      expect(Object.hasOwn((await app.services.segments.store.user('aud-5'))!.features!, 'SpecialDay')).toBe(true);
    } finally {
      // Later tests expect the bundled version active, and its re-score done.
      await app.inject({ method: 'POST', url: `/v1/models/${BUNDLED_VERSION}/activate`, payload: { reason: 'test' }, headers: { authorization: ADMIN } });
      await until(() => jobs.filter((j) => j.status === 'succeeded').length >= 2, 're-score back to the bundled version', 30_000);
      app.services.scoringJobs.off('job', onJob);
    }
  });

  it('after an activation, users whose features are kept are re-scored with the new version', async () => {
    const before = (await app.inject({ url: '/v1/users/aud-3', headers: { authorization: SEG } })).json() as { probability: number; modelVersion: string };
    expect(before.modelVersion).toBe(BUNDLED_VERSION);
    const act = await app.inject({ method: 'POST', url: '/v1/models/audience-b/activate', payload: { reason: 'test' }, headers: { authorization: ADMIN } });
    expect(act.statusCode, act.body).toBe(200);
    await until(async () => {
      const u = (await app.inject({ url: '/v1/users/aud-3', headers: { authorization: SEG } })).json() as { modelVersion: string };
      return u.modelVersion === 'audience-b';
    }, 'user re-scored with the new version', 30_000);
    const after = (await app.inject({ url: '/v1/users/aud-3', headers: { authorization: SEG } })).json() as { probability: number };
    const direct = (await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: rows[3] }, headers: { authorization: PRED } })).json() as { probability: number; modelVersion: string };
    expect(direct.modelVersion).toBe('audience-b');
    expect(after.probability).toBe(direct.probability);
    expect(after.probability).not.toBe(before.probability);
  });
});
