import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { ModelStore, StoreState } from './model-store.js';
import { conflict, unavailable } from '../lib/errors.js';

const STATE_KEY = 'pi:models:state';
/**
 * The active version id alone (absent when none), written with every state write: the membership
 * store's record script reads it to keep records of a model no longer active out of persona segments.
 */
const ACTIVE_KEY = 'pi:models:active';
const CHANNEL = 'pi:models:changed';
const HISTORY_LIMIT = 500;
/** Attempts of one change when other replicas keep changing the state under it. */
const UPDATE_ATTEMPTS = 5;
/** After a write whose answer was lost (timeout, dropped connection): the longest wait for a re-read. */
const VERIFY_MIN_WAIT_MS = 5000;
/** How long a change answered "outcome unknown" is still watched for (the longest command timeout). */
const LATE_CHANGE_WATCH_MS = 10 * 60_000;
/**
 * Compare-and-set: writes the state (and publishes) only if the key still holds ARGV[1] (the empty
 * string standing for "no key"), so a change computed from a stale read never overwrites another.
 * The written state gets the next revision: one more than the current one's (or ARGV[5], the
 * revision this replica's mirror has seen, if higher). ARGV[2] is the state's JSON without its
 * revision; the script puts it first. Returns the new revision, or 0 when the state had changed.
 * KEYS[2] (pi:models:active) is set to ARGV[6], the new state's active version ('' for none: deleted).
 */
const CAS_STATE = `
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return 0 end
local rev = tonumber(ARGV[5]) or 0
if cur ~= '' then
  local ok, s = pcall(cjson.decode, cur)
  if ok and type(s) == 'table' and type(s.revision) == 'number' and s.revision > rev then rev = s.revision end
end
rev = math.floor(rev) + 1
redis.call('SET', KEYS[1], '{"revision":' .. rev .. ',' .. string.sub(ARGV[2], 2))
if ARGV[6] ~= '' then redis.call('SET', KEYS[2], ARGV[6]) else redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return rev`;

/**
 * Seeds the state (KEYS[1]) with ARGV[1] if absent, and the active key (KEYS[2]) with its active
 * version ARGV[2] ('' for none). A state that already exists without an active key (written before
 * that key existed) gets the key from its own active version.
 */
const SEED_STATE = `
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) else redis.call('DEL', KEYS[2]) end
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local ok, s = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(s) == 'table' and type(s.active) == 'string' then redis.call('SET', KEYS[2], s.active) end
end
return 0`;

/**
 * The state as stored: StoreState plus `revision` (bumped by every change, orders mirror writes)
 * and, on the history entries a change adds, `change` (its id, to find out after a write whose
 * answer was lost whether it was applied). `lastChange` carries the id of a change that added no
 * history entry.
 */
type Revised = StoreState & { revision?: number; lastChange?: string };
type Entry = StoreState['history'][number] & { change?: string };

const revisionOf = (state: StoreState): number => {
  const r = (state as Revised).revision;
  return typeof r === 'number' && Number.isFinite(r) ? r : 0;
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Where active/canary state lives. Without Redis: the store's state.json. With Redis: a key
 * shared by all replicas plus a pub/sub channel, mirrored to state.json so a replica that
 * restarts while Redis is down still serves what it served last.
 */
export class FleetState {
  private subscriber?: Redis;

  constructor(
    private readonly store: ModelStore,
    private readonly redis: Redis | undefined,
    private readonly log: FastifyBaseLogger,
  ) {}

  async read(): Promise<StoreState> {
    if (this.redis && this.redis.status === 'ready') {
      try {
        const raw = await this.redis.get(STATE_KEY);
        if (raw) {
          const state = JSON.parse(raw) as StoreState;
          this.mirror(state);
          return state;
        }
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'reading fleet state from redis failed; using local state');
      }
    }
    return this.store.readState();
  }

  /**
   * Mirrors a state read from Redis to state.json, only if newer than what the file holds: a read
   * answered late (after a newer change was mirrored) must not put the older state back, which
   * seed() would restore into a Redis that restarted empty. Unchanged states are not rewritten.
   */
  mirror(state: StoreState): void {
    try {
      this.store.writeState(state, { ifNewer: true });
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'could not mirror the fleet state to the store');
    }
  }

  /** The revision the local mirror holds (0 if none or unreadable). */
  private mirroredRevision(): number {
    try {
      return revisionOf(this.store.readState());
    } catch {
      return 0;
    }
  }

  /**
   * Applies `change` to the current state and stores the result. With Redis the write is a
   * compare-and-set against the state `change` saw: when another replica changed it meanwhile,
   * `change` runs again on the new state (so it must only mutate the state it is given, and may
   * throw to refuse). Callers serialize their own changes within a process.
   *
   * Redis is written first and the local mirror only once that succeeded: a change refused during
   * an outage must not reach state.json, or replicas (which read the mirror while Redis is down,
   * and may share the store volume) would apply it anyway.
   *
   * A write whose answer is lost (command timeout, e.g. while a failover pauses writes; dropped
   * connection) may still be applied by Redis. Each change carries an id (on the history entries
   * it adds): the state is then read again, for a bounded time, and the change counts as made if
   * it is there (so the caller completes it), refused (503) if it is not, and 503 "outcome unknown"
   * if the state could not be read.
   */
  /**
   * `onLateApply`: run if this change is answered "outcome unknown" (503) and turns out to have
   * been applied later, so the caller can still do what follows a change (e.g. re-scoring).
   */
  async update(change: (state: StoreState) => void, opts: { onLateApply?: () => void } = {}): Promise<StoreState> {
    if (!this.redis) {
      const state = this.store.readState();
      change(state);
      (state as Revised).revision = revisionOf(state) + 1;
      this.store.writeState(trimmed(state));
      return state;
    }
    const refused = () => unavailable('redis is unavailable: fleet state cannot be changed now');
    for (let attempt = 0; attempt < UPDATE_ATTEMPTS; attempt++) {
      if (this.redis.status !== 'ready') {
        // A change that is impossible anyway (409) says so; a possible one waits for Redis (503).
        change(this.store.readState());
        throw refused();
      }
      let raw: string | null;
      try {
        raw = await this.redis.get(STATE_KEY);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'reading fleet state from redis failed');
        throw refused();
      }
      const state = (raw ? JSON.parse(raw) : this.store.readState()) as Revised;
      const entries = state.history.length;
      change(state);
      const id = randomUUID();
      if (state.history.length > entries) {
        for (const h of state.history.slice(entries) as Entry[]) h.change = id;
        delete state.lastChange;
      } else state.lastChange = id;
      const { revision: _, ...unrevised } = trimmed(state) as Revised;
      let written: unknown;
      try {
        written = await this.redis.eval(CAS_STATE, 2, STATE_KEY, ACTIVE_KEY, raw ?? '', JSON.stringify(unrevised), CHANNEL, String(Date.now()), String(this.mirroredRevision()), state.active ?? '');
      } catch (err) {
        this.log.warn({ err: (err as Error).message, change: id }, 'writing fleet state to redis failed; checking whether it was applied');
        const now = await this.findChange(id);
        if (now === 'unknown') {
          if (opts.onLateApply) void this.watchLateChange(id, opts.onLateApply);
          throw unavailable('redis did not answer: the outcome of this change is unknown (it may still be applied); check GET /v1/models/history before retrying');
        }
        if (!now) throw refused();
        this.log.info({ change: id }, 'the fleet state change was applied although its write reported an error');
        this.mirror(now);
        state.revision = revisionOf(now);
        return state;
      }
      if (typeof written === 'number' && written > 0) {
        state.revision = written;
        this.mirror(state);
        return state;
      }
    }
    throw conflict('the model state kept changing on other replicas: try again');
  }

  /**
   * Reads the state again after a write whose answer was lost, until it can be read or the wait
   * runs out: the state if change `id` is in it, null if not, 'unknown' if it could not be read.
   * A read answered after the failed write is conclusive: Redis runs one connection's commands in
   * order, and ioredis resends a connection's unanswered commands before any new one.
   */
  private async findChange(id: string): Promise<StoreState | null | 'unknown'> {
    const redis = this.redis!;
    const timeout = Number(redis.options.commandTimeout) || 0;
    const deadline = Date.now() + Math.max(VERIFY_MIN_WAIT_MS, 2 * timeout);
    while (Date.now() < deadline) {
      if (redis.status === 'ready') {
        try {
          const raw = await redis.get(STATE_KEY);
          if (!raw) return null;
          const state = JSON.parse(raw) as Revised;
          const applied = state.lastChange === id || (state.history as Entry[]).some((h) => h.change === id);
          return applied ? state : null;
        } catch (err) {
          this.log.warn({ err: (err as Error).message, change: id }, 're-reading fleet state from redis failed');
        }
      }
      await sleep(50);
    }
    return 'unknown';
  }

  /**
   * After an "outcome unknown" answer: keeps looking for change `id` while Redis stays silent (up
   * to LATE_CHANGE_WATCH_MS) and calls `then` if it turns out applied; stops once Redis answers.
   */
  private async watchLateChange(id: string, then: () => void): Promise<void> {
    const deadline = Date.now() + LATE_CHANGE_WATCH_MS;
    // Until the connection is closed for good (shutdown) or the deadline.
    while (Date.now() < deadline && this.redis?.status !== 'end') {
      const found = await this.findChange(id);
      if (found === 'unknown') continue;
      if (found) {
        this.log.warn({ change: id }, 'a fleet state change answered "outcome unknown" was applied after all; completing it');
        this.mirror(found);
        then();
      }
      return;
    }
  }

  /** Seeds Redis from local state if the fleet has none yet. */
  async seed(): Promise<void> {
    if (!this.redis || this.redis.status !== 'ready') return;
    const state = this.store.readState();
    await this.redis.eval(SEED_STATE, 2, STATE_KEY, ACTIVE_KEY, JSON.stringify(state), state.active ?? '');
  }

  /** Calls `onChange` on every published change and whenever the subscription (re)connects. */
  async subscribe(onChange: () => void): Promise<void> {
    if (!this.redis) return;
    const main = this.redis;
    const sub = main.duplicate();
    this.subscriber = sub;
    // After (re)connecting we may have missed messages: seed if empty, then reconcile. Both
    // connections trigger this: seeding needs the main one, and they reconnect independently
    // (if the subscriber came back first, seeding would otherwise be skipped until the next change).
    const resync = () =>
      void this.seed()
        .catch(() => {})
        .then(onChange);
    this.onMainReady = resync;
    main.on('ready', resync);
    sub.on('error', () => {}); // the main client already logs outages
    sub.on('ready', () => {
      void sub.subscribe(CHANNEL).catch(() => {});
      resync();
    });
    sub.on('message', () => onChange());
  }

  private onMainReady?: () => void;

  async close(): Promise<void> {
    if (this.onMainReady) this.redis?.off('ready', this.onMainReady);
    this.subscriber?.disconnect();
  }
}

const ACTIVE_CHANGES = new Set(['activate', 'rollback', 'promote']);

/**
 * The last HISTORY_LIMIT entries, and the entry that made the active version active even when it is
 * older: rollback finds its target there, and a canary ramped up and down many times would
 * otherwise push it out.
 */
export function trimmed(state: StoreState): StoreState {
  if (state.history.length <= HISTORY_LIMIT) return state;
  const kept = state.history.slice(-HISTORY_LIMIT);
  const madeActive = (h: StoreState['history'][number]) => h.version === state.active && h.previous !== state.active && ACTIVE_CHANGES.has(h.action);
  if (!kept.some(madeActive)) {
    const entry = state.history.slice(0, -HISTORY_LIMIT).findLast(madeActive);
    if (entry) kept.unshift(entry);
  }
  state.history = kept;
  return state;
}
