import { rmSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { TestRedis } from './helpers/redis-server.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';

const A = BUNDLED_VERSION;
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const ADMIN = { authorization: 'Bearer admin-key-123' };

/**
 * A version deleted on one replica while another activates it (or starts it as a canary): one of
 * the two must be refused, and the fleet state must never name a version that is gone.
 */
describe('version delete racing a change on another replica (two replicas, one Redis)', () => {
  let redis: TestRedis;
  let storeDir: string;
  let r0: FastifyInstance;
  let r1: FastifyInstance;

  beforeAll(async () => {
    redis = await TestRedis.start();
    storeDir = copyDefaultStore();
    r0 = await buildTestApp({ MODEL_STORE: storeDir, REDIS_URL: redis.url, API_KEYS });
    r1 = await buildTestApp({ MODEL_STORE: storeDir, REDIS_URL: redis.url, API_KEYS });
    await Promise.all([r0.ready(), r1.ready()]);
  });
  afterAll(async () => {
    await r0?.close();
    await r1?.close();
    await redis?.close();
    rmSync(storeDir, { recursive: true, force: true });
  });

  it.each([
    ['activate', (id: string) => r1.inject({ method: 'POST', url: `/v1/models/${id}/activate`, headers: ADMIN, payload: {} })],
    ['canary', (id: string) => r1.inject({ method: 'POST', url: `/v1/models/${id}/canary`, headers: ADMIN, payload: { percent: 50 } })],
  ] as const)('%s on r1 and delete on r0 at once: never both accepted, and the state never names a deleted version', async (kind, change) => {
    let bothAccepted = 0;
    for (let round = 0; round < 12; round++) {
      const id = `race-${kind}-${round}`;
      addSecondVersion(storeDir, id, { biasShift: 1 });
      await r1.services.models.prepare(id); // loaded already, as in the report: the change is quick
      const ticks = round % 4;
      const [changed, deleted] = await Promise.all([
        change(id),
        (async () => {
          for (let t = 0; t < ticks; t++) await new Promise((r) => setImmediate(r));
          return r0.inject({ method: 'DELETE', url: `/v1/models/${id}`, headers: ADMIN });
        })(),
      ]);
      if (changed.statusCode === 200 && deleted.statusCode === 200) bothAccepted++;
      expect([200, 404, 409]).toContain(changed.statusCode); // 404 when the delete finished first
      expect([200, 409]).toContain(deleted.statusCode);
      const state = await r0.services.lifecycle.state();
      for (const named of [state.active, state.canary?.version]) if (named) expect(r0.services.store.has(named), `${named} in the state`).toBe(true);
      // Back to A without a canary for the next round.
      await r0.inject({ method: 'POST', url: '/v1/models/canary/abort', headers: ADMIN, payload: {} });
      if (state.active !== A) expect((await r0.inject({ method: 'POST', url: `/v1/models/${A}/activate`, headers: ADMIN, payload: {} })).statusCode).toBe(200);
    }
    expect(bothAccepted).toBe(0);
  }, 120_000);
});
