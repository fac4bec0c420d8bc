import { LRUCache } from 'lru-cache';
import type { Redis } from 'ioredis';
import { RedisScores } from './redis-scores.js';
import { SightingFilter } from './admission.js';

export interface ScoreCacheOptions {
  maxEntries: number;
  ttlSeconds: number;
  redisTimeoutMs: number;
  /** `repeat`: rows are cached from their second sighting (see admission.ts); `all`: every row. */
  admission: 'repeat' | 'all';
}

/**
 * Two-level score cache keyed by a hash of the model version's cache scope (id + manifest digest,
 * see cache-scope.ts) and the preprocessed input (see cacheKey in scorer.ts).
 * L1 is in-process (bounded LRU with TTL); L2 (Redis, see RedisScores) is optional, and what it
 * finds is copied into L1.
 */
export class ScoreCache {
  private readonly l1: LRUCache<string, number>;
  /** Present when Redis is configured. */
  readonly l2?: RedisScores;
  /** Present with admission `repeat`. */
  private readonly sightings?: SightingFilter;

  constructor(opts: ScoreCacheOptions, redis?: Redis) {
    this.l1 = new LRUCache({ max: opts.maxEntries, ttl: opts.ttlSeconds * 1000 });
    // Twice the L1 size, so a row is remembered about as long as the L1 would keep it.
    if (opts.admission === 'repeat') this.sightings = new SightingFilter(2 * opts.maxEntries);
    if (redis) this.l2 = new RedisScores(redis, { ttlSeconds: opts.ttlSeconds, timeoutMs: opts.redisTimeoutMs }, (k, p) => this.l1.set(k, p));
  }

  /** Whether an L2 read can be attempted now (Redis configured, connected, and answering in time). */
  get l2Enabled(): boolean {
    return this.l2 !== undefined && this.l2.available;
  }

  /**
   * Whether the score cache is used for this encoded row (looked up, then stored): always with
   * admission `all`; with `repeat`, when the row was seen recently (this sighting is recorded).
   */
  admits(row: Float32Array): boolean {
    return this.sightings ? this.sightings.seenBefore(row) : true;
  }

  getL1(key: string): number | undefined {
    return this.l1.get(key);
  }

  /** Resolves undefined on a miss, on timeout, or when Redis is unavailable; never rejects. */
  getL2(key: string): Promise<number | undefined> {
    return this.l2 ? this.l2.read(key) : Promise.resolve(undefined);
  }

  set(key: string, probability: number): void {
    this.l1.set(key, probability);
    this.l2?.write(key, probability);
  }

  /** Sends buffered L2 writes and waits (up to `ms`) for Redis to take them; for shutdown. */
  async flush(ms?: number): Promise<void> {
    await this.l2?.flush(ms);
  }

  /** Deletes the L1 entries and L2 keys given (used by user erasure). */
  async delete(keys: string[]): Promise<number> {
    let removed = 0;
    for (const k of keys) if (this.l1.delete(k)) removed++;
    if (this.l2) removed += await this.l2.delete(keys);
    return removed;
  }

  clearL1(): void {
    this.l1.clear();
    this.sightings?.clear();
  }

  get size(): number {
    return this.l1.size;
  }
}
