import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { until } from './helpers/http.js';

const API_KEYS = 'segments:seg-key-1234,predict:pred-key-1234';
const SEG = { authorization: 'Bearer seg-key-1234' };
const PRED = { authorization: 'Bearer pred-key-1234' };

const isFinished = (s: string) => ['succeeded', 'failed', 'cancelled'].includes(s);

describe('scoring jobs: bookkeeping and shutdown', () => {
  let app: FastifyInstance;

  beforeAll(async () => {
    app = await buildTestApp({ API_KEYS });
    await app.ready();
  });
  afterAll(async () => {
    await app?.close();
  });

  it('keeps the last 100 finished jobs readable and forgets older ones', async () => {
    const jobs = app.services.scoringJobs;
    const ids: string[] = [];
    for (let i = 0; i < 105; i++) {
      const id = jobs.rescoreAll().id;
      ids.push(id);
      await until(() => isFinished(jobs.get(id).status), `job ${i} to finish`);
    }
    ids.push(jobs.rescoreAll().id); // pruning happens as a job starts
    expect(jobs.has(ids[0])).toBe(false);
    expect(jobs.has(ids[4])).toBe(false);
    expect(jobs.has(ids[5])).toBe(true);
    expect((await app.inject({ url: `/v1/jobs/${ids[5]}`, headers: SEG })).statusCode).toBe(200);
    expect((await app.inject({ url: `/v1/jobs/${ids[105]}`, headers: SEG })).statusCode).toBe(200);
  });

  it('closing the app cancels a running job instead of leaving it to run on closed stores', async () => {
    const other = await buildTestApp({ API_KEYS });
    await other.ready();
    const rows = shopperFeatureRows(200);
    for (let i = 0; i < 5000; i++) {
      const res = await other.inject({ method: 'POST', url: '/v1/predict', headers: PRED, payload: { userId: `u-${i}`, features: rows[i % rows.length] } });
      expect(res.statusCode).toBe(200);
    }
    await other.services.segments.flush();
    const jobs = other.services.scoringJobs;
    const id = jobs.rescoreAll().id;
    await other.close();
    const view = jobs.get(id);
    expect(view.status).toBe('cancelled');
    expect(view.rowsDone).toBeLessThan(5000);
    expect(() => jobs.rescoreAll()).toThrow(/shutting down/); // nothing starts on closed stores
  });
});
