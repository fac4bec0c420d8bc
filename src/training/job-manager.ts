import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import type { FastifyBaseLogger } from 'fastify';
import type { BackendPreference } from '../inference/backend.js';
import type { ModelStore } from '../registry/model-store.js';
import type { Lifecycle } from '../registry/lifecycle.js';
import type { ModelManager } from '../registry/model-manager.js';
import { AppError, conflict, notFound } from '../lib/errors.js';
import { isTerminal, type JobStatus } from '../lib/job-status.js';
import type { CleaningReport } from '../dataset/prepare.js';
import {
  DEFAULT_PROMOTE_MARGIN,
  type HeadlineMetrics,
  type PromoteMode,
  type PromotionComparison,
  type WorkerInput,
  type WorkerMessage,
} from './worker.js';


export interface RetrainRequest {
  /** Absolute, already validated (inside DATA_DIR) CSV path. */
  datasetPath: string;
  /** What the client named: `{ path }` or `{ uploadId }` (echoed in the job, recorded on the card). */
  dataset: { path: string } | { uploadId: string };
  label: string;
  positive: string;
  categorical?: string[];
  exclude?: string[];
  hyperparameters?: WorkerInput['hyperparameters'];
  seed?: number;
  promote: PromoteMode;
  promoteMargin?: number;
}

export interface PromotionDecision {
  mode: PromoteMode;
  promoted: boolean;
  reason: string;
  /** Figures behind an "if-better" decision. */
  comparison: PromotionComparison | null;
}

/** A retraining job as the API shows it. */
export interface JobView {
  id: string;
  status: JobStatus;
  dataset: { path: string } | { uploadId: string };
  label: string;
  positive: string;
  promote: PromoteMode;
  requestedBy: string;
  epoch: number | null;
  epochs: number | null;
  loss: number | null;
  validationAuc: number | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  version: string | null;
  metrics: HeadlineMetrics | null;
  cleaning: CleaningReport | null;
  promotion: PromotionDecision | null;
  error: string | null;
}

export type JobEvent =
  | { type: 'progress'; jobId: string; epoch: number; loss: number | null; validationAuc: number | null }
  | { type: 'status'; jobId: string; job: JobView };

interface JobRecord {
  view: JobView;
  worker: Worker | null;
  /** Id the worker announced just before writing the version (for targeted cleanup). */
  savingId: string | null;
  /** Set once a stop has cleaned up: a `saving` message that arrives later triggers another cleanup. */
  cleanedUp: boolean;
  /** Worker delivered its result; activation (if any) is in progress in this thread. */
  finalizing: boolean;
  /** A cancel or shutdown is tearing the worker down: its late messages are ignored. */
  stopping: boolean;
}

export interface JobManagerOptions {
  backend?: BackendPreference;
  /** Share of one core a training may use (see TRAINING_CPU_SHARE). */
  cpuShare?: number;
  /** Finished jobs kept in memory (oldest dropped first). */
  keepFinished?: number;
}

/**
 * Retraining jobs, held in memory (a restart forgets them; the versions they wrote stay in the store).
 *
 * DECISION — one training at a time: while a job is queued or running (including its promotion
 * step), start() throws 409 `{ error: "conflict" }` whose message names the running job id. Training
 * is CPU-bound and would otherwise compete with serving for the same cores; callers wait for the
 * job to finish or cancel it (DELETE /v1/jobs/:id) first.
 *
 * Cancelling terminates the worker thread and removes whatever the job left in the store (temp dir
 * or, if the rename already happened, the complete version), so a cancelled job leaves no version.
 * A job that fails (bad data, worker crash) is marked failed with the reason; serving is unaffected.
 *
 * Events: 'job' with a JobEvent (progress per epoch, status on every status change); 'close'.
 */
export class JobManager extends EventEmitter {
  private readonly jobs = new Map<string, JobRecord>();
  private current: JobRecord | null = null;
  private closed = false;

  constructor(
    private readonly store: ModelStore,
    private readonly lifecycle: Lifecycle,
    private readonly models: ModelManager,
    private readonly log: FastifyBaseLogger,
    private readonly opts: JobManagerOptions = {},
  ) {
    super();
    this.setMaxListeners(0); // one listener per SSE client
  }

  has(id: string): boolean {
    return this.jobs.has(id);
  }

  get(id: string): JobView {
    const rec = this.jobs.get(id);
    if (!rec) throw notFound(`job ${id}`);
    return { ...rec.view };
  }

  /** Starts a retraining job; 409 while another one is queued or running (see class comment). */
  start(req: RetrainRequest, actor: string): JobView {
    if (this.closed) throw conflict('the service is shutting down');
    if (this.current) {
      const c = this.current.view;
      throw conflict(`retrain job ${c.id} is ${c.status}: one training runs at a time (wait for it, or cancel it with DELETE /v1/jobs/${c.id})`);
    }
    const id = randomUUID();
    const view: JobView = {
      id,
      status: 'queued',
      dataset: req.dataset,
      label: req.label,
      positive: req.positive,
      promote: req.promote,
      requestedBy: actor,
      epoch: null,
      epochs: req.hyperparameters?.epochs ?? null,
      loss: null,
      validationAuc: null,
      createdAt: new Date().toISOString(),
      startedAt: null,
      finishedAt: null,
      version: null,
      metrics: null,
      cleaning: null,
      promotion: null,
      error: null,
    };
    const rec: JobRecord = {
      view,
      worker: null,
      savingId: null,
      cleanedUp: false,
      finalizing: false,
      stopping: false,
    };
    const input: WorkerInput = {
      jobId: id,
      datasetPath: req.datasetPath,
      datasetName: 'uploadId' in req.dataset ? `upload:${req.dataset.uploadId}` : req.dataset.path,
      label: req.label,
      positive: req.positive,
      categorical: req.categorical,
      exclude: req.exclude,
      hyperparameters: req.hyperparameters,
      seed: req.seed,
      storeRoot: this.store.root,
      activeVersionId: this.models.active?.id ?? null,
      promote: req.promote,
      promoteMargin: req.promoteMargin ?? DEFAULT_PROMOTE_MARGIN,
      backend: this.opts.backend,
      cpuShare: this.opts.cpuShare,
    };
    this.jobs.set(id, rec);
    this.current = rec;
    this.prune();
    try {
      rec.worker = spawnTrainingWorker(input);
    } catch (err) {
      this.finish(rec, 'failed', `could not start the training worker: ${(err as Error).message}`);
      return this.get(id);
    }
    const worker = rec.worker;
    worker.on('message', (m: WorkerMessage) => void this.onMessage(rec, m));
    worker.on('error', (err) => this.onWorkerDeath(rec, `training worker crashed: ${err.message}`));
    worker.on('exit', (code) => this.onWorkerDeath(rec, `training worker exited unexpectedly (code ${code})`));
    this.log.info({ job: id, by: actor, dataset: input.datasetName, promote: req.promote }, 'retrain job queued');
    return this.get(id);
  }

  /** Cancels a queued or running job: the worker is terminated and its partial output removed. */
  async cancel(id: string, actor = 'unknown'): Promise<JobView> {
    const rec = this.jobs.get(id);
    if (!rec) throw notFound(`job ${id}`);
    if (isTerminal(rec.view.status)) throw conflict(`job ${id} already ${rec.view.status}`);
    if (rec.finalizing) throw conflict(`job ${id} has finished training and is promoting version ${rec.view.version}; it can no longer be cancelled`);
    if (rec.stopping) throw conflict(`job ${id} is already being cancelled`);
    await this.stop(rec, `cancelled by ${actor}`);
    this.log.info({ job: id, by: actor }, 'retrain job cancelled');
    return this.get(id);
  }

  /** Stops a running job (on shutdown), then refuses new ones. */
  /** Cancels a running job; a job already saving or activating its version is waited for (up to `ms`). */
  async close(ms = 2000): Promise<void> {
    this.closed = true;
    const rec = this.current;
    if (rec && !rec.finalizing && !rec.stopping) await this.stop(rec, 'cancelled: the service shut down');
    else if (rec?.finalizing && !isTerminal(rec.view.status)) await this.settled(rec.view.id, ms);
    this.emit('close');
  }

  /** Resolves when the job reaches a terminal status, or after `ms`. */
  private settled(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.off('job', onJob);
        resolve();
      };
      const onJob = (e: JobEvent) => {
        if (e.type === 'status' && e.jobId === id && isTerminal(e.job.status)) done();
      };
      const timer = setTimeout(done, ms);
      this.on('job', onJob);
    });
  }

  private async stop(rec: JobRecord, reason: string): Promise<void> {
    rec.stopping = true;
    try {
      await rec.worker?.terminate();
    } catch {
      /* already gone */
    }
    this.removeLeftovers(rec);
    rec.cleanedUp = true;
    rec.view.error = reason;
    this.finish(rec, 'cancelled');
  }

  private async onMessage(rec: JobRecord, m: WorkerMessage): Promise<void> {
    if (m.type === 'saving') {
      rec.savingId = m.versionId; // recorded even while stopping: cleanup needs it
      // Posted before the worker was stopped but handled after the cleanup: clean up what it names.
      if (rec.cleanedUp) this.removeLeftovers(rec);
    }
    if (rec.stopping || isTerminal(rec.view.status)) return;
    const v = rec.view;
    switch (m.type) {
      case 'started':
        this.log.info({ job: v.id, backend: m.backend, priority: m.priority }, 'retrain job started');
        v.status = 'running';
        v.startedAt = new Date().toISOString();
        this.emitStatus(rec);
        return;
      case 'progress':
        v.epoch = m.epoch;
        v.loss = m.loss;
        v.validationAuc = m.validationAuc;
        this.emit('job', { type: 'progress', jobId: v.id, epoch: m.epoch, loss: m.loss, validationAuc: m.validationAuc } satisfies JobEvent);
        return;
      case 'log':
        this.log.debug({ job: v.id }, m.message);
        return;
      case 'saving':
        return;
      case 'error':
        rec.stopping = true;
        await rec.worker?.terminate().catch(() => undefined);
        this.removeLeftovers(rec);
        this.finish(rec, 'failed', m.message);
        this.log.warn({ job: v.id, err: m.message }, 'retrain job failed');
        return;
      case 'result':
        rec.finalizing = true;
        void rec.worker?.terminate().catch(() => undefined); // its work is done; free the isolate
        v.version = m.versionId;
        v.metrics = m.metrics;
        v.cleaning = m.cleaning;
        await this.promote(rec, m.comparison ?? null);
        return;
    }
  }

  private async promote(rec: JobRecord, comparison: PromotionComparison | null): Promise<void> {
    const v = rec.view;
    const id = v.version!;
    const decision: PromotionDecision =
      v.promote === 'never'
        ? { mode: 'never', promoted: false, reason: 'promote is "never": the new version stays inactive', comparison: null }
        : v.promote === 'always'
          ? { mode: 'always', promoted: true, reason: 'promote is "always"', comparison: null }
          : comparison
            ? { mode: 'if-better', promoted: comparison.promote, reason: comparison.reason, comparison }
            : { mode: 'if-better', promoted: false, reason: 'the worker made no comparison', comparison: null };
    v.promotion = decision;
    if (!decision.promoted) return this.finish(rec, 'succeeded');
    try {
      // "if-better" compared with the version active when the job started: promote only over that one.
      const ifActive = decision.mode === 'if-better' && comparison ? { ifActive: comparison.activeVersion } : {};
      await this.lifecycle.activate(id, { by: v.requestedBy, reason: `retrain job ${v.id}` }, ifActive);
      this.log.info({ job: v.id, version: id, mode: decision.mode }, 'retrained version activated');
      this.finish(rec, 'succeeded');
    } catch (err) {
      if (err instanceof AppError && err.code === 'active_changed') {
        v.promotion = { ...decision, promoted: false, reason: `not promoted: the comparison was with ${comparison?.activeVersion ?? 'no version'}, but ${err.message.replace(/^the /, '')}` };
        return this.finish(rec, 'succeeded');
      }
      // The version is complete and valid in the store (it can be activated by hand); the job failed its promise.
      v.promotion = { ...decision, promoted: false, reason: `activation failed: ${(err as Error).message}` };
      this.finish(rec, 'failed', `version ${id} was saved but could not be activated: ${(err as Error).message}`);
    }
  }

  private onWorkerDeath(rec: JobRecord, reason: string): void {
    if (rec.stopping || rec.finalizing || isTerminal(rec.view.status)) return;
    rec.stopping = true;
    this.removeLeftovers(rec);
    this.finish(rec, 'failed', reason);
    this.log.error({ job: rec.view.id, err: reason }, 'retrain job failed');
  }

  private finish(rec: JobRecord, status: JobStatus, error?: string): void {
    rec.view.status = status;
    rec.view.finishedAt = new Date().toISOString();
    if (error !== undefined) rec.view.error = error;
    rec.worker = null;
    if (this.current === rec) this.current = null;
    this.emitStatus(rec);
  }

  private emitStatus(rec: JobRecord): void {
    this.emit('job', { type: 'status', jobId: rec.view.id, job: { ...rec.view } } satisfies JobEvent);
  }

  private tmpDirs(): string[] {
    try {
      return readdirSync(this.store.versionsDir).filter((d) => d.startsWith('.tmp-'));
    } catch {
      return [];
    }
  }

  /**
   * Removes what a stopped worker may have left: its temp dir (`.tmp-<id>-*`) and, if it got as far
   * as the rename, the version itself (never the active/canary one — it cannot be, nothing activated it).
   * A worker announces the id before it writes anything, so without one there is nothing of its
   * own to remove; other temp dirs may be another replica's writes in progress and are left alone.
   */
  private removeLeftovers(rec: JobRecord): void {
    const dir = this.store.versionsDir;
    const id = rec.savingId;
    if (!id) return;
    for (const d of this.tmpDirs()) if (d.startsWith(`.tmp-${id}-`)) rmSync(join(dir, d), { recursive: true, force: true });
    if (existsSync(join(dir, id)) && this.models.active?.id !== id && this.models.canary?.id !== id) {
      this.store.deleteVersion(id);
      this.log.info({ job: rec.view.id, version: id }, 'removed the version written by a stopped job');
    }
  }

  private prune(): void {
    const keep = this.opts.keepFinished ?? 100;
    const finished = [...this.jobs.values()].filter((r) => isTerminal(r.view.status));
    for (const r of finished.slice(0, Math.max(0, finished.length - keep))) this.jobs.delete(r.view.id);
  }
}

/**
 * From the compiled dist this module is `…/worker.js`'s sibling and the worker starts plainly.
 * From TypeScript sources (tests, `npm run dev`: this module's URL ends in .ts) the worker must load
 * through tsx. `execArgv: ['--import', 'tsx']` is not enough on Node 20: tsx only registers its hooks
 * on the main thread there (and Node 20 workers do not inherit them), so the worker is started with a
 * two-line bootstrap that loads worker.ts through tsx's own API (tsImport), inside the worker.
 */
export function spawnTrainingWorker(input: WorkerInput): Worker {
  const fromSource = import.meta.url.endsWith('.ts');
  if (!fromSource) return new Worker(new URL('./worker.js', import.meta.url), { workerData: input });
  const tsxApi = tsxEsmApiUrl();
  const entry = new URL('./worker.ts', import.meta.url).href;
  const bootstrap =
    `import(${JSON.stringify(tsxApi)}).then((m) => (m.tsImport ?? m.default.tsImport)(${JSON.stringify(entry)}, ${JSON.stringify(import.meta.url)}));`;
  return new Worker(bootstrap, { eval: true, workerData: input });
}

/** URL of tsx's ESM API (the `import` condition of its `./esm/api` export; the CJS build cannot load hooks from a worker). */
function tsxEsmApiUrl(): string {
  const pkgPath = createRequire(import.meta.url).resolve('tsx/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports?: Record<string, { import?: { default?: string } | string }> };
  const entry = pkg.exports?.['./esm/api']?.import;
  const rel = typeof entry === 'string' ? entry : entry?.default;
  if (!rel) throw new Error('tsx has no ./esm/api export: cannot start the training worker from TypeScript sources');
  return pathToFileURL(join(dirname(pkgPath), rel)).href;
}
