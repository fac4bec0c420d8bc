import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { multipart, type FormPart as Part } from './helpers/http.js';
import { B1, B2, FIXTURE_ROOT, W1, W2, keras2Functional, keras3Functional } from './fixtures/keras/make-fixtures.js';
import { tf } from '../src/inference/backend.js';

const ADMIN = { authorization: 'Bearer admin-key-123' };
const PREDICT = { authorization: 'Bearer pred-key-123' };
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';

/** sigmoid(relu(x·W1 + b1)·W2 + b2) in plain JS doubles (as in keras-import.test.ts). */
function expected(x: number[]): number {
  const h = B1.map((b, j) => Math.max(0, b + x.reduce((s, xi, i) => s + xi * W1[i][j], 0)));
  const z = B2[0] + h.reduce((s, hj, j) => s + hj * W2[j][0], 0);
  return 1 / (1 + Math.exp(-z));
}

// Numeric-only spec for the 4-input fixture: standardized as (x - mean) / std.
const MEAN = [1, -0.5, 2, 0.25];
const STD = [2, 0.5, 4, 1.5];
const numericSpec = () => ({
  features: MEAN.map((mean, i) => ({ name: `x${i + 1}`, type: 'numeric', mean, std: STD[i] })),
  label: { name: 'bought', positive: '1' },
  threshold: 0.5,
});
const standardize = (x: number[]) => x.map((v, i) => (v - MEAN[i]) / STD[i]);

// Mixed spec, also 4 inputs wide: amount (numeric, log1p + clip) | member (boolean) | channel one-hot ['web'] + OOV slot.
const mixedSpec = () => ({
  features: [
    { name: 'amount', type: 'numeric', nullable: true, impute: 3, clip: { min: 0, max: 100 }, transform: 'log1p', mean: 1.5, std: 0.75 },
    { name: 'member', type: 'boolean' },
    { name: 'channel', type: 'categorical', vocabulary: ['web'], impute: 'web' },
  ],
});
const encodeMixed = (amount: number | null, member: boolean, channel: string) => [
  (Math.log1p(Math.min(100, Math.max(0, amount ?? 3))) - 1.5) / 0.75,
  member ? 1 : 0,
  channel === 'web' ? 1 : 0,
  channel === 'web' ? 0 : 1,
];

/** model.json + shards (+ spec, + id) parts for a fixture. */
function fixtureParts(fx: { modelJson: unknown; files: Map<string, Buffer> }, spec: unknown, extra: Part[] = []): Part[] {
  return [
    { name: 'model', value: Buffer.from(JSON.stringify(fx.modelJson)), filename: 'model.json' },
    ...[...fx.files].map(([name, buf]) => ({ name: 'weights', value: buf, filename: name })),
    { name: 'featureSpec', value: Buffer.from(JSON.stringify(spec)), filename: 'feature-spec.json' },
    ...extra,
  ];
}

let app: FastifyInstance;

async function upload(parts: Part[], headers: Record<string, string> = ADMIN, target: FastifyInstance = app) {
  const body = await multipart(parts);
  return target.inject({ method: 'POST', url: '/v1/models', payload: body.payload, headers: { ...headers, ...body.headers } });
}

async function activate(id: string) {
  const res = await app.inject({ method: 'POST', url: `/v1/models/${id}/activate`, headers: ADMIN, payload: { reason: 'import test' } });
  expect(res.statusCode, res.body).toBe(200);
  expect(res.json().active).toBe(id);
}

async function predict(features: Record<string, unknown>) {
  const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features } });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { probability: number; modelVersion: string; warnings: string[] };
}

const versionDir = (id: string) => path.join(app.services.store.versionsDir, id);

beforeAll(async () => {
  app = await buildTestApp({ API_KEYS });
});

afterAll(async () => {
  await app?.close();
});

describe('POST /v1/models (import)', () => {
  it('imports the Keras 3 export as an inactive version; once activated it predicts like the hand computation', async () => {
    const fixtureDir = path.join(FIXTURE_ROOT, 'keras3/functional');
    const original = readFileSync(path.join(fixtureDir, 'model.json'));
    const parts: Part[] = [
      { name: 'model', value: original, filename: 'model.json' },
      { name: 'weights', value: readFileSync(path.join(fixtureDir, 'group1-shard1of2.bin')), filename: 'group1-shard1of2.bin' },
      { name: 'weights', value: readFileSync(path.join(fixtureDir, 'group1-shard2of2.bin')), filename: 'group1-shard2of2.bin' },
      { name: 'featureSpec', value: JSON.stringify(numericSpec()) }, // a plain text field works too
      { name: 'id', value: 'keras3-import' },
      { name: 'notes', value: 'from the Keras 3 fixture' },
    ];
    const res = await upload(parts);
    expect(res.statusCode, res.body).toBe(201);
    const card = res.json();
    expect(card).toMatchObject({ id: 'keras3-import', source: 'imported', notes: 'from the Keras 3 fixture' });
    expect(card.parameters.generatedBy).toBe('keras v3.10.0');
    expect(card.parameters.convertedBy).toBe('TensorFlow.js Converter v4.22.0');
    expect(card.parameters.normalizations).toEqual(expect.arrayContaining(['input_layer: batch_shape → batch_input_shape']));
    expect(new Date(card.created).toString()).not.toBe('Invalid Date');

    // The original upload is what is stored (normalization happens when loading).
    const dir = versionDir('keras3-import');
    expect(readFileSync(path.join(dir, 'model.json')).equals(original)).toBe(true);
    expect(readFileSync(path.join(dir, 'group1-shard2of2.bin')).equals(readFileSync(path.join(fixtureDir, 'group1-shard2of2.bin')))).toBe(true);
    expect(existsSync(path.join(dir, 'metrics.json'))).toBe(false);
    expect(app.services.store.spec('keras3-import').features.map((f) => f.name)).toEqual(['x1', 'x2', 'x3', 'x4']);
    expect(() => app.services.store.verify('keras3-import')).not.toThrow();

    const list = (await app.inject({ method: 'GET', url: '/v1/models', headers: PREDICT })).json();
    expect(list.models.find((m: { id: string }) => m.id === 'keras3-import')).toMatchObject({ source: 'imported', state: 'inactive' });
    expect(app.services.models.active?.id).not.toBe('keras3-import');

    await activate('keras3-import');
    for (const x of [
      [1, 2, 3, 4],
      [-1, 0.5, 2, -3],
      [0, 0, 0, 0],
      [0.3, -1.7, 2.2, 0.9],
      [5, -2, -6, 1],
    ]) {
      const out = await predict(Object.fromEntries(x.map((v, i) => [`x${i + 1}`, v])));
      expect(out.modelVersion).toBe('keras3-import');
      expect(Math.abs(out.probability - expected(standardize(x)))).toBeLessThan(1e-5);
    }
  });

  it('imports the Keras 2 export with numeric (clip, log1p), boolean and categorical features in spec order', async () => {
    const res = await upload(fixtureParts(keras2Functional(), mixedSpec(), [{ name: 'id', value: 'keras2-import' }]));
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().parameters).toMatchObject({ normalizations: [], generatedBy: 'keras v2.12.0', convertedBy: 'TensorFlow.js Converter v4.17.0' });
    await activate('keras2-import');
    const cases: [number | null, boolean, string][] = [
      [12, true, 'web'],
      [0, false, 'web'],
      [500, true, 'app'], // clipped to 100; out-of-vocabulary channel → last slot
      [null, false, 'web'], // imputed
    ];
    for (const [amount, member, channel] of cases) {
      const out = await predict({ amount, member, channel });
      expect(out.modelVersion).toBe('keras2-import');
      expect(Math.abs(out.probability - expected(encodeMixed(amount, member, channel)))).toBeLessThan(1e-5);
    }
  });

  it('gives the version a generated id when none is sent', async () => {
    const res = await upload(fixtureParts(keras3Functional(), numericSpec()));
    expect(res.statusCode, res.body).toBe(201);
    expect(res.json().id).toMatch(/^imported-\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    expect(app.services.store.has(res.json().id)).toBe(true);
  });

  it('does not leak tensors, on success or on failure', async () => {
    await upload(fixtureParts(keras3Functional(), numericSpec())); // any lazy one-time allocations
    const before = tf.memory().numTensors;
    expect((await upload(fixtureParts(keras3Functional(), numericSpec()))).statusCode).toBe(201);
    const bad = { features: [...numericSpec().features, { name: 'x5', type: 'numeric' }] };
    expect((await upload(fixtureParts(keras3Functional(), bad))).statusCode).toBe(400);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('409 for an id that already exists', async () => {
    const res = await upload(fixtureParts(keras3Functional(), numericSpec(), [{ name: 'id', value: 'shoppers-mlp-v1' }]));
    expect(res.statusCode).toBe(409);
    expect(res.json().error).toBe('conflict');
  });
});

describe('POST /v1/models rejects what cannot be served, writing nothing', () => {
  const ids = () => app.services.store.listIds();

  it('an unsupported layer: 400 naming the class', async () => {
    const fx = keras3Functional();
    const mj = structuredClone(fx.modelJson) as any;
    mj.modelTopology.model_config.config.layers[2].class_name = 'FancyAttention';
    const before = ids();
    const res = await upload(fixtureParts({ modelJson: mj, files: fx.files }, numericSpec(), [{ name: 'id', value: 'fancy' }]));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBe('unsupported_layer');
    expect(res.json().message).toContain('FancyAttention');
    expect(ids()).toEqual(before);
    expect(existsSync(versionDir('fancy'))).toBe(false);
  });

  it('a feature spec whose encoded width does not match the model input: 400', async () => {
    const spec = { features: [{ name: 'a', type: 'numeric' }, { name: 'c', type: 'categorical', vocabulary: ['x', 'y', 'z'] }] }; // 1 + 4 = 5
    const res = await upload(fixtureParts(keras3Functional(), spec));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBe('spec_mismatch');
    expect(res.json().message).toMatch(/model input width 4 .* encoded width 5/);
  });

  it('an invalid feature spec: 400 listing every issue with featureSpec.* paths', async () => {
    const spec = { features: [{ name: 'x1', type: 'float' }, { name: 'x2', type: 'numeric', std: 0 }, { name: 'x3', type: 'numeric' }, { name: 'x3', type: 'numeric' }] };
    const res = await upload(fixtureParts(keras3Functional(), spec));
    expect(res.statusCode).toBe(400);
    const body = res.json();
    expect(body.error).toBe('validation_error');
    const paths = body.details.map((d: { path: string }) => d.path);
    expect(paths).toContain('featureSpec.features[0].type');
    expect(paths).toContain('featureSpec.features[1].std');

    const dup = await upload(fixtureParts(keras3Functional(), { features: [1, 2, 3, 4].map(() => ({ name: 'same', type: 'numeric' })) }));
    expect(dup.statusCode).toBe(400);
    expect(dup.json().details[0]).toMatchObject({ path: 'featureSpec.features[1].name' });

    // Entries requests would name alike: the second could never be reached.
    const alike = await upload(fixtureParts(keras3Functional(), { features: [{ name: 'a', type: 'numeric' }, { name: 'c', type: 'categorical', vocabulary: ['2', '2.0'] }] }));
    expect(alike.statusCode).toBe(400);
    expect(alike.json().details).toContainEqual({ path: 'featureSpec.features[1].vocabulary', message: 'vocabulary entries "2" and "2.0" name the same category' });

    const notJson = await upload([...fixtureParts(keras3Functional(), {}).slice(0, 3), { name: 'featureSpec', value: '{nope' }]);
    expect(notJson.statusCode).toBe(400);
    expect(notJson.json().details[0].path).toBe('featureSpec');
  });

  it('a missing weight shard: 400 naming it', async () => {
    const fx = keras3Functional();
    const files = new Map(fx.files);
    files.delete('group1-shard2of2.bin');
    const res = await upload(fixtureParts({ modelJson: fx.modelJson, files }, numericSpec()));
    expect(res.statusCode).toBe(400);
    expect(res.json().error).toBe('missing_shard');
    expect(res.json().message).toContain('group1-shard2of2.bin');
  });

  it('a truncated shard, a file the manifest does not list, a graph model, a logits output, no model.json: 400', async () => {
    const fx = keras3Functional();
    const truncated = new Map(fx.files);
    truncated.set('group1-shard2of2.bin', fx.files.get('group1-shard2of2.bin')!.subarray(0, 20));
    const r1 = await upload(fixtureParts({ modelJson: fx.modelJson, files: truncated }, numericSpec()));
    expect(r1.statusCode).toBe(400);
    expect(r1.json().message).toMatch(/bytes/);

    const extra = new Map(fx.files).set('other-model.bin', Buffer.alloc(8));
    const r2 = await upload(fixtureParts({ modelJson: fx.modelJson, files: extra }, numericSpec()));
    expect(r2.statusCode).toBe(400);
    expect(r2.json().error).toBe('unexpected_file');

    const graph = { ...structuredClone(fx.modelJson), format: 'graph-model' };
    const r3 = await upload(fixtureParts({ modelJson: graph, files: fx.files }, numericSpec()));
    expect(r3.statusCode).toBe(400);
    expect(r3.json().message).toContain('graph-model');

    const logits = structuredClone(fx.modelJson) as any;
    logits.modelTopology.model_config.config.layers[2].config.activation = 'linear';
    const r4 = await upload(fixtureParts({ modelJson: logits, files: fx.files }, numericSpec()));
    expect(r4.statusCode).toBe(400);
    expect(r4.json().message).toMatch(/activation "linear"/);

    const r5 = await upload(fixtureParts(fx, numericSpec()).slice(1));
    expect(r5.statusCode).toBe(400);
    expect(r5.json().details[0].path).toBe('model.json');

    const r6 = await app.inject({ method: 'POST', url: '/v1/models', headers: ADMIN, payload: { modelJson: {} } });
    expect(r6.statusCode).toBe(415);

    // Layers that are null or not objects: a reason for the caller, not a JavaScript TypeError.
    const weird = { ...structuredClone(fx.modelJson), modelTopology: { model_config: { class_name: 'Sequential', config: { layers: [null, 5, { class_name: 'Dense' }] } } } };
    const r7 = await upload(fixtureParts({ modelJson: weird, files: fx.files }, numericSpec()));
    expect(r7.statusCode, r7.body).toBe(400);
    expect(r7.json().error).toBe('invalid_model');
    expect(r7.json().message).not.toMatch(/Cannot read|undefined|null \(reading/);
  });

  it('a weight shard named like a file the store writes itself (personas.json, manifest.json): 400, nothing stored', async () => {
    const fx = keras3Functional();
    const before = readdirSync(app.services.store.versionsDir).sort();
    for (const reserved of ['personas.json', 'manifest.json']) {
      const modelJson = structuredClone(fx.modelJson) as { weightsManifest: { paths: string[] }[] };
      const files = new Map<string, Buffer>();
      for (const group of modelJson.weightsManifest) {
        group.paths = group.paths.map((p) => (p === 'group1-shard2of2.bin' ? reserved : p));
      }
      for (const [name, buf] of fx.files) files.set(name === 'group1-shard2of2.bin' ? reserved : name, buf);
      const res = await upload(fixtureParts({ modelJson, files }, numericSpec()));
      expect(res.statusCode, res.body).toBe(400);
      expect(res.json().message).toContain(`"${reserved}"`);
    }
    expect(readdirSync(app.services.store.versionsDir).sort()).toEqual(before);
  });

  it('needs the admin scope: predict key 403, no key 401', async () => {
    const parts = fixtureParts(keras3Functional(), numericSpec(), [{ name: 'id', value: 'not-allowed' }]);
    const forbidden = await upload(parts, PREDICT);
    expect(forbidden.statusCode).toBe(403);
    expect(forbidden.json().error).toBe('forbidden');
    expect((await upload(parts, {})).statusCode).toBe(401);
    expect(existsSync(versionDir('not-allowed'))).toBe(false);
    const scan = await app.inject({ method: 'POST', url: '/v1/models/scan', headers: PREDICT });
    expect(scan.statusCode).toBe(403);
  });

  it('413 above UPLOAD_LIMIT_BYTES', async () => {
    const small = await buildTestApp({ API_KEYS, UPLOAD_LIMIT_BYTES: '3000' });
    try {
      const res = await upload(fixtureParts(keras3Functional(), numericSpec()), ADMIN, small); // model.json alone is ~6 KB
      expect(res.statusCode).toBe(413);
      expect(res.json().error).toBe('payload_too_large');
    } finally {
      await small.close();
    }
  });
});

describe('POST /v1/models/scan', () => {
  it('registers a hand-copied version directory and reports a broken one without touching it', async () => {
    const good = versionDir('hand-copied');
    cpSync(path.join(FIXTURE_ROOT, 'keras3/functional'), good, { recursive: true });
    writeFileSync(path.join(good, 'feature-spec.json'), JSON.stringify(numericSpec()));
    const broken = versionDir('broken-copy');
    cpSync(path.join(FIXTURE_ROOT, 'keras3/functional'), broken, { recursive: true });
    rmSync(path.join(broken, 'group1-shard2of2.bin'));
    writeFileSync(path.join(broken, 'feature-spec.json'), JSON.stringify(numericSpec()));
    const noSpec = versionDir('no-spec');
    mkdirSync(noSpec);
    writeFileSync(path.join(noSpec, 'model.json'), '{}');
    expect(app.services.store.has('hand-copied')).toBe(false);

    const res = await app.inject({ method: 'POST', url: '/v1/models/scan', headers: ADMIN });
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json();
    expect(body.added).toEqual(['hand-copied']);
    expect(body.invalid).toEqual(
      expect.arrayContaining([
        { id: 'broken-copy', reason: expect.stringContaining('group1-shard2of2.bin') },
        { id: 'no-spec', reason: expect.stringContaining('feature-spec.json is missing') },
      ]),
    );
    expect(body.invalid).toHaveLength(2);

    const store = app.services.store;
    expect(store.has('hand-copied')).toBe(true);
    expect(() => store.verify('hand-copied')).not.toThrow();
    expect(store.card('hand-copied')).toMatchObject({ id: 'hand-copied', source: 'imported' });
    expect(store.has('broken-copy')).toBe(false);
    expect(existsSync(path.join(broken, 'card.json'))).toBe(false);

    // A second scan adds nothing new and still reports the broken directory.
    const again = (await app.inject({ method: 'POST', url: '/v1/models/scan', headers: ADMIN })).json();
    expect(again.added).toEqual([]);
    expect(again.invalid.map((i: { id: string }) => i.id).sort()).toEqual(['broken-copy', 'no-spec']);

    await activate('hand-copied');
    const x = [0.3, -1.7, 2.2, 0.9];
    const out = await predict(Object.fromEntries(x.map((v, i) => [`x${i + 1}`, v])));
    expect(out.modelVersion).toBe('hand-copied');
    expect(Math.abs(out.probability - expected(standardize(x)))).toBeLessThan(1e-5);
  });
});

describe('import: a store without a recorded active version, and odd but legal files', () => {
  it('records the version it serves, so a version imported later waits for an activation instead of taking traffic', async () => {
    const store = copyDefaultStore();
    rmSync(path.join(store, 'state.json'));
    const bare = await buildTestApp({ API_KEYS, MODEL_STORE: store });
    try {
      await bare.ready();
      expect(bare.services.models.active?.id).toBe('shoppers-mlp-v1');
      const state = JSON.parse(readFileSync(path.join(store, 'state.json'), 'utf8'));
      expect(state.active).toBe('shoppers-mlp-v1');
      expect(state.history.at(-1)).toMatchObject({ action: 'activate', version: 'shoppers-mlp-v1', previous: null, by: 'service' });
      const res = await upload(fixtureParts(keras3Functional(), numericSpec(), [{ name: 'id', value: 'newer-import' }]), ADMIN, bare);
      expect(res.statusCode, res.body).toBe(201);
      await bare.services.lifecycle.reconcile();
      expect(bare.services.models.active?.id).toBe('shoppers-mlp-v1');
      expect((await bare.inject({ url: '/readyz' })).json().model.activeVersion).toBe('shoppers-mlp-v1');
    } finally {
      await bare.close();
      rmSync(store, { recursive: true, force: true });
    }
  });

  it('files written with a byte-order mark and CRLF (a Windows editor) import, load and serve', async () => {
    const store = copyDefaultStore();
    const own = await buildTestApp({ API_KEYS, MODEL_STORE: store });
    try {
      const fx = keras3Functional();
      const windows = (v: unknown) => Buffer.from('\uFEFF' + JSON.stringify(v, null, 2).replace(/\n/g, '\r\n'));
      const parts: Part[] = [
        { name: 'model', value: windows(fx.modelJson), filename: 'model.json' },
        ...[...fx.files].map(([name, buf]) => ({ name: 'weights', value: buf, filename: name })),
        { name: 'featureSpec', value: windows(numericSpec()), filename: 'feature-spec.json' },
        { name: 'id', value: 'bom-import' },
      ];
      const res = await upload(parts, ADMIN, own);
      expect(res.statusCode, res.body).toBe(201);
      expect((await own.inject({ url: '/v1/models/bom-import', headers: ADMIN })).statusCode).toBe(200);
      const act = await own.inject({ method: 'POST', url: '/v1/models/bom-import/activate', headers: ADMIN, payload: { reason: 'bom' } });
      expect(act.statusCode, act.body).toBe(200);
      const predicted = await own.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { features: { x1: 1, x2: 2, x3: 3, x4: 4 } } });
      expect(predicted.statusCode, predicted.body).toBe(200);
      expect(predicted.json().modelVersion).toBe('bom-import');
    } finally {
      await own.close();
      rmSync(store, { recursive: true, force: true });
    }
  });

  it('weight paths URL-encoded in the manifest (as the converter may write them) find their shards by name', async () => {
    const fx = keras3Functional();
    const mj = structuredClone(fx.modelJson) as { weightsManifest: { paths: string[] }[] };
    for (const g of mj.weightsManifest) g.paths = g.paths.map((p) => p.replace(/-/g, '%2D'));
    const res = await upload(fixtureParts({ modelJson: mj, files: fx.files }, numericSpec(), [{ name: 'id', value: 'encoded-paths' }]));
    expect(res.statusCode, res.body).toBe(201);
  });
});
