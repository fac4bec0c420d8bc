import type { BenchContext } from './context.js';
import type { ServerHandle } from './children.js';
import { fmt, loadTable, type LoadResult } from './load.js';

export interface Comparison {
  bare: LoadResult;
  service: LoadResult;
  ratio: number;
  /** Share of measured service requests the model actually scored (i.e. cache misses). */
  missShare: number;
  l2Hits: number;
  l2Errors: number;
}

/**
 * Loads the bare baseline and then the service with the same single-row predict traffic and
 * prints both, the service/bare ratio and how often the service really ran the model.
 */
export async function compareWithBare(ctx: BenchContext, service: ServerHandle, serviceLabel: string): Promise<Comparison> {
  const bareServer = await ctx.bareServer();
  const bare = await ctx.predictLoad('bare fastify', bareServer);
  let before = await ctx.serviceStats(service);
  const svc = await ctx.predictLoad(serviceLabel, service, {
    beforeMeasure: async () => {
      before = await ctx.serviceStats(service);
    },
  });
  const after = await ctx.serviceStats(service);
  const ratio = svc.reqPerSec / bare.reqPerSec;
  const scored = after.rowsScored - before.rowsScored;
  const missShare = svc.responses ? scored / svc.responses : NaN;
  ctx.log(loadTable([bare, svc]));
  ctx.log(`ratio service/bare (req/s): ${fmt.ratio(ratio)}`);
  ctx.log(
    `model calls: ${fmt.n(scored)} rows in ${fmt.n(after.batches - before.batches)} micro-batches ` +
      `(avg ${fmt.n(scored / Math.max(1, after.batches - before.batches), 1)} rows/batch); ` +
      `cache-miss share ${fmt.n(missShare * 100, 1)}%; L2 hits ${after.l2Hits - before.l2Hits}, L2 errors ${after.l2Errors - before.l2Errors}; backend ${after.backend}`,
  );
  return { bare, service: svc, ratio, missShare, l2Hits: after.l2Hits - before.l2Hits, l2Errors: after.l2Errors - before.l2Errors };
}
