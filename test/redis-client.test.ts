import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Redis } from 'ioredis';
import { createRedis, redisStatus } from '../src/cache/redis-client.js';
import { freePort, TestRedis } from './helpers/redis-server.js';
import { until } from './helpers/http.js';

/** The service's Redis status over its connections (score cache + shared), against a real server. */

let redis: TestRedis;
const conns: Redis[] = [];
const log = pino({ level: 'silent' });

beforeAll(async () => {
  redis = await TestRedis.start();
});

afterAll(async () => {
  for (const c of conns) c.disconnect();
  await redis?.close();
});

const connect = (url: string, autoPipelining?: boolean) => {
  const c = createRedis(url, log, 'test', { autoPipelining });
  conns.push(c);
  return c;
};

describe('redisStatus', () => {
  it('is disabled without connections, up only when every connection is ready', async () => {
    expect(redisStatus()).toBe('disabled');
    expect(redisStatus(undefined, undefined)).toBe('disabled');
    const shared = connect(redis.url);
    const cache = connect(redis.url, false);
    await until(() => shared.status === 'ready' && cache.status === 'ready', 'both connections ready');
    expect(redisStatus(shared, cache)).toBe('up');
    expect(await cache.mget('a', 'b')).toEqual([null, null]);
    const nowhere = connect(`redis://127.0.0.1:${await freePort()}`);
    expect(redisStatus(shared, nowhere)).toBe('down');
  });
});
