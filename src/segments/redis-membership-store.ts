import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { AppError } from '../lib/errors.js';
import { isPersonaSegment, type Bands, type RuleSegment } from './definitions.js';
import {
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
 * Where a keyset page starts, in a sorted set read in REV order (score descending, ties in
 * descending byte order of member): the index just after the cursor (score text, member), found in
 * O(log N) rather than by skipping the cursor's ties one by one, which made a segment of many equal
 * scores (identical bounce sessions) quadratic to page through and blocked Redis for seconds. The
 * cursor member is usually still there with its score (ZREVRANK); if it moved or left, a binary
 * search among the members tied at the cursor's score finds the first one after it.
 */
const PAGE_START = String.raw`
local function bytes_ge(a, b)
  -- Byte order, as sorted sets order members: Lua's own >= follows the server's locale (strcoll).
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a >= #b
end
local function page_start(key, cscore, cmember)
  if cmember == '' then
    if cscore == '+inf' then return 0 end
    return redis.call('ZCOUNT', key, '(' .. cscore, '+inf')
  end
  local now = redis.call('ZSCORE', key, cmember)
  if now and tonumber(now) == tonumber(cscore) then return redis.call('ZREVRANK', key, cmember) + 1 end
  local lo = redis.call('ZCOUNT', key, '(' .. cscore, '+inf')
  local hi = lo + redis.call('ZCOUNT', key, cscore, cscore)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZRANGE', key, mid, mid, 'REV')[1]
    if bytes_ge(m, cmember) then lo = mid + 1 else hi = mid end
  end
  return lo
end
`;

/**
 * One member page: KEYS[1] segment set; ARGV: cursor score text ('+inf' for none), cursor member
 * ('' for none), min score (inclusive, '-inf' for none), how many. Returns member, score, … .
 */
const MEMBER_PAGE = String.raw`${PAGE_START}
local key, cscore, cmember, mins, limit = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local from = page_start(key, cscore, cmember)
local batch = redis.call('ZRANGE', key, from, from + limit - 1, 'REV', 'WITHSCORES')
local out = {}
for i = 1, #batch, 2 do
  if tonumber(batch[i + 1]) < mins then break end
  out[#out + 1] = batch[i]
  out[#out + 1] = batch[i + 1]
end
return out
`;

/**
 * One export page rendered in Redis: KEYS[1] segment set; ARGV: cursor score text ('+inf' for
 * none), cursor member ('' for none), min score, page size, 'csv' | 'ndjson'. Returns the text, the
 * last member and its score, and how many.
 */
const EXPORT_PAGE = String.raw`${PAGE_START}
local key, cscore, cmember, mins, limit, fmt = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local from = page_start(key, cscore, cmember)
local out, n, lastm, lasts = {}, 0, '', ''
local batch = redis.call('ZRANGE', key, from, from + limit - 1, 'REV', 'WITHSCORES')
for i = 1, #batch, 2 do
  local m, s = batch[i], batch[i + 1]
  if tonumber(s) < mins then break end
  if fmt == 'csv' then
    local cell = m
    -- Formula-like ids get an apostrophe (see csvCell in routes/segments.ts).
    if string.find(cell, '^[=+@\t\r%-]') then cell = "'" .. cell end
    if string.find(cell, '[",\r\n]') then cell = '"' .. (string.gsub(cell, '"', '""')) .. '"' end
    out[#out + 1] = cell .. ',' .. s .. '\n'
  else
    out[#out + 1] = '{"userId":' .. cjson.encode(m) .. ',"score":' .. s .. '}\n'
  end
  n, lastm, lasts = n + 1, m, s
end
return { table.concat(out), lastm, lasts, n }
`;

/**
 * Expires one user if they were still last seen before the cutoff: a user scored after expiry
 * picked them is kept. Removes them from the segments their record lists (which may include ones
 * this replica does not know yet) and from those given. KEYS: user hash, pi:seen. ARGV: userId,
 * cutoff (ms), then segment ids.
 */
const EXPIRE_USER = `
local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not seen or tonumber(seen) >= tonumber(ARGV[2]) then return 0 end
local segs = redis.call('HGET', KEYS[1], 'segs')
if segs then
  local ok, listed = pcall(cjson.decode, segs)
  if ok and type(listed) == 'table' then
    for _, s in ipairs(listed) do redis.call('ZREM', 'pi:seg:' .. s, ARGV[1]) end
  end
end
for i = 3, #ARGV do redis.call('ZREM', 'pi:seg:' .. ARGV[i], ARGV[1]) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`;

/**
 * A user's new record. Removes them only from the segments their previous record lists and no
 * longer applies to, then adds them to the current ones: the work per user follows their own
 * memberships, not the number of segments defined. KEYS: user hash, pi:seen, pi:seg-updated.
 * ARGV: userId, last-seen time (ms), hash TTL (s), probability, guard, updated time (ms), the
 * number of hash fields n, n field/value pairs, then the user's segment ids.
 *
 * A re-score passes its guard, the last-seen time it read: the record is then written only if the
 * user is still stored with exactly that time (one erased meanwhile stays erased, one scored
 * meanwhile keeps the newer record); it keeps the user's cache key (ck), and the hash still
 * expires TTL after that visit, not after the re-score. Otherwise guard is ''. Since a guarded
 * write may be refused, it marks its segments updated here, only when written; unguarded records
 * pass '' and the caller marks their segments once per batch.
 *
 * Erasure on another replica (KEYS[4], the user's tombstone, see ERASE_USER): a record whose time
 * is not after the erasure is one computed before it and written late (another replica's queue),
 * so it is refused; its cache key, if any, is noted in the tombstone for the erasing replica's
 * second cache delete. Deleted rules (KEYS[5], id → deletion time): a replica whose definitions
 * are up to 2 s old still assigns a rule deleted elsewhere; such ids are neither joined nor listed
 * in the user's record. Bands and persona segments are never rules and are always written.
 *
 * Persona segments are the active model's (KEYS[6], pi:models:active, written with the fleet
 * state): a replica that has not yet followed an activation still records users with the old
 * model's persona. A record whose version (field v) is not the active one is written without
 * persona: its persona-* ids are neither joined nor listed, and its persona field is ''. Without
 * the key (no fleet state yet) records are written as given.
 */
const RECORD_USER = `
local erased = redis.call('HGET', KEYS[4], 't')
if erased and tonumber(ARGV[2]) <= tonumber(erased) then
  local n = tonumber(ARGV[7])
  for i = 1, n * 2, 2 do
    if ARGV[7 + i] == 'ck' then redis.call('HSET', KEYS[4], 'ck:' .. ARGV[8 + i], '1') end
  end
  return 0
end
local guarded = ARGV[5] ~= ''
if guarded then
  local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not seen or tonumber(seen) ~= tonumber(ARGV[5]) then return 0 end
end
local prev = redis.call('HGET', KEYS[1], 'segs')
local ck = guarded and redis.call('HGET', KEYS[1], 'ck') or false
local n = tonumber(ARGV[7])
local fields = {}
for i = 1, n * 2 do fields[i] = ARGV[7 + i] end
local member = {}
for i = 8 + n * 2, #ARGV do member[ARGV[i]] = true end
local function deleted_rule(s)
  if s == 'high-intent' or s == 'medium-intent' or s == 'low-intent' or string.match(s, '^persona%-%d+$') then return false end
  return redis.call('ZSCORE', KEYS[5], s) ~= false
end
for i = 1, n * 2, 2 do
  if fields[i] == 'segs' then
    local ok, listed = pcall(cjson.decode, fields[i + 1])
    if ok and type(listed) == 'table' then
      local kept, dropped = {}, false
      for _, s in ipairs(listed) do
        if deleted_rule(s) then dropped = true; member[s] = nil else kept[#kept + 1] = s end
      end
      if dropped then fields[i + 1] = #kept == 0 and '[]' or cjson.encode(kept) end
    end
  end
end
for s in pairs(member) do
  if deleted_rule(s) then member[s] = nil end
end
local active = redis.call('GET', KEYS[6])
if active then
  local version = nil
  for i = 1, n * 2, 2 do
    if fields[i] == 'v' then version = fields[i + 1] end
  end
  if version ~= active then
    local function persona(s) return type(s) == 'string' and string.match(s, '^persona%-%d+$') ~= nil end
    for s in pairs(member) do
      if persona(s) then member[s] = nil end
    end
    for i = 1, n * 2, 2 do
      if fields[i] == 'persona' then
        fields[i + 1] = ''
      elseif fields[i] == 'segs' then
        local ok, listed = pcall(cjson.decode, fields[i + 1])
        if ok and type(listed) == 'table' then
          local kept, dropped = {}, false
          for _, s in ipairs(listed) do
            if persona(s) then dropped = true else kept[#kept + 1] = s end
          end
          if dropped then fields[i + 1] = #kept == 0 and '[]' or cjson.encode(kept) end
        end
      end
    end
  end
end
if prev then
  local ok, listed = pcall(cjson.decode, prev)
  if ok and type(listed) == 'table' then
    for _, s in ipairs(listed) do
      if not member[s] then redis.call('ZREM', 'pi:seg:' .. s, ARGV[1]) end
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(fields))
if ck then redis.call('HSET', KEYS[1], 'ck', ck) end
if guarded then
  redis.call('PEXPIREAT', KEYS[1], tonumber(ARGV[2]) + tonumber(ARGV[3]) * 1000)
else
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
for s in pairs(member) do
  redis.call('ZADD', 'pi:seg:' .. s, ARGV[4], ARGV[1])
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[3], s, ARGV[6]) end
end
return 1
`;

/**
 * Rule definitions, checked and written in one step so that uniqueness, the limit and existence
 * hold against concurrent requests and other replicas. KEYS: pi:seg-rules, the segment's set,
 * pi:seg-updated, pi:seg-deleted.
 *
 * Create (ARGV: id, rule JSON, max rules): only if absent and under the limit; the segment starts
 * empty, dropping members a replica with stale definitions wrote under this id after a delete,
 * and the id is no longer a deleted rule.
 */
const CREATE_RULE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'exists' end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 'created'
`;

/**
 * Update (KEYS: pi:seg-rules; ARGV: id, the JSON read, the new JSON): compare-and-set, so an update
 * never brings back a rule deleted meanwhile nor overwrites one it did not read. 1 written, 0 no
 * such rule, -1 changed since read (read again and retry).
 */
const UPDATE_RULE = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
if cur ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`;

/**
 * Delete (ARGV: id, now ms, how long deleted ids are remembered in ms): members go only with an
 * existing rule (never a band's or persona's). The id is remembered as deleted (pi:seg-deleted,
 * id → deletion time) so that records from replicas that still have the rule (definitions are
 * refreshed every 2 s) do not fill it again; ids deleted longer ago than that are forgotten here.
 */
const DELETE_RULE = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. (tonumber(ARGV[2]) - tonumber(ARGV[3])))
return 1
`;

/**
 * Erases one user in one step. KEYS: user hash, pi:seen, the user's tombstone, then the segment
 * sets that exist (from a SCAN). ARGV: userId, erase time (ms), tombstone TTL (ms).
 * Removes the user from those sets and from the ones their record lists (a set created after the
 * SCAN), deletes the record, and writes the tombstone (a hash: t = erase time): records computed
 * before the erasure and written after it (other replicas' queues) are refused by RECORD_USER.
 * Returns: record existed (1/0), features existed (1/0), cache key ('' for none), removed set keys.
 */
const ERASE_USER = `
local h = redis.call('HMGET', KEYS[1], 'p', 'f', 'ck', 'segs')
local prev = redis.call('HGET', KEYS[3], 't')
if not prev or tonumber(prev) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[3], 't', ARGV[2]) end
redis.call('PEXPIRE', KEYS[3], ARGV[3])
local removed, done = {}, {}
local function rm(k)
  if done[k] then return end
  done[k] = true
  if redis.call('ZREM', k, ARGV[1]) == 1 then removed[#removed + 1] = k end
end
for i = 4, #KEYS do rm(KEYS[i]) end
if h[4] then
  local ok, listed = pcall(cjson.decode, h[4])
  if ok and type(listed) == 'table' then
    for _, s in ipairs(listed) do rm('pi:seg:' .. s) end
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return { h[1] and 1 or 0, h[2] and 1 or 0, h[3] or '', removed }
`;

/**
 * A change's own command. Timed out, it was sent all the same, and a Redis that resumes may still
 * apply it: the caller is told so (503), not to try again, which could meet its own earlier write
 * (a create answered "exists"). A read before the change that times out is the plain "try again".
 */
async function sentChange<T>(command: Promise<T>): Promise<T> {
  try {
    return await command;
  } catch (err) {
    if ((err as Error).message?.startsWith('Command timed out')) {
      throw new AppError(503, 'unavailable', 'redis did not answer in time: the change was sent and may still be applied when it answers; read the resource before retrying');
    }
    throw err;
  }
}

/**
 * How long an erasure's tombstone refuses records computed before it. It must outlast any write
 * still queued on another replica: such writes give up after REDIS_COMMAND_TIMEOUT_MS (at most
 * 10 minutes), and a store that answers takes milliseconds.
 */
export const ERASED_TTL_MS = 15 * 60_000;
/** How long a deleted rule id is remembered (records from replicas with stale definitions are refused). */
const DELETED_RULE_KEEP_MS = 7 * 86_400_000;

/**
 * User hashes outlive their last visit by this much beyond the membership TTL, so the expiry
 * sweep (which also clears segment sets) always finds them; a hash gone first would leave its
 * memberships unknown to the next record.
 */
const HASH_TTL_MARGIN_S = 86_400;

const K = {
  seg: (id: string) => `pi:seg:${id}`,
  user: (id: string) => `pi:user:${id}`,
  seen: 'pi:seen',
  updated: 'pi:seg-updated',
  bands: 'pi:seg-bands',
  rules: 'pi:seg-rules',
  deletedRules: 'pi:seg-deleted',
  /** The fleet's active model version (written by FleetState with the fleet state). */
  activeModel: 'pi:models:active',
  /** Keyed by a hash of the userId: erasure leaves no key or value that contains the userId. */
  erased: (id: string) => `pi:erased:${createHash('sha256').update(id).digest('hex')}`,
};

/**
 * Redis layout: a sorted set per segment (member userId, score = probability), a hash per user
 * (latest score, version, persona, segments, features), and `pi:seen` (userId → last seen ms)
 * for expiry and re-scoring.
 */
export class RedisMembershipStore implements MembershipStore {
  readonly kind = 'redis' as const;

  constructor(
    private readonly redis: Redis,
    private readonly ttlSeconds: number,
  ) {
    // Defined before any pipeline exists: ioredis copies script commands onto a pipeline when it
    // is created, so one defined later is missing from it.
    const r = redis as unknown as Record<string, unknown>;
    if (typeof r.piExpireUser !== 'function') redis.defineCommand('piExpireUser', { numberOfKeys: 2, lua: EXPIRE_USER });
    if (typeof r.piRecordUser !== 'function') redis.defineCommand('piRecordUser', { numberOfKeys: 6, lua: RECORD_USER });
    if (typeof r.piCreateRule !== 'function') redis.defineCommand('piCreateRule', { numberOfKeys: 4, lua: CREATE_RULE });
    if (typeof r.piUpdateRule !== 'function') redis.defineCommand('piUpdateRule', { numberOfKeys: 1, lua: UPDATE_RULE });
    if (typeof r.piDeleteRule !== 'function') redis.defineCommand('piDeleteRule', { numberOfKeys: 4, lua: DELETE_RULE });
    if (typeof r.piEraseUser !== 'function') redis.defineCommand('piEraseUser', { lua: ERASE_USER });
  }

  private get scripts() {
    return this.redis as unknown as {
      piCreateRule(...args: ScriptArg[]): Promise<string>;
      piUpdateRule(...args: ScriptArg[]): Promise<number>;
      piDeleteRule(...args: ScriptArg[]): Promise<number>;
      piEraseUser(numberOfKeys: number, ...args: ScriptArg[]): Promise<[number, number, string, string[]]>;
    };
  }

  async record(batch: MembershipRecord[], segmentIds: string[]): Promise<void> {
    if (batch.length === 0) return;
    const p = withScripts(this.redis.pipeline());
    const touched = new Set<string>();
    const now = String(Date.now());
    for (const r of batch) {
      const at = r.ifSeenAt ?? r.at;
      const fields: Record<string, string> = {
        p: String(r.probability),
        v: r.version,
        t: String(at),
        persona: r.persona === null ? '' : String(r.persona),
        segs: JSON.stringify(r.segments),
        st: String(r.scoredAt ?? r.at),
      };
      if (r.features) fields.f = JSON.stringify(r.features);
      if (r.cacheKey && r.ifSeenAt === undefined) fields.ck = r.cacheKey;
      // A record replaces the last one (dropping features when retention is off); a user whose
      // score moved leaves the old band.
      const pairs = Object.entries(fields).flat();
      const member = r.segments.filter((id) => segmentIds.includes(id));
      // A guarded write may be refused: the script marks its segments only if it writes.
      const guarded = r.ifSeenAt !== undefined;
      p.piRecordUser(K.user(r.userId), K.seen, K.updated, K.erased(r.userId), K.deletedRules, K.activeModel, r.userId, at, this.ttlSeconds + HASH_TTL_MARGIN_S, r.probability, r.ifSeenAt ?? '', guarded ? now : '', pairs.length / 2, ...pairs, ...member);
      if (!guarded) for (const id of member) touched.add(id);
    }
    for (const id of touched) p.hset(K.updated, id, now);
    await execOrThrow(p);
  }

  /**
   * Export pages rendered inside Redis: one Lua call returns up to `pageSize` members as a single
   * CSV/NDJSON block (scores in Redis's exact text form) plus the keyset cursor, so Node holds one
   * Buffer per page instead of thousands of member objects — memory stays flat for any size.
   */
  /** The Lua page renderer, registered once per client (EVALSHA with an EVAL fallback). */
  private get exporter(): { segmentExportPageBuffer(...args: (string | number)[]): Promise<unknown> } {
    const r = this.redis as unknown as Record<string, unknown>;
    if (typeof r.segmentExportPageBuffer !== 'function') this.redis.defineCommand('segmentExportPage', { numberOfKeys: 1, lua: EXPORT_PAGE });
    return this.redis as unknown as { segmentExportPageBuffer(...args: (string | number)[]): Promise<unknown> };
  }

  /** The member page script (see MEMBER_PAGE), registered like the exporter. */
  private get pager(): { segmentMemberPage(...args: (string | number)[]): Promise<unknown> } {
    const r = this.redis as unknown as Record<string, unknown>;
    if (typeof r.segmentMemberPage !== 'function') this.redis.defineCommand('segmentMemberPage', { numberOfKeys: 1, lua: MEMBER_PAGE });
    return this.redis as unknown as { segmentMemberPage(...args: (string | number)[]): Promise<unknown> };
  }

  async *exportChunks(segmentId: string, format: 'csv' | 'ndjson', minScore?: number, pageSize = 5000): AsyncGenerator<Buffer> {
    let score = '+inf';
    let member = '';
    const min = minScore === undefined ? '-inf' : String(minScore);
    for (;;) {
      const [chunk, lastMember, lastScore, n] = (await this.exporter.segmentExportPageBuffer(K.seg(segmentId), score, member, min, pageSize, format)) as [Buffer, Buffer, Buffer, number];
      if (Number(n) > 0) yield chunk;
      if (Number(n) < pageSize) return;
      score = lastScore.toString();
      member = lastMember.toString();
    }
  }

  async page(segmentId: string, q: PageQuery) {
    const cursor = q.cursor ? decodeCursor(q.cursor) : null;
    const min = q.minScore === undefined ? '-inf' : String(q.minScore);
    // One more than asked: whether there is a next page.
    const raw = (await this.pager.segmentMemberPage(K.seg(segmentId), cursor ? String(cursor.score) : '+inf', cursor?.userId ?? '', min, q.limit + 1)) as string[];
    const all: Member[] = [];
    for (let i = 0; i < raw.length; i += 2) all.push({ userId: raw[i], score: Number(raw[i + 1]) });
    const members = all.slice(0, q.limit);
    return { members, nextCursor: all.length > q.limit ? encodeCursor(members[members.length - 1]) : null };
  }

  size(segmentId: string) {
    return this.redis.zcard(K.seg(segmentId));
  }

  scoredUsers() {
    return this.redis.zcard(K.seen);
  }

  async updated(segmentId: string) {
    const v = await this.redis.hget(K.updated, segmentId);
    return v === null ? null : Number(v);
  }

  async user(userId: string): Promise<UserRecord | null> {
    const h = await this.redis.hgetall(K.user(userId));
    return h.p === undefined ? null : toUser(userId, h);
  }

  async erase(userId: string): Promise<ErasureReport & { cacheKeys: string[] }> {
    // Remove from every segment set that exists, not only the ones the record names.
    const segKeys: string[] = [];
    let cur = '0';
    do {
      const [next, keys] = await this.redis.scan(cur, 'MATCH', 'pi:seg:*', 'COUNT', 1000);
      cur = next;
      segKeys.push(...keys);
    } while (cur !== '0');
    const keys = [K.user(userId), K.seen, K.erased(userId), ...new Set(segKeys)];
    const [record, features, ck, removed] = await sentChange(this.scripts.piEraseUser(keys.length, ...keys, userId, Date.now(), ERASED_TTL_MS));
    return {
      segments: removed.map((k) => k.slice('pi:seg:'.length)),
      userRecord: Number(record) === 1,
      features: Number(features) === 1,
      cacheEntries: 0,
      cacheKeys: ck ? [ck] : [],
    };
  }

  /**
   * Cache keys of records refused by the user's tombstone (computed before the erasure, written
   * after it by another replica): their scores may reach the score cache after the erasure.
   */
  async erasedCacheKeys(userId: string): Promise<string[]> {
    const fields = await this.redis.hkeys(K.erased(userId));
    return fields.filter((f) => f.startsWith('ck:')).map((f) => f.slice(3));
  }

  async sample(segmentId: string | null, n: number): Promise<UserRecord[]> {
    const ids = (await this.redis.zrandmember(segmentId ? K.seg(segmentId) : K.seen, n)) as string[] | null;
    return this.fetchUsers(ids ?? []);
  }

  async expire(cutoffMs: number, segmentIds: string[]): Promise<number> {
    let removed = 0;
    for (;;) {
      const ids = await this.redis.zrangebyscore(K.seen, '-inf', `(${cutoffMs}`, 'LIMIT', 0, 1000);
      if (ids.length === 0) return removed;
      // Checked and removed per user in one script: one scored since the read above stays.
      const p = withScripts(this.redis.pipeline());
      for (const id of ids) p.piExpireUser(K.user(id), K.seen, id, cutoffMs, ...segmentIds);
      const results = await execOrThrow(p);
      removed += results.filter(([, n]) => Number(n) === 1).length;
    }
  }

  async dropFeatures(): Promise<number> {
    let removed = 0;
    let cur = '0';
    do {
      const [next, flat] = await this.redis.zscan(K.seen, cur, 'COUNT', 1000);
      cur = next;
      const ids = flat.filter((_, i) => i % 2 === 0);
      if (ids.length === 0) continue;
      const p = this.redis.pipeline();
      for (const id of ids) p.hdel(K.user(id), 'f');
      removed += (await execOrThrow(p)).filter(([, n]) => Number(n) === 1).length;
    } while (cur !== '0');
    return removed;
  }

  async dropPersonaSegments(): Promise<number> {
    const keys: string[] = [];
    let cur = '0';
    do {
      const [next, found] = await this.redis.scan(cur, 'MATCH', K.seg('persona-*'), 'COUNT', 1000);
      cur = next;
      keys.push(...found.filter((k) => isPersonaSegment(k.slice(K.seg('').length))));
    } while (cur !== '0');
    if (keys.length === 0) return 0;
    const p = this.redis.pipeline();
    p.del(...keys);
    p.hdel(K.updated, ...keys.map((k) => k.slice(K.seg('').length)));
    await execOrThrow(p);
    return keys.length;
  }

  async *users(chunk: number): AsyncGenerator<UserRecord[]> {
    let cur = '0';
    do {
      const [next, flat] = await this.redis.zscan(K.seen, cur, 'COUNT', chunk);
      cur = next;
      const ids = flat.filter((_, i) => i % 2 === 0);
      const users = await this.fetchUsers(ids);
      if (users.length) yield users;
    } while (cur !== '0');
  }

  async getBands(): Promise<Bands | null> {
    const v = await this.redis.get(K.bands);
    return v ? (JSON.parse(v) as Bands) : null;
  }

  async setBands(b: Bands): Promise<void> {
    await sentChange(this.redis.set(K.bands, JSON.stringify(b)));
  }

  async rules(): Promise<RuleSegment[]> {
    const all = await this.redis.hvals(K.rules);
    return all.map((v) => JSON.parse(v) as RuleSegment).sort((a, b) => a.id.localeCompare(b.id));
  }

  async putRule(r: RuleSegment): Promise<void> {
    await sentChange(this.redis.hset(K.rules, r.id, JSON.stringify(r)));
  }

  async createRule(r: RuleSegment, maxRules: number): Promise<'created' | 'exists' | 'full'> {
    return (await sentChange(this.scripts.piCreateRule(K.rules, K.seg(r.id), K.updated, K.deletedRules, r.id, JSON.stringify(r), maxRules))) as 'created' | 'exists' | 'full';
  }

  async updateRule(id: string, change: (current: RuleSegment) => RuleSegment): Promise<RuleSegment | null> {
    // Each retry means another writer changed the rule in between, so this ends.
    for (;;) {
      const read = await this.redis.hget(K.rules, id);
      if (read === null) return null;
      const next = change(JSON.parse(read) as RuleSegment);
      const res = Number(await sentChange(this.scripts.piUpdateRule(K.rules, id, read, JSON.stringify(next))));
      if (res === 1) return next;
      if (res === 0) return null;
    }
  }

  async deleteRule(id: string): Promise<boolean> {
    return Number(await sentChange(this.scripts.piDeleteRule(K.rules, K.seg(id), K.updated, K.deletedRules, id, Date.now(), DELETED_RULE_KEEP_MS))) === 1;
  }

  async close(): Promise<void> {}

  private async fetchUsers(ids: string[]): Promise<UserRecord[]> {
    if (ids.length === 0) return [];
    const p = this.redis.pipeline();
    for (const id of ids) p.hgetall(K.user(id));
    const res = (await p.exec()) ?? [];
    const out: UserRecord[] = [];
    res.forEach(([err, h], i) => {
      const hash = h as Record<string, string>;
      if (!err && hash && hash.p !== undefined) out.push(toUser(ids[i], hash));
    });
    return out;
  }
}

type ScriptArg = string | number;

/** A pipeline with this store's scripts (defined on the client in the constructor). */
function withScripts(p: ReturnType<Redis['pipeline']>) {
  return p as typeof p & { piRecordUser(...args: ScriptArg[]): unknown; piExpireUser(...args: ScriptArg[]): unknown };
}

/**
 * ioredis resolves a pipeline even when its commands fail (e.g. "Stream isn't writeable" while
 * Redis is down): each result carries its own error. A write that did not happen must reject, so
 * callers can count dropped memberships and erasure never reports success it did not achieve.
 */
async function execOrThrow(p: ReturnType<Redis['pipeline']>): Promise<[Error | null, unknown][]> {
  const res = (await p.exec()) ?? [];
  const failed = res.find(([err]) => err);
  if (failed) throw failed[0];
  return res;
}

function toUser(userId: string, h: Record<string, string>): UserRecord {
  return {
    userId,
    probability: Number(h.p),
    version: h.v,
    at: Number(h.t),
    // Records written before scoredAt was kept have only `t`.
    scoredAt: h.st === undefined ? Number(h.t) : Number(h.st),
    persona: h.persona === '' || h.persona === undefined ? null : Number(h.persona),
    segments: JSON.parse(h.segs ?? '[]') as string[],
    ...(h.f ? { features: JSON.parse(h.f) } : {}),
  };
}
