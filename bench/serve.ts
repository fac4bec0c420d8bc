/**
 * Bench child: the real service (buildApp + listen) in its own process, so the load generator
 * and the server never share an event loop. Reads the same environment variables as production
 * (PORT=0 picks a free port). Prints one `BENCH_READY {json}` line on stdout once listening.
 *
 * Adds one bench-only route, GET /__bench/stats, with counters the bench uses to verify that the
 * cache-miss path was exercised (rows the model scored, L1 size, L2 hits/errors) and the process's
 * CPU time (so CPU per request can be compared with the bare baseline).
 */
import type * as AppModule from '../src/app.js';
import type * as EnvModule from '../src/config/env.js';

// The compiled build by default, as `npm start` runs it (bench/run.ts builds it first); with
// BENCH_SERVICE_CODE=src, the TypeScript sources through tsx, as `npm run dev` does. The code is the
// same; what differs is startup and the training worker, which from source transpiles its modules.
const code = process.env.BENCH_SERVICE_CODE === 'src' ? '../src' : '../dist';
const { buildApp } = (await import(`${code}/app.js`)) as typeof AppModule;
const { loadConfig } = (await import(`${code}/config/env.js`)) as typeof EnvModule;

const config = loadConfig(process.env);
const app = await buildApp(config);

app.get('/__bench/stats', { schema: { hide: true } }, async () => {
  const { models, cache } = app.services;
  const m = models.active;
  return {
    modelVersion: m?.id ?? null,
    batches: m?.batcher.batches ?? 0,
    rowsScored: m?.batcher.rowsScored ?? 0,
    l1Size: cache.size,
    l2: cache.l2?.stats() ?? { reads: 0, hits: 0, errors: 0, timeouts: 0, suspensions: 0, writes_dropped: 0 },
    backend: app.services.backend,
    /** CPU time this process has used (user + system, µs), for CPU-per-request figures. */
    cpuUs: cpuUs(),
    /** POST requests received since start (load traffic only), e.g. to turn profile times into µs/request. */
    requests,
  };
});

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

let requests = 0;
app.server.on('request', (req: { method?: string }) => {
  if (req.method === 'POST') requests++;
});
await app.listen({ port: config.PORT, host: config.HOST });
const address = app.server.address();
const port = typeof address === 'object' && address ? address.port : config.PORT;
process.stdout.write(`BENCH_READY ${JSON.stringify({ port, backend: app.services.backend, pid: process.pid })}\n`);

let closing = false;
async function shutdown(): Promise<void> {
  if (closing) return;
  closing = true;
  const force = setTimeout(() => process.exit(1), 5000);
  force.unref();
  try {
    await app.close();
  } finally {
    // A normal exit (not a signal death) so --cpu-prof / --heap-prof files get written.
    process.exit(0);
  }
}
process.on('SIGTERM', () => void shutdown());
process.on('SIGINT', () => void shutdown());
// The parent holds our stdin: if it dies without cleaning up, the pipe closes and we exit too.
process.stdin.on('end', () => void shutdown());
process.stdin.on('error', () => void shutdown());
process.stdin.resume();
