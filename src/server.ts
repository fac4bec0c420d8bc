import type { IncomingMessage, ServerResponse } from 'node:http';
import { constants } from 'node:os';
import { buildApp } from './app.js';
import { ConfigError, loadConfig } from './config/env.js';
import { CLOSE_WAIT_MS } from './segments/segment-service.js';

/**
 * What closing the services may take, at most: jobs stopping (5 s for scoring jobs, ScoringJobs.close;
 * a retraining job already activating its version is waited for up to 2 s meanwhile; both run in
 * the jobs routes' preClose hook, so job event streams end with the final status), queued membership
 * writes (CLOSE_WAIT_MS), the score cache flush (1 s, ScoreCache.flush), and 1 s for the rest
 * (disconnects). 8 s in all: with the default SHUTDOWN_TIMEOUT_MS (10 s), requests get 2 s to finish.
 */
const SERVICES_CLOSE_MS = 5000 + CLOSE_WAIT_MS + 1000 + 1000;

/**
 * How long in-flight requests get to finish before their connections are closed: the shutdown
 * budget less what services.close() needs, so that it still runs (flushes included) within the
 * budget. Never less than 1 s (a quarter of a budget under 4 s): with a budget under 9 s the
 * service then has less than SERVICES_CLOSE_MS, which its worst case rarely needs.
 */
function drainMs(shutdownTimeoutMs: number): number {
  return Math.max(shutdownTimeoutMs - SERVICES_CLOSE_MS, Math.min(1000, shutdownTimeoutMs / 4));
}

async function main() {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  const app = await buildApp(config);
  try {
    await app.listen({ port: config.PORT, host: config.HOST });
  } catch (err) {
    await app.close();
    // A host name that does not resolve here, or an address this machine does not have.
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL') throw new ConfigError(`invalid configuration:\n  HOST: cannot listen on ${JSON.stringify(config.HOST)} (${code})`);
    throw err;
  }

  let closing = false;
  const shutdown = async (signal: NodeJS.Signals) => {
    if (closing) {
      // Asked twice: the operator does not want to wait. Exit as if killed by the signal (128 + n:
      // 130 for SIGINT, 143 for SIGTERM) without draining or flushing further.
      app.log.warn({ signal }, 'second signal during shutdown; exiting now');
      process.exit(128 + constants.signals[signal]);
    }
    closing = true;
    const timer = setTimeout(() => {
      app.log.error('shutdown timed out; exiting');
      process.exit(1);
    }, config.SHUTDOWN_TIMEOUT_MS);
    timer.unref();
    // A client that never finishes its request (a stalled upload, a body never completed) would
    // hold the drain, and services.close() after it, for the whole budget.
    const drain = setTimeout(() => {
      app.log.warn({ drainMs: drainMs(config.SHUTDOWN_TIMEOUT_MS) }, 'requests still in flight after the drain time; closing their connections');
      app.server.closeAllConnections();
    }, drainMs(config.SHUTDOWN_TIMEOUT_MS));
    drain.unref();
    app.server.once('close', () => clearTimeout(drain));
    // Grace first: /readyz says shutting_down so a load balancer stops sending here, while requests
    // are still served, each answer with Connection: close. Keep-alive clients then reconnect (to
    // another replica) instead of having an idle connection cut as they send on it, which is what
    // closing the server at once does to one request per connection under load.
    // At most half the drain time: requests in flight when it ends get the other half.
    const graceMs = Math.min(config.SHUTDOWN_GRACE_MS, drainMs(config.SHUTDOWN_TIMEOUT_MS) / 2);
    app.services.shuttingDown = true;
    app.server.prependListener('request', (_req: IncomingMessage, res: ServerResponse) => res.setHeader('connection', 'close'));
    app.log.info({ signal, graceMs }, 'shutting down: readiness says shutting_down; serving the grace period, every answer closing its connection');
    await new Promise((r) => setTimeout(r, graceMs));
    app.log.info('shutting down: draining requests');
    try {
      await app.close();
    } catch (err) {
      app.log.error({ err }, 'shutdown failed');
      process.exit(1);
    }
    app.log.info('shutdown complete');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err) => {
  // Settings checked while building the app (e.g. MODEL_STORE must exist) end like env errors.
  if (err instanceof ConfigError) {
    console.error(err.message);
    process.exit(2);
  }
  console.error('fatal: failed to start', err);
  process.exit(1);
});
