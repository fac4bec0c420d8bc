import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';

const A = BUNDLED_VERSION;
const B = 'shoppers-mlp-v2';
const ADMIN = { authorization: 'Bearer admin-key-123' };
const PREDICT = { authorization: 'Bearer pred-key-123' };
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const CONVERGE_BUDGET_MS = 1000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Ready {
  status: string;
  model: { activeVersion: string | null; canaryVersion: string | null };
  redis: 'up' | 'down' | 'disabled';
}
const readyz = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/readyz' })).json() as Ready;

/** Polls until every app satisfies `ok`, or the budget runs out; returns the elapsed ms (Infinity if never). */
async function pollAll(apps: FastifyInstance[], ok: (r: Ready) => boolean, budgetMs: number, since = performance.now()): Promise<number> {
  for (;;) {
    const states = await Promise.all(apps.map(readyz));
    const elapsed = performance.now() - since;
    if (states.every(ok)) return elapsed;
    if (elapsed > budgetMs) return Infinity;
    await sleep(10);
  }
}

/**
 * A steady stream of predictions against each app until stopped (`perApp` clients each, with a
 * short pause between requests, like real traffic rather than a saturating benchmark); counts
 * non-200 answers.
 */
function startLoad(apps: FastifyInstance[], perApp = 3, pauseMs = 3) {
  const rows = shopperFeatureRows(400);
  let stopped = false;
  let n = 0;
  const failures: string[] = [];
  const versions = apps.map(() => new Set<string>());
  const loops = apps.flatMap((app, ai) =>
    Array.from({ length: perApp }, async (_, w) => {
      let i = w;
      while (!stopped) {
        const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { userId: `u${i}`, features: rows[i % rows.length] } });
        n++;
        if (res.statusCode !== 200) failures.push(`app${ai + 1}: ${res.statusCode} ${res.body}`);
        else versions[ai].add(res.json().modelVersion);
        i += perApp;
        await sleep(pauseMs);
      }
    }),
  );
  return {
    get count() {
      return n;
    },
    failures,
    versions,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

async function withRedisClient<T>(url: string, fn: (r: Redis) => Promise<T>): Promise<T> {
  const r = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    return await fn(r);
  } finally {
    r.disconnect();
  }
}

describe('a fleet of replicas sharing Redis and the store volume', () => {
  let redis: TestRedis;
  let storeDir: string;
  const apps: FastifyInstance[] = [];
  const build = async () => {
    const app = await buildTestApp({ MODEL_STORE: storeDir, REDIS_URL: redis.url, API_KEYS });
    await app.ready();
    apps.push(app);
    return app;
  };
  const activate = (app: FastifyInstance, version: string) =>
    app.inject({ method: 'POST', url: `/v1/models/${version}/activate`, headers: ADMIN, payload: { reason: 'fleet test' } });
  const localState = () => JSON.parse(readFileSync(join(storeDir, 'state.json'), 'utf8')) as { active: string | null };

  beforeAll(async () => {
    redis = await TestRedis.start();
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    for (let i = 0; i < 3; i++) await build();
    expect(await pollAll(apps, (r) => r.redis === 'up' && r.model.activeVersion === A, 5000)).toBeLessThan(Infinity);
  });

  afterAll(async () => {
    for (const app of apps) await app.close();
    await redis?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  it('activating B on one replica converges on all of them within 1 s, with predictions flowing and none failing', async () => {
    const load = startLoad(apps);
    try {
      await converge(load);
    } finally {
      await load.stop();
    }
    expect(load.failures).toEqual([]);
    // Every replica served A before the change and B after it.
    for (const v of load.versions) expect(v).toEqual(new Set([A, B]));
  });

  async function converge(load: ReturnType<typeof startLoad>) {
    while (load.count < 300) await sleep(5);
    const res = await activate(apps[0], B);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().active).toBe(B);
    // The activating replica has swapped when it answers; the others follow through Redis.
    expect((await readyz(apps[0])).model.activeVersion).toBe(B);
    const elapsed = await pollAll(apps.slice(1), (r) => r.model.activeVersion === B, CONVERGE_BUDGET_MS);
    expect(elapsed).toBeLessThanOrEqual(CONVERGE_BUDGET_MS);
    const atConvergence = load.count;
    while (load.count < atConvergence + 300) await sleep(5);
  }

  it('after the change every replica answers with B and shows the same audit trail', async () => {
    for (const app of apps) {
      const p = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features: shopperFeatureRows(1)[0] } });
      expect(p.json().modelVersion).toBe(B);
    }
    // Every replica reads the same audit trail.
    for (const app of apps) {
      const h = (await app.inject({ method: 'GET', url: '/v1/models/history', headers: PREDICT })).json().history;
      expect(h[0]).toMatchObject({ action: 'activate', version: B, previous: A, reason: 'fleet test' });
    }
  });

  it('a replica started afterwards adopts B', async () => {
    const fourth = await build();
    expect((await readyz(fourth)).model.activeVersion).toBe(B);
    expect(await pollAll([fourth], (r) => r.redis === 'up' && r.model.activeVersion === B, 5000)).toBeLessThan(Infinity);
    const p = await fourth.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features: shopperFeatureRows(1)[0] } });
    expect(p.statusCode).toBe(200);
    expect(p.json().modelVersion).toBe(B);
  });

  it('with Redis down replicas keep serving, state changes are refused and nothing changes; after Redis returns they reconcile', async () => {
    const load = startLoad(apps);
    try {
      await outageAndRecovery(load);
    } finally {
      await load.stop();
    }
    expect(load.failures).toEqual([]);
    expect(localState().active).toBe(A);

    const history = (await apps[3].inject({ method: 'GET', url: '/v1/models/history', headers: PREDICT })).json().history;
    expect(history[0]).toMatchObject({ action: 'activate', version: A, previous: B });
    expect(history[1]).toMatchObject({ action: 'activate', version: B, previous: A }); // the refused attempts left no trace
  });

  async function outageAndRecovery(load: ReturnType<typeof startLoad>) {
    while (load.count < 100) await sleep(5);
    await redis.stop();
    expect(await pollAll(apps, (r) => r.redis === 'down', 5000)).toBeLessThan(Infinity);

    // Every kind of change is refused, on any replica, with a clear error.
    const attempts = [
      () => activate(apps[0], A),
      () => apps[1].inject({ method: 'POST', url: '/v1/models/rollback', headers: ADMIN, payload: {} }),
      () => apps[2].inject({ method: 'POST', url: `/v1/models/${A}/activate`, headers: ADMIN, payload: {} }),
      () => apps[3].inject({ method: 'POST', url: '/v1/models/canary/abort', headers: ADMIN, payload: {} }),
    ];
    const refused = await attempts[0]();
    expect(refused.statusCode, refused.body).toBe(503);
    expect(refused.json()).toMatchObject({ error: 'unavailable', message: expect.stringContaining('redis is unavailable') });
    expect((await attempts[1]()).statusCode).toBe(503);
    expect((await attempts[2]()).statusCode).toBe(503);
    expect((await attempts[3]()).statusCode).toBe(409); // nothing to abort: refused before any write

    // Let more than one reconcile poll (2 s) pass: no replica moves, the shared mirror is untouched.
    const before = load.count;
    await sleep(2500);
    expect(load.count).toBeGreaterThan(before);
    for (const app of apps) {
      const r = await readyz(app);
      expect(r.status).toBe('ready');
      expect(r.model.activeVersion).toBe(B);
    }
    expect(localState().active).toBe(B);

    // Redis comes back empty (no persistence): replicas reconnect, resubscribe and re-seed the fleet state.
    await redis.startProcess();
    expect(await pollAll(apps, (r) => r.redis === 'up', 10_000)).toBeLessThan(Infinity);
    await withRedisClient(redis.url, async (r) => {
      const deadline = performance.now() + 10_000;
      let subscribers = 0;
      while (performance.now() < deadline) {
        const [, count] = (await r.pubsub('NUMSUB', 'pi:models:changed')) as [string, number];
        subscribers = Number(count);
        if (subscribers === apps.length) break;
        await sleep(20);
      }
      expect(subscribers).toBe(apps.length);
      const seeded = JSON.parse((await r.get('pi:models:state')) ?? 'null') as { active: string } | null;
      expect(seeded?.active).toBe(B);
    });

    // The fleet follows changes again.
    const res = await activate(apps[0], A);
    expect(res.statusCode, res.body).toBe(200);
    const elapsed = await pollAll(apps, (r) => r.model.activeVersion === A, CONVERGE_BUDGET_MS);
    expect(elapsed).toBeLessThanOrEqual(CONVERGE_BUDGET_MS);
    const atConvergence = load.count;
    while (load.count < atConvergence + 100) await sleep(5);
  }

  it('starting the same shadow again begins a new session on every replica, not only on the one that started it', async () => {
    const shadowN = async (app: FastifyInstance) => ((await app.inject({ url: `/v1/models/${B}/shadow`, headers: PREDICT })).json() as { n: number }).n;
    const start = () => apps[0].inject({ method: 'POST', url: `/v1/models/${B}/canary`, headers: ADMIN, payload: { mode: 'shadow', reason: 'shadow session' } });
    expect((await start()).statusCode).toBe(200);
    expect(await pollAll(apps, (r) => r.model.canaryVersion === B, 5000)).toBeLessThan(Infinity);
    const rows = shopperFeatureRows(20);
    for (const app of apps) for (const features of rows) expect((await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features } })).statusCode).toBe(200);
    const deadline = performance.now() + 10_000;
    while ((await shadowN(apps[1])) < rows.length && performance.now() < deadline) await sleep(10);
    expect(await shadowN(apps[1])).toBe(rows.length);
    expect((await start()).statusCode).toBe(200); // the same version and mode again
    const restarted = performance.now() + 10_000;
    while ((await shadowN(apps[1])) !== 0 && performance.now() < restarted) await sleep(20);
    expect(await shadowN(apps[1])).toBe(0);
    expect(await shadowN(apps[0])).toBe(0);
    expect((await apps[0].inject({ method: 'POST', url: '/v1/models/canary/abort', headers: ADMIN, payload: {} })).statusCode).toBe(200);
    expect(await pollAll(apps, (r) => r.model.canaryVersion === null, 5000)).toBeLessThan(Infinity);
  });
});
