import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ModelStore, newVersionId } from '../src/registry/model-store.js';
import { buildTestApp, copyDefaultStore } from './helpers/app.js';

describe('model store housekeeping', () => {
  const dir = copyDefaultStore();
  const store = new ModelStore(dir);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('sweeps temp dirs left by a crash, but not fresh ones another replica may still be writing', () => {
    const old = join(store.versionsDir, '.tmp-crashed');
    const fresh = join(store.versionsDir, '.tmp-in-progress');
    mkdirSync(old);
    mkdirSync(fresh);
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    utimesSync(old, twoHoursAgo, twoHoursAgo);
    store.sweepTemp();
    expect(existsSync(old)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
    expect(store.listIds().length).toBeGreaterThan(0);
  });

  it('version ids from the same data in the same second still differ (two trainings of one file)', () => {
    const ids = [newVersionId('ef7c9a0123'), newVersionId('ef7c9a0123')];
    for (const id of ids) expect(id).toMatch(/^\d{8}T\d{6}Z-ef7c9a-[0-9a-f]{6}$/);
    expect(ids[0]).not.toBe(ids[1]);
    expect(newVersionId()).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{6}$/);
  });

  it('writes state.json whole, leaving no temp file behind', () => {
    const state = { ...store.readState(), history: Array.from({ length: 300 }, (_, i) => ({ at: new Date(i).toISOString(), action: 'activate', version: `v${i}`, previous: null, by: 'test' })) };
    store.writeState(state);
    expect(JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')).history).toHaveLength(300);
    expect(store.readState()).toEqual(state);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

/**
 * A store an operator copied, edited or damaged by hand: broken entries are listed apart and never
 * served unasked, a broken state.json is a clear 503, and links to version directories are versions.
 */
describe('a model store with hand-made damage', () => {
  const API_KEYS = 'admin:adm-key-1234';
  const ADMIN = { authorization: 'Bearer adm-key-1234' };
  const BUNDLED = 'shoppers-mlp-v1';
  let dir: string;
  let app: FastifyInstance | undefined;

  beforeEach(() => {
    dir = copyDefaultStore();
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const versions = (...p: string[]) => join(dir, 'versions', ...p);
  const start = async () => (app = await buildTestApp({ MODEL_STORE: dir, API_KEYS }));
  const served = async () => ((await app!.inject('/readyz')).json() as { model: { activeVersion: string | null } }).model.activeVersion;

  it('a copy under an invalid name is no version; a version with an unreadable card is listed apart, its reads are 422, and the readable one serves', async () => {
    cpSync(versions(BUNDLED), versions(`${BUNDLED} (copy)`), { recursive: true });
    cpSync(versions(BUNDLED), versions('v2'), { recursive: true });
    writeFileSync(versions('v2', 'card.json'), '{');
    rmSync(join(dir, 'state.json'), { force: true });
    await start();
    expect(await served()).toBe(BUNDLED);
    const list = await app!.inject({ url: '/v1/models', headers: ADMIN });
    expect(list.statusCode, list.body).toBe(200);
    expect(list.json().models.map((m: { id: string }) => m.id)).toEqual([BUNDLED]);
    expect(list.json().unreadable).toEqual([{ id: 'v2', reason: expect.stringMatching(/^version v2: card\.json is not readable JSON/) }]);
    const card = await app!.inject({ url: '/v1/models/v2', headers: ADMIN });
    expect(card.statusCode).toBe(422);
    expect(card.json()).toMatchObject({ error: 'version_unreadable', message: expect.stringContaining('card.json') });
  });

  it('state.json naming a missing version serves the newest readable one', async () => {
    cpSync(versions(BUNDLED), versions('v2'), { recursive: true });
    writeFileSync(versions('v2', 'card.json'), JSON.stringify({ id: 'v2', created: 'yesterday', source: 'trained' }));
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ active: 'gone', canary: null, history: [] }));
    await start();
    expect(await served()).toBe(BUNDLED);
    expect((await app!.inject({ url: '/v1/models', headers: ADMIN })).json().unreadable[0].reason).toMatch(/created: expected an ISO date/);
  });

  it('a state.json that is empty or of the wrong shape is a 503 naming it on the routes that read it', async () => {
    await start();
    for (const text of ['', '{"active":"shoppers-mlp-v1","history":null}', '{"active":5}']) {
      writeFileSync(join(dir, 'state.json'), text);
      for (const res of [await app!.inject({ url: '/v1/models', headers: ADMIN }), await app!.inject({ method: 'POST', url: `/v1/models/${BUNDLED}/activate`, headers: ADMIN, payload: {} })]) {
        expect(res.statusCode, `${text}: ${res.body}`).toBe(503);
        expect(res.json().message).toMatch(/state\.json is not (readable JSON|a valid state).*remove it to serve the newest version/);
      }
    }
  });

  it('a link to a version directory is a version: listed, and served when state.json names it', async () => {
    symlinkSync(BUNDLED, versions('linked'), 'dir');
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ active: 'linked', canary: null, history: [] }));
    await start();
    expect(await served()).toBe('linked');
    const models = (await app!.inject({ url: '/v1/models', headers: ADMIN })).json().models as { id: string; state: string }[];
    expect(models.find((m) => m.id === 'linked')?.state).toBe('active');
  });

  it('scan refuses a hand-copied version whose personas.json does not fit its model, instead of registering one that cannot load', async () => {
    await start();
    const hand = versions('hand-personas');
    mkdirSync(hand);
    for (const f of ['model.json', 'group1-shard1of1.bin', 'feature-spec.json']) cpSync(versions(BUNDLED, f), join(hand, f));
    writeFileSync(join(hand, 'personas.json'), JSON.stringify({ ...JSON.parse(readFileSync(versions(BUNDLED, 'personas.json'), 'utf8')), centroids: [[1, 2, 3]] }));
    const scan = await app!.inject({ method: 'POST', url: '/v1/models/scan', headers: ADMIN });
    expect(scan.statusCode, scan.body).toBe(200);
    expect(scan.json().added).not.toContain('hand-personas');
    expect(scan.json().invalid).toEqual([{ id: 'hand-personas', reason: expect.stringMatching(/personas\.json/) }]);
    writeFileSync(join(hand, 'personas.json'), '{}');
    expect((await app!.inject({ method: 'POST', url: '/v1/models/scan', headers: ADMIN })).json().invalid[0].reason).toMatch(/personas\.json is not valid/);
    rmSync(join(hand, 'personas.json'));
    expect((await app!.inject({ method: 'POST', url: '/v1/models/scan', headers: ADMIN })).json().added).toEqual(['hand-personas']);
  });
});
