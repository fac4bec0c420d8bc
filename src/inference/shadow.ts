import type { FastifyBaseLogger } from 'fastify';
import type { Scorer } from './scorer.js';
import type { LoadedModel } from './loaded-model.js';
import { MicroBatcher } from './micro-batcher.js';
import type { Lifecycle } from '../registry/lifecycle.js';
import { coerceFeatures } from '../preprocessing/coerce.js';

/** Largest shadow model call (rows scored together; as BATCH_MAX_SIZE's default). */
const SHADOW_BATCH = 256;

/**
 * Each shadow version's own micro-batcher, not the version's serving one: that one reports every
 * model call to intent_micro_batch_rows, which describes how served requests are coalesced.
 * Kept per loaded version and dropped with it.
 */
const batchers = new WeakMap<LoadedModel, MicroBatcher>();

function shadowBatcher(model: LoadedModel): MicroBatcher {
  let b = batchers.get(model);
  if (!b) {
    b = new MicroBatcher(model.encoder.width, (data, rows) => model.predictSync(data, rows), { maxBatch: SHADOW_BATCH, maxWaitMs: 0 });
    batchers.set(model, b);
  }
  return b;
}

/**
 * Shadow mode: every prediction served by the active model is also scored by the shadow version,
 * off the request path (a micro-batcher of its own), and only agreement statistics are kept.
 * Served means requests (single and batch): background job rows never reach onScored listeners.
 */
export function attachShadowScoring(scorer: Scorer, lifecycle: Lifecycle, log: FastifyBaseLogger): void {
  scorer.onScored((event) => {
    const shadow = lifecycle.shadowing;
    if (!shadow || shadow === event.model) return;
    // The shadow version may have another spec: re-validate the raw values against it.
    const { values, issues } = coerceFeatures(shadow.spec, event.values);
    if (issues.length) {
      lifecycle.recordShadowIncompatible(shadow.id);
      return;
    }
    const row = new Float32Array(shadow.encoder.width);
    shadow.encoder.encodeInto(values, row, 0);
    // Pinned until scored, so a retire meanwhile frees the weights only after this row's batch.
    shadow
      .use((m) => shadowBatcher(m).score(row))
      .then((p) => lifecycle.recordShadow(shadow.id, event.prediction.probability, event.prediction.label, p, p >= shadow.spec.threshold))
      .catch((err) => log.debug({ err: (err as Error).message }, 'shadow scoring failed'));
  });
}
