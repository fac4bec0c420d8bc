import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { TestRedis } from './helpers/redis-server.js';

/**
 * A fleet state write (the compare-and-set script) whose answer is lost — a command timeout while
 * a failover pauses writes, a connection dropped mid-write — may still be run by Redis. The
 * request's answer must match what happened to the fleet.
 */
const A = BUNDLED_VERSION;
const B = 'outcome-b';
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const ADMIN = { authorization: 'Bearer admin-key-123' };
const READ = { authorization: 'Bearer pred-key-123' };
const TIMEOUT_MS = 300;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a fleet state change whose Redis write does not answer in time', () => {
  let redis: TestRedis;
  let admin: Redis;
  let storeDir: string;
  const apps: FastifyInstance[] = [];
  const activated: string[][] = [[], []];
  let restorePrepare = () => {};

  const readyVersion = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/readyz' })).json().model.activeVersion as string | null;
  const history = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/v1/models/history', headers: READ })).json().history as { action: string; version: string }[];
  const waitAll = async (version: string, budgetMs: number) => {
    const deadline = Date.now() + budgetMs;
    while (Date.now() < deadline) {
      if ((await Promise.all(apps.map(readyVersion))).every((v) => v === version)) return true;
      await sleep(20);
    }
    return false;
  };
  /** Runs `during` on r0 right after it loaded `version` for a change, before the change is written. */
  const onLoaded = (version: string, during: () => Promise<unknown>) => {
    const models = apps[0].services.models;
    const original = models.prepare.bind(models);
    models.prepare = async (id: string) => {
      const loaded = await original(id);
      if (id === version) await during();
      return loaded;
    };
    restorePrepare = () => (models.prepare = original);
  };

  beforeAll(async () => {
    redis = await TestRedis.start();
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    for (let i = 0; i < 2; i++) {
      const app = await buildTestApp({ MODEL_STORE: storeDir, REDIS_URL: redis.url, API_KEYS, REDIS_COMMAND_TIMEOUT_MS: String(TIMEOUT_MS) });
      await app.ready();
      app.services.lifecycle.onActivated((v, action) => activated[i].push(`${action} ${v}`));
      apps.push(app);
    }
    admin = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
    expect(await waitAll(A, 5000)).toBe(true);
  });

  afterEach(async () => {
    restorePrepare();
    restorePrepare = () => {};
    redis.resume();
    await admin.call('CLIENT', 'UNPAUSE').catch(() => {});
  });

  afterAll(async () => {
    admin?.disconnect();
    for (const app of apps) await app.close();
    await redis?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  it('applied by Redis after the timeout (CLIENT PAUSE WRITE): answered 200 and completed — listeners run, mirror written', async () => {
    const pauseMs = 6 * TIMEOUT_MS;
    onLoaded(B, () => admin.call('CLIENT', 'PAUSE', String(pauseMs), 'WRITE'));
    const started = Date.now();
    const res = await apps[0].inject({ method: 'POST', url: `/v1/models/${B}/activate`, headers: ADMIN, payload: { reason: 'during a failover' } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(pauseMs - 100); // the write really was held
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().active).toBe(B);
    expect(await readyVersion(apps[0])).toBe(B); // swapped before answering, like any activation
    expect(activated[0]).toEqual([`activate ${B}`]); // persona reset / re-score ran on the requesting replica
    expect(activated[1]).toEqual([]);
    expect(await waitAll(B, 3000)).toBe(true);
    expect(JSON.parse(readFileSync(join(storeDir, 'state.json'), 'utf8')).active).toBe(B);
    const h = await history(apps[1]);
    expect(h[0]).toMatchObject({ action: 'activate', version: B });
    expect(h.filter((e) => e.action === 'activate' && e.version === B)).toHaveLength(1);
  });

  it('lost with a Redis that restarted empty: answered 503 and nothing changes', async () => {
    onLoaded(A, async () => {
      redis.pause(); // frozen: the write is sent but never answered...
      setTimeout(() => void redis.restart(), 2 * TIMEOUT_MS); // ...then the server is replaced, empty
    });
    const res = await apps[0].inject({ method: 'POST', url: `/v1/models/${A}/activate`, headers: ADMIN, payload: {} });
    expect(res.statusCode, res.body).toBe(503);
    expect(res.json().message).toContain('redis is unavailable');
    await sleep(2500); // more than a reconcile poll
    expect(await Promise.all(apps.map(readyVersion))).toEqual([B, B]);
    expect(activated[0]).toEqual([`activate ${B}`]);
    expect((await history(apps[0]))[0]).toMatchObject({ action: 'activate', version: B });
  });

  it('Redis not answering for longer than the wait: 503 saying the outcome is unknown (and it may still land)', async () => {
    const deadline = Date.now() + 10_000;
    while ((await apps[0].inject({ method: 'GET', url: '/readyz' })).json().redis !== 'up' && Date.now() < deadline) await sleep(50);
    const pauseMs = 7000; // longer than the wait for a conclusive re-read (5 s at this command timeout)
    onLoaded(A, () => admin.call('CLIENT', 'PAUSE', String(pauseMs), 'WRITE'));
    const res = await apps[0].inject({ method: 'POST', url: `/v1/models/${A}/activate`, headers: ADMIN, payload: {} });
    expect(res.statusCode, res.body).toBe(503);
    expect(res.json().message).toMatch(/outcome .*unknown/);
    expect(res.json().message).toContain('GET /v1/models/history');
    expect(activated[0]).toEqual([`activate ${B}`]);
    // Which is why it says so: once the pause ends Redis runs the write, and the fleet follows it.
    expect(await waitAll(A, pauseMs)).toBe(true);
    expect((await history(apps[1]))[0]).toMatchObject({ action: 'activate', version: A });
    // The replica that asked still completes the change (persona reset, re-score), once, itself.
    const until = Date.now() + 5000;
    while (activated[0].length < 2 && Date.now() < until) await sleep(50);
    expect(activated[0]).toEqual([`activate ${B}`, `activate ${A}`]);
    expect(activated[1]).toEqual([]);
  }, 30_000);
});
