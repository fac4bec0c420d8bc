import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import type { Redis } from 'ioredis';
import { createRedis, redisStatus, RedisWatch } from '../src/cache/redis-client.js';
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

const connect = (url: string) => {
  const c = createRedis(url, log, 'test');
  conns.push(c);
  return c;
};

describe('redisStatus', () => {
  it('is disabled without connections, up only when every connection is ready', async () => {
    expect(redisStatus()).toBe('disabled');
    expect(redisStatus(undefined, undefined)).toBe('disabled');
    const shared = connect(redis.url);
    const cache = connect(redis.url);
    await until(() => shared.status === 'ready' && cache.status === 'ready', 'both connections ready');
    expect(redisStatus(shared, cache)).toBe('up');
    expect(await cache.mget('a', 'b')).toEqual([null, null]);
    const nowhere = connect(`redis://127.0.0.1:${await freePort()}`);
    expect(redisStatus(shared, nowhere)).toBe('down');
  });
});

describe('RedisWatch', () => {
  it('says hung while a frozen server leaves its PING unanswered, and recovers once it answers', async () => {
    const conn = connect(redis.url);
    await until(() => conn.status === 'ready', 'connection ready');
    const watch = new RedisWatch(conn, 300, 100);
    try {
      await new Promise((r) => setTimeout(r, 250));
      expect(watch.hung).toBe(false);
      redis.pause();
      try {
        await until(() => watch.hung, 'the watch to notice', 5000);
        expect(conn.status).toBe('ready'); // the connection alone never shows it
      } finally {
        redis.resume();
      }
      await until(() => !watch.hung, 'the watch to see answers again', 5000);
    } finally {
      watch.stop();
    }
  });
});
