import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/env.js';
import { initBackend } from '../src/inference/backend.js';
import { copyDefaultStore } from './helpers/app.js';
import { BUNDLED_VERSION } from './helpers/second-version.js';

interface LogLine {
  level: number;
  msg: string;
  err?: string;
}

/** Builds the app on `store` with its log lines captured (pino JSON, level 30+). */
async function appWithLogs(store: string): Promise<{ app: FastifyInstance; lines: LogLine[] }> {
  const lines: LogLine[] = [];
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) };
  const app = await buildApp(loadConfig({ MODEL_STORE: store, TF_BACKEND: 'wasm', LOG_LEVEL: 'info' }), { logger: { level: 'info', stream } });
  await app.ready();
  return { app, lines };
}

/** Startup with a store that cannot be served says why, naming the version or file, and once. */
describe('startup with a store that cannot be served', () => {
  let app: FastifyInstance | undefined;
  let store: string | undefined;
  afterEach(async () => {
    await app?.close();
    if (store) rmSync(store, { recursive: true, force: true });
  });

  it('a corrupt active version: the error names it and its checksum, no model serves, and no claim the store is empty', async () => {
    store = copyDefaultStore();
    const shard = join(store, 'versions', BUNDLED_VERSION, 'group1-shard1of1.bin');
    const bytes = readFileSync(shard);
    bytes[100] ^= 0xff;
    writeFileSync(shard, bytes);
    const started = await appWithLogs(store);
    app = started.app;
    expect((await app.inject({ url: '/readyz' })).statusCode).toBe(503);
    const errors = started.lines.filter((l) => l.level >= 50);
    expect(errors.some((l) => l.err?.includes(`version ${BUNDLED_VERSION} cannot be served`) && /checksum/.test(l.err))).toBe(true);
    expect(errors.some((l) => l.msg.startsWith('no model is serving'))).toBe(true);
    expect(started.lines.some((l) => l.msg.includes('has no versions'))).toBe(false);
    // Re-applying the state (as the 2 s poll does) does not log the same failure again.
    const before = errors.length;
    for (let i = 0; i < 3; i++) await app.services.lifecycle.reconcile();
    expect(started.lines.filter((l) => l.level >= 50)).toHaveLength(before);
  });

  it('an unreadable state.json is named in the error', async () => {
    store = copyDefaultStore();
    writeFileSync(join(store, 'state.json'), '{"active": "shoppers');
    const started = await appWithLogs(store);
    app = started.app;
    expect(started.lines.some((l) => l.level >= 50 && l.err?.includes('state.json is not readable JSON'))).toBe(true);
  });

  it('a state.json naming a version the store lacks: the error names it and the version served instead, once', async () => {
    store = copyDefaultStore();
    writeFileSync(join(store, 'state.json'), JSON.stringify({ active: 'nope-v9', canary: null, history: [] }));
    const started = await appWithLogs(store);
    app = started.app;
    expect((await app.inject({ url: '/readyz' })).json()).toMatchObject({ status: 'ready', model: { activeVersion: BUNDLED_VERSION } });
    const named = () => started.lines.filter((l) => l.level >= 50 && l.msg.includes('nope-v9'));
    expect(named()).toHaveLength(1);
    expect(named()[0].msg).toBe(`the recorded active version nope-v9 is not in this replica's store; serving ${BUNDLED_VERSION} (the newest) instead`);
    for (let i = 0; i < 3; i++) await app.services.lifecycle.reconcile();
    expect(named()).toHaveLength(1);
  });
});

describe('MODEL_STORE that does not exist', () => {
  it('is refused at startup, naming the variable and the path (a typo must not start an empty service)', async () => {
    const missing = join(copyDefaultStore(), 'no-such-dir');
    await expect(buildApp(loadConfig({ MODEL_STORE: missing, TF_BACKEND: 'wasm', LOG_LEVEL: 'silent' }))).rejects.toThrow(/MODEL_STORE: directory ".*no-such-dir" does not exist/);
    rmSync(join(missing, '..'), { recursive: true, force: true });
  });
});

describe('paths that cannot serve', () => {
  it('a DATA_DIR that is a file, or a MODEL_STORE whose versions/ cannot be created, is refused naming the variable', async () => {
    const store = copyDefaultStore();
    try {
      const file = join(store, 'a-file');
      writeFileSync(file, 'x');
      await expect(buildApp(loadConfig({ MODEL_STORE: store, DATA_DIR: file, TF_BACKEND: 'wasm', LOG_LEVEL: 'silent' }))).rejects.toThrow(/DATA_DIR: ".*a-file" is not a directory/);
      const empty = join(store, 'empty-store');
      mkdirSync(empty);
      writeFileSync(join(empty, 'versions'), 'not a directory'); // as unwritable: versions/ cannot be made
      await expect(buildApp(loadConfig({ MODEL_STORE: empty, TF_BACKEND: 'wasm', LOG_LEVEL: 'silent' }))).rejects.toThrow(/MODEL_STORE: cannot create ".*versions"/);
    } finally {
      rmSync(store, { recursive: true, force: true });
    }
  });

  it('TF_BACKEND=node without @tensorflow/tfjs-node is a configuration error naming the variable', async () => {
    const present = await import('@tensorflow/tfjs-node' as string).then(
      () => true,
      () => false,
    );
    if (present) expect(await initBackend('node')).toBe('tensorflow');
    else await expect(initBackend('node')).rejects.toThrow(/TF_BACKEND: node, but @tensorflow\/tfjs-node did not load/);
  });
});

