import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { TestRedis } from './helpers/redis-server.js';

const API_KEYS = 'segments:seg-key-1234,predict:pred-key-1234';
const SEG = { authorization: 'Bearer seg-key-1234' };
const PRED = { authorization: 'Bearer pred-key-1234' };

/**
 * Members tied on score are ordered by userId as Redis orders them (UTF-8 bytes). Ids whose UTF-16
 * and UTF-8 orders differ (astral characters against high BMP ones) must page without a skip or
 * a repeat, in both stores.
 */
describe.each([{ store: 'memory' as const }, { store: 'redis' as const }])('paging tied members with non-ASCII ids ($store store)', ({ store }) => {
  let app: FastifyInstance;
  let redis: TestRedis | undefined;
  const ids = ['a', 'z', '\uFFFD', '\uFFFDx', '\u{1F600}', '\u{1F600}x', 'é', '\u4E2D', '~'].map((s) => `tie-${s}`);

  beforeAll(async () => {
    if (store === 'redis') redis = await TestRedis.start();
    app = await buildTestApp({ API_KEYS, REDIS_URL: redis?.url });
    await app.ready();
    const features = shopperFeatureRows(1)[0];
    for (const userId of ids) {
      const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId, features } });
      expect(res.statusCode).toBe(200);
    }
    await app.services.segments.flush();
  });
  afterAll(async () => {
    await app?.close();
    await redis?.close();
  });

  it('pages of one list every tied member once, in byte order, like one big page', async () => {
    const band = (await app.inject({ url: `/v1/users/${encodeURIComponent(ids[0])}`, headers: SEG })).json().segments[0] as string;
    const big = (await app.inject({ url: `/v1/segments/${band}/members?limit=1000`, headers: SEG })).json().members as { userId: string }[];
    expect(big.map((m) => m.userId).sort()).toEqual([...ids].sort());
    const byBytesDesc = [...ids].sort((a, b) => Buffer.compare(Buffer.from(b), Buffer.from(a)));
    expect(big.map((m) => m.userId)).toEqual(byBytesDesc);
    const small: string[] = [];
    let cursor: string | null = null;
    do {
      const url: string = `/v1/segments/${band}/members?limit=1${cursor ? `&cursor=${cursor}` : ''}`;
      const page = (await app.inject({ url, headers: SEG })).json() as { members: { userId: string }[]; nextCursor: string | null };
      small.push(...page.members.map((m) => m.userId));
      cursor = page.nextCursor;
    } while (cursor && small.length <= ids.length);
    expect(small).toEqual(big.map((m) => m.userId));
  });
});
