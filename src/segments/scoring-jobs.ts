import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import { parse } from 'csv-parse';
import type { FastifyBaseLogger } from 'fastify';
import type { Scorer } from '../inference/scorer.js';
import type { ModelManager } from '../registry/model-manager.js';
import type { SegmentService } from './segment-service.js';
import { coerceFeatures, csvCellValue } from '../preprocessing/coerce.js';
import type { FeatureValues } from '../preprocessing/feature-spec.js';
import { detectDelimiter, readHead, repeatedNames } from '../dataset/read-csv.js';
import { AppError, notFound, unavailable, type FieldIssue } from '../lib/errors.js';
import { isTerminal, type JobStatus } from '../lib/job-status.js';
import { MAX_USER_ID_LENGTH } from '../lib/user-id.js';

export type ScoringJobKind = 'score-audience' | 'rescore';
export type ScoringJobStatus = JobStatus;

export interface ScoringJobView {
  id: string;
  kind: ScoringJobKind;
  status: ScoringJobStatus;
  modelVersion: string | null;
  rowsDone: number;
  scored: number;
  invalid: number;
  /** Membership records lost while the job ran (the store failed or hung; logged with the reason). */
  recordsDropped: number;
  errors: { row: number; path: string; message: string }[];
  segments: Record<string, number>;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  error: string | null;
}

const CHUNK = 1000;
const MAX_ERRORS = 20;
/** Finished jobs kept for GET /v1/jobs/:id (oldest dropped first), as for retraining jobs. */
const KEEP_FINISHED = 100;
/** Audience jobs queued or running at once; more are refused (429). */
export const MAX_AUDIENCE_JOBS = 4;

/** One row of a job: a user and their raw features; `seenAt` for re-scores of a stored user. */
interface JobRow {
  userId: string;
  features: Record<string, unknown>;
  row: number;
  /** Refused before scoring (a bad userId): counted as done and invalid with its chunk, never scored. */
  refused?: FieldIssue;
  seenAt?: number;
  /** A re-scored user's kept features, kept as they are (the model now active may take fewer). */
  kept?: FeatureValues;
}

/**
 * Background scoring in the serving process: audience CSV uploads and re-scoring of users whose
 * features are kept after an activation. Works in chunks of 1,000 rows through the batch scorer and
 * yields to the event loop between chunks, so predictions keep flowing.
 */
export class ScoringJobs extends EventEmitter {
  private readonly jobs = new Map<string, { view: ScoringJobView; cancel: boolean }>();
  /** Set by close(): no job starts on stores that are closing. */
  private closed = false;

  constructor(
    private readonly scorer: Scorer,
    private readonly models: ModelManager,
    private readonly segments: SegmentService,
    private readonly log: FastifyBaseLogger,
  ) {
    super();
    this.setMaxListeners(0);
  }

  /** Cancels running jobs and waits (up to `ms`) for them to stop; for shutdown. */
  async close(ms = 5000): Promise<void> {
    this.closed = true;
    for (const j of this.jobs.values()) if (!isTerminal(j.view.status)) j.cancel = true;
    const deadline = Date.now() + ms;
    while ([...this.jobs.values()].some((j) => !isTerminal(j.view.status)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
  }

  private prune(): void {
    // Oldest finished first (not oldest created: a long job that just ended is kept).
    const finished = [...this.jobs.values()].filter((j) => isTerminal(j.view.status)).sort((a, b) => (a.view.finishedAt ?? '').localeCompare(b.view.finishedAt ?? ''));
    for (const j of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.jobs.delete(j.view.id);
  }

  has(id: string): boolean {
    return this.jobs.has(id);
  }

  get(id: string): ScoringJobView {
    const j = this.jobs.get(id);
    if (!j) throw notFound(`job ${id}`);
    return structuredClone(j.view);
  }

  cancel(id: string): ScoringJobView {
    const j = this.jobs.get(id);
    if (!j) throw notFound(`job ${id}`);
    if (j.view.status === 'queued' || j.view.status === 'running') j.cancel = true;
    return this.get(id);
  }

  /**
   * Refuses (429) a new audience job while MAX_AUDIENCE_JOBS are queued or running: each holds its
   * upload (up to UPLOAD_LIMIT_BYTES) in the temp dir until it ends. Checked before an upload too.
   */
  assertAudienceSlot(): void {
    const unfinished = [...this.jobs.values()].filter((j) => j.view.kind === 'score-audience' && !isTerminal(j.view.status)).length;
    if (unfinished >= MAX_AUDIENCE_JOBS) {
      throw new AppError(429, 'too_many_jobs', `${unfinished} audience jobs are already queued or running (at most ${MAX_AUDIENCE_JOBS}); try again when one has finished`);
    }
  }

  /** Scores a CSV with a userId column plus the active model's features; the file is removed after. */
  scoreCsv(path: string, userIdColumn = 'userId'): ScoringJobView {
    if (!this.models.active) throw unavailable('no model is loaded');
    this.assertAudienceSlot();
    return this.start('score-audience', async (job, emitChunk) => {
      const spec = this.models.active!.spec;
      const delimiter = detectDelimiter(readHead(path, 64 * 1024));
      const parser = createReadStream(path).pipe(parse({ columns: uniqueColumns, delimiter, bom: true, trim: true, skip_empty_lines: true, skip_records_with_empty_values: true, relax_column_count: true }));
      let rows: JobRow[] = [];
      let n = 0;
      try {
        for await (const rec of parser as AsyncIterable<Record<string, string>>) {
          n++;
          const userId = rec[userIdColumn]?.trim();
          if (!userId || userId.length > MAX_USER_ID_LENGTH) {
            // A longer id could never be looked up or erased through /v1/users/:userId. The row
            // still goes with its chunk, so it counts as done and a cancel is seen however many
            // rows in a row are refused.
            rows.push({ userId: '', features: {}, row: n, refused: { path: userIdColumn, message: userId ? `userId longer than ${MAX_USER_ID_LENGTH} characters` : 'missing userId' } });
          } else {
            const features = Object.fromEntries(spec.features.filter((f) => f.name in rec).map((f) => [f.name, csvCellValue(f.type, rec[f.name])]));
            rows.push({ userId, features, row: n });
          }
          if (rows.length >= CHUNK) {
            await emitChunk(rows);
            rows = [];
          }
        }
        if (rows.length) await emitChunk(rows);
        if (n === 0) throw new Error('the CSV has no data rows (a header row, then one row per user)');
      } finally {
        rmSync(path, { force: true });
      }
    });
  }

  /**
   * Re-scores every user whose last features are kept, with the model now active and the rule
   * segments and bands now defined (after an activation, or a change of rules or bands). A re-score still
   * running is cancelled: this one covers every user under the newer state, so rapid changes run
   * one job, not one each.
   */
  rescoreAll(reason = 'model activated'): ScoringJobView {
    for (const j of this.jobs.values()) {
      if (j.view.kind === 'rescore' && !isTerminal(j.view.status)) {
        j.cancel = true;
        j.view.error = `superseded: ${reason}`;
      }
    }
    return this.start('rescore', async (_job, emitChunk) => {
      for await (const users of this.segments.store.users(CHUNK)) {
        const withFeatures = users.filter((u) => u.features);
        // Only the features the model now active takes: one it dropped is not a reason to refuse
        // the row (one it added, or retyped, still is, and is reported as invalid).
        const names = this.models.active?.spec.features.map((f) => f.name) ?? [];
        const pick = (kept: FeatureValues) => Object.fromEntries(names.filter((n) => Object.hasOwn(kept, n)).map((n) => [n, kept[n]]));
        if (withFeatures.length) await emitChunk(withFeatures.map((u, i) => ({ userId: u.userId, features: pick(u.features!), row: i, seenAt: u.at, kept: u.features })));
      }
    });
  }

  private start(
    kind: ScoringJobKind,
    run: (job: ScoringJobView, emitChunk: (rows: JobRow[]) => Promise<void>) => Promise<void>,
  ): ScoringJobView {
    if (this.closed) throw unavailable('the service is shutting down');
    const id = randomUUID();
    const view: ScoringJobView = {
      id,
      kind,
      status: 'queued',
      modelVersion: this.models.active?.id ?? null,
      rowsDone: 0,
      scored: 0,
      invalid: 0,
      recordsDropped: 0,
      errors: [],
      segments: {},
      createdAt: new Date().toISOString(),
      startedAt: null,
      finishedAt: null,
      error: null,
    };
    const entry = { view, cancel: false };
    this.jobs.set(id, entry);
    this.prune();
    const emit = () => this.emit('job', { type: 'status', jobId: id, job: structuredClone(view) });

    /** Membership drops counted when the job started: the job reports those after. */
    let droppedBefore = 0;
    const emitChunk = async (rows: JobRow[]) => {
      if (entry.cancel) throw new Cancelled();
      await new Promise((r) => setImmediate(r)); // let requests through between chunks
      const spec = this.models.active?.spec;
      if (!spec) throw new Error('no model is loaded');
      const valid: (JobRow & { values: FeatureValues })[] = [];
      for (const r of rows) {
        if (r.refused) {
          view.invalid++;
          pushError(view, { row: r.row, ...r.refused });
          continue;
        }
        const { values, issues } = coerceFeatures(spec, r.features);
        if (issues.length === 0) valid.push({ ...r, values });
        else {
          view.invalid++;
          for (const i of issues.slice(0, 3)) pushError(view, { row: r.row, path: i.path, message: i.message });
        }
      }
      if (valid.length) {
        // The active model, even during a canary: memberships and personas follow it. Job rows are
        // not served predictions: the scorer neither counts them as such nor hands them to its
        // listeners (segments, shadow), and they go without userId as well; the job records them itself.
        const res = await this.scorer.predictMany(valid.map((r) => ({ features: r.features })), [], { model: 'active', source: 'job' });
        view.modelVersion = res.modelVersion;
        view.scored += valid.length;
        const at = Date.now();
        for (const [i, p] of res.predictions.entries()) {
          const r = valid[i];
          const persona = p.persona?.id ?? null;
          const segs = this.segments.membershipsOf(r.values, p.probability, persona);
          for (const s of segs) view.segments[s] = (view.segments[s] ?? 0) + 1;
          this.segments.enqueue({
            userId: r.userId,
            probability: p.probability,
            version: res.modelVersion,
            persona,
            segments: segs,
            at: r.seenAt ?? at,
            scoredAt: at,
            features: this.segments.keepsFeatures ? (r.kept ?? r.values) : undefined,
            ifSeenAt: r.seenAt,
          });
        }
      }
      view.rowsDone += rows.length;
      // At the store's pace: scoring outruns per-user writes (see SegmentService.backpressure).
      await this.segments.backpressure();
      view.recordsDropped = this.segments.dropped - droppedBefore;
      emit();
    };

    queueMicrotask(async () => {
      view.status = 'running';
      view.startedAt = new Date().toISOString();
      droppedBefore = this.segments.dropped;
      emit();
      try {
        await run(view, emitChunk);
        // A cancel that came during the last chunk: nothing more was started, and the job says so
        // (what was scored keeps its memberships, as with a cancel between chunks).
        if (entry.cancel) throw new Cancelled();
        await this.segments.flush();
        view.recordsDropped = this.segments.dropped - droppedBefore;
        view.status = 'succeeded';
      } catch (err) {
        if (err instanceof Cancelled) view.status = 'cancelled';
        else {
          view.status = 'failed';
          view.error = (err as Error).message;
          this.log.warn({ job: id, kind, err: view.error }, 'scoring job failed');
        }
      }
      view.finishedAt = new Date().toISOString();
      emit();
    });
    return structuredClone(view);
  }
}

class Cancelled extends Error {}


function pushError(job: ScoringJobView, e: { row: number; path: string; message: string }) {
  if (job.errors.length < MAX_ERRORS) job.errors.push(e);
}

/** The header as column names; a name given twice is refused (csv-parse would silently keep the last one's values). */
function uniqueColumns(header: string[]): string[] {
  const names = header.map((h) => h.trim());
  const repeated = repeatedNames(names);
  if (repeated.length) throw new Error(`the CSV header names ${repeated.map((c) => JSON.stringify(c)).join(', ')} more than once: which one is meant is ambiguous`);
  return names;
}
