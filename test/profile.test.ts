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
});
