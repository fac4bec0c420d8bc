import { ModelStore, problemOf } from './model-store.js';
import { loadLayersModelFromDir } from './keras-topology.js';
import { LoadedModel } from '../inference/loaded-model.js';
import { verifyManifest, type Manifest } from './manifest.js';
import { cacheScope } from '../cache/cache-scope.js';
import { coerceFeatures } from '../preprocessing/coerce.js';
import { PersonasSchema, type Personas } from '../segments/personas.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Verifies checksums, loads weights, checks the spec matches the model, and warms up with a
 * prediction on a typical row — all before the version can be swapped in.
 */
/** personas.json of a version whose model takes `width` inputs: centroids of that width, or an error saying what is wrong. */
export function checkPersonas(raw: unknown, width: number): Personas {
  const parsed = PersonasSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`personas.json is not valid: ${problemOf(parsed.error)}`);
  const personas = parsed.data;
  if (personas.centroids.length === 0) throw new Error('personas.json has no centroids');
  if (personas.centroids.some((c) => c.length !== width)) throw new Error(`personas.json centroids do not match the model input width (${width})`);
  return personas;
}

export async function loadVersion(
  store: ModelStore,
  id: string,
  batching: { maxBatch: number; maxWaitMs: number; onBatch?: (rows: number) => void },
): Promise<LoadedModel> {
  if (!store.has(id)) throw new Error(`version ${id} not found`);
  // The manifest verified here also scopes the version's score-cache keys (ids are reusable).
  const manifest = store.readJson<Manifest>(id, 'manifest.json');
  verifyManifest(store.dir(id), manifest);
  const spec = store.spec(id);
  const personasPath = join(store.dir(id), 'personas.json');
  const personasJson = existsSync(personasPath) ? store.readJson(id, 'personas.json') : null;
  const model = await loadLayersModelFromDir(store.dir(id));
  let loaded: LoadedModel;
  try {
    const personas = personasJson === null ? null : checkPersonas(personasJson, model.inputs[0].shape[1] ?? -1);
    loaded = new LoadedModel(id, spec, model, batching, personas, cacheScope(id, manifest));
  } catch (err) {
    model.dispose();
    throw err;
  }
  // The version is nobody else's yet: any failure here (a warm-up that throws included) must
  // free its runner, chain and weights, or every failed load leaks them.
  try {
    const { values } = coerceFeatures(spec, exampleFeatures(spec));
    const row = new Float32Array(loaded.encoder.width);
    loaded.encoder.encodeInto(values, row, 0);
    const [p] = loaded.predictSync(row, 1);
    if (!Number.isFinite(p) || p < 0 || p > 1) throw new Error(`version ${id} warm-up produced ${p}, not a probability`);
  } catch (err) {
    loaded.retire();
    throw err;
  }
  return loaded;
}

/** A typical input (imputation values), also shown as the example body in /v1/schema. */
export function exampleFeatures(spec: ReturnType<ModelStore['spec']>): Record<string, number | string | boolean> {
  return Object.fromEntries(spec.features.map((f) => [f.name, f.impute]));
}
