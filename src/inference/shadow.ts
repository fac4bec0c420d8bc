import type { FastifyBaseLogger } from 'fastify';
import type { Scorer } from './scorer.js';
import type { Lifecycle } from '../registry/lifecycle.js';
import { coerceFeatures } from '../preprocessing/coerce.js';

/**
 * Shadow mode: every prediction served by the active model is also scored by the shadow version,
 * off the request path (its own micro-batcher), and only agreement statistics are kept.
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
    shadow
      .use((m) => m.batcher.score(row))
      .then((p) => lifecycle.recordShadow(shadow.id, event.prediction.probability, event.prediction.label, p, p >= shadow.spec.threshold))
      .catch((err) => log.debug({ err: (err as Error).message }, 'shadow scoring failed'));
  });
}
