import Fastify, { type FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator } from '../src/http/auth.js';
import { installErrorHandling } from '../src/http/error-handler.js';
import { ConfigError } from '../src/config/env.js';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { expectError } from './helpers/http.js';

const API_KEYS = 'predict:pkey-123456,segments+admin:akey-123456';
const PREDICT_KEY = 'pkey-123456';
const ADMIN_KEY = 'akey-123456';

let features: Record<string, unknown>;

beforeAll(() => {
  [features] = shopperFeatureRows(1);
});

describe('with API_KEYS', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await buildTestApp({ API_KEYS });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
  });

  const predict = (authorization?: string) =>
    app.inject({ method: 'POST', url: '/v1/predict', payload: { features }, headers: authorization === undefined ? {} : { authorization } });

  it('no Authorization header → 401', async () => {
    const body = expectError(await predict(), 401, 'unauthorized');
    expect(body.message).toMatch(/Bearer/);
  });

  it.each([
    ['an unknown key', 'Bearer nope-123456'],
    ['a key that is a prefix of a real one', 'Bearer pkey-12345'],
    ['a real key with the wrong scheme', `Basic ${PREDICT_KEY}`],
    ['a real key without a scheme', PREDICT_KEY],
    ['an empty bearer', 'Bearer '],
  ])('%s → 401', async (_label, header) => {
    expectError(await predict(header), 401, 'unauthorized');
  });

  it('the predict key on /v1/predict → 200', async () => {
    const res = await predict(`Bearer ${PREDICT_KEY}`);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().modelVersion).toBe('shoppers-mlp-v1');
    // The scheme is case-insensitive.
    expect((await predict(`bearer ${PREDICT_KEY}`)).statusCode).toBe(200);
  });

  it('the segments+admin key on /v1/predict → 403 naming the missing scope', async () => {
    const body = expectError(await predict(`Bearer ${ADMIN_KEY}`), 403, 'forbidden');
    expect(body.message).toMatch(/"predict" scope/);
  });

  it('batch and schema need the predict scope too', async () => {
    const batch = (authorization: string) =>
      app.inject({ method: 'POST', url: '/v1/predict/batch', payload: { instances: [{ features }] }, headers: { authorization } });
    expect((await batch(`Bearer ${PREDICT_KEY}`)).statusCode).toBe(200);
    expectError(await batch(`Bearer ${ADMIN_KEY}`), 403, 'forbidden');
    expectError(await app.inject({ method: 'GET', url: '/v1/schema' }), 401, 'unauthorized');
    expect((await app.inject({ method: 'GET', url: '/v1/schema', headers: { authorization: `Bearer ${PREDICT_KEY}` } })).statusCode).toBe(200);
  });

  it('authentication runs before validation: a bad body without a key is 401, not 400', async () => {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features: { Month: {} } } });
    expectError(res, 401, 'unauthorized');
  });

  it('health probes stay open', async () => {
    expect((await app.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
  });
});

describe('open mode (API_KEYS unset)', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    app = await buildTestApp({});
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('predict works without a key (and with any header)', async () => {
    expect(app.services.auth.open).toBe(true);
    const res = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features } });
    expect(res.statusCode, res.body).toBe(200);
    const withJunk = await app.inject({ method: 'POST', url: '/v1/predict', payload: { features }, headers: { authorization: 'Bearer whatever' } });
    expect(withJunk.statusCode).toBe(200);
  });

  it('reads are open, but nothing that changes state: segment writes and user erasure answer 403 and change nothing', async () => {
    const before = await app.inject({ method: 'GET', url: '/v1/segments' });
    expect(before.statusCode, before.body).toBe(200);
    const rule = { name: 'open-mode', rule: { score: { gte: 0.5 } } };
    const refused = [
      await app.inject({ method: 'POST', url: '/v1/segments', payload: rule }),
      await app.inject({ method: 'PUT', url: '/v1/segments/high-intent', payload: rule }),
      await app.inject({ method: 'DELETE', url: '/v1/segments/high-intent' }),
      await app.inject({ method: 'DELETE', url: '/v1/users/u-1' }),
      await app.inject({ method: 'DELETE', url: '/v1/jobs/job-1' }),
    ];
    for (const res of refused) expect(expectError(res, 403, 'forbidden').message).toMatch(/API_KEYS/);
    const after = await app.inject({ method: 'GET', url: '/v1/segments' });
    expect(after.json()).toEqual(before.json());
  });
});

describe('Authenticator', () => {
  /** A minimal Fastify with one route per requirement, using the service's error handling. */
  async function probe(auth: Authenticator): Promise<FastifyInstance> {
    const app = Fastify({ logger: false });
    installErrorHandling(app);
    for (const scope of ['predict', 'segments', 'admin', 'read'] as const) {
      app.route({ method: ['GET', 'POST'], url: `/${scope}`, preHandler: auth.require(scope), handler: async (request) => ({ actor: request.actor }) });
    }
    await app.ready();
    return app;
  }
  const call = (app: FastifyInstance, path: string, key?: string) =>
    app.inject({ method: 'GET', url: path, headers: key ? { authorization: `Bearer ${key}` } : {} });

  it('open mode refuses admin, even with a bearer header, and allows the rest as "anonymous"', async () => {
    const auth = new Authenticator(undefined);
    expect(auth.open).toBe(true);
    expect(auth.scopesFor(`Bearer ${ADMIN_KEY}`)).toBeNull();
    const app = await probe(auth);
    try {
      for (const key of [undefined, ADMIN_KEY]) {
        const body = expectError(await call(app, '/admin', key), 403, 'forbidden');
        expect(body.message).toMatch(/API_KEYS/);
      }
      for (const path of ['/predict', '/segments', '/read']) {
        const res = await call(app, path);
        expect(res.statusCode, path).toBe(200);
        expect(res.json()).toEqual({ actor: 'anonymous' });
      }
      // Outside the predict scope only GET/HEAD are open.
      for (const path of ['/segments', '/read']) expect(expectError(await app.inject({ method: 'POST', url: path }), 403, 'forbidden').message).toMatch(/API_KEYS/);
      expect((await app.inject({ method: 'POST', url: '/predict' })).statusCode).toBe(200);
    } finally {
      await app.close();
    }
  });

  it('with keys: scopes decide, "read" accepts any valid key, the actor is a fingerprint', async () => {
    const auth = new Authenticator(API_KEYS);
    expect(auth.open).toBe(false);
    expect([...(auth.scopesFor(`Bearer ${PREDICT_KEY}`)?.scopes ?? [])]).toEqual(['predict']);
    expect([...(auth.scopesFor(`Bearer ${ADMIN_KEY}`)?.scopes ?? [])].sort()).toEqual(['admin', 'segments']);
    expect(auth.scopesFor(undefined)).toBeNull();
    expect(auth.scopesFor('Bearer two words')).toBeNull();

    const app = await probe(auth);
    try {
      expect((await call(app, '/admin', ADMIN_KEY)).statusCode).toBe(200);
      expect((await call(app, '/segments', ADMIN_KEY)).statusCode).toBe(200);
      expect(expectError(await call(app, '/admin', PREDICT_KEY), 403, 'forbidden').message).toMatch(/"admin" scope/);
      expect(expectError(await call(app, '/segments', PREDICT_KEY), 403, 'forbidden').message).toMatch(/"segments" scope/);
      expectError(await call(app, '/read'), 401, 'unauthorized');
      for (const key of [PREDICT_KEY, ADMIN_KEY]) {
        const res = await call(app, '/read', key);
        expect(res.statusCode).toBe(200);
        const { actor } = res.json() as { actor: string };
        expect(actor).toMatch(/^key:[0-9a-f]{8}$/);
        expect(actor).not.toContain(key);
      }
      const a = (await call(app, '/read', PREDICT_KEY)).json().actor;
      const b = (await call(app, '/read', ADMIN_KEY)).json().actor;
      expect(a).not.toBe(b);
    } finally {
      await app.close();
    }
  });

  it('rejects malformed key lists at construction', () => {
    expect(() => new Authenticator('root:abcdefgh123')).toThrow(ConfigError);
    expect(() => new Authenticator('predict:short')).toThrow(/at least 8/);
    expect(() => new Authenticator('predict-only-no-colon')).toThrow(/scope\[\+scope\]:key/);
  });
});

describe('auth runs before body validation', () => {
  it('an admin route refuses a bad body with 403 in open mode, and 401 without a key, not 400', async () => {
    const open = await buildTestApp({});
    try {
      const res = await open.inject({ method: 'POST', url: '/v1/models/retrain', payload: {} });
      expect(res.statusCode).toBe(403);
    } finally {
      await open.close();
    }
    const keyed = await buildTestApp({ API_KEYS: 'predict:pkey-123456,segments+admin:akey-123456' });
    try {
      expect((await keyed.inject({ method: 'POST', url: '/v1/predict', payload: { nonsense: true } })).statusCode).toBe(401);
    } finally {
      await keyed.close();
    }
  });
});
