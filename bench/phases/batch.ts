import type { Phase } from '../lib/context.js';
import { fmt, loadTable } from '../lib/load.js';
import { usageOf, type ServerHandle } from '../lib/children.js';

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
    /** Loads one server with fresh 1000-row bodies; returns the load result and its CPU µs per row. */
    const measure = async (server: ServerHandle, label: string) => {
      let before = { cpuUs: 0, requests: 0 };
      const result = await ctx.load({
        beforeMeasure: async () => {
          before = await usageOf(server);
        },
        label,
        url: server.url,
        path: '/v1/predict/batch',
        connections: CONNECTIONS,
        timeoutSec: 30,
        body: () => ctx.bodies.nextBatch(ROWS),
      });
      const after = await usageOf(server);
      return { result, usPerRow: (after.cpuUs - before.cpuUs) / Math.max(1, (after.requests - before.requests) * ROWS) };
    };
    // The floor: the bare route parses the same bodies and answers as many constant rows.
    const { result: b, usPerRow: bareUsPerRow } = await measure(bare, `bare batch x${ROWS}`);
    const { result: r, usPerRow } = await measure(service, `service batch x${ROWS}`);
    const rowsPerSec = r.reqPerSec * ROWS;
    ctx.log(loadTable([b, r]));
    ctx.log(`rows/s: ${fmt.n(rowsPerSec)} (req/s ${fmt.n(r.reqPerSec, 1)} × ${ROWS}); p99 ${fmt.ms(r.p99)} ms; bare ${fmt.n(b.reqPerSec * ROWS)} rows/s (ratio ${fmt.n(r.reqPerSec / b.reqPerSec, 3)})`);
    ctx.log(`server CPU ${fmt.n(usPerRow, 1)} µs/row (bare: ${fmt.n(bareUsPerRow, 1)} µs/row parsing and answering the same bodies) → at most ${fmt.n(1e6 / usPerRow)} rows/s per fully used core`);
    ctx.check('rows/s', '>= 150,000', fmt.n(rowsPerSec), rowsPerSec >= 150_000);
    ctx.check('failed requests', '0', `${r.non2xx + r.errors}`, r.non2xx + r.errors === 0);
    await service.stop();
  },
};
