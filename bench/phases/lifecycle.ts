import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Phase } from '../lib/context.js';
import { fmt, loadTable } from '../lib/load.js';
import { runPaced } from '../lib/paced.js';
import { addSecondVersion, BUNDLED_VERSION } from '../../test/helpers/second-version.js';

const RATE = Number(process.env.BENCH_LIFECYCLE_RATE || 1000);
const ADMIN_KEY = 'bench-admin-key';
const PREDICT_KEY = 'bench-predict-key';
const KEYS = `admin:${ADMIN_KEY},predict:${PREDICT_KEY}`;
const predictHeaders = { authorization: `Bearer ${PREDICT_KEY}` };
const auth = { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' };

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { method: 'POST', headers: auth, body: JSON.stringify(body ?? {}) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/**
 * p99 of /v1/predict (open loop, RATE req/s) while a retraining job runs in the worker thread,
 * against the same load without it. Target ≤ 1.5×.
 */
export const retrainPhase: Phase = {
  name: 'retrain',
  description: `predict p99 at ${RATE} req/s with and without a retraining job in the worker thread`,
  async run(ctx) {
    const service = await ctx.startService('service', { API_KEYS: KEYS, DATA_DIR: resolve('data') });
    const dur = ctx.settings.durationSec;
    const load = (label: string) => runPaced({ label, url: service.url, path: '/v1/predict', rate: RATE, durationSec: dur, body: () => ctx.bodies.nextPredict(), headers: predictHeaders });
    await runPaced({ label: 'warm-up', url: service.url, path: '/v1/predict', rate: RATE, durationSec: ctx.settings.warmupSec, body: () => ctx.bodies.nextPredict(), headers: predictHeaders });
    const steady = await load(`steady @${RATE}/s`);

    const started = await post(`${service.url}/v1/models/retrain`, {
      dataset: { path: 'online_shoppers_intention.csv' },
      label: 'Revenue',
      positive: 'TRUE',
      categorical: ['OperatingSystems', 'Browser', 'Region', 'TrafficType'],
      hyperparameters: { epochs: 200, patience: 200 }, // keeps the worker busy for the whole window
      promote: 'never',
    });
    if (started.status !== 202) throw new Error(`retrain did not start: ${started.status} ${JSON.stringify(started.json)}`);
    const jobUrl = `${service.url}/v1/jobs/${started.json.jobId}`;
    await sleep(1500); // the worker is loading data and training
    const during = await load(`during retrain @${RATE}/s`);
    const job = (await fetch(jobUrl, { headers: auth }).then((r) => r.json() as Promise<{ status: string; epoch: number | null }>).catch(() => null)) ?? undefined;
    await fetch(jobUrl, { method: 'DELETE', headers: auth }).catch(() => undefined);
    ctx.log(loadTable([steady, during]));
    ctx.log(`retrain job while measuring: status ${job?.status ?? '?'}, epoch ${job?.epoch ?? '?'} (cancelled afterwards)`);
    const ratio = during.p99 / Math.max(steady.p99, 1e-9);
    ctx.log(`p99 during retrain / steady p99: ${ratio.toFixed(2)}× (p50 ${fmt.ms(during.p50)} vs ${fmt.ms(steady.p50)} ms)`);
    ctx.check('p99 during retrain / steady', '<= 1.5x', `${ratio.toFixed(2)}x (${fmt.ms(during.p99)} vs ${fmt.ms(steady.p99)} ms)`, ratio <= 1.5);
    ctx.check('failed requests during retrain', '0', `${during.non2xx + during.errors}`, during.non2xx + during.errors === 0);
    await service.stop();
  },
};

/**
 * One activation per second for SWAP_SECONDS under open-loop load: every request must succeed and
 * p99 stay within 2× the steady p99.
 */
export const swapPhase: Phase = {
  name: 'swap',
  description: `one model swap per second under ${RATE} req/s of predict load`,
  async run(ctx) {
    const seconds = Number(process.env.BENCH_SWAP_SECONDS || 30);
    addSecondVersion(ctx.modelStoreCopy(), 'bench-b');
    const service = await ctx.startService('service', { API_KEYS: KEYS });
    const load = (label: string, durationSec: number) =>
      runPaced({ label, url: service.url, path: '/v1/predict', rate: RATE, durationSec, body: () => ctx.bodies.nextPredict(), headers: predictHeaders });
    await load('warm-up', ctx.settings.warmupSec);
    const steady = await load(`steady @${RATE}/s`, ctx.settings.durationSec);

    let swaps = 0;
    let swapFailures = 0;
    let stop = false;
    const swapper = (async () => {
      const versions = ['bench-b', BUNDLED_VERSION];
      while (!stop) {
        const t = performance.now();
        const r = await post(`${service.url}/v1/models/${versions[swaps % 2]}/activate`, { reason: 'bench swap' }).catch(() => ({ status: 0, json: {} }));
        if (r.status === 200) swaps++;
        else swapFailures++;
        await sleep(Math.max(0, 1000 - (performance.now() - t)));
      }
    })();
    const during = await load(`swapping 1/s @${RATE}/s`, seconds);
    stop = true;
    await swapper;
    ctx.log(loadTable([steady, during]));
    const ratio = during.p99 / Math.max(steady.p99, 1e-9);
    ctx.log(`${swaps} swaps in ${seconds} s (${swapFailures} refused); p99 while swapping / steady p99: ${ratio.toFixed(2)}×`);
    const failed = during.non2xx + during.errors;
    ctx.check('failed requests while swapping', '0', `${failed} of ${fmt.n(during.responses)}`, failed === 0);
    ctx.check('p99 while swapping / steady', '<= 2x', `${ratio.toFixed(2)}x (${fmt.ms(during.p99)} vs ${fmt.ms(steady.p99)} ms)`, ratio <= 2);
    ctx.check('swaps performed', `>= ${seconds - 2}`, `${swaps}`, swaps >= seconds - 2 && swapFailures === 0);
    await service.stop();
  },
};
