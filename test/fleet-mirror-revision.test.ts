import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyDefaultStore } from './helpers/app.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { TestRedis } from './helpers/redis-server.js';
import { ModelStore, type StoreState } from '../src/registry/model-store.js';
import { FleetState } from '../src/registry/fleet-state.js';

/**
 * The store's state.json mirrors the fleet state in Redis, and seeds a Redis that restarted empty.
 * A read answered before a change but handled after it (a slow GET) must not put the older state
 * back into the mirror, or an empty restart would then lose the change.
 */
const A = BUNDLED_VERSION;
const B = 'mirror-b';
const STATE_KEY = 'pi:models:state';
const noop = () => {};
const log = { warn: noop, info: noop, error: noop, debug: noop, trace: noop, fatal: noop, child: () => log } as unknown as FastifyBaseLogger;

describe('the fleet state mirrored to state.json', () => {
  let redis: TestRedis;
  let client: Redis;
  let storeDir: string;
  let store: ModelStore;
  let fleet: FleetState;
  const mirror = () => JSON.parse(readFileSync(join(storeDir, 'state.json'), 'utf8')) as StoreState & { revision?: number };
  const activate = (version: string) =>
    fleet.update((s) => {
      s.history.push({ at: new Date().toISOString(), action: 'activate', version, previous: s.active, by: 'test' });
      s.active = version;
    });

  beforeAll(async () => {
    redis = await TestRedis.start();
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    store = new ModelStore(storeDir);
    client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    await client.ping();
    fleet = new FleetState(store, client, log);
    await fleet.seed();
    await activate(A);
  });

  afterAll(async () => {
    client?.disconnect();
    await redis?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  it('every change bumps the revision, in Redis and in the mirror', async () => {
    const before = mirror().revision ?? 0;
    await activate(B);
    await activate(A);
    const stored = JSON.parse((await client.get(STATE_KEY))!) as { revision: number; active: string };
    expect(stored).toMatchObject({ active: A, revision: before + 2 });
    expect(mirror()).toMatchObject({ active: A, revision: before + 2 });
  });

  it('a slow read finishing after a newer change does not write the older state over state.json; an empty Redis is re-seeded with the change', async () => {
    const staleRaw = (await client.get(STATE_KEY))!; // what a read sent now will answer...
    await activate(B); // ...handled only after this change was written and mirrored
    expect(mirror().active).toBe(B);

    const realGet = client.get.bind(client);
    client.get = (async () => staleRaw) as typeof client.get;
    try {
      const seen = await fleet.read();
      expect(seen.active).toBe(A); // the read itself answers what it got
    } finally {
      client.get = realGet;
    }
    expect(mirror().active).toBe(B);

    // The mirror path called directly with the older state: refused as well.
    store.writeState(JSON.parse(staleRaw) as StoreState, { ifNewer: true });
    expect(mirror().active).toBe(B);

    // Redis restarts empty (no persistence): the fleet state is seeded from the mirror, change included.
    await client.flushall();
    await fleet.seed();
    const seeded = JSON.parse((await client.get(STATE_KEY))!) as StoreState;
    expect(seeded.active).toBe(B);
    expect(seeded.history.at(-1)).toMatchObject({ action: 'activate', version: B });
  });

  it('re-reading an unchanged state (every 2 s poll, every GET) does not rewrite state.json', async () => {
    await activate(A);
    const path = join(storeDir, 'state.json');
    const before = statSync(path);
    for (let i = 0; i < 3; i++) await fleet.read();
    const after = statSync(path);
    expect(after.ino).toBe(before.ino); // a rewrite renames a new file into place
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(mirror().active).toBe(A);
  });
});
