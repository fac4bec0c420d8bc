import { tf } from '../inference/backend.js';
import { createRng, shuffleInPlace } from '../lib/random.js';
import { rocAuc } from './metrics.js';
import type { Pacer } from '../lib/pacer.js';

export interface Hyperparameters {
  hidden: number[];
  l2: number;
  learningRate: number;
  batchSize: number;
  epochs: number;
  patience: number;
  /** Weight positives by n_neg/n_pos (probabilities are recalibrated on validation afterwards). */
  classWeighting: boolean;
}

export const DEFAULT_HYPERPARAMETERS: Hyperparameters = {
  hidden: [64, 32],
  l2: 3e-3,
  learningRate: 1e-3,
  batchSize: 128,
  epochs: 60,
  patience: 8,
  classWeighting: true,
};

export interface EpochReport {
  epoch: number;
  loss: number;
  validationAuc: number;
  validationLoss: number;
}

export interface Matrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

export function buildMlp(inputWidth: number, hp: Hyperparameters, seed: number): tf.LayersModel {
  const model = tf.sequential();
  hp.hidden.forEach((units, i) =>
    model.add(
      tf.layers.dense({
        ...(i === 0 ? { inputShape: [inputWidth] } : {}),
        units,
        activation: 'relu',
        kernelInitializer: tf.initializers.heNormal({ seed: seed + i }),
        kernelRegularizer: hp.l2 > 0 ? tf.regularizers.l2({ l2: hp.l2 }) : undefined,
        name: `hidden_${i + 1}`,
      }),
    ),
  );
  model.add(
    tf.layers.dense({
      units: 1,
      activation: 'sigmoid',
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 100 }),
      name: 'output',
    }),
  );
  model.compile({ optimizer: tf.train.adam(hp.learningRate), loss: 'binaryCrossentropy' });
  return model;
}

export async function predictMatrix(model: tf.LayersModel, x: Matrix): Promise<Float32Array> {
  const input = tf.tensor2d(x.data, [x.rows, x.cols]);
  const out = model.predictOnBatch(input) as tf.Tensor;
  const values = (await out.data()) as Float32Array;
  input.dispose();
  out.dispose();
  return values;
}

/**
 * Mini-batch training with seeded shuffling and early stopping on validation AUC;
 * the best epoch's weights are restored at the end.
 */
export async function trainMlp(
  train: { x: Matrix; y: Uint8Array },
  validation: { x: Matrix; y: Uint8Array },
  hp: Hyperparameters,
  seed: number,
  hooks: { onEpoch?: (r: EpochReport) => void | Promise<void>; shouldStop?: () => boolean; pacer?: Pacer } = {},
): Promise<{ model: tf.LayersModel; history: EpochReport[]; bestEpoch: number }> {
  const model = buildMlp(train.x.cols, hp, seed);
  const rng = createRng(seed ^ 0x5eed);
  const order = Array.from({ length: train.x.rows }, (_, i) => i);
  const pos = train.y.reduce((a, b) => a + b, 0);
  const classWeight = hp.classWeighting ? { 0: 1, 1: (train.y.length - pos) / Math.max(1, pos) } : undefined;
  const history: EpochReport[] = [];
  let best = { auc: -Infinity, epoch: 0, weights: [] as tf.Tensor[] };
  const pacer = hooks.pacer;
  const throttle = pacer?.active ? () => pacer.pause() : undefined;

  for (let epoch = 1; epoch <= hp.epochs; epoch++) {
    if (hooks.shouldStop?.()) throw new Error('training cancelled');
    shuffleInPlace(order, rng);
    const xs = new Float32Array(train.x.data.length);
    const ys = new Float32Array(train.y.length);
    order.forEach((src, dst) => {
      xs.set(train.x.data.subarray(src * train.x.cols, (src + 1) * train.x.cols), dst * train.x.cols);
      ys[dst] = train.y[src];
    });
    const xt = tf.tensor2d(xs, [train.x.rows, train.x.cols]);
    const yt = tf.tensor2d(ys, [ys.length, 1]);
    const fit = await model.fit(xt, yt, {
      epochs: 1,
      batchSize: hp.batchSize,
      shuffle: false,
      classWeight,
      verbose: 0,
      callbacks: throttle ? { onBatchEnd: throttle } : undefined,
    });
    xt.dispose();
    yt.dispose();

    await pacer?.pause();
    const pv = await predictMatrix(model, validation.x);
    const report: EpochReport = {
      epoch,
      loss: Number(fit.history.loss[0]),
      validationAuc: rocAuc(validation.y, pv),
      validationLoss: logLoss(validation.y, pv),
    };
    history.push(report);
    await hooks.onEpoch?.(report);
    if (report.validationAuc > best.auc + 1e-4) {
      best.weights.forEach((w) => w.dispose());
      best = { auc: report.validationAuc, epoch, weights: model.getWeights().map((w) => w.clone()) };
    } else if (epoch - best.epoch >= hp.patience) {
      break;
    }
  }
  // No epoch improved on the start (validation AUC undefined or never above 0): keep the last weights.
  if (best.weights.length) model.setWeights(best.weights);
  best.weights.forEach((w) => w.dispose());
  return { model, history, bestEpoch: best.epoch };
}

function logLoss(y: Uint8Array, p: Float32Array): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) {
    const q = Math.min(1 - 1e-7, Math.max(1e-7, p[i]));
    s -= y[i] ? Math.log(q) : Math.log(1 - q);
  }
  return s / y.length;
}

