import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ShopperBodies } from './bodies.js';
import { startServer, getJson, type ServerHandle } from './children.js';
import { runLoad, type LoadOptions, type LoadResult } from './load.js';
import type { RedisScores } from '../../src/cache/redis-scores.js';

export interface BenchSettings {
  durationSec: number;
  warmupSec: number;
  connections: number;
  logLevel: string;
  tfBackend: string;
  /** Model store the service children serve from (copied to a temp dir, see below). */
  modelStore: string;
  /** Extra node flags for service children (BENCH_SERVICE_NODE_ARGS), e.g. --cpu-prof. */
  serviceNodeArgs: string[];
  /** Extra node flags for the bare baseline child (BENCH_BARE_NODE_ARGS). */
  bareNodeArgs: string[];
  /** `dist`: service children run the compiled build, as `npm start` does; `src`: the sources through tsx (BENCH_SERVICE_CODE). */
  serviceCode: 'dist' | 'src';
}

export interface Check {
  phase: string;
  name: string;
  target: string;
  measured: string;
  pass: boolean;
}

/** A named, independently selectable part of the bench (bench/phases/*.ts). */
export interface Phase {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<void>;
}

export function settingsFromEnv(env = process.env): BenchSettings {
  const num = (v: string | undefined, d: number) => (v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : d);
  return {
    durationSec: num(env.BENCH_DURATION, 10),
    warmupSec: num(env.BENCH_WARMUP, 2),
    connections: num(env.BENCH_CONNECTIONS, 50),
    logLevel: env.BENCH_LOG_LEVEL || 'warn',
    tfBackend: env.BENCH_TF_BACKEND || 'auto',
    modelStore: env.BENCH_MODEL_STORE || './model-store',
    serviceNodeArgs: (env.BENCH_SERVICE_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
    bareNodeArgs: (env.BENCH_BARE_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
    serviceCode: env.BENCH_SERVICE_CODE === 'src' ? 'src' : 'dist',
  };
}

/** What phases share: settings, body source, the bare baseline server, cleanup and the summary. */
export class BenchContext {
  readonly checks: Check[] = [];
  private readonly cleanups: (() => Promise<void> | void)[] = [];
  private bodiesCache?: ShopperBodies;
  private bare?: Promise<ServerHandle>;
  private storeCopy?: string;
  phase = '';

  constructor(readonly settings: BenchSettings) {}

  log(line = ''): void {
    process.stdout.write(`${line}\n`);
  }

  get bodies(): ShopperBodies {
    this.bodiesCache ??= new ShopperBodies();
    return this.bodiesCache;
  }

  /** Registers cleanup work; it runs (last registered first) when the bench ends, even on error. */
  defer(fn: () => Promise<void> | void): void {
    this.cleanups.push(fn);
  }

  async cleanup(): Promise<void> {
    while (this.cleanups.length) {
      const fn = this.cleanups.pop()!;
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`cleanup failed: ${(err as Error).message}\n`);
      }
    }
  }

  /**
   * The service reads and (with Redis) rewrites state.json in its model store, so each run serves
   * from a private copy of the configured store instead of the working tree's ./model-store.
   */
  modelStoreCopy(): string {
    if (!this.storeCopy) {
      const dir = mkdtempSync(join(tmpdir(), 'bench-store-'));
      cpSync(resolve(this.settings.modelStore), dir, { recursive: true });
      this.storeCopy = dir;
      this.defer(() => rmSync(dir, { recursive: true, force: true }));
    }
    return this.storeCopy;
  }

  /** Starts the real service in a child process; stopped automatically at the end. */
  async startService(name: string, env: Record<string, string | undefined> = {}): Promise<ServerHandle> {
    const server = await startServer({
      name,
      script: 'bench/serve.ts',
      nodeArgs: this.settings.serviceNodeArgs,
      env: {
        LOG_LEVEL: this.settings.logLevel,
        MODEL_STORE: this.modelStoreCopy(),
        TF_BACKEND: this.settings.tfBackend,
        REDIS_URL: undefined,
        API_KEYS: undefined,
        BENCH_SERVICE_CODE: this.settings.serviceCode,
        ...env,
      },
    });
    this.defer(() => server.stop());
    return server;
  }

  /** The bare Fastify baseline, started once and shared by every phase. */
  bareServer(): Promise<ServerHandle> {
    this.bare ??= startServer({ name: 'bare', script: 'bench/bare-server.ts', nodeArgs: this.settings.bareNodeArgs }).then((s) => {
      this.defer(() => s.stop());
      return s;
    });
    return this.bare;
  }

  /** autocannon with the run's defaults (connections, duration, warm-up). */
  load(o: Omit<LoadOptions, 'connections' | 'durationSec' | 'warmupSec'> & Partial<LoadOptions>): Promise<LoadResult> {
    return runLoad({ connections: this.settings.connections, durationSec: this.settings.durationSec, warmupSec: this.settings.warmupSec, ...o });
  }

  /** Single-row predict load with never-repeating real rows. */
  predictLoad(label: string, server: ServerHandle, extra: Partial<LoadOptions> = {}): Promise<LoadResult> {
    return this.load({ label, url: server.url, path: '/v1/predict', body: () => this.bodies.nextPredict(), ...extra });
  }

  /** GET /__bench/stats of a bench child (service: ServiceStats; bare: only cpuUs). */
  async serviceStats(server: ServerHandle): Promise<ServiceStats> {
    return (await getJson<ServiceStats>(`${server.url}/__bench/stats`)).body;
  }

  check(name: string, target: string, measured: string, pass: boolean): void {
    this.checks.push({ phase: this.phase, name, target, measured, pass });
  }
}

export interface ServiceStats {
  modelVersion: string | null;
  batches: number;
  rowsScored: number;
  l1Size: number;
  /** The score cache's L2 counters (RedisScores.stats(); all 0 without Redis). */
  l2: ReturnType<RedisScores['stats']>;
  backend: string;
  cpuUs: number;
  requests: number;
}
