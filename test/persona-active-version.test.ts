import { rmSync } from 'node:fs';
import { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyDefaultStore } from './helpers/app.js';
import { BUNDLED_VERSION, addSecondVersion } from './helpers/second-version.js';
import { TestRedis } from './helpers/redis-server.js';
import { ModelStore } from '../src/registry/model-store.js';
import { FleetState } from '../src/registry/fleet-state.js';
import { RedisMembershipStore } from '../src/segments/redis-membership-store.js';
import type { MembershipRecord } from '../src/segments/membership-store.js';

/**
 * Persona segments are the active model's. A replica that has not yet followed an activation
 * (it follows the fleet state within ms–2 s) still records users with the old model's persona:
 * the store must keep such records out of persona segments, using the active version the fleet
 * state change wrote to Redis.
 */
const A = BUNDLED_VERSION;
const B = 'persona-active-b';
const noop = () => {};
const log = { warn: noop, info: noop, error: noop, debug: noop, trace: noop, fatal: noop, child: () => log } as unknown as FastifyBaseLogger;

describe('persona segments after an activation on another replica', () => {
  let redis: TestRedis;
  let client: Redis;
  let storeDir: string;
  let fleet: FleetState;
  let members: RedisMembershipStore;
  const activate = (version: string) =>
    fleet.update((s) => {
      s.history.push({ at: new Date().toISOString(), action: 'activate', version, previous: s.active, by: 'test' });
      s.active = version;
    });
  const rec = (userId: string, version: string, persona: number | null): MembershipRecord => ({
    userId,
    probability: 0.9,
    version,
    persona,
    segments: persona === null ? ['high-intent'] : ['high-intent', `persona-${persona}`],
    at: Date.now(),
  });
  const ids = ['high-intent', 'medium-intent', 'low-intent', 'persona-0', 'persona-1', 'persona-2'];

  beforeAll(async () => {
    redis = await TestRedis.start();
    storeDir = copyDefaultStore();
    addSecondVersion(storeDir, B);
    client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
    await client.ping();
    fleet = new FleetState(new ModelStore(storeDir), client, log);
    await fleet.seed();
    await activate(A);
    members = new RedisMembershipStore(client, 86_400);
  });

  afterAll(async () => {
    client?.disconnect();
    await redis?.close();
    if (storeDir) rmSync(storeDir, { recursive: true, force: true });
  });

  it('a record of a model that is no longer active joins no persona segment and keeps no persona; one of the active model does', async () => {
    await activate(B);
    expect(await client.get('pi:models:active')).toBe(B);

    // A lagging replica still serving A records a user with A's persona 1.
    await members.record([rec('stale-user', A, 1)], ids);
    const stale = await members.user('stale-user');
    expect(stale).toMatchObject({ version: A, persona: null });
    expect(stale!.segments).toEqual(['high-intent']);
    expect(await client.zscore('pi:seg:persona-1', 'stale-user')).toBeNull();
    expect(await client.zscore('pi:seg:high-intent', 'stale-user')).not.toBeNull();

    // A replica serving the active model B records with B's persona 1.
    await members.record([rec('fresh-user', B, 1)], ids);
    const fresh = await members.user('fresh-user');
    expect(fresh).toMatchObject({ version: B, persona: 1 });
    expect(fresh!.segments).toEqual(['high-intent', 'persona-1']);
    expect(await client.zscore('pi:seg:persona-1', 'fresh-user')).not.toBeNull();
    expect(await members.size('persona-1')).toBe(1);
  });

  it('a user who was in a persona segment leaves it when recorded by a model no longer active', async () => {
    await members.record([rec('moving-user', B, 2)], ids);
    expect(await client.zscore('pi:seg:persona-2', 'moving-user')).not.toBeNull();
    await members.record([rec('moving-user', A, 2)], ids);
    expect(await client.zscore('pi:seg:persona-2', 'moving-user')).toBeNull();
    expect(await members.user('moving-user')).toMatchObject({ version: A, persona: null, segments: ['high-intent'] });
  });

  it('without the active key (no fleet state written yet) records are written as given', async () => {
    await client.del('pi:models:active');
    await members.record([rec('no-key-user', A, 0)], ids);
    expect(await members.user('no-key-user')).toMatchObject({ version: A, persona: 0, segments: ['high-intent', 'persona-0'] });
    expect(await client.zscore('pi:seg:persona-0', 'no-key-user')).not.toBeNull();
  });

  it('seeding a state written before the active key existed sets the key from it', async () => {
    await client.del('pi:models:active');
    await fleet.seed();
    expect(await client.get('pi:models:active')).toBe(B);
  });
});
