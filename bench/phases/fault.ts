import { setTimeout as sleep } from 'node:timers/promises';
import { TestRedis } from '../../test/helpers/redis-server.js';
import type { Phase } from '../lib/context.js';
import { getJson } from '../lib/children.js';
import { fmt, loadTable } from '../lib/load.js';

const DURATION = Number(process.env.BENCH_FAULT_DURATION || 10);

type Readiness = { status: string; redis: string };

/**
 * Redis outage under load: predict traffic for DURATION s, Redis killed at 30 % and restarted at
 * 60 % of it. Every request must still succeed (L2 is a cache), and /readyz must report Redis
 * "up" again afterwards.
 */
export const faultPhase: Phase = {
  name: 'fault',
  description: `Redis killed at ${(DURATION * 0.3).toFixed(0)} s and restarted at ${(DURATION * 0.6).toFixed(0)} s of ${DURATION} s predict load`,
  async run(ctx) {
    const redis = await TestRedis.start();
    ctx.defer(() => redis.close());
    // Every row through L2 (see the redis phase), so every request meets the outage.
    const service = await ctx.startService('service+redis', { REDIS_URL: redis.url, CACHE_ADMISSION: 'all' });
    ctx.log(`service pid ${service.pid}, redis ${redis.url}; ${ctx.settings.connections} connections, ${ctx.settings.warmupSec} s warm-up + ${DURATION} s`);

    const events: string[] = [];
    let t0 = 0;
    const at = () => `${((performance.now() - t0) / 1000).toFixed(2)} s`;
    let fault: Promise<void> = Promise.resolve();
    const readyz = async () => (await getJson<Readiness>(`${service.url}/readyz`)).body;

    const r = await ctx.predictLoad('service+redis (fault)', service, {
      durationSec: DURATION,
      onMeasureStart: () => {
        t0 = performance.now();
        fault = (async () => {
          await sleep(DURATION * 300);
          await redis.stop();
          events.push(`${at()} redis killed (SIGKILL)`);
          await sleep(DURATION * 150);
          const mid = await readyz().catch((e: Error) => ({ status: 'error', redis: e.message }));
          events.push(`${at()} /readyz during outage: status ${mid.status}, redis ${mid.redis}`);
          await sleep(Math.max(0, DURATION * 600 - (performance.now() - t0)));
          await redis.startProcess();
          events.push(`${at()} redis restarted (same port)`);
        })();
      },
    });
    await fault;
    for (const e of events) ctx.log(`  ${e}`);
    ctx.log(loadTable([r]));
    ctx.log(`per second (responses/non-2xx): ${r.perSecond.map((s) => `${s.responses}/${s.non2xx}`).join(' ')}`);
    const failed = r.non2xx + r.errors;
    ctx.log(`total responses ${fmt.n(r.responses)}, non-2xx ${r.non2xx}, errors ${r.errors} (timeouts ${r.timeouts}) → ${failed} failed`);

    // Readiness must come back to redis "up" once the client has reconnected.
    const since = performance.now();
    let last: Readiness | { status: string; redis: string } = { status: 'unknown', redis: 'unknown' };
    while (performance.now() - since < 15_000) {
      last = await readyz().catch((e: Error) => ({ status: 'error', redis: e.message }));
      if (last.redis === 'up') break;
      await sleep(100);
    }
    const waited = (performance.now() - since) / 1000;
    ctx.log(`/readyz after load: status ${last.status}, redis ${last.redis} (polled ${waited.toFixed(1)} s)`);
    const stats = await ctx.serviceStats(service);
    ctx.log(`L2 counted by the service: ${stats.l2.errors} errors, ${stats.l2.timeouts} timeouts (reads suspended ${stats.l2.suspensions}×), ${stats.l2.writes_dropped} scores not written`);
    ctx.check('failed requests during outage', '0', `${failed} of ${fmt.n(r.responses)}`, failed === 0);
    ctx.check('/readyz redis after restart', 'up', last.redis, last.redis === 'up');
    await service.stop();
    await redis.close();
  },
};
