import type { FeatureValues } from '../preprocessing/feature-spec.js';
import type { Bands, RuleSegment } from './definitions.js';

/** What one scored user contributes to segments (written off the request path). */
export interface MembershipRecord {
  userId: string;
  probability: number;
  version: string;
  persona: number | null;
  segments: string[];
  /** When the user was last scored live (ms): re-scores keep it, and the user's expiry runs from it. */
  at: number;
  /** When this probability and these segments were computed (ms); `at` when absent (a live scoring). */
  scoredAt?: number;
  /** Raw feature values, kept for profiles and re-scoring unless FEATURE_RETENTION=off. */
  features?: FeatureValues;
  /** Score-cache key of this user's last input, so erasure can remove it. */
  cacheKey?: string;
  /**
   * Set on re-scores of a stored user: written only if the user is still stored and was last seen
   * at exactly this time (ms), keeping that time and their cache key. A user erased meanwhile
   * stays erased, one scored live meanwhile keeps the newer record, and re-scoring does not
   * restart anyone's expiry clock.
   */
  ifSeenAt?: number;
}

export type UserRecord = Omit<MembershipRecord, 'cacheKey' | 'ifSeenAt'>;

export interface Member {
  userId: string;
  score: number;
}

export interface PageQuery {
  limit: number;
  cursor?: string;
  minScore?: number;
}

export interface ErasureReport {
  segments: string[];
  userRecord: boolean;
  features: boolean;
  cacheEntries: number;
}

/**
 * Segment memberships, user records and segment definitions. Two implementations with the same
 * behaviour: Redis (shared by replicas, durable as Redis is) and in-process memory (single
 * process, lost on restart).
 */
export interface MembershipStore {
  readonly kind: 'redis' | 'memory';
  record(batch: MembershipRecord[], segmentIds: string[]): Promise<void>;
  page(segmentId: string, q: PageQuery): Promise<{ members: Member[]; nextCursor: string | null }>;
  size(segmentId: string): Promise<number>;
  scoredUsers(): Promise<number>;
  updated(segmentId: string): Promise<number | null>;
  user(userId: string): Promise<UserRecord | null>;
  /** Removes the user everywhere; returns what was removed and the cache keys to drop. */
  erase(userId: string): Promise<ErasureReport & { cacheKeys: string[] }>;
  /** Up to n random users of a segment (or of all scored users when segmentId is null). */
  sample(segmentId: string | null, n: number): Promise<UserRecord[]>;
  /** Drops users not seen since cutoff (ms epoch); returns how many. */
  expire(cutoffMs: number, segmentIds: string[]): Promise<number>;
  /**
   * Empties every persona segment (persona-k of one model is another group than persona-k of the
   * next): after an activation, before re-scoring. Returns how many segments were emptied.
   */
  dropPersonaSegments(): Promise<number>;
  /** Removes every kept feature set (FEATURE_RETENTION turned off); returns how many users had one. */
  dropFeatures(): Promise<number>;
  /** All users with kept features, in chunks (re-scoring after an activation). */
  users(chunk: number): AsyncGenerator<UserRecord[]>;
  getBands(): Promise<Bands | null>;
  setBands(b: Bands): Promise<void>;
  rules(): Promise<RuleSegment[]>;
  /** Stores a rule unconditionally (seeding, benchmarks); the API goes through createRule. */
  putRule(r: RuleSegment): Promise<void>;
  /**
   * Adds a rule only if no rule has its id and fewer than maxRules exist, checked and written
   * atomically (so the limit and uniqueness hold across replicas). The segment starts empty:
   * members written under that id since a delete (a replica not yet refreshed) are dropped.
   */
  createRule(r: RuleSegment, maxRules: number): Promise<'created' | 'exists' | 'full'>;
  /**
   * Replaces a rule with change(current) only if it still exists, atomically with respect to other
   * writers; null when there is no such rule. change may run more than once and may throw.
   */
  updateRule(id: string, change: (current: RuleSegment) => RuleSegment): Promise<RuleSegment | null>;
  /** Removes a rule and its members; false (and nothing touched) when there is no such rule. */
  deleteRule(id: string): Promise<boolean>;
  close(): Promise<void>;
  /** Optional fast export: pages rendered as CSV/NDJSON text by the store itself. */
  exportChunks?(segmentId: string, format: 'csv' | 'ndjson', minScore?: number): AsyncGenerator<Buffer>;
}

export const encodeCursor = (m: Member) => Buffer.from(JSON.stringify([m.score, m.userId])).toString('base64url');

export function decodeCursor(cursor: string): Member | null {
  try {
    const [score, userId] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as [unknown, unknown];
    if (typeof score !== 'number' || typeof userId !== 'string') return null;
    return { score, userId };
  } catch {
    return null;
  }
}

/** Ordering of member lists: score descending, then userId descending (as Redis REV orders ties). */
export function comesAfter(m: Member, cursor: Member): boolean {
  return m.score < cursor.score || (m.score === cursor.score && compareIds(m.userId, cursor.userId) < 0);
}

/**
 * userIds in Redis's order: by UTF-8 bytes. JavaScript's `<` compares UTF-16 units, which orders
 * some non-ASCII ids differently, and a cursor between tied scores would then skip or repeat them.
 */
export function compareIds(a: string, b: string): number {
  if (a === b) return 0;
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}
