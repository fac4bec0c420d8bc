import { ModelStore, newVersionId, type VersionCard } from '../registry/model-store.js';
import { modelToFiles } from '../registry/version-files.js';
import type { TrainResult } from './train.js';
import { fitPersonas } from '../segments/personas.js';
import type { Pacer } from '../lib/pacer.js';

const json = (v: unknown) => Buffer.from(JSON.stringify(v, null, 2) + '\n');

/** Writes a trained model as a new immutable version in the store; returns its id. */
export async function saveTrainedVersion(
  store: ModelStore,
  result: TrainResult,
  meta: { id?: string; dataset?: string; categorical?: string[]; extraFiles?: Map<string, Buffer>; personas?: number; pacer?: Pacer } = {},
): Promise<string> {
  const files = await modelToFiles(result.model);
  files.set('feature-spec.json', json(result.spec));
  const x = result.trainMatrix;
  files.set('personas.json', json(await fitPersonas(result.spec, x.data, x.rows, { seed: result.seed, k: meta.personas, pacer: meta.pacer })));
  files.set('metrics.json', json({ ...result.metrics, cleaning: result.cleaning, split: result.split, history: result.history }));
  for (const [k, v] of meta.extraFiles ?? []) files.set(k, v);
  const t = result.metrics.test;
  const card: VersionCard = {
    id: meta.id ?? newVersionId(result.dataFingerprint),
    created: new Date().toISOString(),
    source: 'trained',
    dataFingerprint: result.dataFingerprint,
    parameters: {
      dataset: meta.dataset,
      label: result.spec.label,
      categorical: meta.categorical ?? [],
      seed: result.seed,
      hyperparameters: result.hyperparameters,
      bestEpoch: result.bestEpoch,
      calibration: result.calibration,
      threshold: result.spec.threshold,
    },
    headline: { auc: t.auc, f1: t.f1, brier: t.brier, logLoss: t.logLoss },
  };
  return store.writeVersion(card, files);
}
