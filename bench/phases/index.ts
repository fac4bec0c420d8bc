import type { Phase } from '../lib/context.js';
import { predictPhase } from './predict.js';
import { redisPhase } from './redis.js';
import { batchPhase } from './batch.js';
import { faultPhase } from './fault.js';
import { latencyPhase } from './latency.js';
import { segmentsPhase } from './segments.js';
import { retrainPhase, swapPhase } from './lifecycle.js';
import { explainPhase } from './explain.js';

/**
 * Every bench phase, in default run order. To add one (retrain, swap, …): write
 * bench/phases/<name>.ts exporting a Phase and append it here; `--only <name>` then selects it.
 */
export const phases: Phase[] = [predictPhase, redisPhase, latencyPhase, batchPhase, faultPhase, retrainPhase, swapPhase, explainPhase, segmentsPhase];
