import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { copyDefaultStore } from './helpers/app.js';
import { freePort } from './helpers/redis-server.js';

describe('server process', () => {
  it('serves, then on SIGTERM drains and exits 0', async () => {
    const port = await freePort();
    const store = copyDefaultStore();
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
      env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', MODEL_STORE: store, TF_BACKEND: 'wasm', LOG_LEVEL: 'info', API_KEYS: undefined },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const deadline = Date.now() + 30_000;
      while (!out.includes('Server listening') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.json() as Promise<{ status: string; backend: string }>);
      expect(ready).toMatchObject({ status: 'ready', backend: 'wasm' });
      // The startup log names the backend; request logs never carry bodies.
      expect(out).toMatch(/"backend":"wasm".*"msg":"service ready"/);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(out).toMatch(/shutting down/);
    } finally {
      // A failed check must not leave a server running.
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      rmSync(store, { recursive: true, force: true });
    }
  });
});
