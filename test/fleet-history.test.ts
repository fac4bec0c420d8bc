import { describe, expect, it } from 'vitest';
import { trimmed } from '../src/registry/fleet-state.js';
import type { StoreState } from '../src/registry/model-store.js';

const entry = (action: string, version: string | null, previous: string | null) => ({ at: new Date(0).toISOString(), action, version, previous, by: 'test' });

describe('fleet history trimming', () => {
  it('keeps the last 500 entries and the entry that made the active version active, so rollback still finds its target', () => {
    const state: StoreState = {
      active: 'v2',
      canary: null,
      history: [entry('activate', 'v1', null), entry('activate', 'v2', 'v1'), ...Array.from({ length: 600 }, (_, i) => entry(i % 2 ? 'abort' : 'canary:shadow', 'v3', 'v2'))],
    };
    const history = trimmed(structuredClone(state)).history;
    expect(history).toHaveLength(501);
    expect(history[0]).toMatchObject({ action: 'activate', version: 'v2', previous: 'v1' });
    expect(history.slice(1)).toEqual(state.history.slice(-500));
  });

  it('adds nothing when that entry is among the last 500, or when there is none', () => {
    const recent: StoreState = { active: 'v2', canary: null, history: [...Array.from({ length: 600 }, () => entry('abort', 'v3', 'v1')), entry('activate', 'v2', 'v1')] };
    expect(trimmed(structuredClone(recent)).history).toEqual(recent.history.slice(-500));
    const none: StoreState = { active: 'v2', canary: null, history: Array.from({ length: 600 }, () => entry('abort', 'v3', 'v1')) };
    expect(trimmed(structuredClone(none)).history).toHaveLength(500);
  });
});
