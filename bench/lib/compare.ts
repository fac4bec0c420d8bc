import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import type { BenchContext } from './context.js';
import type { ServerHandle } from './children.js';
import { usageOf } from './children.js';
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
export async function compareWithBare(ctx: BenchContext, service: ServerHandle, serviceLabel: string, sidecar?: { label: string; pid: number }): Promise<Comparison> {
  const bareServer = await ctx.bareServer();
  const { durationSec, warmupSec, connections } = ctx.settings;
  const common = { connections, path: '/v1/predict', body: () => ctx.bodies.nextPredict() };
  const targets = [
    { label: 'bare fastify', server: bareServer, runs: [] as LoadResult[], cpuUs: 0, genUs: 0, machine: { busy: 0, total: 0 } },
    { label: serviceLabel, server: service, runs: [] as LoadResult[], cpuUs: 0, genUs: 0, machine: { busy: 0, total: 0 } },
  ];
  for (const t of targets) await runLoad({ ...common, label: t.label, url: t.server.url, durationSec: warmupSec, warmupSec: 0 });

  const slices = Math.max(1, Math.round(durationSec / SLICE_SEC));
  const sliceSec = durationSec / slices;
  const statsBefore = await ctx.serviceStats(service);
  let sidecarUs = 0;
  for (let i = 0; i < slices; i++) {
    const order = i % 2 === 0 ? targets : [...targets].reverse();
    for (const t of order) {
      const before = await cpuOf(t.server);
      const sidecarBefore = sidecar && t.server === service ? processCpuUs(sidecar.pid) : 0;
      const gen = process.cpuUsage();
      const m0 = machineTimes();
      t.runs.push(await runLoad({ ...common, label: t.label, url: t.server.url, durationSec: sliceSec, warmupSec: 0 }));
      const m1 = machineTimes();
      const g = process.cpuUsage(gen);
      t.genUs += g.user + g.system;
      t.machine.busy += m1.busy - m0.busy;
      t.machine.total += m1.total - m0.total;
      t.cpuUs += (await cpuOf(t.server)) - before;
      if (sidecar && t.server === service) sidecarUs += processCpuUs(sidecar.pid) - sidecarBefore;
    }
  }
  const statsAfter = await ctx.serviceStats(service);
  const l2 = Object.fromEntries(Object.entries(statsAfter.l2).map(([k, v]) => [k, v - statsBefore.l2[k as keyof typeof statsBefore.l2]])) as typeof statsAfter.l2;

  const [bareT, svcT] = targets;
  const bare = mergeResults(bareT.label, bareT.runs);
  const svc = mergeResults(svcT.label, svcT.runs);
  const ratio = svc.reqPerSec / bare.reqPerSec;
  const sliceRatios = svcT.runs.map((r, i) => r.reqPerSec / bareT.runs[i].reqPerSec);
  const bareCpu = bareT.cpuUs / Math.max(1, bare.responses);
  const svcCpu = svcT.cpuUs / Math.max(1, svc.responses);
  const scored = statsAfter.rowsScored - statsBefore.rowsScored;
  const batches = statsAfter.batches - statsBefore.batches;
  // Requests the service received (autocannon drops in-flight ones when a slice ends, so this is
  // a little more than the responses counted).
  const received = statsAfter.requests - statsBefore.requests;
  const missShare = received ? scored / received : NaN;

  ctx.log(loadTable([bare, svc]));
  ctx.log(`ratio service/bare (req/s): ${fmt.ratio(ratio)}   [${slices} interleaved ${sliceSec.toFixed(1)} s slices each; per-slice ratios ${sliceRatios.map(fmt.ratio).join(' ')}, median ${fmt.ratio(median(sliceRatios))}]`);
  ctx.log(
    table(
      ['CPU while loading', 'server µs/req', 'server core %', 'load-gen core %', 'machine busy % (2 cores, all processes)'],
      targets.map((t) => {
        const secs = t.runs.reduce((a, r) => a + r.durationSec, 0);
        const n = t.runs.reduce((a, r) => a + r.responses, 0);
        return [
          t.label,
          fmt.n(t.cpuUs / Math.max(1, n)),
          fmt.n(t.cpuUs / 1e4 / secs),
          fmt.n(t.genUs / 1e4 / secs),
          fmt.n((100 * t.machine.busy) / Math.max(1, t.machine.total)),
        ];
      }),
    ),
  );
  ctx.log(`CPU-cost ratio bare/service: ${fmt.ratio(bareCpu / svcCpu)} (the throughput ratio if both were CPU-bound on a quiet core)`);
  if (sidecar) ctx.log(`${sidecar.label} CPU while the service was loaded: ${fmt.n(sidecarUs / Math.max(1, svc.responses), 1)} µs per service response (same 2 cores)`);
  const bareRequests = (await usageOf(bareServer)).requests;
  ctx.log(`POST requests since process start (incl. warm-ups; divide --cpu-prof times by these): service ${statsAfter.requests}, bare ${bareRequests}`);
  ctx.log(
    `model calls: ${fmt.n(scored)} rows in ${fmt.n(batches)} micro-batches (avg ${fmt.n(scored / Math.max(1, batches), 1)} rows/batch); ` +
      `cache-miss share ${fmt.n(missShare * 100, 1)}%; L2 hits ${l2.hits}, L2 errors ${l2.errors}, L2 timeouts ${l2.timeouts} (reads suspended ${l2.suspensions}×), L2 writes dropped ${l2.writes_dropped}` +
      (l2.reads > 0 ? `, ${fmt.n(l2.reads)} L2 round trips (${fmt.n((statsAfter.requests - statsBefore.requests) / l2.reads, 1)} requests each)` : '') +
      `; backend ${statsAfter.backend}`,
  );
  return {
    bare,
    service: svc,
    ratio,
    sliceRatios,
    bareCpuUsPerReq: bareCpu,
    serviceCpuUsPerReq: svcCpu,
    missShare,
    l2Hits: l2.hits,
    l2Errors: l2.errors,
  };
}

/** CPU time (user + system) a process has used so far, in µs, from /proc (Linux). */
function processCpuUs(pid: number): number {
  try {
    // Fields after the parenthesized command name; utime and stime are the 12th and 13th of them.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1e6) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/** USER_HZ: the unit of /proc/<pid>/stat times (100 on Linux for every common architecture). */
const CLOCK_TICKS = 100;

function machineTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const c of cpus()) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

async function cpuOf(server: ServerHandle): Promise<number> {
  return (await usageOf(server)).cpuUs;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
