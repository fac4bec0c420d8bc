import autocannon from 'autocannon';

export interface LoadOptions {
  label: string;
  /** Base URL, e.g. http://127.0.0.1:1234 */
  url: string;
  path: string;
  connections: number;
  durationSec: number;
  /** Un-measured load before the measurement (same target, same body source). 0 = none. */
  warmupSec: number;
  /** Called for every request: its body (so bodies differ across requests). */
  body: () => string;
  pipelining?: number;
  timeoutSec?: number;
  /** Cap on total requests per second across connections (open-ish loop for latency runs). */
  overallRate?: number;
  /** Awaited after the warm-up, right before the measured run (e.g. to snapshot counters). */
  beforeMeasure?: () => Promise<void>;
  /** Called once the measured run has started (for fault injection). */
  onMeasureStart?: () => void;
}

export interface LoadResult {
  label: string;
  durationSec: number;
  /** Responses per second (all statuses). */
  reqPerSec: number;
  responses: number;
  ok2xx: number;
  non2xx: number;
  /** Connection errors, including timeouts. */
  errors: number;
  timeouts: number;
  /** Latency in ms from exact per-response timings (autocannon's own histogram rounds to 1 ms). */
  p50: number;
  p90: number;
  p99: number;
  max: number;
  statusCodes: Record<string, number>;
  /** Responses / non-2xx per elapsed second of the measured run. */
  perSecond: { responses: number; non2xx: number }[];
  /** Every response latency (ms, sorted), so slices can be merged. */
  latencies: number[];
}

/** Runs autocannon once (warm-up, if any, first), recording every response's latency. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  if (o.warmupSec > 0) await cannon(o, o.warmupSec, false);
  await o.beforeMeasure?.();
  return cannon(o, o.durationSec, true);
}

async function cannon(o: LoadOptions, durationSec: number, measured: boolean): Promise<LoadResult> {
  const latencies: number[] = [];
  const perSecond: { responses: number; non2xx: number }[] = [];
  let non2xx = 0;
  let start = 0;
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: durationSec,
        pipelining: o.pipelining ?? 1,
        ...(o.overallRate ? { overallRate: o.overallRate } : {}),
        timeout: o.timeoutSec ?? 10,
        requests: [
          {
            method: 'POST',
            path: o.path,
            headers: { 'content-type': 'application/json' },
            setupRequest: (req) => ({ ...req, body: o.body() }),
          },
        ],
      },
      (err, res) => (err ? reject(err) : resolve(res)),
    );
    start = performance.now();
    if (measured) o.onMeasureStart?.();
    // Instance-level 'response' is (client, statusCode, resBytes, responseTime ms).
    (instance as unknown as NodeJS.EventEmitter).on('response', (_client: unknown, statusCode: number, _bytes: number, ms: number) => {
      latencies.push(ms);
      const sec = Math.floor((performance.now() - start) / 1000);
      while (perSecond.length <= sec) perSecond.push({ responses: 0, non2xx: 0 });
      perSecond[sec].responses++;
      if (statusCode < 200 || statusCode >= 300) {
        non2xx++;
        perSecond[sec].non2xx++;
      }
    });
  });
  const statusCodes: Record<string, number> = {};
  for (const [code, v] of Object.entries(result.statusCodeStats ?? {})) statusCodes[code] = v.count ?? 0;
  return summarize(o.label, result.duration || durationSec, latencies, non2xx, result.errors, result.timeouts, statusCodes, perSecond);
}

function summarize(
  label: string,
  durationSec: number,
  latencies: number[],
  non2xx: number,
  errors: number,
  timeouts: number,
  statusCodes: Record<string, number>,
  perSecond: LoadResult['perSecond'],
): LoadResult {
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil((p / 100) * latencies.length) - 1)] : NaN);
  return {
    label,
    durationSec,
    reqPerSec: latencies.length / durationSec,
    responses: latencies.length,
    ok2xx: latencies.length - non2xx,
    non2xx,
    errors,
    timeouts,
    p50: pct(50),
    p90: pct(90),
    p99: pct(99),
    max: latencies.length ? latencies[latencies.length - 1] : NaN,
    statusCodes,
    perSecond,
    latencies,
  };
}

/** Combines several runs against one target (e.g. interleaved slices) into one result. */
export function mergeResults(label: string, runs: LoadResult[]): LoadResult {
  const codes: Record<string, number> = {};
  for (const r of runs) for (const [c, n] of Object.entries(r.statusCodes)) codes[c] = (codes[c] ?? 0) + n;
  const sum = (f: (r: LoadResult) => number) => runs.reduce((a, r) => a + f(r), 0);
  return summarize(
    label,
    sum((r) => r.durationSec),
    runs.flatMap((r) => r.latencies),
    sum((r) => r.non2xx),
    sum((r) => r.errors),
    sum((r) => r.timeouts),
    codes,
    runs.flatMap((r) => r.perSecond),
  );
}

export const fmt = {
  n: (x: number, digits = 0) => (Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : 'n/a'),
  ms: (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a'),
  ratio: (x: number) => (Number.isFinite(x) ? x.toFixed(3) : 'n/a'),
};

/** A fixed-width text table. */
export function table(headers: string[], rows: (string | number)[][], leftAligned = 1): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i < leftAligned ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(cells[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

/** The standard result table for load runs. */
export function loadTable(results: LoadResult[]): string {
  return table(
    ['target', 'req/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'responses', 'non-2xx', 'errors', 'timeouts'],
    results.map((r) => [r.label, fmt.n(r.reqPerSec), fmt.ms(r.p50), fmt.ms(r.p90), fmt.ms(r.p99), fmt.ms(r.max), r.responses, r.non2xx, r.errors, r.timeouts]),
  );
}
