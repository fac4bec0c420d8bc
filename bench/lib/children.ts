import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { resolve } from 'node:path';

/** A server running in a child process (see bench/serve.ts, bench/bare-server.ts). */
export interface ServerHandle {
  name: string;
  pid: number;
  port: number;
  url: string;
  /** Whatever the child reported in its BENCH_READY line (backend, …). */
  info: Record<string, unknown>;
  /** Lines the child logged (stderr and non-ready stdout), most recent last. */
  logs: string[];
  stop(): Promise<void>;
}

export interface StartServerOptions {
  name: string;
  /** Path of the TypeScript entry, relative to the repository root (e.g. bench/serve.ts). */
  script: string;
  env?: Record<string, string | undefined>;
  /** Extra node flags, e.g. ['--cpu-prof', '--cpu-prof-dir=bench/.prof']. */
  nodeArgs?: string[];
  /** Echo the child's log lines to stderr as they arrive (default true). */
  echo?: boolean;
  startTimeoutMs?: number;
}

const live = new Set<ChildProcess>();

/** Kills every child still alive, synchronously (for process 'exit'). */
export function killAllChildrenSync(): void {
  for (const c of live) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  live.clear();
}

/**
 * Starts `node --import tsx <script>` with PORT=0 and waits for its `BENCH_READY {json}` line.
 * One node process per server (no tsx wrapper process), so flags like --cpu-prof apply to it.
 */
export async function startServer(opts: StartServerOptions): Promise<ServerHandle> {
  const root = process.cwd();
  const args = [...(opts.nodeArgs ?? []), '--import', 'tsx', resolve(root, opts.script)];
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(child);
  const logs: string[] = [];
  const echo = opts.echo ?? true;
  const onLine = (line: string) => {
    if (!line.trim()) return;
    const text = formatLogLine(line);
    logs.push(text);
    if (logs.length > 500) logs.shift();
    if (echo) process.stderr.write(`  [${opts.name}] ${text}\n`);
  };

  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  child.once('exit', () => live.delete(child));

  const ready = new Promise<Record<string, unknown>>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${opts.name} did not become ready within ${(opts.startTimeoutMs ?? 60_000) / 1000} s`)), opts.startTimeoutMs ?? 60_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('BENCH_READY ')) {
        clearTimeout(timer);
        res(JSON.parse(line.slice('BENCH_READY '.length)) as Record<string, unknown>);
      } else onLine(line);
    });
    createInterface({ input: child.stderr! }).on('line', onLine);
    child.once('error', (err) => {
      clearTimeout(timer);
      rej(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      rej(new Error(`${opts.name} exited before it was ready (code ${code}, signal ${signal}):\n${logs.slice(-20).join('\n')}`));
    });
  });

  let info: Record<string, unknown>;
  try {
    info = await ready;
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const port = Number(info.port);

  let stopping: Promise<void> | undefined;
  return {
    name: opts.name,
    pid: child.pid!,
    port,
    url: `http://127.0.0.1:${port}`,
    info,
    logs,
    stop() {
      stopping ??= (async () => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 8000);
        await exited;
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

/** Pino JSON lines → `LEVEL msg {extra}`; anything else verbatim. */
function formatLogLine(line: string): string {
  if (!line.startsWith('{')) return line;
  try {
    const o = JSON.parse(line) as Record<string, unknown>;
    const levels: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
    const { level, msg, time, pid, hostname, reqId, ...rest } = o;
    const extra = Object.keys(rest).length ? ` ${JSON.stringify(rest)}` : '';
    return `${levels[Number(level)] ?? level} ${String(msg ?? '')}${extra}`;
  } catch {
    return line;
  }
}

/** GET a JSON document from a child server (for /readyz, /__bench/stats). */
export async function getJson<T = Record<string, unknown>>(url: string, timeoutMs = 2000): Promise<{ status: number; body: T }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: (await res.json()) as T };
}

/** A bench child's counters: CPU time used (µs) and POST requests received (see bench/serve.ts). */
export async function usageOf(server: ServerHandle): Promise<{ cpuUs: number; requests: number }> {
  const { body } = await getJson<{ cpuUs: number; requests: number }>(`${server.url}/__bench/stats`);
  return { cpuUs: body.cpuUs, requests: body.requests };
}
