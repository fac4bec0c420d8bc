import { isPersonaSegment, type Bands, type RuleSegment } from './definitions.js';
import {
  comesAfter,
  compareIds,
  decodeCursor,
  encodeCursor,
  type ErasureReport,
  type Member,
  type MembershipRecord,
  type MembershipStore,
  type PageQuery,
  type UserRecord,
} from './membership-store.js';

/**
 * Embedded store for running without Redis: same behaviour, single process, not durable.
 * Sorted views are rebuilt lazily after writes.
 */
export class MemoryMembershipStore implements MembershipStore {
  readonly kind = 'memory' as const;
  private readonly segments = new Map<string, Map<string, number>>();
  private readonly sorted = new Map<string, Member[]>();
  private readonly usersById = new Map<string, MembershipRecord>();
  private readonly updatedAt = new Map<string, number>();
  private bands: Bands | null = null;
  private readonly ruleDefs = new Map<string, RuleSegment>();

  async record(batch: MembershipRecord[], segmentIds: string[]): Promise<void> {
    const now = Date.now();
    const known = new Set(segmentIds);
    for (const r of batch) {
      const stored = this.usersById.get(r.userId);
      if (r.ifSeenAt !== undefined) {
        if (stored?.at !== r.ifSeenAt) continue;
        this.usersById.set(r.userId, { ...r, at: stored.at, cacheKey: stored.cacheKey, ifSeenAt: undefined });
      } else this.usersById.set(r.userId, r);
      // As the Redis script: leave every segment the previous record lists and the user is no
      // longer in (including ones not in segmentIds, e.g. a deleted rule), join the current ones.
      const member = new Set(r.segments.filter((id) => known.has(id)));
      for (const id of stored?.segments ?? []) {
        if (!member.has(id) && this.segments.get(id)?.delete(r.userId)) this.sorted.delete(id);
      }
      for (const id of member) {
        this.segmentSet(id).set(r.userId, r.probability);
        this.updatedAt.set(id, now);
        this.sorted.delete(id);
      }
    }
  }

  async page(segmentId: string, q: PageQuery) {
    const all = this.sortedMembers(segmentId);
    const cursor = q.cursor ? decodeCursor(q.cursor) : null;
    let start = 0;
    if (cursor) {
      // Binary search for the first member after the cursor.
      let lo = 0;
      let hi = all.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (comesAfter(all[mid], cursor)) hi = mid;
        else lo = mid + 1;
      }
      start = lo;
    }
    const members: Member[] = [];
    for (let i = start; i < all.length && members.length <= q.limit; i++) {
      if (q.minScore !== undefined && all[i].score < q.minScore) break;
      members.push(all[i]);
    }
    const more = members.length > q.limit;
    const page = members.slice(0, q.limit);
    return { members: page, nextCursor: more ? encodeCursor(page[page.length - 1]) : null };
  }

  async size(segmentId: string) {
    return this.segments.get(segmentId)?.size ?? 0;
  }

  async scoredUsers() {
    return this.usersById.size;
  }

  async updated(segmentId: string) {
    return this.updatedAt.get(segmentId) ?? null;
  }

  async user(userId: string): Promise<UserRecord | null> {
    const r = this.usersById.get(userId);
    if (!r) return null;
    const { cacheKey: _omit, ...rest } = r;
    return rest;
  }

  async erase(userId: string): Promise<ErasureReport & { cacheKeys: string[] }> {
    const r = this.usersById.get(userId);
    const segments: string[] = [];
    for (const [id, set] of this.segments) {
      if (set.delete(userId)) {
        segments.push(id);
        this.sorted.delete(id);
      }
    }
    this.usersById.delete(userId);
    return { segments, userRecord: Boolean(r), features: Boolean(r?.features), cacheEntries: 0, cacheKeys: r?.cacheKey ? [r.cacheKey] : [] };
  }

  async sample(segmentId: string | null, n: number): Promise<UserRecord[]> {
    const ids = segmentId ? [...(this.segments.get(segmentId)?.keys() ?? [])] : [...this.usersById.keys()];
    for (let i = ids.length - 1; i > 0 && ids.length - i <= n; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [ids[i], ids[j]] = [ids[j], ids[i]];
    }
    const picked = ids.length <= n ? ids : ids.slice(ids.length - n);
    return (await Promise.all(picked.map((id) => this.user(id)))).filter((u): u is UserRecord => u !== null);
  }

  async expire(cutoffMs: number): Promise<number> {
    let removed = 0;
    for (const [id, r] of this.usersById) {
      if (r.at < cutoffMs) {
        await this.erase(id);
        removed++;
      }
    }
    return removed;
  }

  async dropFeatures(): Promise<number> {
    let n = 0;
    for (const [id, r] of this.usersById) {
      if (!r.features) continue;
      this.usersById.set(id, { ...r, features: undefined });
      n++;
    }
    return n;
  }

  async dropPersonaSegments(): Promise<number> {
    let n = 0;
    for (const id of [...this.segments.keys()]) {
      if (!isPersonaSegment(id)) continue;
      this.segments.delete(id);
      this.sorted.delete(id);
      this.updatedAt.delete(id);
      n++;
    }
    return n;
  }

  async *users(chunk: number): AsyncGenerator<UserRecord[]> {
    const ids = [...this.usersById.keys()];
    for (let i = 0; i < ids.length; i += chunk) {
      const users = (await Promise.all(ids.slice(i, i + chunk).map((id) => this.user(id)))).filter((u): u is UserRecord => u !== null);
      if (users.length) yield users;
    }
  }

  async getBands() {
    return this.bands;
  }

  async setBands(b: Bands) {
    this.bands = b;
  }

  async rules() {
    return [...this.ruleDefs.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  async putRule(r: RuleSegment) {
    this.ruleDefs.set(r.id, r);
  }

  async createRule(r: RuleSegment, maxRules: number) {
    if (this.ruleDefs.has(r.id)) return 'exists' as const;
    if (this.ruleDefs.size >= maxRules) return 'full' as const;
    this.ruleDefs.set(r.id, r);
    this.clearSegment(r.id);
    return 'created' as const;
  }

  async updateRule(id: string, change: (current: RuleSegment) => RuleSegment) {
    const current = this.ruleDefs.get(id);
    if (!current) return null;
    const next = change(current);
    this.ruleDefs.set(id, next);
    return next;
  }

  async deleteRule(id: string) {
    if (!this.ruleDefs.delete(id)) return false;
    this.clearSegment(id);
    return true;
  }

  async close() {}

  private clearSegment(id: string): void {
    this.segments.delete(id);
    this.sorted.delete(id);
    this.updatedAt.delete(id);
  }

  private segmentSet(id: string): Map<string, number> {
    let s = this.segments.get(id);
    if (!s) this.segments.set(id, (s = new Map()));
    return s;
  }

  private sortedMembers(id: string): Member[] {
    let s = this.sorted.get(id);
    if (!s) {
      s = [...(this.segments.get(id) ?? new Map<string, number>())].map(([userId, score]) => ({ userId, score }));
      s.sort((a, b) => b.score - a.score || compareIds(b.userId, a.userId));
      this.sorted.set(id, s);
    }
    return s;
  }
}
