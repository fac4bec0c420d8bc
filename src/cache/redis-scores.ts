import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';

export interface RedisScoresOptions {
  ttlSeconds: number;
  /** Bound on one read exchange; slower counts as a miss. */
  timeoutMs: number;
}

const PREFIX = 'pi:score:';
/** Writes wait up to this long, or until WRITE_BATCH of them pile up, and leave as one command. */
const WRITE_FLUSH_MS = 10;
const WRITE_BATCH = 512;
/** Write batches on the wire at once; further writes wait in the buffer until one is answered. */
const MAX_WRITES_IN_FLIGHT = 4;
/** Writes buffered at most; more are dropped (L1 keeps them), so a hung Redis cannot grow this process's memory. */
export const MAX_BUFFERED_WRITES = 16 * WRITE_BATCH;
/**
 * After this many reads in a row time out, Redis counts as slow: reads skip it for SUSPEND_MS,
 * then one exchange probes it. Requests stop paying the timeout, and a hung but connected server
 * stops collecting unanswered commands.
 */
const TIMEOUTS_TO_SUSPEND = 3;
const SUSPEND_MS = 1000;
const TIMED_OUT = Symbol('timed out');
/** Read by probeIfSlow: no score key looks like this (keys are base64url digests). */
const PROBE_KEY = '~probe';

/** SET each KEYS[i] to ARGV[i + 1] with TTL ARGV[1]. */
const SET_MANY = "local ttl = ARGV[1] for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1], 'EX', ttl) end return #KEYS";
const SET_MANY_SHA = createHash('sha1').update(SET_MANY).digest('hex');

/**
 * The score cache's L2: scores in Redis under `pi:score:<key>` with a TTL. Reads from concurrent
 * requests share one MGET; writes are batched off the request path; a Redis that is down or slow
 * is skipped. Never rejects: anything but an answer in time is a miss.
 * The connection should be this store's own, without auto-pipelining: every exchange here is
 * already one coalesced command, and a shared connection would queue reads behind bulk commands.
 */
export class RedisScores {
  private pendingWrites: [string, number][] = [];
  private pendingReads: { key: string; resolve: (v: number | undefined) => void }[] = [];
  private readScheduled = false;
  /** A read is on the wire; reads arriving meanwhile wait for it and then leave together. */
  private readInFlight = false;
  private writeTimer: NodeJS.Timeout | undefined;
  private lastWrite: Promise<unknown> = Promise.resolve();
  private writesInFlight = 0;
  /** Called (once each) when a write batch on the wire is answered or fails: flush() waits on these. */
  private batchAnswered: (() => void)[] = [];
  private consecutiveTimeouts = 0;
  /** Reads skip Redis until this time (ms since epoch; 0 when not suspended). */
  private suspendedUntil = 0;
  hits = 0;
  errors = 0;
  timeouts = 0;
  /** Times reads were suspended after TIMEOUTS_TO_SUSPEND timeouts in a row. */
  suspensions = 0;
  /** Scores not written (Redis down or slow, the write buffer full behind unanswered batches, or a failed write batch). */
  writesDropped = 0;
  /** Coalesced reads issued (one MGET each), for judging how many requests share a round trip. */
  reads = 0;

  constructor(
    private readonly redis: Redis,
    private readonly opts: RedisScoresOptions,
    /** Called with every score a read found (the score cache copies it into L1). */
    private readonly onHit: (key: string, probability: number) => void = () => {},
  ) {}

  /** Whether a read can be attempted now (connected, and not suspended as slow). */
  get available(): boolean {
    return this.redis.status === 'ready' && (this.suspendedUntil === 0 || Date.now() >= this.suspendedUntil);
  }

  /** Connected, but the last reads all timed out (until one is answered in time again). */
  get slow(): boolean {
    return this.consecutiveTimeouts >= TIMEOUTS_TO_SUSPEND;
  }

  /**
   * While slow, sends one read of a key that never exists once the suspension is over, so
   * `slow` clears when Redis answers in time even if no request reads L2 (with admission
   * `repeat`, traffic of first sightings never does). Called by /readyz; returns at once.
   */
  probeIfSlow(): void {
    if (this.slow && this.available && !this.readInFlight && !this.readScheduled) void this.read(PROBE_KEY);
  }

  /** Cumulative counters (for /metrics). */
  stats(): Record<'reads' | 'hits' | 'errors' | 'timeouts' | 'suspensions' | 'writes_dropped', number> {
    return { reads: this.reads, hits: this.hits, errors: this.errors, timeouts: this.timeouts, suspensions: this.suspensions, writes_dropped: this.writesDropped };
  }

  /**
   * Resolves undefined on a miss, on timeout, or when Redis is unavailable. Reads from concurrent
   * requests are coalesced into one MGET (like the model's micro-batches), so Redis costs one
   * round trip per exchange, not one per request.
   */
  read(key: string): Promise<number | undefined> {
    if (!this.available) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.pendingReads.push({ key, resolve });
      this.scheduleRead();
    });
  }

  write(key: string, probability: number): void {
    if (this.pendingWrites.length >= MAX_BUFFERED_WRITES) {
      this.writesDropped++;
      return;
    }
    const n = this.pendingWrites.push([key, probability]);
    if (n === WRITE_BATCH) {
      clearTimeout(this.writeTimer);
      this.writeTimer = undefined;
      setImmediate(() => this.flushWrites());
    } else if (n === 1) {
      this.writeTimer = setTimeout(() => {
        this.writeTimer = undefined;
        this.flushWrites();
      }, WRITE_FLUSH_MS).unref();
    }
  }

  /** Sends the buffered writes now and waits (up to `ms`) until Redis has taken them all; for shutdown. */
  async flush(ms = 1000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      // Buffered writes (including any made while waiting) leave as slots on the wire free up.
      clearTimeout(this.writeTimer);
      this.writeTimer = undefined;
      this.flushWrites();
      const left = deadline - Date.now();
      if (this.writesInFlight === 0 || left <= 0) return;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.batchAnswered.push(resolve);
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  /**
   * Deletes the keys given; how many existed. A score computed just before (user erasure) may still
   * be waiting to be written, or on the wire: it is dropped, or waited for, so it cannot land after
   * the DEL.
   */
  async delete(keys: string[]): Promise<number> {
    if (keys.length === 0) return 0;
    const doomed = new Set(keys);
    this.pendingWrites = this.pendingWrites.filter(([k]) => !doomed.has(k));
    await this.lastWrite; // batches sent earlier are applied in order, before the DEL below
    if (this.redis.status !== 'ready') return 0;
    return this.redis.del(...keys.map((k) => PREFIX + k));
  }

  /**
   * One read (one MGET) at a time: whatever arrives while it is on the wire leaves in the next
   * one as soon as it returns (or times out). An idle service sends at once; a busy one shares each
   * round trip among more requests instead of paying for more round trips, which cost far more
   * client CPU than the keys in them.
   */
  private scheduleRead(): void {
    if (this.readScheduled || this.readInFlight) return;
    this.readScheduled = true;
    setImmediate(() => {
      this.readScheduled = false;
      void this.flushReads();
    });
  }

  private async flushReads(): Promise<void> {
    const reads = this.pendingReads;
    this.pendingReads = [];
    if (reads.length === 0) return;
    this.readInFlight = true;
    let values: (number | undefined)[];
    try {
      values = await this.mget(reads.map((r) => r.key));
    } finally {
      this.readInFlight = false;
    }
    reads.forEach((r, i) => {
      if (values[i] !== undefined) this.hits++;
      r.resolve(values[i]);
    });
    if (this.pendingReads.length) this.scheduleRead();
  }

  private async mget(keys: string[]): Promise<(number | undefined)[]> {
    if (this.redis.status !== 'ready') return keys.map(() => undefined);
    this.reads++;
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
      // The timer fires in the event loop's timers phase, before pending socket reads are handled.
      // After the loop was busy for longer than the timeout, an answer that arrived in time would
      // lose to it: decide one turn later (setImmediate runs after the poll phase), so a read
      // times out only when Redis really did not answer, not when this process was busy.
      timer = setTimeout(() => {
        setImmediate(() => {
          timedOut = true;
          resolve(TIMED_OUT);
        });
      }, this.opts.timeoutMs);
    });
    const read = this.redis.mget(keys.map((k) => PREFIX + k)).catch(() => {
      // A read that already counted as a timeout is not an error too when its command fails later
      // (REDIS_COMMAND_TIMEOUT_MS): one read, one event.
      if (!timedOut) this.errors++;
      return null;
    });
    const values = await Promise.race([read, timeout]);
    clearTimeout(timer);
    if (values === TIMED_OUT) {
      this.timeouts++;
      if (++this.consecutiveTimeouts >= TIMEOUTS_TO_SUSPEND) {
        this.suspendedUntil = Date.now() + SUSPEND_MS;
        this.suspensions++;
      }
      return keys.map(() => undefined);
    }
    if (values) {
      this.consecutiveTimeouts = 0;
      this.suspendedUntil = 0;
    }
    return keys.map((k, i) => {
      const v = values?.[i];
      if (v == null) return undefined;
      const n = Number(v);
      this.onHit(k, n);
      return n;
    });
  }

  /**
   * Sends the buffered writes, WRITE_BATCH per command and at most MAX_WRITES_IN_FLIGHT commands on
   * the wire; the rest wait for one to be answered. One request turn can buffer thousands (a
   * micro-batch of BATCH_MAX_SIZE answers), and one script with them all would hold Redis (and every
   * read behind it) for that long.
   */
  private flushWrites(): void {
    // Dropping writes while Redis is down or slow is fine: it is a cache, and L1 still holds them.
    if (!this.available) {
      this.writesDropped += this.pendingWrites.length;
      this.pendingWrites = [];
      return;
    }
    while (this.pendingWrites.length > 0 && this.writesInFlight < MAX_WRITES_IN_FLIGHT) {
      const writes = this.pendingWrites.length <= WRITE_BATCH ? this.pendingWrites : this.pendingWrites.slice(0, WRITE_BATCH);
      this.pendingWrites = writes === this.pendingWrites ? [] : this.pendingWrites.slice(WRITE_BATCH);
      this.sendWrites(writes);
    }
  }

  private sendWrites(writes: [string, number][]): void {
    // One scripted command per batch instead of one SET per score: far less client CPU per request.
    const args: (string | number)[] = [writes.length];
    for (const [k] of writes) args.push(PREFIX + k);
    args.push(this.opts.ttlSeconds);
    for (const [, p] of writes) args.push(String(p));
    const redis = this.redis;
    // A failed batch is one error, and every score in it is one not written.
    const failed = () => {
      this.errors++;
      this.writesDropped += writes.length;
    };
    this.writesInFlight++;
    this.lastWrite = redis
      .evalsha(SET_MANY_SHA, ...(args as [number, ...string[]]))
      .catch((err: Error) => {
        if (/NOSCRIPT/.test(err.message)) return redis.eval(SET_MANY, ...(args as [number, ...string[]])).catch(failed);
        failed();
      })
      .finally(() => {
        this.writesInFlight--;
        // Writes that waited for a free slot leave now, unless the usual timer or batch trigger will send them.
        if (this.pendingWrites.length > 0 && this.writeTimer === undefined) this.flushWrites();
        for (const answered of this.batchAnswered.splice(0)) answered();
      });
  }
}
