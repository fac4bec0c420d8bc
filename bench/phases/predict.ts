import type { Phase } from '../lib/context.js';
import { compareWithBare } from '../lib/compare.js';
import { fmt } from '../lib/load.js';

/** POST /v1/predict, L1 cache only, against the bare Fastify baseline. */
export const predictPhase: Phase = {
  name: 'predict',
  description: 'single-row predict vs bare Fastify (no Redis)',
  async run(ctx) {
    const service = await ctx.startService('service');
    ctx.log(`service pid ${service.pid} backend ${String(service.info.backend)}; ${ctx.settings.connections} connections, ${ctx.settings.warmupSec} s warm-up + ${ctx.settings.durationSec} s each`);
    const c = await compareWithBare(ctx, service, 'service (L1 only)');
    ctx.check('service/bare req/s', '>= 0.85', `${fmt.ratio(c.ratio)} (CPU ${fmt.ratio(c.bareCpuUsPerReq / c.serviceCpuUsPerReq)})`, c.ratio >= 0.85);
    ctx.check(`p99 latency (${ctx.settings.connections} conns)`, '<= 5 ms', `${fmt.ms(c.service.p99)} ms (bare ${fmt.ms(c.bare.p99)})`, c.service.p99 <= 5);
    ctx.check('failed requests', '0', `${c.service.non2xx + c.service.errors}`, c.service.non2xx + c.service.errors === 0);
    await service.stop();
  },
};
