import { Readable } from 'node:stream';
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/env.js';
import { copyDefaultStore } from './helpers/app.js';

/**
 * Errors can carry their inputs (ioredis puts a failed command's arguments on the error, and an
 * export's cursor is a userId): whatever path logs them, the line names the error, never them.
 */

const SECRET = 'user-SECRET-4711';

/** What an ioredis reply error looks like: the command, arguments and all, as a property. */
class ReplyError extends Error {
  override name = 'ReplyError';
  command = { name: 'evalsha', args: ['sha', '1', 'pi:seg:x', SECRET, '5000', 'csv'] };
}

let app: FastifyInstance;
let store: string;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  store = copyDefaultStore();
  const stream = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) };
  app = await buildApp(loadConfig({ MODEL_STORE: store, TF_BACKEND: 'wasm' }), { logger: { level: 'info', stream } });
  // Routes that fail the way a Redis failure fails a real one: mid-stream (an export) and before answering.
  app.get('/test/stream', (_request, reply) => {
    async function* chunks() {
      yield 'userId,score\n';
      await new Promise((r) => setTimeout(r, 10));
      throw new ReplyError('WRONGTYPE Operation against a key holding the wrong kind of value');
    }
    return reply.type('text/csv').send(Readable.from(chunks()));
  });
  app.get('/test/throw', async () => {
    throw new ReplyError('ERR Error running script');
  });
  await app.ready();
});

afterAll(async () => {
  await app?.close();
  rmSync(store, { recursive: true, force: true });
});

describe('errors in logs', () => {
  it('a stream that breaks after its headers: one request line with route, status and the error type, without its arguments', async () => {
    lines.length = 0;
    await app.inject({ url: '/test/stream' }).catch(() => undefined); // the answer is cut off
    await new Promise((r) => setTimeout(r, 50));
    const text = JSON.stringify(lines);
    expect(text).not.toContain(SECRET);
    const line = lines.find((l) => l.msg === 'request: answer stream failed after its headers were sent');
    expect(line, text).toMatchObject({ level: 40, method: 'GET', route: '/test/stream', status: 200, err: { type: 'ReplyError', message: 'WRONGTYPE Operation against a key holding the wrong kind of value' } });
    expect(Object.keys(line!.err as object).sort()).toEqual(['message', 'stack', 'type']);
  });

  it('an unhandled error: a 500 without internals, logged by type and message only', async () => {
    lines.length = 0;
    const res = await app.inject({ url: '/test/throw' });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toEqual({ error: 'internal_error', message: 'internal error', details: [] });
    const text = JSON.stringify(lines);
    expect(text).not.toContain(SECRET);
    expect(lines.find((l) => l.msg === 'unhandled error')).toMatchObject({ level: 50, err: { type: 'ReplyError', message: 'ERR Error running script' } });
  });

  it('a request refused before routing (malformed URL) gets a line with its status, without the URL (it may name a user)', async () => {
    lines.length = 0;
    const res = await app.inject({ url: `/v1/users/${SECRET}%E0%A4%A` });
    expect(res.statusCode).toBe(400);
    const text = JSON.stringify(lines);
    expect(text).not.toContain(SECRET);
    expect(lines.find((l) => l.msg === 'request refused before routing')).toMatchObject({ level: 30, method: 'GET', route: 'unmatched', status: 400, err: 'FST_ERR_BAD_URL' });
  });
});
