import type { Phase } from '../lib/context.js';
import { fmt, loadTable } from '../lib/load.js';
import { runPaced } from '../lib/paced.js';
import { usageOf } from '../lib/children.js';

const RATE = Number(process.env.BENCH_LATENCY_RATE || 500);

/**
 * Latency without saturation. With 50 closed-loop connections, Little's law makes mean latency
 * = 50 / throughput (≥ 5 ms below 10k req/s, for the bare server too), so p99 there measures
 * queueing at saturation. Here requests are sent open-loop, evenly spaced at RATE req/s.
 */
export const latencyPhase: Phase = {
  name: 'latency',
  description: `single-row predict latency, open loop at ${RATE} req/s evenly spaced (below saturation)`,
  async run(ctx) {
    const service = await ctx.startService('service');
    const bare = await ctx.bareServer();
    const { durationSec, warmupSec } = ctx.settings;
    const results = [];
    const cpu: string[] = [];
    for (const [label, server] of [
      ['bare fastify', bare],
      ['service (L1 only)', service],
    ] as const) {
      const o = { label: `${label} @${RATE}/s`, url: server.url, path: '/v1/predict', rate: RATE, body: () => ctx.bodies.nextPredict() };
      if (warmupSec > 0) await runPaced({ ...o, durationSec: warmupSec });
      const u0 = await usageOf(server);
      results.push(await runPaced({ ...o, durationSec }));
      const u1 = await usageOf(server);
      cpu.push(`${label} ${fmt.n((u1.cpuUs - u0.cpuUs) / Math.max(1, u1.requests - u0.requests))} µs/req`);
    }
    ctx.log(loadTable(results));
    // At this rate most micro-batches hold one row, so fixed per-call costs (model call) show fully.
    ctx.log(`server CPU per request at ${RATE} req/s: ${cpu.join(', ')}`);
    const svc = results[1];
    ctx.check(`p99 latency @${RATE} req/s`, '<= 5 ms', `${fmt.ms(svc.p99)} ms (bare ${fmt.ms(results[0].p99)})`, svc.p99 <= 5);
    ctx.check('failed requests', '0', `${svc.non2xx + svc.errors}`, svc.non2xx + svc.errors === 0);
    await service.stop();
  },
};
