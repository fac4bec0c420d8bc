import { Agent, request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { mergeResults, type LoadResult } from './load.js';

export interface PacedOptions {
  label: string;
  url: string;
  path: string;
  /** Requests per second, evenly spaced (open loop: a slow answer does not delay the next send). */
  rate: number;
  durationSec: number;
  body: () => string;
  maxSockets?: number;
  /** Extra request headers (e.g. Authorization). */
  headers?: Record<string, string>;
}

/**
 * Open-loop, evenly paced POSTs (autocannon's `overallRate` sends each second's quota in a burst,
 * which measures its own burst queueing). Latency = send → last byte of the response.
 */
export async function runPaced(o: PacedOptions): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: o.maxSockets ?? 64 });
  const { hostname, port } = new URL(o.url);
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
  const inflight = new Set<Promise<void>>();
  const interval = 1000 / o.rate;
  const start = performance.now();
  const total = Math.round(o.rate * o.durationSec);
  for (let i = 0; i < total; i++) {
    const due = start + i * interval;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    const body = o.body();
    const sent = performance.now();
    const p = new Promise<void>((resolve) => {
      const req = request(
        { agent, hostname, port, path: o.path, method: 'POST', headers: { ...o.headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('end', () => {
            latencies.push(performance.now() - sent);
            if (!res.statusCode || res.statusCode < 200 || res.statusCode >= 300) non2xx++;
            resolve();
          });
        },
      );
      req.setTimeout(10_000, () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end(body);
    });
    inflight.add(p);
    void p.then(() => inflight.delete(p));
  }
  await Promise.all(inflight);
  const elapsed = (performance.now() - start) / 1000;
  agent.destroy();
  return mergeResults(o.label, [
    { label: o.label, durationSec: elapsed, reqPerSec: 0, responses: 0, ok2xx: 0, non2xx, errors, timeouts: 0, p50: 0, p90: 0, p99: 0, max: 0, statusCodes: {}, perSecond: [], latencies },
  ]);
}
