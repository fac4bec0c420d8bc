import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { ModelStore, StoreState } from './model-store.js';
import { conflict, unavailable } from '../lib/errors.js';

const STATE_KEY = 'pi:models:state';
const CHANNEL = 'pi:models:changed';
const HISTORY_LIMIT = 500;
/** Attempts of one change when other replicas keep changing the state under it. */
const UPDATE_ATTEMPTS = 5;
/**
 * Compare-and-set: writes ARGV[2] (and publishes) only if the key still holds ARGV[1] (the empty
 * string standing for "no key"), so a change computed from a stale read never overwrites another.
 */
const CAS_STATE = "local cur = redis.call('GET', KEYS[1]) or '' if cur ~= ARGV[1] then return 0 end redis.call('SET', KEYS[1], ARGV[2]) redis.call('PUBLISH', ARGV[3], ARGV[4]) return 1";

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
          this.store.writeState(state);
          return state;
        }
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'reading fleet state from redis failed; using local state');
      }
    }
    return this.store.readState();
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
   */
  async update(change: (state: StoreState) => void): Promise<StoreState> {
    if (!this.redis) {
      const state = this.store.readState();
      change(state);
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
      const state = raw ? (JSON.parse(raw) as StoreState) : this.store.readState();
      change(state);
      let written: unknown;
      try {
        written = await this.redis.eval(CAS_STATE, 1, STATE_KEY, raw ?? '', JSON.stringify(trimmed(state)), CHANNEL, String(Date.now()));
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'writing fleet state to redis failed');
        throw refused();
      }
      if (written === 1) {
        this.store.writeState(state);
        return state;
      }
    }
    throw conflict('the model state kept changing on other replicas: try again');
  }

  /** Seeds Redis from local state if the fleet has none yet. */
  async seed(): Promise<void> {
    if (!this.redis || this.redis.status !== 'ready') return;
    await this.redis.set(STATE_KEY, JSON.stringify(this.store.readState()), 'NX');
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

function trimmed(state: StoreState): StoreState {
  state.history = state.history.slice(-HISTORY_LIMIT);
  return state;
}
