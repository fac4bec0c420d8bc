import { describe, expect, it } from 'vitest';
import { computeProfile } from '../src/segments/profile.js';
import type { UserRecord } from '../src/segments/membership-store.js';

const user = (userId: string, version: string, persona: number | null): UserRecord => ({ userId, probability: 0.5, version, persona, segments: [], at: 0 });

describe('segment profile', () => {
  it("counts personas only from records the active model scored (another model's persona 1 is another group)", () => {
    const members = [user('a', 'v2', 1), user('b', 'v2', 1), user('c', 'v1', 1), user('d', 'v1', 2), user('e', 'v2', 0)];
    const profile = computeProfile(null, members, members, { size: 5, scoredUsers: 5 }, 'v2');
    expect(profile.personas).toEqual([
      { id: 1, share: 2 / 5 },
      { id: 0, share: 1 / 5 },
    ]);
  });

  it('a category the population sample missed is not an infinite lift: the segment is part of the population', () => {
    const spec = { specVersion: 1, label: { name: 'y', positive: '1' }, threshold: 0.5, features: [{ name: 'c', type: 'categorical', nullable: false, impute: 'a', vocabulary: ['a', 'b', 'rare'], shares: [0.5, 0.4, 0.1] }] } as never;
    const withC = (userId: string, c: string): UserRecord => ({ ...user(userId, 'v1', null), features: { c } });
    const members = Array.from({ length: 10 }, (_, i) => withC(`m${i}`, i < 5 ? 'rare' : 'a'));
    const population = Array.from({ length: 100 }, (_, i) => withC(`p${i}`, i % 2 ? 'a' : 'b')); // no 'rare' in the sample
    const profile = computeProfile(spec, members, population, { size: 50, scoredUsers: 1000 }, 'v1');
    const rare = profile.features!.find((f) => f.feature === 'c')!.categories!.find((c) => c.value === 'rare')!;
    // 50 % of a 50-user segment is 25 users: at least 2.5 % of 1,000 scored users.
    expect(rare.populationShare).toBeCloseTo(0.025, 10);
    expect(rare.lift).toBeCloseTo(20, 10);
  });

  it('the distinctive text names the value the score comes from, listed even when the segment has none of it', () => {
    const spec = {
      specVersion: 1,
      label: { name: 'y', positive: '1' },
      threshold: 0.5,
      features: [
        { name: 'month', type: 'categorical', nullable: false, impute: 'May', vocabulary: ['May', 'Nov', 'Dec'] },
        { name: 'rate', type: 'numeric', nullable: false, impute: 0 },
      ],
    } as never;
    const row = (userId: string, month: string, rate: number): UserRecord => ({ ...user(userId, 'v1', null), features: { month, rate } });
    // The segment is "month ne May": May is 40 % of everyone and 0 % of the segment.
    const population = Array.from({ length: 100 }, (_, i) => row(`p${i}`, i < 40 ? 'May' : i < 80 ? 'Nov' : 'Dec', i < 40 ? 0.0433 : 0.0372));
    const members = population.filter((u) => u.features!.month !== 'May');
    const profile = computeProfile(spec, members, population, { size: members.length, scoredUsers: 100 }, 'v1');
    const month = profile.features!.find((f) => f.feature === 'month')!;
    expect(month.categories!.map((c) => c.value)).toContain('May');
    expect(month.categories!.find((c) => c.value === 'May')).toMatchObject({ share: 0, populationShare: 0.4, lift: 0 });
    expect(profile.distinctive!.find((d) => d.feature === 'month')!.text).toBe('month = May: 0% vs 40% overall');
    // Small rates keep three significant figures instead of rounding to the same 0.04.
    expect(profile.distinctive!.find((d) => d.feature === 'rate')!.text).toBe('rate: mean 0.0372 vs 0.0396 overall');
  });

  it('withholds feature statistics when fewer than 10 members have kept features (no member can be read off), keeps scores', () => {
    const spec = { specVersion: 1, label: { name: 'y', positive: '1' }, threshold: 0.5, features: [{ name: 'x', type: 'numeric', nullable: false, impute: 0, mean: 0, std: 1 }] } as never;
    const withX = (userId: string, x: number): UserRecord => ({ ...user(userId, 'v1', null), probability: 0.9, features: { x } });
    const population = Array.from({ length: 100 }, (_, i) => withX(`p${i}`, i));
    for (const n of [1, 9]) {
      const profile = computeProfile(spec, population.slice(0, n), population, { size: n, scoredUsers: 100 }, 'v1');
      expect(profile.features, `${n} members`).toBeUndefined();
      expect(profile.distinctive).toBeUndefined();
      expect(profile.featuresWithheld).toMatch(/fewer than 10 members/);
      expect(profile.score.mean).toBeCloseTo(0.9, 10);
    }
    const ten = computeProfile(spec, population.slice(0, 10), population, { size: 10, scoredUsers: 100 }, 'v1');
    expect(ten.features?.[0].numeric?.segment.mean).toBeCloseTo(4.5, 10);
    expect(ten.featuresWithheld).toBeUndefined();
  });

  it('withholds a feature fewer than 10 members have a value for, even in a larger group (nine nulls and one value would show that one)', () => {
    const spec = {
      specVersion: 1,
      label: { name: 'y', positive: '1' },
      threshold: 0.5,
      features: [
        { name: 'x', type: 'numeric', nullable: true, impute: 0, mean: 0, std: 1 },
        { name: 'z', type: 'numeric', nullable: false, impute: 0, mean: 0, std: 1 },
      ],
    } as never;
    const rec = (userId: string, x: number | null, z: number): UserRecord => ({ ...user(userId, 'v1', null), probability: 0.5, features: { x, z } });
    const population = Array.from({ length: 100 }, (_, i) => rec(`p${i}`, i, i));
    const members = [...Array.from({ length: 9 }, (_, i) => rec(`decoy${i}`, null, i)), rec('target', 17, 3)];
    const profile = computeProfile(spec, members, population, { size: 10, scoredUsers: 110 }, 'v1');
    expect(profile.features?.map((f) => f.feature)).toEqual(['z']);
    expect(profile.featuresWithheld).toBe('x: fewer than 10 members have a value for it, so its statistics are withheld');
  });
});
