/**
 * Imports a model exported by the Python `tensorflowjs` converter (Keras 2 or Keras 3
 * layers-model format) as a new, inactive version in the model store, after checking that it
 * can actually be served with the feature spec that comes with it.
 *
 * The files are stored exactly as uploaded (Keras 3 topologies are normalized each time they are
 * loaded, see keras-topology.ts), so the version keeps the converter's original output.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ZodError } from 'zod';
import { tf } from '../inference/backend.js';
import { AppError, ValidationError, conflict, type FieldIssue } from '../lib/errors.js';
import { FeatureSpecSchema, featureWidth, inputWidth, type FeatureSpec } from '../preprocessing/feature-spec.js';
import { coerceFeatures } from '../preprocessing/coerce.js';
import { Encoder } from '../preprocessing/transform.js';
import { checkPersonas, exampleFeatures } from './load-version.js';
import { buildManifest } from './manifest.js';
import { ModelStore, type VersionCard } from './model-store.js';
import {
  KerasSemanticsError,
  UnsupportedLayerError,
  assertKerasSemantics,
  assertSupportedLayers,
  decodedPath,
  loadLayersModelFromFiles,
  normalizeModelJson,
} from './keras-topology.js';
import { categoryOf } from '../preprocessing/category.js';
import { parseJsonText } from '../lib/json-text.js';

export interface ImportInput {
  /** model.json exactly as written by tensorflowjs_converter. */
  modelJson: Buffer;
  /** Weight shards keyed by file name (matched to weightsManifest paths by exact name, then base name). */
  shards: Map<string, Buffer>;
  /** feature-spec.json (see docs/importing-models.md). */
  featureSpec: Buffer;
  id?: string;
  notes?: string;
}

/** File names the store itself uses; a weight shard may not take one of them. */
const RESERVED = new Set(['model.json', 'feature-spec.json', 'card.json', 'manifest.json', 'metrics.json', 'personas.json']);
const PLAIN_FILE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$/;
const SIGMOID_LIKE = new Set(['sigmoid', 'hardsigmoid']);
/** Layers whose output has their input's values at inference time: the activation that counts is before them. */
const PASS_THROUGH = new Set(['Dropout', 'SpatialDropout1D', 'SpatialDropout2D', 'SpatialDropout3D', 'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'ActivityRegularization', 'Flatten', 'Reshape']);
/** Merges that keep every value in [0, 1] when all their inputs are. */
const PROBABILITY_MERGES = new Set(['Average', 'Maximum', 'Minimum']);

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const invalidModel = (message: string, details: FieldIssue[] = []) => new AppError(400, 'invalid_model', message, details);

interface Validated {
  raw: Obj;
  spec: FeatureSpec;
  changes: string[];
  /** Store file name (decoded manifest path) → original shard bytes, in manifest order. */
  shardFiles: Map<string, Buffer>;
}

function parseJson(buf: Buffer, what: string): { ok: true; value: unknown } | { ok: false; message: string } {
  try {
    return { ok: true, value: parseJsonText(buf.toString('utf8')) };
  } catch (err) {
    return { ok: false, message: `${what} is not valid JSON: ${(err as Error).message}` };
  }
}

/** `features[0].type` style path for a zod issue, prefixed with `featureSpec`. */
function issuePath(prefix: string, path: readonly PropertyKey[]): string {
  return path.reduce<string>((acc, seg) => (typeof seg === 'number' ? `${acc}[${seg}]` : `${acc}.${String(seg)}`), prefix);
}

function zodIssues(prefix: string, error: ZodError): FieldIssue[] {
  return error.issues.map((i) => ({ path: issuePath(prefix, i.path), message: i.message }));
}

/** Parses and checks a feature spec, reporting every problem with a `featureSpec.…` path. */
export function parseUploadedSpec(buf: Buffer): FeatureSpec {
  const json = parseJson(buf, 'feature spec');
  if (!json.ok) throw new ValidationError([{ path: 'featureSpec', message: json.message }]);
  const parsed = FeatureSpecSchema.safeParse(json.value);
  if (!parsed.success) throw new ValidationError(zodIssues('featureSpec', parsed.error), 'invalid feature spec');
  const issues: FieldIssue[] = [];
  const seen = new Set<string>();
  parsed.data.features.forEach((f, i) => {
    if (seen.has(f.name)) issues.push({ path: `featureSpec.features[${i}].name`, message: `duplicate feature name "${f.name}"` });
    seen.add(f.name);
    if (f.type === 'categorical') {
      // Entries that requests name alike ("2" and "2.0", "C" and " C ": see categoryOf) would leave the later one unreachable.
      const forms = f.vocabulary.map((v) => categoryOf(v));
      const j = forms.findIndex((form, k) => forms.indexOf(form) !== k);
      if (j >= 0) {
        const first = f.vocabulary[forms.indexOf(forms[j])];
        const dup = f.vocabulary[j];
        issues.push({ path: `featureSpec.features[${i}].vocabulary`, message: first === dup ? `duplicate vocabulary entry "${dup}"` : `vocabulary entries "${first}" and "${dup}" name the same category` });
      }
      if (f.frequencies && f.frequencies.length !== f.vocabulary.length) {
        issues.push({ path: `featureSpec.features[${i}].frequencies`, message: `has ${f.frequencies.length} entries, vocabulary has ${f.vocabulary.length}` });
      }
    }
    if (f.type === 'numeric' && f.clip && f.clip.min > f.clip.max) {
      issues.push({ path: `featureSpec.features[${i}].clip`, message: 'min must not exceed max' });
    }
  });
  if (issues.length) throw new ValidationError(issues, 'invalid feature spec');
  return parsed.data;
}

interface WeightGroup {
  paths: string[];
  weights: { name: string; shape: number[]; dtype: string; quantization?: { dtype?: string } }[];
}

const DTYPE_BYTES: Record<string, number> = { float32: 4, int32: 4, bool: 1, complex64: 8, uint8: 1, uint16: 2, float16: 2 };

/** Bytes the manifest's weights occupy, or null when it cannot be computed (strings, unknown dtypes). */
function expectedWeightBytes(groups: WeightGroup[]): number | null {
  let total = 0;
  for (const w of groups.flatMap((g) => (Array.isArray(g.weights) ? g.weights : []))) {
    const size = DTYPE_BYTES[w.quantization?.dtype ?? w.dtype];
    if (!size || !Array.isArray(w.shape)) return null;
    total += w.shape.reduce((n, d) => n * d, 1) * size;
  }
  return total;
}

/** Checks the model.json envelope and returns its weight groups. */
function checkModelJson(raw: unknown): { raw: Obj; groups: WeightGroup[] } {
  if (!isObj(raw)) throw invalidModel('model.json must be a JSON object');
  if (raw.format !== undefined && raw.format !== 'layers-model') {
    throw invalidModel(
      `model.json has format "${String(raw.format)}"; only Keras layers models ("layers-model") can be imported — ` +
        'convert with tensorflowjs_converter --input_format keras (or tfjs.converters.save_keras_model), not a SavedModel/graph-model conversion',
    );
  }
  if (!isObj(raw.modelTopology)) throw invalidModel('model.json has no modelTopology object; is it a tensorflowjs layers-model export?');
  const wm = raw.weightsManifest ?? [];
  const okGroups =
    Array.isArray(wm) &&
    wm.every((g) => isObj(g) && Array.isArray(g.paths) && g.paths.every((p) => typeof p === 'string') && Array.isArray(g.weights));
  if (!okGroups) throw invalidModel('model.json weightsManifest must be a list of { paths: string[], weights: [...] }');
  return { raw, groups: wm as unknown as WeightGroup[] };
}

/** Manifest path → the plain file name the shard is stored under (what loadLayersModelFromDir reads). */
function storedName(p: string, where: string): string {
  const name = decodedPath(p);
  if (!PLAIN_FILE.test(name) || RESERVED.has(name)) {
    throw invalidModel(`weight path "${p}" must be a plain file name (letters, digits, ".", "_", "-") that is not reserved`, [
      { path: where, message: 'not a plain file name' },
    ]);
  }
  return name;
}

function baseName(name: string): string {
  return name.replaceAll('\\', '/').split('/').pop() ?? name;
}

/** Every check short of writing: topology, layers, spec, shards, load, shapes, warm-up. */
async function validate(input: Pick<ImportInput, 'modelJson' | 'shards' | 'featureSpec'>, opts: { rejectExtraShards: boolean }): Promise<Validated> {
  const json = parseJson(input.modelJson, 'model.json');
  if (!json.ok) throw invalidModel(json.message);
  const { raw, groups } = checkModelJson(json.value);

  let normalized: { modelJson: object; changes: string[] };
  try {
    normalized = normalizeModelJson(raw);
  } catch (err) {
    throw invalidModel(`model.json topology could not be read: ${topologyProblem(err)}`);
  }
  try {
    assertKerasSemantics(raw);
  } catch (err) {
    if (err instanceof KerasSemanticsError) throw invalidModel(err.message, [{ path: 'model.json', message: err.message }]);
    throw invalidModel(topologyProblem(err));
  }
  try {
    assertSupportedLayers(normalized.modelJson);
  } catch (err) {
    if (err instanceof UnsupportedLayerError) {
      throw new AppError(400, 'unsupported_layer', err.message, [{ path: 'model.json', message: `unsupported layer class ${err.layerClass}` }]);
    }
    throw invalidModel(topologyProblem(err));
  }

  const spec = parseUploadedSpec(input.featureSpec);

  // Shards: every manifest path must be uploaded; match by exact name, then by base name.
  const byBase = new Map<string, Buffer>();
  for (const [k, v] of input.shards) byBase.set(baseName(k), v);
  const shardFiles = new Map<string, Buffer>();
  const missing: FieldIssue[] = [];
  const used = new Set<Buffer>();
  groups.forEach((g, gi) =>
    g.paths.forEach((p, pi) => {
      const where = `model.json weightsManifest[${gi}].paths[${pi}]`;
      const name = storedName(p, where);
      const buf = input.shards.get(p) ?? input.shards.get(name) ?? byBase.get(baseName(name));
      if (!buf) missing.push({ path: where, message: `weight shard "${p}" was not provided` });
      else {
        shardFiles.set(name, buf);
        used.add(buf);
      }
    }),
  );
  if (missing.length) {
    throw new AppError(400, 'missing_shard', `missing weight shard${missing.length > 1 ? 's' : ''}: ${missing.map((m) => m.message.split('"')[1]).join(', ')}`, missing);
  }
  if (opts.rejectExtraShards) {
    const extra = [...input.shards].filter(([, v]) => !used.has(v)).map(([k]) => k);
    if (extra.length) {
      throw new AppError(
        400,
        'unexpected_file',
        `uploaded file${extra.length > 1 ? 's' : ''} ${extra.map((e) => `"${e}"`).join(', ')} ${extra.length > 1 ? 'are' : 'is'} not listed in model.json weightsManifest`,
        extra.map((e) => ({ path: `files.${e}`, message: 'not a weight shard of this model' })),
      );
    }
  }
  const want = expectedWeightBytes(groups);
  const got = [...shardFiles.values()].reduce((n, b) => n + b.byteLength, 0);
  if (want !== null && want !== got) {
    throw invalidModel(`weight shards hold ${got} bytes but weightsManifest describes ${want} bytes (wrong or truncated shard?)`);
  }

  let model: tf.LayersModel;
  try {
    model = await loadLayersModelFromFiles(raw, shardFiles);
  } catch (err) {
    if (err instanceof UnsupportedLayerError) throw new AppError(400, 'unsupported_layer', err.message);
    throw invalidModel(`model could not be loaded: ${topologyProblem(err)}`);
  }
  try {
    checkShapes(model, spec);
    warmUp(model, spec);
  } finally {
    model.dispose();
  }
  return { raw, spec, changes: normalized.changes, shardFiles };
}

function describeWidth(spec: FeatureSpec): string {
  const cats = spec.features.filter((f) => f.type === 'categorical');
  const parts = [`${spec.features.length - cats.length} numeric/boolean feature(s) × 1`];
  for (const c of cats) parts.push(`${c.name} → ${featureWidth(c)} (${c.vocabulary.length} vocabulary + 1 out-of-vocabulary)`);
  return parts.join(', ');
}

function checkShapes(model: tf.LayersModel, spec: FeatureSpec): void {
  const width = inputWidth(spec);
  if (model.inputs.length !== 1) throw invalidModel(`the model has ${model.inputs.length} inputs; exactly one input vector is supported`);
  const inShape = model.inputs[0].shape;
  if (inShape.length !== 2) throw invalidModel(`the model input has shape ${JSON.stringify(inShape)}; expected [null, ${width}]`);
  if (inShape[1] !== width) {
    throw new AppError(
      400,
      'spec_mismatch',
      `model input width ${inShape[1]} does not match the feature spec's encoded width ${width} (${describeWidth(spec)})`,
      [{ path: 'featureSpec.features', message: `encodes ${width} inputs, the model expects ${inShape[1]}` }],
    );
  }
  if (model.outputs.length !== 1) throw invalidModel(`the model has ${model.outputs.length} outputs; exactly one probability output is supported`);
  const outShape = model.outputs[0].shape;
  if (outShape.length !== 2 || outShape[1] !== 1) {
    throw invalidModel(`the model output has shape ${JSON.stringify(outShape)}; expected [null, 1] (one sigmoid probability per row)`);
  }
  const problem = notAProbability(model.outputs[0]);
  if (problem) throw invalidModel(`${problem}; it must output a probability (sigmoid)`);
}

/**
 * Why `t` is not known to be a probability, or null when it is: the layer that sets its values,
 * found by walking back through pass-through layers (a logits Dense followed by Dropout is still
 * logits) and into nested models, must have a sigmoid-like activation. The warm-up alone cannot
 * tell: a logit can happen to fall in [0, 1] on the example row.
 */
function notAProbability(t: tf.SymbolicTensor, via: string[] = []): string | null {
  const layer = t.sourceLayer;
  const cls = layer.getClassName();
  const inputs = layer.inboundNodes[t.nodeIndex]?.inputTensors ?? [];
  const nested = (layer as unknown as { outputs?: tf.SymbolicTensor[] }).outputs;
  if (PASS_THROUGH.has(cls) && inputs.length === 1) return notAProbability(inputs[0], [...via, layer.name]);
  if (['Sequential', 'Model', 'Functional'].includes(cls) && nested?.[t.tensorIndex]) return notAProbability(nested[t.tensorIndex], [...via, layer.name]);
  if (PROBABILITY_MERGES.has(cls) && inputs.length > 0) {
    for (const x of inputs) {
      const problem = notAProbability(x, [...via, layer.name]);
      if (problem) return problem;
    }
    return null;
  }
  const where = via.length ? `the layer "${layer.name}" that sets the model output (reached through ${via.map((n) => `"${n}"`).join(', ')})` : `the output layer "${layer.name}"`;
  const activation = (layer.getConfig() as { activation?: unknown }).activation;
  if (typeof activation !== 'string') return `${where} is a ${cls} layer, which has no activation`;
  return SIGMOID_LIKE.has(activation.toLowerCase().replaceAll('_', '')) ? null : `${where} has activation "${activation}"`;
}

/** Predicts on the spec's imputation values; the result must be a probability. */
function warmUp(model: tf.LayersModel, spec: FeatureSpec): void {
  const encoder = new Encoder(spec);
  const { values } = coerceFeatures(spec, exampleFeatures(spec));
  const row = new Float32Array(encoder.width);
  encoder.encodeInto(values, row, 0);
  let p: number;
  try {
    p = tf.tidy(() => (model.predict(tf.tensor2d(row, [1, encoder.width])) as tf.Tensor).dataSync()[0]);
  } catch (err) {
    throw invalidModel(`warm-up prediction failed: ${(err as Error).message}`);
  }
  if (!Number.isFinite(p) || p < 0 || p > 1) {
    throw invalidModel(`warm-up prediction on the spec's imputation values gave ${p}, not a probability in [0, 1]`);
  }
}

function cardFor(id: string, v: Validated, notes?: string): VersionCard {
  const topo = v.raw.modelTopology as Obj;
  return {
    id,
    created: new Date().toISOString(),
    source: 'imported',
    parameters: {
      normalizations: v.changes,
      generatedBy: typeof v.raw.generatedBy === 'string' ? v.raw.generatedBy : null,
      convertedBy: typeof v.raw.convertedBy === 'string' ? v.raw.convertedBy : null,
      kerasVersion: typeof topo.keras_version === 'string' ? topo.keras_version : null,
      inputWidth: inputWidth(v.spec),
      threshold: v.spec.threshold,
    },
    ...(notes ? { notes } : {}),
  };
}

export function importedVersionId(): string {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `imported-${stamp}-${randomBytes(3).toString('hex')}`;
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v, null, 2) + '\n');

/**
 * Validates an uploaded tfjs layers model with its feature spec and writes it to the store as a
 * new inactive version. Throws AppError (400 with a specific code, 409 for an existing id).
 */
export async function importVersion(store: ModelStore, input: ImportInput): Promise<VersionCard> {
  const id = input.id ?? importedVersionId();
  if (!ModelStore.isValidId(id)) {
    throw new ValidationError([{ path: 'id', message: 'must be 1-100 characters: letters, digits, ".", "_", "-", starting with a letter or digit' }]);
  }
  if (existsSync(join(store.versionsDir, id))) throw conflict(`version ${id} already exists`);
  const v = await validate(input, { rejectExtraShards: true });
  const card = cardFor(id, v, input.notes);
  const files = new Map<string, Buffer>([['model.json', input.modelJson], ...v.shardFiles]);
  // Defaults made explicit, so the stored version never depends on this schema's future defaults.
  files.set('feature-spec.json', json(v.spec));
  try {
    store.writeVersion(card, files);
  } catch (err) {
    if (/already exists/.test((err as Error).message)) throw conflict(`version ${id} already exists`);
    throw err;
  }
  return card;
}

export interface ScanResult {
  added: string[];
  invalid: { id: string; reason: string }[];
}

const scans = new WeakMap<ModelStore, Promise<unknown>>();

/**
 * Registers version directories copied into `<store>/versions/<id>/` by hand: those with no
 * manifest.json. Each is validated like an upload; valid ones get card.json and then
 * manifest.json (written last, atomically: it is what makes a version exist). Invalid ones are
 * reported and left untouched, so they can be fixed and scanned again. Scans of one store run
 * one at a time.
 */
export function scanStore(store: ModelStore): Promise<ScanResult> {
  const prev = scans.get(store) ?? Promise.resolve();
  const run = prev.catch(() => undefined).then(() => scanOnce(store));
  scans.set(store, run);
  return run;
}

async function scanOnce(store: ModelStore): Promise<ScanResult> {
  const result: ScanResult = { added: [], invalid: [] };
  const dirs = store.versionDirs().sort();
  for (const id of dirs) {
    const dir = join(store.versionsDir, id);
    if (existsSync(join(dir, 'manifest.json'))) continue;
    try {
      if (!ModelStore.isValidId(id)) throw new Error('directory name is not a valid version id (letters, digits, ".", "_", "-")');
      for (const f of ['model.json', 'feature-spec.json']) if (!existsSync(join(dir, f))) throw new Error(`${f} is missing`);
      const modelJson = readFileSync(join(dir, 'model.json'));
      const shards = new Map<string, Buffer>();
      const parsed = parseJson(modelJson, 'model.json');
      if (parsed.ok && isObj(parsed.value) && Array.isArray(parsed.value.weightsManifest)) {
        for (const g of parsed.value.weightsManifest) {
          for (const p of isObj(g) && Array.isArray(g.paths) ? g.paths : []) {
            if (typeof p !== 'string') continue;
            const name = decodedPath(p);
            if (!PLAIN_FILE.test(name)) continue; // validate() names it
            const file = join(dir, name);
            if (existsSync(file)) shards.set(name, readFileSync(file));
          }
        }
      }
      const v = await validate({ modelJson, shards, featureSpec: readFileSync(join(dir, 'feature-spec.json')) }, { rejectExtraShards: false });
      // Files the service reads beside the model must read as it expects, or the version would register but not load.
      if (existsSync(join(dir, 'personas.json'))) checkPersonas(parseJsonText(readFileSync(join(dir, 'personas.json'), 'utf8')), inputWidth(v.spec));
      if (existsSync(join(dir, 'metrics.json')) && !isObj(parseJsonText(readFileSync(join(dir, 'metrics.json'), 'utf8')))) throw new Error('metrics.json is not a JSON object');
      writeFileSync(join(dir, 'card.json'), json(cardFor(id, v, 'registered by scanning the store directory')));
      const files = new Map<string, Buffer>();
      for (const f of readdirSync(dir)) {
        if (f === 'manifest.json' || f.startsWith('.')) continue;
        if (statSync(join(dir, f)).isFile()) files.set(f, readFileSync(join(dir, f)));
      }
      const tmp = join(dir, `.manifest-${randomBytes(4).toString('hex')}.tmp`);
      try {
        writeFileSync(tmp, JSON.stringify(buildManifest(id, files), null, 2) + '\n');
        renameSync(tmp, join(dir, 'manifest.json'));
      } catch (err) {
        rmSync(tmp, { force: true });
        throw err;
      }
      result.added.push(id);
    } catch (err) {
      result.invalid.push({ id, reason: describeError(err) });
    }
  }
  return result;
}

function describeError(err: unknown): string {
  const e = err as Error;
  if (err instanceof AppError && err.details.length && err.code === 'validation_error') {
    return `${e.message}: ${err.details.map((d) => `${d.path}: ${d.message}`).join('; ')}`;
  }
  return e.message;
}

/** A reason for the caller: a TypeError from walking an unexpected topology says nothing useful. */
function topologyProblem(err: unknown): string {
  return err instanceof TypeError ? 'unexpected structure (a layer, its config or a field in it is missing or null)' : (err as Error).message;
}
