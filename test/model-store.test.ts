import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ModelStore, newVersionId } from '../src/registry/model-store.js';
import { copyDefaultStore } from './helpers/app.js';

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
