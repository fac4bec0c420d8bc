import type { Phase } from '../lib/context.js';
import { fmt, loadTable } from '../lib/load.js';
import { runPaced } from '../lib/paced.js';

const RATE = Number(process.env.BENCH_EXPLAIN_RATE || 300);

/** What ?explain=true (integrated gradients) adds to a prediction's latency, open loop below saturation. */
export const explainPhase: Phase = {
  name: 'explain',
  description: `/v1/predict with and without ?explain=true at ${RATE} req/s`,
  async run(ctx) {
    const service = await ctx.startService('service');
    const dur = ctx.settings.durationSec;
    const run = (label: string, path: string, durationSec: number) =>
      runPaced({ label, url: service.url, path, rate: RATE, durationSec, body: () => ctx.bodies.nextPredict() });
    await run('warm-up', '/v1/predict?explain=true', ctx.settings.warmupSec);
    const plain = await run(`predict @${RATE}/s`, '/v1/predict', dur);
    const explained = await run(`predict?explain=true @${RATE}/s`, '/v1/predict?explain=true', dur);
    ctx.log(loadTable([plain, explained]));
    const added = explained.p50 - plain.p50;
    ctx.log(`explanations add ${fmt.ms(added)} ms at p50 (${fmt.ms(explained.p50)} vs ${fmt.ms(plain.p50)} ms)`);
    ctx.check('explain adds at p50', '<= 2 ms', `${fmt.ms(added)} ms`, added <= 2);
    ctx.check('failed requests', '0', `${explained.non2xx + explained.errors}`, explained.non2xx + explained.errors === 0);
    await service.stop();
  },
};
