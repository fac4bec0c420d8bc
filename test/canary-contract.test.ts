import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';
import { shopperFeatureRows } from './helpers/shoppers.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { buildManifest } from '../src/registry/manifest.js';

/**
 * A split canary answers real requests, so it must accept every request the active version
 * accepts: same feature names and types, null accepted wherever the active version accepts it.
 */

const A = BUNDLED_VERSION;
const API_KEYS = 'admin:admin-key-123,predict:pred-key-123';
const ADMIN = { authorization: 'Bearer admin-key-123' };
const PREDICT = { authorization: 'Bearer pred-key-123' };

type Features = Record<string, number | string | boolean | null>;
interface SpecJson {
  features: { name: string; type: string; nullable?: boolean; vocabulary?: string[]; [k: string]: unknown }[];
}
interface StateBody {
  active: string | null;
  canary: { version: string; percent: number; mode: string } | null;
  history: { action: string; version: string; previous: string | null; reason?: string }[];
}

/**
 * A copy of the bundled version (output bias shifted, so its answers differ) whose feature spec
 * `edit` changes, with its manifest rebuilt so checksums verify. Edits keep the encoded width
 * (renames, types of width 1, nullability, vocabularies of the same size), so the weights fit.
 */
function addVersionWithSpec(storeDir: string, id: string, edit: (spec: SpecJson) => void, biasShift = 0.5): string {
  addSecondVersion(storeDir, id, { biasShift });
  const dir = join(storeDir, 'versions', id);
  const spec = JSON.parse(readFileSync(join(dir, 'feature-spec.json'), 'utf8')) as SpecJson;
  edit(spec);
  writeFileSync(join(dir, 'feature-spec.json'), JSON.stringify(spec, null, 2) + '\n');
  const files = new Map(readdirSync(dir).filter((n) => n !== 'manifest.json').map((n) => [n, readFileSync(join(dir, n))]));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(buildManifest(id, files), null, 2) + '\n');
  return id;
}

const feature = (spec: SpecJson, name: string) => spec.features.find((f) => f.name === name)!;
/** "Trained on another CSV": two columns named differently. */
const otherColumns = (spec: SpecJson) => {
  feature(spec, 'Administrative').name = 'AdminPages';
  feature(spec, 'Administrative_Duration').name = 'AdminSeconds';
};

const post = (app: FastifyInstance, url: string, payload: Record<string, unknown> = {}) => app.inject({ method: 'POST', url, headers: ADMIN, payload });
const state = async (app: FastifyInstance) => (await app.services.lifecycle.state()) as StateBody;
const readyz = async (app: FastifyInstance) => (await app.inject({ method: 'GET', url: '/readyz' })).json().model as { activeVersion: string; canaryVersion: string | null };

/**
 * Predicts `rows` for 400 distinct users (a 50% canary gets about half of them); every request
 * must be answered 200. Returns how many answers each version gave.
 */
async function predictAllUsers(app: FastifyInstance, rows: Features[]): Promise<Record<string, number>> {
  const served: Record<string, number> = {};
  const failures: string[] = [];
  await Promise.all(
    Array.from({ length: 400 }, async (_, i) => {
      const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: PREDICT, payload: { userId: `user-${i}`, features: rows[i % rows.length] } });
      if (res.statusCode !== 200) failures.push(`user-${i}: ${res.statusCode} ${res.body}`);
      else served[res.json().modelVersion] = (served[res.json().modelVersion] ?? 0) + 1;
    }),
  );
  expect(failures.slice(0, 3)).toEqual([]);
  return served;
}

/**
 * Registers before/after hooks for the enclosing describe: an app on a copy of the default store
 * that `prepare` adds versions to (or edits), closed and removed afterwards. `set` receives the app.
 */
function appOnStoreCopy(prepare: (storeDir: string) => void, set: (app: FastifyInstance) => void): void {
  let app: FastifyInstance | undefined;
  let storeDir: string | undefined;
  beforeAll(async () => {
    storeDir = copyDefaultStore();
    prepare(storeDir);
    app = await buildTestApp({ MODEL_STORE: storeDir, API_KEYS });
    await app.ready();
    set(app);
  });
  afterAll(async () => {
    await app?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });
}

describe('starting a split canary whose input contract differs from the active version', () => {
  let app!: FastifyInstance;
  const OTHER_CSV = 'other-columns';
  const RETYPED = 'weekend-numeric';
  const STRICTER = 'administrative-not-null';
  const COMPATIBLE = 'other-vocab-more-nulls';
  const rows = shopperFeatureRows(100) as Features[];

  appOnStoreCopy(
    (storeDir) => {
      addVersionWithSpec(storeDir, OTHER_CSV, otherColumns);
      addVersionWithSpec(storeDir, RETYPED, (spec) => {
        const i = spec.features.findIndex((f) => f.name === 'Weekend');
        spec.features[i] = { name: 'Weekend', type: 'numeric', nullable: false, impute: 0, mean: 0.2, std: 0.4 };
      });
      addVersionWithSpec(storeDir, STRICTER, (spec) => (feature(spec, 'Administrative').nullable = false));
      addVersionWithSpec(storeDir, COMPATIBLE, (spec) => {
        feature(spec, 'PageValues').nullable = true; // looser than the active version: fine
        const month = feature(spec, 'Month');
        month.vocabulary = month.vocabulary!.map((m, i) => (i < 2 ? `${m}-renamed` : m)); // other categories: fine (OOV bucket)
      });
    },
    (a) => (app = a),
  );

  it('a canary trained on other columns is refused with 409 incompatible_canary naming the missing and extra features; nothing changes (shadow mode stays allowed)', async () => {
    const res = await post(app, `/v1/models/${OTHER_CSV}/canary`, { percent: 50 });
    expect(res.statusCode, res.body).toBe(409);
    const body = res.json();
    expect(body.error).toBe('incompatible_canary');
    expect(body.message).toContain(`cannot be a canary of ${A}`);
    expect(body.message).toContain('missing: Administrative, Administrative_Duration');
    expect(body.message).toContain('extra: AdminPages, AdminSeconds');
    expect(body.details).toEqual(
      expect.arrayContaining([
        { path: 'features.Administrative', message: expect.stringContaining('missing') },
        { path: 'features.AdminPages', message: expect.stringContaining('extra') },
      ]),
    );
    expect(body.details).toHaveLength(4);
    const s = await state(app);
    expect(s.canary).toBeNull();
    expect(s.history.at(-1)?.action).not.toMatch(/^canary/);
    expect(await readyz(app)).toMatchObject({ activeVersion: A, canaryVersion: null });
    expect(await predictAllUsers(app, rows)).toEqual({ [A]: 400 });

    // A shadow answers no request: any spec may shadow (its mismatches count as incompatible).
    expect((await post(app, `/v1/models/${OTHER_CSV}/canary`, { mode: 'shadow' })).statusCode).toBe(200);
    expect(await predictAllUsers(app, rows)).toEqual({ [A]: 400 });
    expect((await post(app, '/v1/models/canary/abort')).statusCode).toBe(200);
  });

  it('a type change and a feature that no longer accepts null are refused too, each named; other vocabularies and more nullable features are compatible', async () => {
    const retyped = await post(app, `/v1/models/${RETYPED}/canary`, { percent: 50 });
    expect(retyped.statusCode, retyped.body).toBe(409);
    expect(retyped.json()).toMatchObject({ error: 'incompatible_canary', details: [{ path: 'features.Weekend', message: expect.stringContaining('boolean') }] });
    expect(retyped.json().message).toContain('type changed: Weekend (boolean → numeric)');

    const stricter = await post(app, `/v1/models/${STRICTER}/canary`, { percent: 50 });
    expect(stricter.statusCode, stricter.body).toBe(409);
    expect(stricter.json()).toMatchObject({ error: 'incompatible_canary', details: [{ path: 'features.Administrative', message: expect.stringContaining('null') }] });
    expect(stricter.json().message).toContain('null not accepted: Administrative');
    expect((await state(app)).canary).toBeNull();

    const res = await post(app, `/v1/models/${COMPATIBLE}/canary`, { percent: 50 });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json().canary).toEqual({ version: COMPATIBLE, percent: 50, mode: 'split' });
    const withNulls = rows.map((r) => ({ ...r, Administrative: null, Month: 'Feb' }));
    const served = await predictAllUsers(app, withNulls);
    expect(served[COMPATIBLE]).toBeGreaterThan(100);
    expect(served[A]).toBeGreaterThan(100);
    expect((await post(app, '/v1/models/canary/abort')).statusCode).toBe(200);
  });
});

describe('the active version changing while a split canary runs', () => {
  let app!: FastifyInstance;
  const B = 'copy-b'; // A's spec
  const C = 'copy-c'; // A's spec
  const D = 'admin-strict-pv-nullable'; // Administrative no longer nullable, PageValues nullable
  const E = 'admin-strict-pv-nullable-2'; // D's spec
  const rows = shopperFeatureRows(100) as Features[];
  const dSpec = (spec: SpecJson) => {
    feature(spec, 'Administrative').nullable = false;
    feature(spec, 'PageValues').nullable = true;
  };

  appOnStoreCopy(
    (storeDir) => {
      addSecondVersion(storeDir, B, { biasShift: 1.5 });
      addSecondVersion(storeDir, C, { biasShift: -1 });
      addVersionWithSpec(storeDir, D, dSpec, 0.5);
      addVersionWithSpec(storeDir, E, dSpec, -0.5);
    },
    (a) => (app = a),
  );

  it('an activation keeps a canary that accepts every request of the new active version, and ends one that would refuse some (recorded in the history)', async () => {
    expect((await post(app, `/v1/models/${B}/canary`, { percent: 50 })).statusCode).toBe(200);
    const kept = await post(app, `/v1/models/${C}/activate`);
    expect(kept.statusCode, kept.body).toBe(200);
    expect(kept.json()).toEqual({ active: C, canary: { version: B, percent: 50, mode: 'split' } });
    expect(await readyz(app)).toMatchObject({ activeVersion: C, canaryVersion: B });

    const res = await post(app, `/v1/models/${D}/activate`, { reason: 'PageValues may be missing now' });
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: D, canary: null });
    const s = await state(app);
    expect(s.history.slice(-2).map((h) => `${h.action}:${h.version}`)).toEqual([`activate:${D}`, `abort:${B}`]);
    expect(s.history.at(-1)).toMatchObject({ previous: D, reason: expect.stringContaining('null not accepted: PageValues') });
    expect(await readyz(app)).toMatchObject({ activeVersion: D, canaryVersion: null });
    // Valid for D (PageValues null), which B would refuse: every user is answered.
    expect(await predictAllUsers(app, rows.map((r) => ({ ...r, PageValues: null })))).toEqual({ [D]: 400 });
  });

  it('a rollback is never refused because of a canary: it ends one the version rolled back to would not be served by', async () => {
    const canary = await post(app, `/v1/models/${E}/canary`, { percent: 50 });
    expect(canary.statusCode, canary.body).toBe(200); // same contract as D
    const res = await post(app, '/v1/models/rollback');
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ active: C, canary: null });
    const s = await state(app);
    expect(s.history.slice(-2).map((h) => `${h.action}:${h.version}`)).toEqual([`rollback:${C}`, `abort:${E}`]);
    expect(s.history.at(-1)?.reason).toContain('null not accepted: Administrative');
    expect(await readyz(app)).toMatchObject({ activeVersion: C, canaryVersion: null });
    expect(await predictAllUsers(app, rows.map((r) => ({ ...r, Administrative: null })))).toEqual({ [C]: 400 });
  });
});

describe('a fleet state holding an incompatible split canary (written by an older replica, or by hand)', () => {
  let app!: FastifyInstance;
  const OTHER_CSV = 'other-columns';

  appOnStoreCopy(
    (storeDir) => {
      addVersionWithSpec(storeDir, OTHER_CSV, otherColumns);
      const path = join(storeDir, 'state.json');
      const s = JSON.parse(readFileSync(path, 'utf8')) as StateBody;
      s.canary = { version: OTHER_CSV, percent: 50, mode: 'split' };
      writeFileSync(path, JSON.stringify(s, null, 2) + '\n');
    },
    (a) => (app = a),
  );

  it('is not served: every user gets the active version', async () => {
    expect(await readyz(app)).toMatchObject({ activeVersion: A, canaryVersion: null });
    expect(await predictAllUsers(app, shopperFeatureRows(100) as Features[])).toEqual({ [A]: 400 });
  });
});

describe('a store without a recorded active version (no state.json: the newest version serves)', () => {
  let app!: FastifyInstance;
  const OTHER_CSV = 'other-columns';

  appOnStoreCopy(
    (storeDir) => {
      addVersionWithSpec(storeDir, OTHER_CSV, otherColumns); // newer than the bundled version
      rmSync(join(storeDir, 'state.json'), { force: true });
    },
    (a) => (app = a),
  );

  it('checks a canary against the version actually serving: 409 incompatible_canary, nothing recorded', async () => {
    expect((await readyz(app)).activeVersion).toBe(OTHER_CSV);
    const res = await post(app, `/v1/models/${A}/canary`, { percent: 50 });
    expect(res.statusCode, res.body).toBe(409);
    expect(res.json().error).toBe('incompatible_canary');
    expect(res.json().message).toContain(`cannot be a canary of ${OTHER_CSV}`);
    expect((await state(app)).canary).toBeNull();
  });
});
