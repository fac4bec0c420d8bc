import { TestRedis } from '../../test/helpers/redis-server.js';
import type { Phase } from '../lib/context.js';
import { compareWithBare } from '../lib/compare.js';
import { fmt } from '../lib/load.js';

/** POST /v1/predict with Redis as the L2 cache, against the bare Fastify baseline. */
export const redisPhase: Phase = {
  name: 'redis',
  description: 'single-row predict vs bare Fastify, Redis as L2',
  async run(ctx) {
    const redis = await TestRedis.start();
    ctx.defer(() => redis.close());
    // Every row through L2: bench bodies never repeat, so with the default admission (a row is
    // cached from its second sighting) no request would reach Redis; this phase measures the
    // Redis path itself, an L2 read and write per request.
    const service = await ctx.startService('service+redis', { REDIS_URL: redis.url, CACHE_ADMISSION: 'all' });
    ctx.log(`service pid ${service.pid} backend ${String(service.info.backend)}, redis ${redis.url}, CACHE_ADMISSION=all`);
    const c = await compareWithBare(ctx, service, 'service (L1 + Redis L2)', redis.pid ? { label: 'redis-server', pid: redis.pid } : undefined);
    ctx.check('service/bare req/s', '>= 0.70', `${fmt.ratio(c.ratio)} (CPU ${fmt.ratio(c.bareCpuUsPerReq / c.serviceCpuUsPerReq)})`, c.ratio >= 0.7);
    ctx.check(`p99 latency (${ctx.settings.connections} conns)`, '<= 5 ms', `${fmt.ms(c.service.p99)} ms (bare ${fmt.ms(c.bare.p99)})`, c.service.p99 <= 5);
    ctx.check('failed requests', '0', `${c.service.non2xx + c.service.errors}`, c.service.non2xx + c.service.errors === 0);
    await service.stop();
    await redis.close();
  },
};
