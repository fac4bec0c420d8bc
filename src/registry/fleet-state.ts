import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import type { ModelStore, StoreState } from './model-store.js';
import { unavailable } from '../lib/errors.js';

const STATE_KEY = 'pi:models:state';
const CHANNEL = 'pi:models:changed';
const HISTORY_LIMIT = 500;

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
   * With Redis, Redis is written first and the local mirror only once that succeeded: a change
   * refused during an outage must not reach state.json, or replicas (which read the mirror while
   * Redis is down, and may share the store volume) would apply it anyway.
   */
  async write(state: StoreState): Promise<void> {
    state.history = state.history.slice(-HISTORY_LIMIT);
    if (this.redis) {
      const refused = () => unavailable('redis is unavailable: fleet state cannot be changed now');
      if (this.redis.status !== 'ready') throw refused();
      try {
        const results = await this.redis.multi().set(STATE_KEY, JSON.stringify(state)).publish(CHANNEL, String(Date.now())).exec();
        if (!results || results.some(([err]) => err)) throw new Error('transaction failed');
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'writing fleet state to redis failed');
        throw refused();
      }
    }
    this.store.writeState(state);
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
