import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { expectError, pathsOf, until } from './helpers/http.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { BUNDLED_VERSION } from './helpers/second-version.js';
import { createRng } from '../src/lib/random.js';
import type { JobView } from '../src/training/job-manager.js';
import { schedulingPolicy } from '../src/training/thread-priority.js';

const ADMIN = { authorization: 'Bearer admin-key-123' };
const PREDICT = { authorization: 'Bearer pred-key-123' };
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const UPLOAD_LIMIT = 200_000;
const CATEGORICAL = ['OperatingSystems', 'Browser', 'Region', 'TrafficType'];
const SHOPPERS = 'data/online_shoppers_intention.csv';
const JOB_TIMEOUT = 90_000;

/** Every `step`-th real shoppers row (spread over the year, so both classes are well represented). */
function shoppersSample(step: number, dropColumn?: string): string {
  const [header, ...rows] = readFileSync(SHOPPERS, 'utf8').trim().split(/\r?\n/);
  const picked = [header, ...rows.filter((_, i) => i % step === 0)];
  if (!dropColumn) return picked.join('\n') + '\n';
  const at = header.split(',').indexOf(dropColumn);
  return picked.map((l) => l.split(',').filter((_, i) => i !== at).join(',')).join('\n') + '\n';
}

/**
 * Another schema: semicolon-separated, blank cells, 4 numeric + 2 categorical columns and a yes/no
 * label that depends on them (deterministic from the seed).
 */
function otherSchemaCsv(n = 600): string {
  const rng = createRng(1234);
  const colors = ['red', 'green', 'blue'];
  const lines = ['visits;spend;ratio;tenure;color;plan;bought'];
  for (let i = 0; i < n; i++) {
    const visits = Math.floor(rng() * 20);
    const spend = Math.round(rng() * 5000) / 100;
    const ratio = Math.round(rng() * 1000) / 1000;
    const tenure = Math.floor(rng() * 6);
    const color = colors[Math.floor(rng() * 3)];
    const plan = rng() < 0.5 ? 'basic' : 'pro';
    const score = 0.25 * visits - 0.04 * spend + 2 * ratio + (color === 'red' ? 1.2 : 0) + (plan === 'pro' ? 0.8 : 0) - 1.6 + (rng() - 0.5);
    const cells = [visits, spend, ratio, tenure, color, plan, score > 0 ? 'yes' : 'no'].map(String);
    if (i % 17 === 3) cells[1] = ''; // blank spend
    if (i % 23 === 5) cells[4] = ''; // blank color
    lines.push(cells.join(';'));
  }
  return lines.join('\n') + '\n';
}

async function multipartFile(field: string, filename: string, content: string | Buffer) {
  const form = new FormData();
  form.append(field, new Blob([new Uint8Array(Buffer.from(content))]), filename);
  const res = new Response(form);
  return { payload: Buffer.from(await res.arrayBuffer()), headers: { ...ADMIN, 'content-type': res.headers.get('content-type')! } };
}

const SCHED_OTHER = 0;
const SCHED_IDLE = 5;
const ownThreadId = () => Number(readlinkSync('/proc/thread-self').split('/').pop());
/** Scheduling policy of every thread of this process, by thread id. */
const threadPolicies = () => new Map(readdirSync('/proc/self/task').map((tid) => [Number(tid), schedulingPolicy(Number(tid))]));

interface SseEvent {
  event: string;
  data: unknown;
}
const parseSse = (text: string): SseEvent[] =>
  text
    .split('\n\n')
    .filter((block) => block.includes('data:'))
    .map((block) => {
      const lines = block.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message';
      const data = JSON.parse(lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n'));
      return { event, data };
    });

describe('retraining jobs (worker thread) over the HTTP API', () => {
  let app: FastifyInstance;
  let dataDir: string;
  let outside: string;

  const retrain = (body: Record<string, unknown>) => app.inject({ method: 'POST', url: '/v1/models/retrain', headers: ADMIN, payload: body });
  const getJob = async (id: string) => {
    const res = await app.inject({ method: 'GET', url: `/v1/jobs/${id}`, headers: ADMIN });
    expect(res.statusCode, res.body).toBe(200);
    return res.json() as JobView;
  };
  const waitFinished = (id: string): Promise<JobView> =>
    until(async () => {
      const j = await getJob(id);
      return ['succeeded', 'failed', 'cancelled'].includes(j.status) ? j : null;
    }, `job ${id} to finish`, JOB_TIMEOUT) as Promise<JobView>;
  const start = async (body: Record<string, unknown>) => {
    const res = await retrain(body);
    expect(res.statusCode, res.body).toBe(202);
    const { jobId, statusUrl } = res.json() as { jobId: string; statusUrl: string };
    expect(statusUrl).toBe(`/v1/jobs/${jobId}`);
    return jobId;
  };
  const activeVersion = async () => (await app.inject({ method: 'GET', url: '/readyz' })).json().model.activeVersion as string;
  const versionEntries = () => readdirSync(app.services.store.versionsDir).sort();
  const predictOnce = () => app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features: shopperFeatureRows(1)[0] } });
  const shoppersBody = (extra: Record<string, unknown> = {}) => ({
    dataset: { path: 'shoppers-small.csv' },
    label: 'Revenue',
    positive: 'TRUE',
    categorical: CATEGORICAL,
    hyperparameters: { epochs: 3 },
    seed: 7,
    ...extra,
  });

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'test-data-'));
    outside = mkdtempSync(join(tmpdir(), 'test-outside-'));
    writeFileSync(join(dataDir, 'shoppers-small.csv'), shoppersSample(30)); // ~410 real rows
    writeFileSync(join(dataDir, 'shoppers-full.csv'), readFileSync(SHOPPERS));
    writeFileSync(join(dataDir, 'no-label.csv'), shoppersSample(30, 'Revenue'));
    writeFileSync(join(dataDir, 'other-schema.csv'), otherSchemaCsv());
    // An extra column left blank in every row.
    writeFileSync(join(dataDir, 'with-blank-column.csv'), shoppersSample(30).trim().split('\n').map((l, i) => `${l},${i === 0 ? 'Notes' : ''}`).join('\n') + '\n');
    writeFileSync(join(outside, 'secret.csv'), shoppersSample(30));
    symlinkSync(join(outside, 'secret.csv'), join(dataDir, 'escape.csv'));
    symlinkSync(outside, join(dataDir, 'linked-dir'));
    app = await buildTestApp({ API_KEYS, DATA_DIR: dataDir, UPLOAD_LIMIT_BYTES: String(UPLOAD_LIMIT) });
    await app.ready();
  });

  afterAll(async () => {
    await app?.close();
    for (const d of [dataDir, outside]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('runs a job to success: progress, a new inactive version in the store, service unchanged; a second POST meanwhile is 409', async () => {
    const before = await activeVersion();
    const jobId = await start(shoppersBody({ exclude: ['SpecialDay'] }));
    const queued = await getJob(jobId);
    expect(['queued', 'running']).toContain(queued.status);
    expect(queued.createdAt).toMatch(/^\d{4}-/);

    // DECISION: one training at a time; the 409 names the running job.
    const second = await retrain(shoppersBody());
    const err = expectError(second, 409, 'conflict');
    expect(err.message).toContain(jobId);

    const job = await waitFinished(jobId);
    expect(job.status, job.error ?? '').toBe('succeeded');
    expect(job.epoch).toBe(3);
    expect(job.loss).toBeTypeOf('number');
    expect(job.startedAt).not.toBeNull();
    expect(job.finishedAt).not.toBeNull();
    expect(job.error).toBeNull();
    expect(job.metrics!.auc).toBeGreaterThan(0.5);
    expect(job.metrics!.n).toBeGreaterThan(30);
    expect(job.cleaning!.rowsRead).toBe(readFileSync(join(dataDir, 'shoppers-small.csv'), 'utf8').trim().split('\n').length - 1);
    expect(job.promotion).toMatchObject({ mode: 'never', promoted: false });

    const version = job.version!;
    expect(app.services.store.has(version)).toBe(true);
    const features = app.services.store.spec(version).features.map((f) => f.name);
    expect(features).not.toContain('SpecialDay'); // left out as asked
    expect(features).toContain('PageValues');
    expect(app.services.store.card(version)).toMatchObject({ source: 'trained', parameters: { dataset: 'shoppers-small.csv', label: { name: 'Revenue', positive: 'TRUE' }, categorical: CATEGORICAL, seed: 7 } });
    const models = (await app.inject({ method: 'GET', url: '/v1/models', headers: ADMIN })).json().models as { id: string; state: string }[];
    expect(models.find((m) => m.id === version)?.state).toBe('inactive');
    expect(await activeVersion()).toBe(before);
    expect(versionEntries().filter((d) => d.startsWith('.tmp-'))).toEqual([]);
  }, 120_000);

  it('a job reports the columns it left out (no value to learn from), and its version has no such feature', async () => {
    const job = await waitFinished(await start(shoppersBody({ dataset: { path: 'with-blank-column.csv' }, hyperparameters: { epochs: 2 } })));
    expect(job.status, job.error ?? '').toBe('succeeded');
    expect(job.cleaning!.columnsLeftOut).toEqual({ Notes: 'blank in every row' });
    expect(app.services.store.spec(job.version!).features.map((f) => f.name)).not.toContain('Notes');
  });

  it('streams server-sent events: the current status first, progress per epoch, and a final status', async () => {
    const jobId = await start(shoppersBody({ seed: 8 }));
    const res = await app.inject({ method: 'GET', url: `/v1/jobs/${jobId}/events`, headers: ADMIN });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/event-stream/);
    const events = parseSse(res.body);
    expect(events[0].event).toBe('status');
    expect(['queued', 'running']).toContain((events[0].data as JobView).status);
    const progress = events.filter((e) => e.event === 'progress').map((e) => e.data as { jobId: string; epoch: number; loss: number });
    expect(progress.length).toBeGreaterThanOrEqual(1);
    expect(progress.map((p) => p.epoch)).toEqual([1, 2, 3].slice(3 - progress.length));
    for (const p of progress) expect(p).toMatchObject({ jobId, loss: expect.any(Number) });
    const last = events.at(-1)!;
    expect(last.event).toBe('status');
    expect((last.data as JobView).status).toBe('succeeded');

    // A finished job's stream answers its final status and ends at once.
    const again = parseSse((await app.inject({ method: 'GET', url: `/v1/jobs/${jobId}/events`, headers: ADMIN })).body);
    expect(again).toHaveLength(1);
    expect((again[0].data as JobView).status).toBe('succeeded');
    // A retraining job is the admin's: a predict key learns nothing from it.
    expectError(await app.inject({ method: 'GET', url: `/v1/jobs/${jobId}`, headers: PREDICT }), 403);
    expectError(await app.inject({ method: 'GET', url: `/v1/jobs/${jobId}/events`, headers: PREDICT }), 403);
  }, 120_000);

  it('promote "always" activates the new version (readyz changes, history names the job) and it serves predictions', async () => {
    const before = await activeVersion();
    const jobId = await start(shoppersBody({ promote: 'always', seed: 9 }));
    const job = await waitFinished(jobId);
    expect(job.status, job.error ?? '').toBe('succeeded');
    expect(job.promotion).toMatchObject({ mode: 'always', promoted: true });
    expect(job.version).not.toBe(before);
    expect(await activeVersion()).toBe(job.version);
    const history = (await app.inject({ method: 'GET', url: '/v1/models/history', headers: ADMIN })).json().history as { version: string; reason?: string; by: string }[];
    expect(history[0]).toMatchObject({ version: job.version, reason: `retrain job ${jobId}`, by: expect.stringMatching(/^key:/) });
    const res = await predictOnce();
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().modelVersion).toBe(job.version);
  }, 120_000);

  it('promote "if-better" compares both models on the held-out rows and follows the margin', async () => {
    const active = await activeVersion();
    const noJob = await waitFinished(await start(shoppersBody({ promote: 'if-better', promoteMargin: 1, seed: 10 })));
    expect(noJob.status, noJob.error ?? '').toBe('succeeded');
    const c = noJob.promotion!.comparison!;
    expect(noJob.promotion).toMatchObject({ mode: 'if-better', promoted: false });
    expect(c).toMatchObject({ activeVersion: active, margin: 1, promote: false, rows: noJob.metrics!.n });
    expect(c.candidateAuc).toBeCloseTo(noJob.metrics!.auc!, 6); // same rows, same model
    expect(c.activeAuc).toBeGreaterThan(0.5);
    expect(c.reason).toContain('<');
    expect(await activeVersion()).toBe(active);

    const yesJob = await waitFinished(await start(shoppersBody({ promote: 'if-better', promoteMargin: -1, seed: 11 })));
    expect(yesJob.status, yesJob.error ?? '').toBe('succeeded');
    expect(yesJob.promotion).toMatchObject({ mode: 'if-better', promoted: true, comparison: { activeVersion: active, margin: -1, promote: true } });
    expect(await activeVersion()).toBe(yesJob.version);

    // The comparison is with the version active when the job started: if an operator activates
    // another one meanwhile, the candidate is not promoted over it.
    const lateId = await start(shoppersBody({ promote: 'if-better', promoteMargin: -1, seed: 12 }));
    const manual = await app.inject({ method: 'POST', url: `/v1/models/${noJob.version}/activate`, headers: ADMIN, payload: { reason: 'operator' } });
    expect(manual.statusCode, manual.body).toBe(200);
    const late = await waitFinished(lateId);
    expect(late.status, late.error ?? '').toBe('succeeded');
    expect(late.promotion).toMatchObject({ mode: 'if-better', promoted: false, comparison: { activeVersion: yesJob.version, promote: true } });
    expect(late.promotion!.reason).toContain(`now ${noJob.version}`);
    expect(await activeVersion()).toBe(noJob.version);
    expect(versionEntries()).toContain(late.version);
  }, 240_000);

  it('cancels a running job: worker stopped, status cancelled, no version or temp dir left', async () => {
    const entriesBefore = versionEntries();
    const jobId = await start({
      dataset: { path: 'shoppers-full.csv' },
      label: 'Revenue',
      positive: 'TRUE',
      categorical: CATEGORICAL,
      hyperparameters: { epochs: 500, patience: 500 },
    });
    await until(async () => {
      const j = await getJob(jobId);
      return j.status === 'running' && (j.epoch ?? 0) >= 1;
    }, 'the big job to be training', JOB_TIMEOUT);
    const during = await predictOnce(); // training runs in its worker thread: serving carries on
    expect(during.statusCode, during.body).toBe(200);
    // The training thread runs under SCHED_IDLE (it yields every core to serving); the thread
    // serving requests keeps the normal policy.
    const policies = threadPolicies();
    expect([...policies.values()].filter((p) => p === SCHED_IDLE)).toHaveLength(1);
    expect(policies.get(ownThreadId())).toBe(SCHED_OTHER);
    // Another writer's temp dir (an import in progress, or a replica sharing the store) is not the job's.
    const othersTemp = join(app.services.store.versionsDir, '.tmp-import-in-progress');
    mkdirSync(othersTemp);
    const res = await app.inject({ method: 'DELETE', url: `/v1/jobs/${jobId}`, headers: ADMIN });
    expect(res.statusCode, res.body).toBe(200);
    const job = res.json() as JobView;
    expect(job.status).toBe('cancelled');
    expect(job.version).toBeNull();
    expect(job.finishedAt).not.toBeNull();
    const epochAtCancel = job.epoch;
    await new Promise((r) => setTimeout(r, 1500));
    expect((await getJob(jobId)).epoch).toBe(epochAtCancel); // no progress after cancel
    expect(existsSync(othersTemp)).toBe(true);
    rmSync(othersTemp, { recursive: true });
    expect(versionEntries()).toEqual(entriesBefore);
    expectError(await app.inject({ method: 'DELETE', url: `/v1/jobs/${jobId}`, headers: ADMIN }), 409, 'conflict');
    expect((await predictOnce()).statusCode).toBe(200);
  }, 120_000);

  it('closing the app stops a running job (cancelled, nothing left in the store) and ends its event stream', async () => {
    const storeDir = copyDefaultStore(); // our own, so it outlives close() for the check below
    const versionsDir = join(storeDir, 'versions');
    const other = await buildTestApp({ API_KEYS, DATA_DIR: dataDir, MODEL_STORE: storeDir });
    try {
      await other.ready();
      const entriesBefore = readdirSync(versionsDir).sort();
      const res = await other.inject({
        method: 'POST',
        url: '/v1/models/retrain',
        headers: ADMIN,
        payload: { dataset: { path: 'shoppers-full.csv' }, label: 'Revenue', positive: 'TRUE', hyperparameters: { epochs: 500, patience: 500 } },
      });
      expect(res.statusCode, res.body).toBe(202);
      const { jobId } = res.json() as { jobId: string };
      await until(() => (other.services.jobs.get(jobId).epoch ?? 0) >= 1, 'the job to be training', JOB_TIMEOUT);
      const stream = other.inject({ method: 'GET', url: `/v1/jobs/${jobId}/events`, headers: ADMIN });
      await until(() => other.services.jobs.listenerCount('job') > 0, 'the event stream to subscribe');
      await other.close();
      const events = await stream;
      expect(events.statusCode).toBe(200);
      // The stream's last event is the job's final status, sent before it ended.
      const statuses = [...events.body.matchAll(/^event: status\ndata: (.*)$/gm)].map((m) => (JSON.parse(m[1]) as JobView).status);
      expect(statuses.at(-1)).toBe('cancelled');
      expect(other.services.jobs.get(jobId)).toMatchObject({ status: 'cancelled', version: null });
      expect(readdirSync(versionsDir).sort()).toEqual(entriesBefore);
    } finally {
      // Closing twice is harmless; a failed wait must not leave the 500-epoch worker running.
      await other.close();
      rmSync(storeDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('closing the app while a job activates its new version waits for that to finish', async () => {
    const storeDir = copyDefaultStore();
    const other = await buildTestApp({ API_KEYS, DATA_DIR: dataDir, MODEL_STORE: storeDir });
    try {
      await other.ready();
      // Hold the load of the new version (the activation's first step) until released.
      const models = other.services.models;
      const original = models.prepare.bind(models);
      let release!: () => void;
      let reached = false;
      const gate = new Promise<void>((r) => (release = r));
      models.prepare = async (id: string) => {
        if (id !== BUNDLED_VERSION) {
          reached = true;
          await gate;
        }
        return original(id);
      };
      const res = await other.inject({ method: 'POST', url: '/v1/models/retrain', headers: ADMIN, payload: shoppersBody({ hyperparameters: { epochs: 2 }, promote: 'always' }) });
      expect(res.statusCode, res.body).toBe(202);
      const { jobId } = res.json() as { jobId: string };
      await until(() => reached, 'the activation to start', JOB_TIMEOUT);
      setTimeout(release, 300);
      await other.close();
      expect(other.services.jobs.get(jobId)).toMatchObject({ status: 'succeeded', promotion: { promoted: true } });
    } finally {
      await other.close();
      rmSync(storeDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('fails a job on bad data (label column missing, single class) with the reason; the service keeps predicting', async () => {
    const entriesBefore = versionEntries();
    const missing = await waitFinished(await start(shoppersBody({ dataset: { path: 'no-label.csv' } })));
    expect(missing.status).toBe('failed');
    expect(missing.error).toContain('label column "Revenue" not in CSV');
    expect(missing.version).toBeNull();

    const single = await waitFinished(await start(shoppersBody({ positive: 'NEVER-SEEN' })));
    expect(single.status).toBe('failed');
    expect(single.error).toMatch(/single class/);

    expect(versionEntries()).toEqual(entriesBefore);
    const res = await predictOnce();
    expect(res.statusCode, res.body).toBe(200);
  }, 120_000);

  it('refuses dataset paths outside DATA_DIR (absolute, "..", symlinks out) with 400 naming dataset.path', async () => {
    // Watches (without replacing) the job manager: none of these requests may reach it.
    const started = vi.spyOn(app.services.jobs, 'start');
    const entriesBefore = versionEntries();
    for (const path of ['../x.csv', '/etc/passwd', 'sub/../../x.csv', '..\\x.csv', 'escape.csv', 'linked-dir/secret.csv', 'missing.csv', 'C:\\data\\x.csv']) {
      const res = await retrain(shoppersBody({ dataset: { path } }));
      const body = expectError(res, 400, 'validation_error');
      expect(pathsOf(body), path).toEqual(['dataset.path']);
    }
    const bad = expectError(await retrain(shoppersBody({ dataset: { uploadId: 'not-an-id' } })), 400, 'validation_error');
    expect(pathsOf(bad)).toEqual(['dataset.uploadId']);
    const unknown = expectError(await retrain(shoppersBody({ dataset: { uploadId: '00000000-0000-4000-8000-000000000000' } })), 400);
    expect(pathsOf(unknown)).toEqual(['dataset.uploadId']);
    // No job was started by any of these, and nothing reached the store.
    expect(started).not.toHaveBeenCalled();
    started.mockRestore();
    expect(versionEntries()).toEqual(entriesBefore);
    expect(existsSync(join(outside, 'secret.csv'))).toBe(true);
  });

  it('validates the request and requires the admin scope', async () => {
    expectError(await app.inject({ method: 'POST', url: '/v1/models/retrain', payload: shoppersBody() }), 401);
    expectError(await app.inject({ method: 'POST', url: '/v1/models/retrain', headers: PREDICT, payload: shoppersBody() }), 403);
    expectError(await app.inject({ method: 'GET', url: '/v1/jobs/whatever', headers: PREDICT }), 404); // unknown to both job kinds
    expectError(await retrain(shoppersBody({ promote: 'sometimes' })), 400, 'validation_error');
    expectError(await retrain(shoppersBody({ hyperparameters: { epochs: 0 } })), 400, 'validation_error');
    expectError(await app.inject({ method: 'GET', url: '/v1/jobs/nope', headers: ADMIN }), 404, 'not_found');
    expectError(await app.inject({ method: 'DELETE', url: '/v1/jobs/nope', headers: ADMIN }), 404, 'not_found');
    expectError(await app.inject({ method: 'GET', url: '/v1/jobs/nope/events', headers: ADMIN }), 404, 'not_found');
  });

  it('uploads a CSV (multipart, streamed to DATA_DIR/uploads) with its inferred schema, then retrains from the uploadId', async () => {
    const csv = shoppersSample(30);
    const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...(await multipartFile('file', 'shoppers.csv', csv)) });
    expect(res.statusCode, res.body).toBe(201);
    const up = res.json() as { uploadId: string; bytes: number; rows: number; delimiter: string; columns: { name: string; type: string; blanks: number }[] };
    expect(up.bytes).toBe(Buffer.byteLength(csv));
    expect(up.rows).toBe(csv.trim().split('\n').length - 1);
    expect(up.delimiter).toBe(',');
    expect(up.columns).toHaveLength(18);
    const col = Object.fromEntries(up.columns.map((c) => [c.name, c]));
    expect(col.Revenue.type).toBe('boolean');
    expect(col.Month.type).toBe('categorical');
    expect(col.PageValues).toEqual({ name: 'PageValues', type: 'numeric', blanks: 0 });
    // Blanks are counted as training counts them: missing-value markers among numbers are blanks.
    const marked = await app.inject({ method: 'POST', url: '/v1/datasets', ...(await multipartFile('file', 'marked.csv', 'x,region,y\n1,NA,TRUE\nNA,EU,FALSE\n?,,TRUE\n2,EU,FALSE\n')) });
    expect(marked.statusCode, marked.body).toBe(201);
    expect((marked.json() as typeof up).columns.slice(0, 2)).toEqual([
      { name: 'x', type: 'numeric', blanks: 2 },
      { name: 'region', type: 'categorical', blanks: 1 },
    ]);
    expect(readFileSync(join(dataDir, 'uploads', `${up.uploadId}.csv`), 'utf8')).toBe(csv);
    // A column with values but no name (a pandas index) could never be trained on: refused now, not by the retrain later.
    const indexed = await app.inject({ method: 'POST', url: '/v1/datasets', ...(await multipartFile('file', 'indexed.csv', ',x,y\n0,1,TRUE\n1,2,FALSE\n')) });
    expect(indexed.statusCode).toBe(400);
    expect(indexed.json().details).toEqual([{ path: 'file', message: expect.stringMatching(/column 1 has no name in the header but holds values/) }]);

    const job = await waitFinished(await start(shoppersBody({ dataset: { uploadId: up.uploadId }, hyperparameters: { epochs: 2 } })));
    expect(job.status, job.error ?? '').toBe('succeeded');
    expect(job.dataset).toEqual({ uploadId: up.uploadId });
    expect(app.services.store.card(job.version!).parameters).toMatchObject({ dataset: `upload:${up.uploadId}` });
  }, 120_000);

  it('refuses an upload over UPLOAD_LIMIT_BYTES with 413 and keeps nothing', async () => {
    const before = existsSync(join(dataDir, 'uploads')) ? readdirSync(join(dataDir, 'uploads')).sort() : [];
    const big = shoppersSample(1).slice(0, UPLOAD_LIMIT + 50_000);
    expect(Buffer.byteLength(big)).toBeGreaterThan(UPLOAD_LIMIT);
    const res = await app.inject({ method: 'POST', url: '/v1/datasets', ...(await multipartFile('file', 'big.csv', big)) });
    expectError(res, 413, 'payload_too_large');
    expect(readdirSync(join(dataDir, 'uploads')).sort()).toEqual(before);

    expectError(await app.inject({ method: 'POST', url: '/v1/datasets', headers: ADMIN, payload: { not: 'multipart' } }), 415);
    const notCsv = await app.inject({ method: 'POST', url: '/v1/datasets', ...(await multipartFile('file', 'x.csv', 'just one column\n1\n')) });
    expect(pathsOf(expectError(notCsv, 400))).toEqual(['file']);
    expect(readdirSync(join(dataDir, 'uploads')).sort()).toEqual(before);
  });

  it('retrains on another schema (semicolons, blank cells, yes/no label); "if-better" refuses to compare with a model on other features', async () => {
    const active = await activeVersion();
    const job = await waitFinished(
      await start({
        dataset: { path: 'other-schema.csv' },
        label: 'bought',
        positive: 'yes',
        hyperparameters: { epochs: 25, hidden: [16], batchSize: 32 },
        promote: 'if-better',
      }),
    );
    expect(job.status, job.error ?? '').toBe('succeeded');
    expect(job.cleaning).toMatchObject({ rowsRead: 600, blankCells: { spend: 36, color: 26 } });
    expect(job.metrics!.auc).toBeGreaterThan(0.75);
    expect(job.promotion).toMatchObject({ mode: 'if-better', promoted: false });
    expect(job.promotion!.reason).toMatch(/features missing from the dataset/);
    expect(await activeVersion()).toBe(active);
    const spec = app.services.store.spec(job.version!);
    expect(spec.label).toEqual({ name: 'bought', positive: 'yes' });
    expect(Object.fromEntries(spec.features.map((f) => [f.name, f.type]))).toEqual({
      visits: 'numeric',
      spend: 'numeric',
      ratio: 'numeric',
      tenure: 'numeric',
      color: 'categorical',
      plan: 'categorical',
    });
    // Activating it by hand works: it is a complete version on the new schema.
    const res = await app.inject({ method: 'POST', url: `/v1/models/${job.version}/activate`, headers: ADMIN, payload: {} });
    expect(res.statusCode, res.body).toBe(200);
    const p = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features: { visits: 12, spend: 3.5, ratio: 0.9, tenure: 2, color: 'red', plan: 'pro' } } });
    expect(p.statusCode, p.body).toBe(200);
    expect(p.json().probability).toBeGreaterThan(0.5);
    // Back to the shoppers model for any later test.
    expect((await app.inject({ method: 'POST', url: `/v1/models/${BUNDLED_VERSION}/activate`, headers: ADMIN, payload: {} })).statusCode).toBe(200);
  }, 120_000);
});
