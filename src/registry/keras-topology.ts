/**
 * Normalizes TensorFlow.js layers-model artifacts (model.json as written by the Python
 * `tensorflowjs` converter) exported from Keras 3 so that stock @tensorflow/tfjs 4.22
 * `tf.loadLayersModel` can load them. tf.keras / Keras 2 topologies pass through unchanged
 * (every rewrite below only fires on a Keras 3 shape, or is a pure alias that tfjs lacks).
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { parseJsonText } from '../lib/json-text.js';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

interface WeightSpec { name: string; shape: number[]; dtype: string; [k: string]: unknown }
interface WeightGroup { paths: string[]; weights: WeightSpec[] }

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const MODEL_CLASSES = new Set(['Sequential', 'Functional', 'Model']);

/** Keras class names (initializers/regularizers) whose tfjs registration uses another name. */
const CLASS_ALIASES: Record<string, (config: Obj) => [string, Obj]> = {
  // tfjs only registers L1L2, and its fromConfig defaults a missing rate to 0.01, so set both.
  L1: (c) => ['L1L2', { l1: c.l1 ?? 0.01, l2: 0 }],
  L2: (c) => ['L1L2', { l1: 0, l2: c.l2 ?? 0.01 }],
  LecunNormal: (c) => ['LeCunNormal', c],
  LecunUniform: (c) => ['LeCunUniform', c],
  OrthogonalInitializer: (c) => ['Orthogonal', c], // Keras 3 class name
  IdentityInitializer: (c) => ['Identity', c], // Keras 3 class name
};

export class UnsupportedLayerError extends Error {
  constructor(public readonly layerClass: string, layerName?: string) {
    super(
      `Layer class "${layerClass}"${layerName ? ` (layer "${layerName}")` : ''} cannot be deserialized by ` +
        'TensorFlow.js layers; port it to JS and register it with tf.serialization.registerClass()',
    );
    this.name = 'UnsupportedLayerError';
  }
}

/** The `{class_name, config}` model entry: modelTopology itself, or modelTopology.model_config (tf.keras exports). */
function modelEntry(modelJson: Obj): Obj | undefined {
  const topo = isObj(modelJson.modelTopology) ? modelJson.modelTopology : 'class_name' in modelJson ? modelJson : undefined;
  if (!topo) return undefined;
  return isObj(topo.model_config) ? topo.model_config : topo;
}

/** Layers of a model config; legacy Sequential configs are a bare array of layers. */
function layersOf(entry: Obj): Obj[] {
  const cfg = entry.config;
  const list = Array.isArray(cfg) ? cfg : isObj(cfg) && Array.isArray(cfg.layers) ? cfg.layers : [];
  return list.filter(isObj);
}

function isKerasTensor(v: Json): v is Obj {
  return isObj(v) && v.class_name === '__keras_tensor__' && isObj(v.config);
}

/** Keras 3 `{args, kwargs}` node → Keras 2 `[[layer, node, tensor, kwargs], ...]`, tensors in args order. */
function convertNode(node: Obj): Json[] {
  const kwargs = isObj(node.kwargs) ? node.kwargs : {};
  const out: Json[] = [];
  const visit = (v: Json): void => {
    if (isKerasTensor(v)) {
      const h = (v.config as Obj).keras_history;
      if (!Array.isArray(h) || h.length < 3) throw new Error(`__keras_tensor__ without keras_history: ${JSON.stringify(v)}`);
      out.push([h[0], h[1], h[2], kwargs]);
    } else if (Array.isArray(v)) v.forEach(visit);
    else if (isObj(v)) Object.values(v).forEach(visit); // dict-structured args: values in key order
    // non-tensor positional args have no Keras 2 / tfjs representation; they are dropped
  };
  visit(node.args ?? []);
  return out;
}

/** input_layers/output_layers: Keras 3 writes a flat `[name, 0, 0]` (single tensor) or a dict; tfjs wants a list of triples. */
function normalizeEndpoints(v: Json): Json {
  const isTriple = (x: Json): boolean => Array.isArray(x) && x.length === 3 && typeof x[0] === 'string';
  if (isTriple(v)) return [v];
  if (isObj(v)) return Object.values(v).flatMap((x) => (isTriple(x) ? [x] : Array.isArray(x) ? x : []));
  return v;
}

/** Structural Keras 3 → Keras 2 rewrites of a model entry, recursing into nested models. */
function normalizeModel(entry: Obj, changes: string[]): void {
  const cfg = entry.config;
  const where = isObj(cfg) && typeof cfg.name === 'string' ? cfg.name : String(entry.class_name);
  for (const layer of layersOf(entry)) {
    const lc = isObj(layer.config) ? layer.config : undefined;
    const name = typeof layer.name === 'string' ? layer.name : typeof lc?.name === 'string' ? lc.name : '?';
    if (lc && 'batch_shape' in lc && !('batch_input_shape' in lc)) {
      lc.batch_input_shape = lc.batch_shape;
      delete lc.batch_shape;
      changes.push(`${name}: batch_shape → batch_input_shape`);
    }
    if (Array.isArray(layer.inbound_nodes) && layer.inbound_nodes.some(isObj)) {
      layer.inbound_nodes = layer.inbound_nodes.map((n) => (isObj(n) ? convertNode(n) : n));
      changes.push(`${name}: inbound_nodes {args,kwargs} → [[layer, node, tensor, kwargs]]`);
    }
    // Functional graphs are wired by the entry-level name; Keras 3 to_json() always has it, be lenient anyway.
    if (Array.isArray(layer.inbound_nodes) && layer.name === undefined && typeof lc?.name === 'string') layer.name = lc.name;
    if (MODEL_CLASSES.has(String(layer.class_name))) normalizeModel(layer, changes);
  }
  if (isObj(cfg)) {
    for (const key of ['input_layers', 'output_layers']) {
      if (!(key in cfg)) continue;
      const before = JSON.stringify(cfg[key]);
      cfg[key] = normalizeEndpoints(cfg[key]);
      if (JSON.stringify(cfg[key]) !== before) changes.push(`${where}: ${key} ${before} → ${JSON.stringify(cfg[key])}`);
    }
  }
}

/** Value-level rewrites anywhere in the topology: dtype policies, Keras 3 metadata keys, class aliases. */
function normalizeValues(root: Json, changes: string[]): void {
  const counts = { dtype: 0, meta: 0 };
  const walk = (v: Json, key: string): Json => {
    if (Array.isArray(v)) return v.map((x) => walk(x, key));
    if (!isObj(v)) {
      if (key === 'activation' && v === 'silu') {
        changes.push('activation "silu" → "swish" (same function; tfjs only knows the old name)');
        return 'swish';
      }
      return v;
    }
    // DTypePolicy / FloatDTypePolicy → its name; mixed_* policies keep float32 variables, which is all tfjs runs.
    if (typeof v.class_name === 'string' && v.class_name.endsWith('DTypePolicy') && isObj(v.config) && typeof v.config.name === 'string') {
      counts.dtype++;
      return v.config.name.startsWith('mixed_') ? 'float32' : v.config.name;
    }
    if ('class_name' in v) {
      for (const k of ['module', 'registered_name', 'build_config', 'compile_config']) {
        if (k in v) {
          delete v[k];
          counts.meta++;
        }
      }
      // Keras 3 LeakyReLU writes only `negative_slope`; tfjs reads `alpha` and would default it to 0.3.
      if (v.class_name === 'LeakyReLU' && isObj(v.config) && 'negative_slope' in v.config && !('alpha' in v.config)) {
        v.config.alpha = v.config.negative_slope;
        delete v.config.negative_slope;
        changes.push(`${String(v.config.name ?? 'LeakyReLU')}: negative_slope → alpha`);
      }
      const alias = /_(initializer|regularizer|constraint)$/.test(key) ? CLASS_ALIASES[String(v.class_name)] : undefined;
      if (alias) {
        const [cls, config] = alias(isObj(v.config) ? v.config : {});
        changes.push(`${key}: ${String(v.class_name)} → ${cls}`);
        v.class_name = cls;
        v.config = config;
      }
    }
    for (const k of Object.keys(v)) v[k] = walk(v[k], k);
    return v;
  };
  walk(root, '');
  if (counts.dtype) changes.push(`replaced ${counts.dtype} DTypePolicy object(s) with dtype strings`);
  if (counts.meta) changes.push(`stripped ${counts.meta} Keras 3 metadata key(s) (module/registered_name/build_config/compile_config)`);
}

/** A model tfjs would load but compute differently from the Keras that wrote it. */
export class KerasSemanticsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KerasSemanticsError';
  }
}

/**
 * Whether Keras 3 wrote this (raw, not yet normalized) model.json: its keras_version or generatedBy
 * says 3.x, or it holds something only Keras 3 writes (`__keras_tensor__` nodes, InputLayer
 * `batch_shape`, DTypePolicy objects, LeakyReLU `negative_slope`). Either is enough: a wrong
 * "Keras 3" only refuses a model, a wrong "Keras 2" serves different numbers.
 */
export function isKeras3(modelJson: unknown): boolean {
  if (!isObj(modelJson)) return false;
  const topo = isObj(modelJson.modelTopology) ? modelJson.modelTopology : modelJson;
  const versions = [topo.keras_version, typeof modelJson.generatedBy === 'string' ? modelJson.generatedBy.replace(/^keras v/i, '') : null];
  if (versions.some((v) => typeof v === 'string' && Number.parseInt(v, 10) >= 3)) return true;
  const walk = (v: Json): boolean => {
    if (Array.isArray(v)) return v.some(walk);
    if (!isObj(v)) return false;
    const cls = v.class_name;
    const cfg = isObj(v.config) ? v.config : undefined;
    if (cls === '__keras_tensor__' || (typeof cls === 'string' && cls.endsWith('DTypePolicy'))) return true;
    if (cfg && ((cls === 'InputLayer' && 'batch_shape' in cfg) || (cls === 'LeakyReLU' && 'negative_slope' in cfg))) return true;
    return Object.values(v).some(walk);
  };
  return walk(topo);
}

/**
 * Activations whose Keras 3 definition differs from the Keras 2 one tfjs implements under the
 * same name (keras/src/activations/activations.py). Other built-in names either mean the same in
 * Keras 2, Keras 3 and tfjs (relu, relu6, elu, selu, sigmoid, tanh, softplus, softsign, softmax,
 * log_softmax, silu/swish, mish, gelu — exact erf form in all three) or are unknown to tfjs, which
 * then fails to load the model (leaky_relu, hard_silu/hard_swish, exponential, celu, glu, …).
 */
const KERAS3_ONLY_MEANING: Record<string, string> = {
  hardsigmoid: 'Keras 3 defines hard_sigmoid as relu6(x + 3) / 6, TensorFlow.js computes the Keras 2 clip(0.2·x + 0.5, 0, 1)',
};

/**
 * Throws KerasSemanticsError for a (raw) model.json that tfjs would load but compute differently
 * from Keras: a Keras 3 activation that means something else in tfjs, or a ReLU layer with a
 * negative_slope or threshold (tfjs's ReLU layer ignores both, in any Keras version).
 */
export function assertKerasSemantics(modelJson: unknown): void {
  const entry = isObj(modelJson) ? modelEntry(modelJson) : undefined;
  if (!entry) return;
  const keras3 = isKeras3(modelJson);
  const walk = (v: Json): void => {
    if (Array.isArray(v)) return v.forEach(walk);
    if (!isObj(v)) return;
    const cfg = isObj(v.config) ? v.config : undefined;
    if (cfg && typeof v.class_name === 'string') {
      const name = typeof cfg.name === 'string' ? cfg.name : v.class_name;
      for (const [k, a] of Object.entries(cfg)) {
        if (!keras3 || !k.endsWith('activation') || typeof a !== 'string') continue;
        const why = KERAS3_ONLY_MEANING[a.toLowerCase().replaceAll('_', '')];
        if (why) {
          throw new KerasSemanticsError(
            `layer "${name}" uses ${k} "${a}" from a Keras 3 model: ${why}, so it would be served with different values; ` +
              'use "sigmoid", or retrain with an activation both define the same way',
          );
        }
      }
      if (v.class_name === 'ReLU' && [cfg.negative_slope, cfg.threshold].some((x) => typeof x === 'number' && x !== 0)) {
        throw new KerasSemanticsError(
          `ReLU layer "${name}" has negative_slope ${String(cfg.negative_slope ?? 0)} and threshold ${String(cfg.threshold ?? 0)}; ` +
            'TensorFlow.js\'s ReLU layer ignores both (use LeakyReLU for a negative slope)',
        );
      }
    }
    Object.values(v).forEach(walk);
  };
  walk(entry);
}

/** Every layer (and model) name in the topology, nested models included. */
function collectLayerNames(entry: Obj, into = new Set<string>()): Set<string> {
  for (const layer of layersOf(entry)) {
    const lc = isObj(layer.config) ? layer.config : {};
    for (const n of [layer.name, lc.name]) if (typeof n === 'string') into.add(n);
    if (MODEL_CLASSES.has(String(layer.class_name))) collectLayerNames(layer, into);
  }
  return into;
}

function weightSpecsOf(modelJson: Obj): WeightSpec[] {
  const manifest = Array.isArray(modelJson.weightsManifest) ? modelJson.weightsManifest : [];
  return manifest.flatMap((g) => (isObj(g) && Array.isArray(g.weights) ? (g.weights as unknown as WeightSpec[]) : []));
}

/**
 * tfjs matches weights by name, `<layer>/<weight>` (it only strips an inner RNN cell name).
 * Keras 3 writes variable paths, which for Sequential carry the model name
 * (`sequential/dense/kernel`). Strip leading tokens up to the first known layer name; names whose
 * first token already is a layer (all Keras 2 names) are left alone.
 */
function normalizeWeightNames(modelJson: Obj, layerNames: Set<string>, changes: string[]): void {
  const specs = weightSpecsOf(modelJson);
  const renamed = specs.map((s) => {
    const tokens = s.name.split('/');
    if (layerNames.has(tokens[0])) return s.name;
    const i = tokens.findIndex((t, j) => j > 0 && j < tokens.length - 1 && layerNames.has(t));
    return i > 0 ? tokens.slice(i).join('/') : s.name;
  });
  if (new Set(renamed).size !== renamed.length) return; // would collide: leave for order-based loading
  const examples: string[] = [];
  let count = 0;
  specs.forEach((s, i) => {
    if (renamed[i] === s.name) return;
    if (examples.length < 2) examples.push(`${s.name} → ${renamed[i]}`);
    s.name = renamed[i];
    count++;
  });
  if (count) changes.push(`weightsManifest: stripped model-path prefix from ${count} weight name(s) (e.g. ${examples.join(', ')})`);
}

/**
 * Returns a deep copy of a layers-model model.json with Keras 3 idioms rewritten to the Keras 2
 * form tfjs 4.22 understands, plus a human-readable list of what changed (empty for Keras 2 input).
 */
export function normalizeModelJson(modelJson: unknown): { modelJson: object; changes: string[] } {
  if (!isObj(modelJson)) throw new TypeError('model.json must be a JSON object');
  const copy = structuredClone(modelJson) as Obj;
  const changes: string[] = [];
  const entry = modelEntry(copy);
  if (!entry) return { modelJson: copy, changes };
  normalizeModel(entry, changes);
  normalizeValues(entry, changes);
  normalizeWeightNames(copy, collectLayerNames(entry), changes);
  return { modelJson: copy, changes };
}

/** Throws UnsupportedLayerError for the first layer class tfjs-layers has no deserializer for. */
export function assertSupportedLayers(modelJson: unknown): void {
  if (!isObj(modelJson)) throw new TypeError('model.json must be a JSON object');
  const entry = modelEntry(modelJson);
  if (!entry) throw new Error('model.json has no modelTopology');
  // Populated by tfjs-layers' registerClass() calls at import time, plus any app-registered custom layers.
  const known = tf.serialization.SerializationMap.getMap().classNameMap;
  const check = (layer: Obj): void => {
    const cls = String(layer.class_name);
    const cfg = isObj(layer.config) ? layer.config : undefined;
    const name = typeof layer.name === 'string' ? layer.name : typeof cfg?.name === 'string' ? cfg.name : undefined;
    if (!(cls in known)) throw new UnsupportedLayerError(cls, name);
    if (MODEL_CLASSES.has(cls)) layersOf(layer).forEach(check);
    // Wrappers and RNNs deserialize inner layers/cells too.
    for (const inner of [cfg?.layer, cfg?.cell, ...(Array.isArray(cfg?.cells) ? cfg.cells : [])]) if (isObj(inner)) check(inner);
  };
  check(entry);
}

/** Manifest path → provided buffer: exact key first, then by file name (manifests hold relative paths). */
function findShard(files: Map<string, Uint8Array | Buffer>, p: string): Uint8Array {
  // Manifest paths are URL-encoded relative paths (the converter writes them so); files arrive by name.
  const hit = files.get(p) ?? files.get(path.posix.basename(p)) ?? files.get(decodedPath(p)) ?? files.get(path.posix.basename(decodedPath(p)));
  if (hit) return hit;
  for (const [k, v] of files) if (path.posix.basename(k.replaceAll('\\', '/')) === path.posix.basename(p)) return v;
  throw new Error(`weight shard "${p}" listed in weightsManifest was not provided`);
}

/** A weightsManifest path as a file name: URL-decoded, or as written when it is not valid encoding. */
export function decodedPath(p: string): string {
  try {
    return decodeURIComponent(p);
  } catch {
    return p;
  }
}

/**
 * Normalizes, checks layer support, and loads a LayersModel from an in-memory model.json and its
 * weight shards (keyed by manifest path or file name). Shards are concatenated in manifest order.
 */
export async function loadLayersModelFromFiles(
  modelJson: object,
  weightFiles: Map<string, Uint8Array | Buffer>,
): Promise<tf.LayersModel> {
  assertKerasSemantics(modelJson); // on the raw file: normalization removes what tells Keras 3 apart
  const norm = normalizeModelJson(modelJson).modelJson as Obj;
  assertSupportedLayers(norm);
  const entry = modelEntry(norm)!;
  const topo = norm.modelTopology as object;
  const manifest = (Array.isArray(norm.weightsManifest) ? norm.weightsManifest : []) as unknown as WeightGroup[];
  const specs = weightSpecsOf(norm) as tf.io.WeightsManifestEntry[];
  const shards = manifest.flatMap((g) => g.paths.map((p) => findShard(weightFiles, p)));
  const weightData = new Uint8Array(shards.reduce((n, s) => n + s.byteLength, 0));
  shards.reduce((off, s) => (weightData.set(s, off), off + s.byteLength), 0);
  const artifacts: tf.io.ModelArtifacts = { modelTopology: topo };
  if (isObj(norm.userDefinedMetadata)) artifacts.userDefinedMetadata = norm.userDefinedMetadata as { [key: string]: {} };
  if (!specs.length) return tf.loadLayersModel(tf.io.fromMemory(artifacts));

  const layerNames = collectLayerNames(entry);
  const byName = specs.every((s) => layerNames.has(s.name.split('/')[0]));
  if (byName) {
    return tf.loadLayersModel(tf.io.fromMemory({ ...artifacts, weightSpecs: specs, weightData: weightData.buffer }));
  }
  // Names carry no layer (e.g. bare "kernel", "bias"): tfjs cannot match them, so assign by order.
  // model.weights is layer order, trainable then non-trainable per layer, as Keras writes them;
  // setWeights still rejects any shape mismatch.
  const model = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  if (model.weights.length !== specs.length) {
    throw new Error(`weightsManifest has ${specs.length} weights but the model has ${model.weights.length}`);
  }
  const unique = specs.map((s, i) => ({ ...s, name: `w${i}` }));
  const decoded = tf.io.decodeWeights(weightData.buffer, unique);
  const tensors = unique.map((s) => decoded[s.name]);
  try {
    model.setWeights(tensors);
  } finally {
    tf.dispose(tensors);
  }
  return model;
}

/** Reads `<dir>/model.json` and the shard files its weightsManifest lists, then loads as above. */
export async function loadLayersModelFromDir(dir: string): Promise<tf.LayersModel> {
  const root = path.resolve(dir);
  const modelJson = parseJsonText<Obj>(await readFile(path.join(root, 'model.json'), 'utf8'));
  const files = new Map<string, Uint8Array | Buffer>();
  const manifest = (Array.isArray(modelJson.weightsManifest) ? modelJson.weightsManifest : []) as unknown as WeightGroup[];
  for (const p of manifest.flatMap((g) => g.paths)) {
    const file = path.resolve(root, decodeURIComponent(p));
    // Manifest paths are relative file names; refuse anything that escapes the model directory.
    if (!file.startsWith(root + path.sep)) throw new Error(`weight path "${p}" escapes ${root}`);
    files.set(p, await readFile(file));
  }
  return loadLayersModelFromFiles(modelJson, files);
}
