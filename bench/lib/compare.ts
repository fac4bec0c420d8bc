import type { BenchContext, ServiceStats } from './context.js';
import type { ServerHandle } from './children.js';
import { getJson } from './children.js';
import { fmt, loadTable, mergeResults, runLoad, table, type LoadResult } from './load.js';

export interface Comparison {
  bare: LoadResult;
  service: LoadResult;
  /** Service req/s ÷ bare req/s over the interleaved slices. */
  ratio: number;
  /** Per-slice-pair ratios (spread shows the machine's noise). */
  sliceRatios: number[];
  /** CPU µs per response in each server process. */
  bareCpuUsPerReq: number;
  serviceCpuUsPerReq: number;
  /** Share of measured service requests the model actually scored (i.e. cache misses). */
  missShare: number;
  l2Hits: number;
  l2Errors: number;
}

const SLICE_SEC = Number(process.env.BENCH_SLICE || 2);

/**
 * Single-row predict traffic against the bare baseline and the service. After a warm-up of each,
 * the measurement is cut into short slices that alternate between the two (A B B A A B …), so
 * background load on the shared machine hits both about equally; the slices are then merged.
 * Also reports CPU per request inside each server process, which noise distorts much less.
 */
export async function compareWithBare(ctx: BenchContext, service: ServerHandle, serviceLabel: string): Promise<Comparison> {
  const bareServer = await ctx.bareServer();
  const { durationSec, warmupSec, connections } = ctx.settings;
  const common = { connections, path: '/v1/predict', body: () => ctx.bodies.nextPredict() };
  const targets = [
    { label: 'bare fastify', server: bareServer, runs: [] as LoadResult[], cpuUs: 0 },
    { label: serviceLabel, server: service, runs: [] as LoadResult[], cpuUs: 0 },
  ];
  for (const t of targets) await runLoad({ ...common, label: t.label, url: t.server.url, durationSec: warmupSec, warmupSec: 0 });

  const slices = Math.max(1, Math.round(durationSec / SLICE_SEC));
  const sliceSec = durationSec / slices;
  const statsBefore = await ctx.serviceStats(service);
  for (let i = 0; i < slices; i++) {
    const order = i % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      const before = await cpuOf(t.server);
      t.runs.push(await runLoad({ ...common, label: t.label, url: t.server.url, durationSec: sliceSec, warmupSec: 0 }));
      t.cpuUs += (await cpuOf(t.server)) - before;
    }
  }
  const statsAfter = await ctx.serviceStats(service);

  const [bareT, svcT] = targets;
  const bare = mergeResults(bareT.label, bareT.runs);
  const svc = mergeResults(svcT.label, svcT.runs);
  const ratio = svc.reqPerSec / bare.reqPerSec;
  const sliceRatios = svcT.runs.map((r, i) => r.reqPerSec / bareT.runs[i].reqPerSec);
  const bareCpu = bareT.cpuUs / Math.max(1, bare.responses);
  const svcCpu = svcT.cpuUs / Math.max(1, svc.responses);
  const scored = statsAfter.rowsScored - statsBefore.rowsScored;
  const batches = statsAfter.batches - statsBefore.batches;
  const missShare = svc.responses ? scored / svc.responses : NaN;

  ctx.log(loadTable([bare, svc]));
  ctx.log(`ratio service/bare (req/s): ${fmt.ratio(ratio)}   [${slices} interleaved ${sliceSec.toFixed(1)} s slices each; per-slice ratios ${sliceRatios.map(fmt.ratio).join(' ')}]`);
  ctx.log(
    table(
      ['server CPU per response', 'µs/req', 'max req/s on one core'],
      [
        ['bare fastify', fmt.n(bareCpu), fmt.n(1e6 / bareCpu)],
        [serviceLabel, fmt.n(svcCpu), fmt.n(1e6 / svcCpu)],
      ],
    ),
  );
  ctx.log(`CPU-cost ratio bare/service: ${fmt.ratio(bareCpu / svcCpu)} (the throughput ratio if both were CPU-bound on a quiet core)`);
  ctx.log(
    `model calls: ${fmt.n(scored)} rows in ${fmt.n(batches)} micro-batches (avg ${fmt.n(scored / Math.max(1, batches), 1)} rows/batch); ` +
      `cache-miss share ${fmt.n(missShare * 100, 1)}%; L2 hits ${statsAfter.l2Hits - statsBefore.l2Hits}, L2 errors ${statsAfter.l2Errors - statsBefore.l2Errors}; backend ${statsAfter.backend}`,
  );
  return {
    bare,
    service: svc,
    ratio,
    sliceRatios,
    bareCpuUsPerReq: bareCpu,
    serviceCpuUsPerReq: svcCpu,
    missShare,
    l2Hits: statsAfter.l2Hits - statsBefore.l2Hits,
    l2Errors: statsAfter.l2Errors - statsBefore.l2Errors,
  };
}

async function cpuOf(server: ServerHandle): Promise<number> {
  return (await getJson<Pick<ServiceStats, 'cpuUs'>>(`${server.url}/__bench/stats`)).body.cpuUs;
}
