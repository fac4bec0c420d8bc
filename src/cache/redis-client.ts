import { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';

/**
 * Redis connection tuned for a cache in the request path: commands fail fast while disconnected
 * (no offline queue), and the client keeps reconnecting in the background forever. No
 * auto-pipelining: every exchange here is already one coalesced command or pipeline, and with it
 * ioredis holds a new pipeline while an earlier one awaits its answer, so against a frozen server
 * each command's timeout would start only when the one before it ran out.
 */
export function createRedis(url: string, log: FastifyBaseLogger, name = 'redis', { commandTimeoutMs = 5000 } = {}): Redis {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    // A connected server that stopped answering must not hold callers (segment writes, shutdown
    // flushes, admin changes) forever: its commands fail after this long.
    commandTimeout: commandTimeoutMs,
    maxRetriesPerRequest: 1,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(50 * times, 1000),
    lazyConnect: false,
  });
  let down = false;
  redis.on('ready', () => {
    if (down) log.info({ name }, 'redis reconnected');
    down = false;
  });
  redis.on('error', (err) => {
    if (!down) log.warn({ name, err: err.message }, 'redis unavailable; continuing without it');
    down = true;
  });
  return redis;
}

/** Waits up to `ms` for the first connection, so startup state comes from Redis when it is there. */
export function waitForRedis(redis: Redis, ms: number): Promise<boolean> {
  if (redis.status === 'ready') return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      redis.off('ready', onReady);
      resolve(ok);
    };
    const onReady = () => done(true);
    const timer = setTimeout(() => done(false), ms);
    redis.on('ready', onReady);
  });
}

/** 'up' only when every connection given is ready; 'disabled' when there are none. */
export function redisStatus(...connections: (Redis | undefined)[]): 'up' | 'down' | 'disabled' {
  const present = connections.filter((c): c is Redis => c !== undefined);
  if (present.length === 0) return 'disabled';
  return present.every((c) => c.status === 'ready') ? 'up' : 'down';
}

/**
 * Notices a Redis that is connected but not answering (a frozen or overloaded server), which the
 * connection status never shows: a PING every `intervalMs`, one at a time. `hung` while one has
 * waited longer than `timeoutMs`, or since the last one failed, until one is answered.
 */
export class RedisWatch {
  private sentAt = 0;
  private pending = false;
  private lastFailed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly redis: Redis,
    private readonly timeoutMs = 2000,
    intervalMs = 1000,
  ) {
    this.timer = setInterval(() => this.tick(), intervalMs).unref();
  }

  get hung(): boolean {
    return this.redis.status === 'ready' && (this.lastFailed || (this.pending && Date.now() - this.sentAt > this.timeoutMs));
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private tick(): void {
    if (this.pending || this.redis.status !== 'ready') return;
    this.pending = true;
    this.sentAt = Date.now();
    this.redis.ping().then(
      () => {
        this.pending = false;
        this.lastFailed = false;
      },
      () => {
        this.pending = false;
        this.lastFailed = true;
      },
    );
  }
}
