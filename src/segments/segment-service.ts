import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { ModelManager } from '../registry/model-manager.js';
import type { ScoredEvent, Scorer } from '../inference/scorer.js';
import type { ScoreCache } from '../cache/score-cache.js';
import { AppError, notFound, unavailable, ValidationError, type FieldIssue } from '../lib/errors.js';
import { BAND_IDS, DEFAULT_BANDS, bandOf, isPersonaSegment, personaSegmentId, type Bands, type RuleSegment } from './definitions.js';
import { evaluateRule, featureReferences, type Rule } from './rules.js';
import type { MembershipRecord, MembershipStore } from './membership-store.js';

export interface SegmentSummary {
  id: string;
  kind: 'score-band' | 'rule' | 'persona';
  name: string;
  description?: string;
  size: number;
  updated: string | null;
  rule?: Rule;
  bounds?: { min: number; max: number };
}

/**
 * Membership records that may wait on the store at once (about 20 MB); a batch that would go past
 * it is dropped. Bulk producers (audience jobs, batch requests with userIds) wait at HIGH_WATER
 * (see backpressure), so this acts when single predictions alone outrun the store, or it hangs.
 */
const MAX_PENDING_RECORDS = 50_000;
/** Records waiting on the store past which bulk producers wait for it (backpressure). */
const HIGH_WATER = 20_000;
/** Records per store call (one Redis pipeline). */
const WRITE_CHUNK = 2_000;
const MAX_RULE_SEGMENTS = 100;
/**
 * Longest close() waits for queued membership writes (less when flushWaitMs is shorter). Shutdown
 * has SHUTDOWN_TIMEOUT_MS for everything (see server.ts), so this is a share of it, not one
 * REDIS_COMMAND_TIMEOUT_MS per queued batch: a store that answers takes milliseconds.
 */
export const CLOSE_WAIT_MS = 1000;
/**
 * After an erasure, when the score-cache keys are deleted again: other replicas' cache writes
 * leave within 10 ms of scoring and their membership writes on the next tick, so both have
 * landed well before this (plus the wire).
 */
export const ERASE_CACHE_RECHECK_MS = 1000;

/**
 * Turns scored predictions into segment memberships. Memberships are computed on the request
 * thread (cheap) but written in pipelined batches on the next tick, off the request path.
 */
export class SegmentService {
  private bands: Bands = DEFAULT_BANDS;
  private ruleSegments: RuleSegment[] = [];
  private buffer: MembershipRecord[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private flushScheduled = false;
  /** Records in write batches chained and not yet settled (bounded: see MAX_PENDING_RECORDS). */
  private pendingRecords = 0;
  private timers: NodeJS.Timeout[] = [];
  /** Bumped after each definition write here: a refresh that read before it is stale. */
  private definitionsVersion = 0;
  /** Rules being deleted here: no new memberships for them, whatever a refresh reads meanwhile. */
  private readonly deleting = new Set<string>();
  /** Set when close() gave up on the queued writes: they are counted in `dropped` already. */
  private abandoned = false;
  /** The last membership write failed (store down, or it timed out): until one succeeds, nothing waits for queued writes to drain. */
  private storeFailing = false;
  /** Write batches stored or failed so far: backpressure() waits on while this moves. */
  private batchesSettled = 0;
  /**
   * Records not confirmed written: dropped (queue full, store down, given up at shutdown), or whose
   * write timed out. A frozen Redis may still apply a timed-out write when it resumes.
   */
  dropped = 0;

  /** Records handed to the store and not yet written (or given up). */
  get waiting(): number {
    return this.pendingRecords;
  }

  constructor(
    readonly store: MembershipStore,
    private readonly models: ModelManager,
    private readonly cache: ScoreCache,
    private readonly log: FastifyBaseLogger,
    /** flushWaitMs: how long a change that needs the queued writes stored first waits for them. */
    private readonly opts: { ttlDays: number; retainFeatures: boolean; flushWaitMs?: number },
  ) {}

  async start(scorer: Scorer): Promise<void> {
    await this.refreshDefinitions().catch((err) => this.log.warn({ err: (err as Error).message }, 'segment definitions unavailable; using defaults'));
    scorer.onScored((e) => this.onScored(e));
    // Other replicas may change definitions; expiry drops members not seen for MEMBERSHIP_TTL_DAYS.
    this.timers.push(setInterval(() => void this.refreshDefinitions().catch(() => {}), 2000).unref());
    this.timers.push(setInterval(() => void this.expire().catch(() => {}), 10 * 60_000).unref());
    void this.expire().catch(() => {});
    // Retention turned off: features kept while it was on go now, not when each user returns.
    if (!this.opts.retainFeatures) {
      void this.store
        .dropFeatures()
        .then((n) => n && this.log.info({ users: n }, 'FEATURE_RETENTION=off: removed kept feature values'))
        .catch((err) => this.log.warn({ err: (err as Error).message }, 'could not remove kept feature values; will retry at next start'));
    }
  }

  /** Loads bands and rules; false (nothing applied) when a write here made the read stale. */
  async refreshDefinitions(): Promise<boolean> {
    const version = this.definitionsVersion;
    const bands = (await this.store.getBands()) ?? DEFAULT_BANDS;
    const rules = await this.store.rules();
    if (version !== this.definitionsVersion) return false;
    this.bands = bands;
    // Unchanged rules keep their objects, and with them their compiled form (rules.ts caches per object).
    const known = new Map(this.ruleSegments.map((r) => [r.id, r]));
    const same = (a: RuleSegment, b: RuleSegment | undefined) => b !== undefined && JSON.stringify(a) === JSON.stringify(b);
    this.ruleSegments = rules.filter((r) => !this.deleting.has(r.id)).map((r) => (same(r, known.get(r.id)) ? known.get(r.id)! : r));
    return true;
  }

  /** After a definition write: refreshes that read before it are dropped, and a new one applied. */
  private async definitionsChanged(): Promise<void> {
    this.definitionsVersion++;
    while (!(await this.refreshDefinitions())) {
      /* another write here meanwhile: read again */
    }
  }

  get currentBands(): Bands {
    return this.bands;
  }

  /** Every segment id a user can be in right now (bands, rules, personas of the active model). */
  segmentIds(): string[] {
    const personas = this.models.active?.personas?.personas.map((p) => personaSegmentId(p.id)) ?? [];
    return [...BAND_IDS, ...this.ruleSegments.map((r) => r.id), ...personas];
  }

  membershipsOf(values: ScoredEvent['values'], probability: number, persona: number | null): string[] {
    const out: string[] = [bandOf(probability, this.bands)];
    for (const r of this.ruleSegments) {
      try {
        if (evaluateRule(r.rule, values, probability)) out.push(r.id);
      } catch {
        /* a rule that cannot evaluate on this input is simply not matched */
      }
    }
    if (persona !== null) out.push(personaSegmentId(persona));
    return out;
  }

  /** Whether user records keep raw features (FEATURE_RETENTION). */
  get keepsFeatures(): boolean {
    return this.opts.retainFeatures;
  }

  private onScored(e: ScoredEvent): void {
    if (!e.userId) return;
    // Persona segments are the active model's: a canary's persona k is another group than the
    // active model's persona k, so a canary answer records the score but no persona.
    const persona = e.model === this.models.active ? (e.prediction.persona?.id ?? null) : null;
    this.enqueue({
      userId: e.userId,
      probability: e.prediction.probability,
      version: e.prediction.modelVersion,
      persona,
      segments: this.membershipsOf(e.values, e.prediction.probability, persona),
      at: Date.now(),
      features: this.opts.retainFeatures ? e.values : undefined,
      cacheKey: e.cacheKey || undefined,
    });
  }

  enqueue(record: MembershipRecord): void {
    this.buffer.push(record);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => void this.flush());
    }
  }

  /**
   * Resolves once fewer than HIGH_WATER records wait on the store (at once when they do). Bulk
   * producers await it after each chunk, so they go at the store's pace: per-user writes are
   * slower than scoring, and without it a 150,000-row upload overflowed MAX_PENDING_RECORDS and
   * lost a fifth of its records on a healthy Redis. Bounded: it gives up when no write batch has
   * settled for flushWaitMs, and does not wait while writes are failing. Queued batches against a
   * hung store each wait out their command timeout one after another, so waiting for them to drain
   * could hold a request for minutes; past MAX_PENDING_RECORDS, records are then dropped and
   * counted instead. A store that answers, however slowly and however many producers wait on it,
   * keeps settling batches, and nothing is dropped.
   */
  async backpressure(): Promise<void> {
    const wait = this.opts.flushWaitMs ?? 5000;
    let deadline = Date.now() + wait;
    let settled = this.batchesSettled;
    while (this.pendingRecords + this.buffer.length > HIGH_WATER && !this.storeFailing) {
      const left = deadline - Date.now();
      if (left <= 0) return;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.buffer.length ? this.flush() : this.flushing, new Promise((resolve) => (timer = setTimeout(resolve, left)))]);
      clearTimeout(timer);
      if (this.batchesSettled !== settled) {
        settled = this.batchesSettled;
        deadline = Date.now() + wait;
      }
    }
  }

  /**
   * Before reading a user's record: the writes queued so far, stored (waiting at most flushWaitMs,
   * and not at all while writes are failing: the read then shows what the store holds).
   */
  async settled(): Promise<void> {
    if (!this.storeFailing) await this.flushedWithin();
  }

  /** Writes buffered records; resolves when everything enqueued so far is stored. */
  flush(): Promise<void> {
    this.flushScheduled = false;
    const batch = this.buffer;
    this.buffer = [];
    if (batch.length === 0) return this.flushing;
    // A store that hangs (a frozen Redis) would otherwise collect batches, and the records in
    // them, without bound; memberships are refreshed by each user's next score.
    if (this.pendingRecords + batch.length > MAX_PENDING_RECORDS) {
      this.dropped += batch.length;
      // Logged at the first drop, then about once per 10,000 records, not once per batch.
      if (this.dropped === batch.length || this.dropped % 10_000 < batch.length) this.log.warn({ dropped: this.dropped }, 'membership store is not keeping up; records dropped');
      return this.flushing;
    }
    // A record scored by a model that is no longer active (a re-score chunk or a request in flight
    // across an activation) must not put its persona k into the new model's persona k.
    const active = this.models.active?.id;
    for (const r of batch) {
      if (r.persona !== null && r.version !== active) {
        r.persona = null;
        r.segments = r.segments.filter((id) => !isPersonaSegment(id));
      }
    }
    const ids = this.segmentIds();
    this.pendingRecords += batch.length;
    // Written WRITE_CHUNK records per store call: a bulk request's 10,000 records in one Redis
    // pipeline would hold the server (and every read behind it) for the whole pipeline, and leave
    // producers waiting in backpressure() without a sign of progress for as long.
    for (let at = 0; at < batch.length; at += WRITE_CHUNK) {
      const chunk = batch.length <= WRITE_CHUNK ? batch : batch.slice(at, at + WRITE_CHUNK);
      this.flushing = this.flushing.then(() =>
        this.store
          .record(chunk, ids)
          .then(() => {
            this.storeFailing = false;
          })
          .catch((err) => {
            this.storeFailing = true;
            // Given up by close() (and counted there): the failure is the disconnect that follows it.
            if (this.abandoned) return;
            // An outage must not fail predictions. A write that timed out may still be applied by a
            // Redis that resumes: counted all the same, since nothing confirms it.
            this.dropped += chunk.length;
            this.log.warn({ err: (err as Error).message, records: chunk.length }, 'membership write failed; records not confirmed written (dropped, or applied late by a store that resumes)');
          })
          .finally(() => {
            this.pendingRecords -= chunk.length;
            this.batchesSettled++;
          }),
      );
    }
    return this.flushing;
  }

  async expire(): Promise<number> {
    const cutoff = Date.now() - this.opts.ttlDays * 86_400_000;
    return this.store.expire(cutoff, this.segmentIds());
  }

  /**
   * The segments a user's record lists that still hold them: a record names the segments of its
   * last scoring, and a rule deleted since (or deleted and created again under its id, empty), or a
   * persona of a model no longer active, no longer does. A rule created or updated re-scores the
   * stored users (a job): until it reaches a user, an updated rule still lists them, and a new one does not.
   */
  currentSegmentsOf(user: { segments: readonly string[]; at: number; scoredAt?: number; version: string }): string[] {
    const current = new Set(this.definitions().map((d) => d.id));
    const created = new Map(this.ruleSegments.map((r) => [r.id, Date.parse(r.created)]));
    const activeVersion = this.models.active?.id;
    // A rule created after the segments were computed is one they cannot name (only an older rule
    // under its id); a re-score after its creation keeps the user's last-seen time but is newer.
    const computedAt = user.scoredAt ?? user.at;
    return user.segments.filter(
      (id) => current.has(id) && !((created.get(id) ?? -Infinity) > computedAt) && !(isPersonaSegment(id) && user.version !== activeVersion),
    );
  }

  async list(): Promise<SegmentSummary[]> {
    return Promise.all(this.definitions().map(async (d) => ({ ...d, size: await this.store.size(d.id), updated: iso(await this.store.updated(d.id)) })));
  }

  async get(id: string): Promise<SegmentSummary> {
    const d = this.definitions().find((x) => x.id === id);
    if (!d) throw notFound(`segment ${id}`);
    return { ...d, size: await this.store.size(id), updated: iso(await this.store.updated(id)) };
  }

  private definitions(): Omit<SegmentSummary, 'size' | 'updated'>[] {
    const b = this.bands;
    const bands = [
      { id: 'high-intent', kind: 'score-band' as const, name: 'High intent', bounds: { min: b.high, max: 1 } },
      { id: 'medium-intent', kind: 'score-band' as const, name: 'Medium intent', bounds: { min: b.medium, max: b.high } },
      { id: 'low-intent', kind: 'score-band' as const, name: 'Low intent', bounds: { min: 0, max: b.medium } },
    ];
    const rules = this.ruleSegments.map((r) => ({ id: r.id, kind: 'rule' as const, name: r.name, description: r.description, rule: r.rule }));
    const personas = (this.models.active?.personas?.personas ?? []).map((p) => ({
      id: personaSegmentId(p.id),
      kind: 'persona' as const,
      name: p.label,
      description: `learned persona ${p.id + 1} of ${this.models.active?.id} (${(p.share * 100).toFixed(1)}% of training sessions)`,
    }));
    return [...bands, ...rules, ...personas];
  }

  /** Rules may only name features the active model has. */
  validateRule(rule: Rule): void {
    if (!this.models.active) throw new AppError(503, 'unavailable', 'no active model to validate the rule against');
    const issues = this.unknownFeatureIssues(rule);
    if (issues.length) throw new ValidationError(issues);
  }

  /** The features a rule (as sent, valid or not) names that the active model lacks, each at its path; none without an active model. */
  unknownFeatureIssues(rule: unknown): FieldIssue[] {
    const spec = this.models.active?.spec;
    if (!spec) return [];
    const known = new Set(spec.features.map((f) => f.name));
    return featureReferences(rule)
      .filter((r) => !known.has(r.feature))
      .map((r) => ({ path: r.path, message: `unknown feature "${r.feature}" (the active model has no such feature)` }));
  }

  private isReserved(id: string): boolean {
    return (BAND_IDS as readonly string[]).includes(id) || isPersonaSegment(id);
  }

  // Existence and the limit are checked by the store, atomically with the write: the definitions
  // cached here may be up to 2 s old and other replicas write the same rules.

  async createRule(input: { id?: string; name: string; description?: string; rule: Rule }): Promise<RuleSegment> {
    this.validateRule(input.rule);
    const id = input.id ?? `rule-${randomBytes(4).toString('hex')}`;
    if (this.isReserved(id)) throw new AppError(409, 'conflict', `segment id ${id} is reserved`);
    const now = new Date().toISOString();
    const seg: RuleSegment = { id, name: input.name, description: input.description, rule: input.rule, created: now, updated: now };
    // Every scored user is checked against every rule on the request path: keep that bounded.
    const result = await this.store.createRule(seg, MAX_RULE_SEGMENTS);
    if (result === 'exists') throw new AppError(409, 'conflict', `segment ${id} already exists`);
    if (result === 'full') throw new AppError(409, 'conflict', `at most ${MAX_RULE_SEGMENTS} rule segments; delete one first`);
    await this.definitionsChanged();
    return seg;
  }

  async updateRule(id: string, input: { name: string; description?: string; rule: Rule }): Promise<RuleSegment> {
    // Validated inside the update so that a missing rule is a 404 before an invalid one is a 400.
    const seg = await this.store.updateRule(id, (existing) => {
      this.validateRule(input.rule);
      return { ...existing, name: input.name, description: input.description, rule: input.rule, updated: new Date().toISOString() };
    });
    if (!seg) throw notFound(`rule segment ${id}`);
    await this.definitionsChanged();
    return seg;
  }

  /**
   * Stops assigning the rule here first, then waits for the writes already queued (they were
   * computed with it), and only then removes it and its members: otherwise those writes refill it.
   */
  async deleteRule(id: string): Promise<void> {
    if (this.isReserved(id)) throw notFound(`rule segment ${id}`);
    this.deleting.add(id);
    this.ruleSegments = this.ruleSegments.filter((r) => r.id !== id);
    let existed: boolean;
    try {
      await this.flushedOrUnavailable();
      existed = await this.store.deleteRule(id);
    } finally {
      // Before the filter goes: a refresh that read the rule before the delete must not restore it.
      this.definitionsVersion++;
      this.deleting.delete(id);
    }
    await this.definitionsChanged();
    if (!existed) throw notFound(`rule segment ${id}`);
  }

  async setBands(b: Bands): Promise<void> {
    await this.store.setBands(b);
    await this.definitionsChanged();
  }

  /** After an activation: persona segments start empty and fill as users are (re-)scored. */
  async resetPersonas(): Promise<number> {
    // Bounded: records of the previous model written later lose their persona anyway (see flush).
    await this.flushedWithin();
    return this.store.dropPersonaSegments();
  }

  /**
   * Erases the user from the store and the score cache. Writes queued here go first; writes queued
   * on other replicas (same store) are refused by the store's tombstone. Their score-cache writes
   * leave within the cache's write window (10 ms) and may land after the delete here, so the
   * cache keys (the one the record named, and those of records the tombstone refused) are deleted
   * again ERASE_CACHE_RECHECK_MS later, off the request path.
   */
  async eraseUser(userId: string) {
    await this.flushedOrUnavailable(); // a write queued for this user must not land after the erasure
    const report = await this.store.erase(userId);
    const cacheEntries = report.cacheKeys.length ? await this.cache.delete(report.cacheKeys) : 0;
    if (this.store.kind === 'redis') this.eraseCacheLater(userId, report.cacheKeys);
    const { cacheKeys: _drop, ...rest } = report;
    return { ...rest, cacheEntries };
  }

  private readonly lateErasures = new Set<NodeJS.Timeout>();

  private eraseCacheLater(userId: string, known: string[]): void {
    const timer = setTimeout(() => {
      this.lateErasures.delete(timer);
      const store = this.store as MembershipStore & { erasedCacheKeys?(userId: string): Promise<string[]> };
      void (store.erasedCacheKeys?.(userId) ?? Promise.resolve([]))
        .catch(() => [] as string[])
        .then((late) => {
          const keys = [...new Set([...known, ...late])];
          return keys.length ? this.cache.delete(keys) : 0;
        })
        .catch((err) => this.log.warn({ err: (err as Error).message }, 'erasure: second score-cache delete failed'));
    }, ERASE_CACHE_RECHECK_MS);
    timer.unref();
    this.lateErasures.add(timer);
  }

  /**
   * flush(), waiting at most flushWaitMs: whether everything queued so far was written (or given
   * up). Queued batches against a hung store each wait out their command timeout one after another,
   * so an unbounded wait could hold a request for minutes.
   */
  private async flushedWithin(ms = this.opts.flushWaitMs ?? 5000): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => (timer = setTimeout(resolve, ms, false)));
    const done = await Promise.race([this.flush().then(() => true as const), timedOut]);
    clearTimeout(timer);
    return done;
  }

  private async flushedOrUnavailable(): Promise<void> {
    if (!(await this.flushedWithin())) throw unavailable('membership writes are not getting through (the store is slow or down); try again later');
  }

  /**
   * Writes what is queued, waiting at most CLOSE_WAIT_MS (or flushWaitMs, if shorter): queued
   * batches against a hung store would each wait out the command timeout, one after another, and
   * hold shutdown past SHUTDOWN_TIMEOUT_MS. What is still waiting then is given up and counted in
   * `dropped`; memberships are refreshed by each user's next score.
   */
  async close(): Promise<void> {
    this.timers.forEach(clearInterval);
    this.lateErasures.forEach(clearTimeout);
    this.lateErasures.clear();
    if (await this.flushedWithin(Math.min(this.opts.flushWaitMs ?? 5000, CLOSE_WAIT_MS))) return;
    const records = this.pendingRecords;
    this.abandoned = true;
    this.dropped += records;
    this.log.warn({ records, dropped: this.dropped }, 'shutdown: membership writes still waiting on the store were given up');
  }
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
