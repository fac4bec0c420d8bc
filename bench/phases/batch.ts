import type { Phase } from '../lib/context.js';
import { fmt, loadTable } from '../lib/load.js';
import { usageOf } from '../lib/children.js';

const ROWS = Number(process.env.BENCH_BATCH_ROWS || 1000);
const CONNECTIONS = Number(process.env.BENCH_BATCH_CONNECTIONS || 8);

/**
 * POST /v1/predict/batch with 1000-row bodies. Every request carries rows no earlier request had
 * (see ShopperBodies), so the cache never answers and the model scores every row.
 */
export const batchPhase: Phase = {
  name: 'batch',
  description: `batch predict, ${ROWS}-row bodies, ${CONNECTIONS} connections`,
  async run(ctx) {
    const service = await ctx.startService('service');
    const bare = await ctx.bareServer();
    const sample = ctx.bodies.nextBatch(ROWS);
    ctx.log(`service pid ${service.pid} backend ${String(service.info.backend)}; body ≈ ${fmt.n(sample.length / 1024)} KiB, ${CONNECTIONS} connections`);
    // The floor: the bare route parses the same bodies and answers as many constant rows.
    let b0 = { cpuUs: 0, requests: 0 };
    const b = await ctx.load({
      beforeMeasure: async () => {
        b0 = await usageOf(bare);
      },
      label: `bare batch x${ROWS}`,
      url: bare.url,
      path: '/v1/predict/batch',
      connections: CONNECTIONS,
      timeoutSec: 30,
      body: () => ctx.bodies.nextBatch(ROWS),
    });
    const b1 = await usageOf(bare);
    let u0 = { cpuUs: 0, requests: 0 };
    const r = await ctx.load({
      beforeMeasure: async () => {
        u0 = await usageOf(service);
      },
      label: `service batch x${ROWS}`,
      url: service.url,
      path: '/v1/predict/batch',
      connections: CONNECTIONS,
      timeoutSec: 30,
      body: () => ctx.bodies.nextBatch(ROWS),
    });
    const rowsPerSec = r.reqPerSec * ROWS;
    ctx.log(loadTable([b, r]));
    const u1 = await usageOf(service);
    const usPerRow = (u1.cpuUs - u0.cpuUs) / Math.max(1, (u1.requests - u0.requests) * ROWS);
    const bareUsPerRow = (b1.cpuUs - b0.cpuUs) / Math.max(1, (b1.requests - b0.requests) * ROWS);
    ctx.log(`rows/s: ${fmt.n(rowsPerSec)} (req/s ${fmt.n(r.reqPerSec, 1)} × ${ROWS}); p99 ${fmt.ms(r.p99)} ms; bare ${fmt.n(b.reqPerSec * ROWS)} rows/s (ratio ${fmt.n(r.reqPerSec / b.reqPerSec, 3)})`);
    ctx.log(`server CPU ${fmt.n(usPerRow, 1)} µs/row (bare: ${fmt.n(bareUsPerRow, 1)} µs/row parsing and answering the same bodies) → at most ${fmt.n(1e6 / usPerRow)} rows/s per fully used core`);
    ctx.check('rows/s', '>= 150,000', fmt.n(rowsPerSec), rowsPerSec >= 150_000);
    ctx.check('failed requests', '0', `${r.non2xx + r.errors}`, r.non2xx + r.errors === 0);
    await service.stop();
  },
};
