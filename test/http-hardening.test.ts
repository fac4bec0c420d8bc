import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../src/app.js';
import { loadConfig } from '../src/config/env.js';
import { copyDefaultStore } from './helpers/app.js';
import { expectError, pathsOf } from './helpers/http.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

const API_KEYS = 'predict:pred-key-1234,segments+admin:adm-key-1234';
const PRED = { authorization: 'Bearer pred-key-1234' };
const features = shopperFeatureRows(1)[0];

interface LogLine {
  level: number;
  msg: string;
  reqId?: string;
  [k: string]: unknown;
}

/** What a client gets for raw bytes sent to the listening server (connection closed by the server). */
function rawExchange(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let answer = '';
    socket.on('data', (d) => (answer += d.toString()));
    socket.on('close', () => resolve(answer));
    socket.on('error', reject);
  });
}

const bodyOf = (raw: string) => JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4));

describe('HTTP edges: request ids, client errors, bounded error bodies', () => {
  let app: FastifyInstance;
  let port: number;
  const lines: LogLine[] = [];

  beforeAll(async () => {
    const stream = { write: (line: string) => void lines.push(JSON.parse(line) as LogLine) };
    app = await buildApp(loadConfig({ MODEL_STORE: copyDefaultStore(), TF_BACKEND: 'wasm', LOG_LEVEL: 'info', API_KEYS }), { logger: { level: 'info', stream } });
    await app.listen({ port: 0, host: '127.0.0.1' });
    port = (app.server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await app?.close();
  });

  const predict = (payload: object, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/v1/predict', headers: { ...PRED, ...headers }, payload });
  const requestLine = (reqId: string) => lines.find((l) => l.reqId === reqId && l.msg === 'request');

  it("keeps a caller's X-Request-Id that looks like one, and makes a fresh id for anything else", async () => {
    const good = 'trace-01HZX.abc:42';
    expect((await predict({ features }, { 'x-request-id': good })).statusCode).toBe(200);
    expect(requestLine(good)).toBeDefined();
    const bad = '{"userId":"alice@example.com"}';
    const before = lines.length;
    expect((await predict({ features }, { 'x-request-id': bad })).statusCode).toBe(200);
    const logged = lines.slice(before);
    expect(logged.length).toBeGreaterThan(0);
    expect(JSON.stringify(logged)).not.toContain('alice@example.com');
    expect(logged.every((l) => l.reqId === undefined || /^req-[0-9a-f]{6}-[0-9a-z]+$/.test(l.reqId))).toBe(true);
    expect((await predict({ features }, { 'x-request-id': 'x'.repeat(129) })).statusCode).toBe(200);
    expect(requestLine('x'.repeat(129))).toBeUndefined();
  });

  it('refuses a userId or sessionId that is not well-formed Unicode (no URL could erase that user)', async () => {
    const res = await app.inject({
      method: 'POST',
      url: '/v1/predict',
      headers: { ...PRED, 'content-type': 'application/json' },
      payload: `{"userId":"\\ud800x","sessionId":"ok\\udfff","features":${JSON.stringify(features)}}`,
    });
    const body = expectError(res, 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['sessionId', 'userId']);
    expect(body.details[0].message).toMatch(/well-formed Unicode/);
    // A surrogate pair (an emoji) is fine.
    expect((await predict({ userId: 'shopper-😀', features })).statusCode).toBe(200);
    const batch = await app.inject({
      method: 'POST',
      url: '/v1/predict/batch',
      headers: { ...PRED, 'content-type': 'application/json' },
      payload: `{"instances":[{"userId":"fine","features":${JSON.stringify(features)}},{"userId":"\\udc00","features":${JSON.stringify(features)}}]}`,
    });
    expect(pathsOf(expectError(batch, 400, 'validation_error'))).toEqual(['instances[1].userId']);
  });

  it('a compressed body is a 415 naming the encoding, not a JSON syntax error', async () => {
    const { gzipSync } = await import('node:zlib');
    const res = await app.inject({
      method: 'POST',
      url: '/v1/predict',
      headers: { ...PRED, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      payload: gzipSync(JSON.stringify({ features })),
    });
    expect(expectError(res, 415, 'unsupported_media_type').message).toBe('Content-Encoding "gzip" is not supported: send the body uncompressed');
  });

  it('a text/plain body is a 415 like any type other than JSON', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: { ...PRED, 'content-type': 'text/plain' }, payload: JSON.stringify({ features }) });
    expect(expectError(res, 415, 'unsupported_media_type').message).toBe('unsupported Content-Type: send application/json (multipart/form-data on the upload routes)');
  });

  it('bounds the error body: at most 100 details, each path and message clipped; the message counts them all', async () => {
    const unknown = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`extra_${i}`, 1]));
    const body = expectError(await predict({ features: { ...features, ...unknown } }), 400, 'validation_error');
    expect(body.details).toHaveLength(100);
    expect(body.message).toBe('500 invalid fields (the first 100 listed)');
    const longKey = 'k'.repeat(5000);
    const one = expectError(await predict({ features: { ...features, [longKey]: 1 } }), 400, 'validation_error');
    expect(one.details).toHaveLength(1);
    expect(one.details[0].path.length).toBeLessThanOrEqual(300);
    expect(one.details[0].path.startsWith('features.kkk')).toBe(true);
    expect(one.message).toBe('1 invalid field');
  });

  it('a batch 400 names every bad instance: one detail each first, then the message lists them all as ranges', async () => {
    const batch = (instances: unknown[]) => app.inject({ method: 'POST', url: '/v1/predict/batch', headers: PRED, payload: { instances } });
    // 200 instances, every even one empty (17 missing features each): 1,700 fields in 100 instances.
    const some = expectError(await batch(Array.from({ length: 200 }, (_, i) => (i % 2 ? { features } : { features: {} }))), 400, 'validation_error');
    expect(some.details).toHaveLength(100);
    expect(new Set(some.details.map((d: { path: string }) => /^instances\[(\d+)\]/.exec(d.path)?.[1]))).toEqual(new Set(Array.from({ length: 100 }, (_, i) => String(2 * i))));
    expect(some.message).toBe('1700 invalid fields (100 listed, at least one for each of the 100 invalid instances)');
    // 10,000 instances: 0-4999 empty, 5000 good, 5001-9999 with one bad value each.
    const many = Array.from({ length: 10_000 }, (_, i) => (i < 5000 ? { features: {} } : i === 5000 ? { features } : { features: { ...features, PageValues: 'x' } }));
    const all = expectError(await batch(many), 400, 'validation_error');
    expect(all.details).toHaveLength(100);
    expect(all.details[0].path).toMatch(/^instances\[0\]\./);
    expect(all.details[99].path).toMatch(/^instances\[99\]\./);
    expect(all.message).toBe(`${5000 * 17 + 4999} invalid fields (the first field of the first 100 of 9999 invalid instances listed; all of them: 0-4999, 5001-9999)`);
    // Only a few bad instances with many problems: their first problems lead, the rest fill in order.
    const few = expectError(await batch([{ features: { ...unknownKeys(150) } }, { features }, { features: { ...features, Weekend: 'maybe' } }]), 400, 'validation_error');
    expect(few.details).toHaveLength(100);
    expect(few.details.some((d: { path: string }) => d.path.startsWith('instances[2].'))).toBe(true);
    expect(few.message).toMatch(/\(100 listed, at least one for each of the 2 invalid instances\)$/);
  });

  it('values quoted in warnings and errors are cut between characters, never inside a surrogate pair', async () => {
    for (let pad = 55; pad <= 62; pad++) {
      const month = 'a'.repeat(pad) + '😀'.repeat(8);
      const ok = await predict({ features: { ...features, Month: month } });
      expect(ok.statusCode, ok.body).toBe(200);
      const warning = ok.json().warnings[0] as string;
      expect(warning, `pad ${pad}`).toContain('...');
      expect(warning.isWellFormed(), `pad ${pad}: ${warning}`).toBe(true);
      const bad = expectError(await predict({ features: { ...features, PageValues: month } }), 400, 'validation_error');
      expect(bad.details[0].message.isWellFormed(), `pad ${pad}`).toBe(true);
      const key = 'k'.repeat(pad + 230) + '😀'.repeat(10);
      const unknown = expectError(await predict({ features: { ...features, [key]: 1 } }), 400, 'validation_error');
      expect(unknown.details[0].path.isWellFormed(), `pad ${pad}`).toBe(true);
    }
  });

  it('?explain on a batch is refused, not silently ignored (with any other problem in the same 400)', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict/batch?explain=true', headers: PRED, payload: { instances: [{ features }, { features: { ...features, Weekend: 'maybe' } }] } });
    const body = expectError(res, 400, 'validation_error');
    expect(body.details.map((d: { path: string }) => d.path)).toEqual(['explain', 'instances[1].features.Weekend']);
    const fine = await app.inject({ method: 'POST', url: '/v1/predict/batch?cachebuster=1', headers: PRED, payload: { instances: [{ features }] } });
    expect(fine.statusCode, fine.body).toBe(200);
  });

  it('a 401 names the Bearer scheme (WWW-Authenticate)', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features } });
    expectError(res, 401, 'unauthorized');
    expect(res.headers['www-authenticate']).toBe('Bearer');
  });

  it('a 4xx raised by a plugin gets the code of its status (a path escaping the docs file server: 403 forbidden)', async () => {
    const raw = await rawExchange(port, 'GET /docs/static/../../package.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(raw).toMatch(/^HTTP\/1\.1 403 /);
    expect(bodyOf(raw)).toEqual({ error: 'forbidden', message: 'Forbidden', details: [] });
  });

  it("requests Node's HTTP parser refuses get the service's error body (400, 431), never Fastify's default", async () => {
    const bad = await rawExchange(port, 'POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n');
    expect(bad).toMatch(/^HTTP\/1\.1 400 /);
    expect(bodyOf(bad)).toEqual({ error: 'bad_request', message: 'malformed HTTP request', details: [] });
    const huge = await rawExchange(port, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect(huge).toMatch(/^HTTP\/1\.1 431 /);
    expect(bodyOf(huge)).toEqual({ error: 'request_header_fields_too_large', message: 'request headers are too large', details: [] });
    // The server still answers normally afterwards.
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
  });
});

function unknownKeys(n: number): Record<string, number> {
  return Object.fromEntries(Array.from({ length: n }, (_, i) => [`extra_${i}`, 1]));
}
