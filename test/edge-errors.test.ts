import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { expectError, pathsOf, until } from './helpers/http.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { TestRedis } from './helpers/redis-server.js';

const API_KEYS = 'segments:seg-key-1234,admin:adm-key-1234,predict:pred-key-1234';
const SEG = { authorization: 'Bearer seg-key-1234' };
const ADMIN = { authorization: 'Bearer adm-key-1234' };
const PRED = { authorization: 'Bearer pred-key-1234' };
const features = shopperFeatureRows(1)[0];

/** Inputs at the edges of what the routes accept: each gets a 4xx in the service's error body, never a 500. */
describe('edge inputs', () => {
  let app: FastifyInstance;
  let redis: TestRedis;

  beforeAll(async () => {
    redis = await TestRedis.start();
    app = await buildTestApp({ API_KEYS, REDIS_URL: redis.url, REDIS_COMMAND_TIMEOUT_MS: '500' });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
    await redis?.close();
  });

  /** A rule nested `depth` levels, as JSON text (too deep for JSON.stringify in the test client). */
  const nested = (depth: number, open: string, close: string) => open.repeat(depth) + '{"score":{"gt":0}}' + close.repeat(depth);
  const segmentBody = (ruleJson: string) => `{"name":"big","rule":${ruleJson}}`;

  it('refuses rules nested too deep or with too many conditions (400 naming rule), before validating them', async () => {
    const cases = [
      nested(2000, '{"not":', '}'), // used to overflow the validator's stack (500)
      nested(20_000, '{"all":[', ']}'),
      // Lists where rules are expected nest too (featureReferences walks them): used to overflow its stack (500)
      `{"all":[${'['.repeat(20_000)}${']'.repeat(20_000)}]}`,
      '['.repeat(20_000) + ']'.repeat(20_000),
      `{"not":${'['.repeat(20_000)}${']'.repeat(20_000)}}`,
      // A group whose value is a rule instead of a list of them, nested (also walked by featureReferences)
      nested(20_000, '{"all":', '}'),
      nested(20_000, '{"not":{"any":', '}}'),
      nested(17, '{"not":', '}'),
      JSON.stringify({ any: Array.from({ length: 201 }, (_, i) => ({ feature: 'PageValues', gt: i })) }),
      JSON.stringify({ any: Array.from({ length: 40 }, () => ({ all: Array.from({ length: 40 }, () => ({ feature: 'PageValues', gt: 1 })) })) }),
    ];
    for (const rule of cases) {
      for (const [method, url] of [['POST', '/v1/segments'], ['PUT', '/v1/segments/whatever']] as const) {
        const res = await app.inject({ method, url, headers: { ...SEG, 'content-type': 'application/json' }, payload: segmentBody(rule) });
        const body = expectError(res, 400, 'validation_error');
        expect(pathsOf(body)).toEqual(['rule']);
        expect(body.details[0].message).toMatch(/at most (16 levels|200 conditions)/);
      }
    }
    const ok = await app.inject({ method: 'POST', url: '/v1/segments', headers: { ...SEG, 'content-type': 'application/json' }, payload: segmentBody(nested(15, '{"not":', '}')) });
    expect(ok.statusCode, ok.body).toBe(201);
  });

  it('names unknown keys at their own paths, even when they are all digits, empty or hold a "/"', async () => {
    const single = await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { features, '0': 1, '': 4, 'a/b': 5 } });
    expect(pathsOf(expectError(single, 400, 'validation_error')).sort()).toEqual(['', '0', 'a/b']);
    const batch = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: PRED, payload: { instances: [{ features }, { features, '7': 1, '': 2 }] } });
    expect(pathsOf(expectError(batch, 400, 'validation_error')).sort()).toEqual(['instances[1].', 'instances[1].7']);
    // Array indexes stay indexes.
    const wrongType = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: PRED, payload: { instances: [{ features }, { features, userId: 5 }] } });
    expect(pathsOf(expectError(wrongType, 400, 'validation_error'))).toEqual(['instances[1].userId']);
  });

  it('a multipart body cut off before its end is a 400, not an unhandled error', async () => {
    const b = 'XBOUNDARYX';
    const res = await app.inject({ method: 'POST', url: '/v1/models', headers: { ...ADMIN, 'content-type': `multipart/form-data; boundary=${b}` }, payload: `--${b}\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc` });
    expect(expectError(res, 400, 'bad_request').message).toBe('the request body ended before it was complete');
  });

  it('allows at most 100 rule segments (409 after that)', async () => {
    const existing = ((await app.inject({ url: '/v1/segments', headers: SEG })).json().segments as { kind: string }[]).filter((s) => s.kind === 'rule').length;
    for (let i = existing; i < 100; i++) {
      const res = await app.inject({ method: 'POST', url: '/v1/segments', headers: SEG, payload: { id: `cap-${i}`, name: `cap ${i}`, rule: { score: { gte: i / 100 } } } });
      expect(res.statusCode, res.body).toBe(201);
    }
    const over = expectError(await app.inject({ method: 'POST', url: '/v1/segments', headers: SEG, payload: { name: 'one too many', rule: { score: { gte: 0.5 } } } }), 409, 'conflict');
    expect(over.message).toContain('at most 100');
  });

  it('a multipart body without a boundary is a 400, on every upload route', async () => {
    for (const [url, headers] of [['/v1/datasets', ADMIN], ['/v1/segments/score', SEG], ['/v1/models', ADMIN]] as const) {
      const res = await app.inject({ method: 'POST', url, headers: { ...headers, 'content-type': 'multipart/form-data' }, payload: 'garbage' });
      const body = expectError(res, 400, 'bad_request');
      expect(body.message).toMatch(/multipart/i);
    }
  });

  it('an upload with fields beside its one file part is a 400, and leaves nothing behind', async () => {
    const b = 'edge-fields';
    const payload = `--${b}\r\nContent-Disposition: form-data; name="note"\r\n\r\n${'x'.repeat(10_000)}\r\n--${b}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\nuserId,PageValues\r\nx,1\r\n--${b}--\r\n`;
    for (const [url, headers] of [['/v1/datasets', ADMIN], ['/v1/segments/score', SEG]] as const) {
      const body = expectError(await app.inject({ method: 'POST', url, headers: { ...headers, 'content-type': `multipart/form-data; boundary=${b}` }, payload }), 400, 'bad_request');
      expect(body.message).toMatch(/^too many (form fields|parts) for this route/);
    }
  });

  it('an upload with another part after its file part is a 400, one over the limit a 413, and neither keeps a file', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'edge-data-'));
    const other = await buildTestApp({ API_KEYS, DATA_DIR: dataDir, UPLOAD_LIMIT_BYTES: '100' });
    await other.ready();
    const savedTmp = process.env.TMPDIR;
    const ownTmp = mkdtempSync(join(tmpdir(), 'edge-tmp-'));
    process.env.TMPDIR = ownTmp;
    const b = 'edge-after';
    const tooBig = `--${b}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\nContent-Type: text/csv\r\n\r\nuserId,PageValues\r\n${'x,1\r\n'.repeat(40)}--${b}--\r\n`;
    const file = (name: string) => `--${b}\r\nContent-Disposition: form-data; name="${name}"; filename="${name}.csv"\r\nContent-Type: text/csv\r\n\r\nuserId,PageValues\r\nx,1\r\ny,2\r\n`;
    const trailers = [`--${b}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n`, file('second')];
    try {
      for (const trailer of trailers) {
        const payload = `${file('file')}${trailer}--${b}--\r\n`;
        for (const [url, headers] of [['/v1/datasets', ADMIN], ['/v1/segments/score', SEG]] as const) {
          const body = expectError(await other.inject({ method: 'POST', url, headers: { ...headers, 'content-type': `multipart/form-data; boundary=${b}` }, payload }), 400, 'bad_request');
          expect(body.message).toMatch(/^too many parts for this route/);
        }
      }
      for (const [url, headers] of [['/v1/datasets', ADMIN], ['/v1/segments/score', SEG]] as const) {
        const body = expectError(await other.inject({ method: 'POST', url, headers: { ...headers, 'content-type': `multipart/form-data; boundary=${b}` }, payload: tooBig }), 413, 'payload_too_large');
        expect(body.message).toBe('file "big.csv" exceeds UPLOAD_LIMIT_BYTES (100 bytes)');
      }
      expect(readdirSync(join(dataDir, 'uploads'))).toEqual([]);
      expect(readdirSync(ownTmp)).toEqual([]);
      // The same file alone is accepted by both routes.
      const payload = `${file('file')}--${b}--\r\n`;
      const upload = await other.inject({ method: 'POST', url: '/v1/datasets', headers: { ...ADMIN, 'content-type': `multipart/form-data; boundary=${b}` }, payload });
      expect(upload.statusCode, upload.body).toBe(201);
      expect(upload.json().rows).toBe(2);
      const audience = await other.inject({ method: 'POST', url: '/v1/segments/score', headers: { ...SEG, 'content-type': `multipart/form-data; boundary=${b}` }, payload });
      expect(audience.statusCode, audience.body).toBe(202);
    } finally {
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
      await other.close();
      rmSync(ownTmp, { recursive: true, force: true });
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('an audience upload that cannot start a job (the service is closing) leaves no file in the temp dir', async () => {
    const other = await buildTestApp({ API_KEYS });
    await other.ready();
    await other.services.scoringJobs.close();
    // A temp dir of this test's own (os.tmpdir() follows TMPDIR), so other test files' uploads do not count.
    const savedTmp = process.env.TMPDIR;
    const ownTmp = mkdtempSync(join(tmpdir(), 'edge-tmp-'));
    process.env.TMPDIR = ownTmp;
    const b = 'edge-closing';
    const payload = `--${b}\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\nContent-Type: text/csv\r\n\r\nuserId,PageValues\r\nx,1\r\n--${b}--\r\n`;
    try {
      expectError(await other.inject({ method: 'POST', url: '/v1/segments/score', headers: { ...SEG, 'content-type': `multipart/form-data; boundary=${b}` }, payload }), 503, 'unavailable');
      expect(readdirSync(ownTmp)).toEqual([]);
    } finally {
      if (savedTmp === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = savedTmp;
      rmSync(ownTmp, { recursive: true, force: true });
      await other.close();
    }
  });

  it('a user with a 256-character id can be looked up and erased by URL', async () => {
    const userId = 'u'.repeat(200) + 'é'.repeat(56); // percent-encoded in the URL: far over 100 bytes
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId, features } });
    expect(res.statusCode, res.body).toBe(200);
    await app.services.segments.flush();
    const path = `/v1/users/${encodeURIComponent(userId)}`;
    const found = await app.inject({ url: path, headers: SEG });
    expect(found.statusCode, found.body).toBe(200);
    expect(found.json().userId).toBe(userId);
    expect((await app.inject({ method: 'DELETE', url: path, headers: SEG })).statusCode).toBe(200);
    expectError(await app.inject({ url: path, headers: SEG }), 404, 'not_found');
  });

  it('malformed URLs and over-long path parameters answer in the service error body', async () => {
    expectError(await app.inject({ url: '/v1/segments/%E0%A4%A', headers: SEG }), 400, 'bad_request');
    expectError(await app.inject({ url: `/v1/users/${'x'.repeat(5000)}`, headers: SEG }), 414, 'uri_too_long');
  });

  it('bodies that are not JSON objects name the body', async () => {
    const post = (payload: string) => app.inject({ method: 'POST', url: '/v1/predict', headers: { ...PRED, 'content-type': 'application/json' }, payload });
    for (const payload of ['{"features":', '', '{"__proto__":{"x":1},"features":{}}']) {
      const body = expectError(await post(payload), 400, 'bad_request');
      expect(pathsOf(body)).toEqual(['body']);
    }
    expect(expectError(await post('{"constructor":{"prototype":{}},"features":{}}'), 400).message).toContain('a "constructor" object with a "prototype"');
  });

  it('a value that fits no form of a union is reported where it went wrong, not at the union', async () => {
    const rule = { all: [{ feature: 'Weekend', gt: 'a' }, { score: { gte: 'x' } }] };
    const body = expectError(await app.inject({ method: 'POST', url: '/v1/segments', headers: SEG, payload: { name: 'x', rule } }), 400, 'validation_error');
    expect(pathsOf(body)).toEqual(['rule.all[0].gt', 'rule.all[1].score.gte']);
    const canary = expectError(await app.inject({ method: 'POST', url: `/v1/models/${app.services.models.active!.id}/canary`, headers: ADMIN, payload: { percent: 101, reason: 5 } }), 400);
    expect(pathsOf(canary)).toEqual(['percent', 'reason']);
    // A wrong type is reported once, not again by the checks that assume the right type.
    const wrongType = expectError(await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId: [], features } }), 400);
    expect(wrongType.details.filter((d) => d.path === 'userId')).toHaveLength(1);
  });

  it('query numbers are read strictly, and a score condition needs a number', async () => {
    for (const query of ['minScore=', 'minScore=abc', 'minScore=1.5', 'limit=0x10', 'limit=', 'limit=0']) {
      const body = expectError(await app.inject({ url: `/v1/segments/high-intent/members?${query}`, headers: SEG }), 400, 'validation_error');
      expect(pathsOf(body), query).toEqual([query.split('=')[0]]);
    }
    const ok = await app.inject({ url: '/v1/segments/high-intent/members?limit=5&minScore=0.25', headers: SEG });
    expect(ok.statusCode, ok.body).toBe(200);
    expectError(await app.inject({ method: 'POST', url: '/v1/segments', headers: SEG, payload: { name: 'never', rule: { score: { eq: 'abc' } } } }), 400, 'validation_error');
  });

  it('an audience CSV without data rows ends as a failed job that says why', async () => {
    const boundary = 'edge-boundary';
    const payload = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="empty.csv"\r\nContent-Type: text/csv\r\n\r\nuserId,PageValues\r\n\r\n--${boundary}--\r\n`;
    const res = await app.inject({ method: 'POST', url: '/v1/segments/score', headers: { ...SEG, 'content-type': `multipart/form-data; boundary=${boundary}` }, payload });
    expect(res.statusCode, res.body).toBe(202);
    const id = res.json().jobId as string;
    const jobs = app.services.scoringJobs;
    await until(() => ['succeeded', 'failed'].includes(jobs.get(id).status), 'the job to finish');
    expect(jobs.get(id)).toMatchObject({ status: 'failed', error: expect.stringContaining('no data rows') });
  });

  it('audience CSV cells are judged like request values: unparseable numbers and booleans make the row invalid', async () => {
    const header = Object.keys(features);
    const row = (over: Record<string, string>) => header.map((k) => over[k] ?? String(features[k as keyof typeof features])).join(',');
    const csvText = [
      `userId,${header.join(',')}`,
      `good-1,${row({})}`,
      `bad-number,${row({ PageValues: 'abc' })}`,
      `bad-boolean,${row({ Weekend: 'maybe' })}`,
      `bad-hex,${row({ ExitRates: '0x10' })}`,
    ].join('\n');
    const boundary = 'edge-boundary-2';
    const payload = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="aud.csv"\r\nContent-Type: text/csv\r\n\r\n${csvText}\r\n--${boundary}--\r\n`;
    const res = await app.inject({ method: 'POST', url: '/v1/segments/score', headers: { ...SEG, 'content-type': `multipart/form-data; boundary=${boundary}` }, payload });
    expect(res.statusCode, res.body).toBe(202);
    const id = res.json().jobId as string;
    const jobs = app.services.scoringJobs;
    await until(() => ['succeeded', 'failed'].includes(jobs.get(id).status), 'the job to finish');
    const job = jobs.get(id);
    expect(job).toMatchObject({ status: 'succeeded', scored: 1, invalid: 3 });
    expect(job.errors.map((e) => e.path).sort()).toEqual(['features.ExitRates', 'features.PageValues', 'features.Weekend']);
  });

  it('reads that need Redis answer 503 while it is down, not 500', async () => {
    await redis.stop();
    try {
      const body = expectError(await app.inject({ url: '/v1/users/someone', headers: SEG }), 503, 'unavailable');
      expect(body.message).toContain('redis');
      // Predictions do not need it.
      expect((await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { features } })).statusCode).toBe(200);
    } finally {
      await redis.startProcess();
    }
  });
});
