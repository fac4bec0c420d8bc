import { createHash } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';

export interface ScoreCacheOptions {
  maxEntries: number;
  ttlSeconds: number;
  redisTimeoutMs: number;
}

const PREFIX = 'pi:score:';
/** L2 writes wait up to this long, or until WRITE_BATCH of them pile up, and leave as one command. */
const WRITE_FLUSH_MS = 10;
const WRITE_BATCH = 512;
/** Write batches on the wire at once; more are dropped (L1 keeps them), so a hung Redis cannot grow the client's queue. */
const MAX_WRITES_IN_FLIGHT = 4;
/**
 * After this many L2 reads in a row time out, Redis counts as slow: reads skip it for SUSPEND_MS,
 * then one exchange probes it. Requests stop paying the timeout, and a hung but connected server
 * stops collecting unanswered commands.
 */
const TIMEOUTS_TO_SUSPEND = 3;
const SUSPEND_MS = 1000;
const TIMED_OUT = Symbol('timed out');

/** SET each KEYS[i] to ARGV[i + 1] with TTL ARGV[1]. */
const SET_MANY = "local ttl = ARGV[1] for i, k in ipairs(KEYS) do redis.call('SET', k, ARGV[i + 1], 'EX', ttl) end return #KEYS";
const SET_MANY_SHA = createHash('sha1').update(SET_MANY).digest('hex');

/**
 * Two-level score cache keyed by model version + hash of the preprocessed input.
 * L1 is in-process; L2 (Redis) is optional. L2 reads are bounded by a timeout and skipped while
 * Redis is down or slow; L2 writes are buffered and sent in batches off the request path.
 * The Redis connection should be the cache's own, without auto-pipelining: every exchange here is
 * already one coalesced command, and a shared connection would queue reads behind bulk commands.
 */
export class ScoreCache {
  private readonly l1: LRUCache<string, number>;
  private pendingWrites: [string, number][] = [];
  private pendingReads: { key: string; resolve: (v: number | undefined) => void }[] = [];
  private readScheduled = false;
  private writeTimer: NodeJS.Timeout | undefined;
  private lastWrite: Promise<unknown> = Promise.resolve();
  /** An L2 read is on the wire; reads arriving meanwhile wait for it and then leave together. */
  private readInFlight = false;
  private writesInFlight = 0;
  private consecutiveTimeouts = 0;
  /** Reads skip L2 until this time (ms since epoch; 0 when not suspended). */
  private suspendedUntil = 0;
  l2Hits = 0;
  l2Errors = 0;
  l2Timeouts = 0;
  /** Times L2 reads were suspended after TIMEOUTS_TO_SUSPEND timeouts in a row. */
  l2Suspensions = 0;
  /** Scores not written to L2 (Redis down, slow, or too many write batches already on the wire). */
  l2WritesDropped = 0;
  /** Coalesced L2 reads issued (one MGET each), for judging how many requests share a round trip. */
  l2Reads = 0;

  constructor(
    private readonly opts: ScoreCacheOptions,
    private readonly redis?: Redis,
  ) {
    this.l1 = new LRUCache({ max: opts.maxEntries, ttl: opts.ttlSeconds * 1000 });
  }

  /** Whether an L2 read can be attempted now (Redis configured, connected, and not suspended as slow). */
  get l2Enabled(): boolean {
    return this.redis !== undefined && this.redis.status === 'ready' && (this.suspendedUntil === 0 || Date.now() >= this.suspendedUntil);
  }

  /** Redis is connected but its last reads all timed out (until one is answered in time again). */
  get l2Slow(): boolean {
    return this.consecutiveTimeouts >= TIMEOUTS_TO_SUSPEND;
  }

  /** Cumulative L2 counters (for /metrics). */
  l2Stats(): Record<'reads' | 'hits' | 'errors' | 'timeouts' | 'suspensions' | 'writes_dropped', number> {
    return { reads: this.l2Reads, hits: this.l2Hits, errors: this.l2Errors, timeouts: this.l2Timeouts, suspensions: this.l2Suspensions, writes_dropped: this.l2WritesDropped };
  }

  getL1(key: string): number | undefined {
    return this.l1.get(key);
  }

  /**
   * Resolves undefined on a miss, on timeout, or when Redis is unavailable; never rejects.
   * Reads from concurrent requests are coalesced into one MGET per event-loop turn (like the
   * model's micro-batches), so Redis costs one round trip per turn, not one per request.
   */
  getL2(key: string): Promise<number | undefined> {
    if (!this.l2Enabled) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      this.pendingReads.push({ key, resolve });
      this.scheduleRead();
    });
  }

  /**
   * One L2 read (one MGET) at a time: whatever arrives while it is on the wire leaves in the next
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
      values = await this.getManyL2(
        reads.map((r) => r.key),
        this.opts.redisTimeoutMs,
      );
    } finally {
      this.readInFlight = false;
    }
    reads.forEach((r, i) => {
      if (values[i] !== undefined) this.l2Hits++;
      r.resolve(values[i]);
    });
    if (this.pendingReads.length) this.scheduleRead();
  }

  private async getManyL2(keys: string[], timeoutMs: number): Promise<(number | undefined)[]> {
    const redis = this.redis;
    if (!redis || redis.status !== 'ready' || keys.length === 0) return keys.map(() => undefined);
    this.l2Reads++;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
      timer = setTimeout(resolve, timeoutMs, TIMED_OUT);
    });
    const read = redis.mget(keys.map((k) => PREFIX + k)).catch(() => {
      this.l2Errors++;
      return null;
    });
    const values = await Promise.race([read, timeout]);
    clearTimeout(timer);
    if (values === TIMED_OUT) {
      this.l2Timeouts++;
      if (++this.consecutiveTimeouts >= TIMEOUTS_TO_SUSPEND) {
        this.suspendedUntil = Date.now() + SUSPEND_MS;
        this.l2Suspensions++;
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
      this.l1.set(k, n);
      return n;
    });
  }

  set(key: string, probability: number): void {
    this.l1.set(key, probability);
    if (!this.redis) return;
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

  /** Sends the buffered L2 writes now and waits (up to `ms`) for Redis to take them; for shutdown. */
  async flush(ms = 1000): Promise<void> {
    clearTimeout(this.writeTimer);
    this.writeTimer = undefined;
    this.flushWrites();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.lastWrite, new Promise((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }

  /** Deletes the L1 entries and L2 keys given (used by user erasure). */
  async delete(keys: string[]): Promise<number> {
    let removed = 0;
    for (const k of keys) if (this.l1.delete(k)) removed++;
    if (this.redis && this.redis.status === 'ready' && keys.length) removed += await this.redis.del(...keys.map((k) => PREFIX + k));
    return removed;
  }

  clearL1(): void {
    this.l1.clear();
  }

  get size(): number {
    return this.l1.size;
  }

  private flushWrites(): void {
    const writes = this.pendingWrites;
    this.pendingWrites = [];
    const redis = this.redis;
    if (!redis || writes.length === 0) return;
    // Dropping writes while Redis is down or slow is fine: it is a cache, and L1 still holds them.
    if (!this.l2Enabled || this.writesInFlight >= MAX_WRITES_IN_FLIGHT) {
      this.l2WritesDropped += writes.length;
      return;
    }
    // One scripted command per batch instead of one SET per score: far less client CPU per request.
    const args: (string | number)[] = [writes.length];
    for (const [k] of writes) args.push(PREFIX + k);
    args.push(this.opts.ttlSeconds);
    for (const [, p] of writes) args.push(String(p));
    this.writesInFlight++;
    this.lastWrite = redis
      .evalsha(SET_MANY_SHA, ...(args as [number, ...string[]]))
      .catch((err: Error) => {
        if (/NOSCRIPT/.test(err.message)) return redis.eval(SET_MANY, ...(args as [number, ...string[]])).catch(() => this.l2Errors++);
        this.l2Errors++;
      })
      .finally(() => this.writesInFlight--);
  }
}
