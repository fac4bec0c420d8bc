/**
 * Cache admission on second sighting (the "doorkeeper" of TinyLFU caches): a row is looked up in
 * and stored into the score cache only when it was scored recently before. A storefront asks once
 * per session, so most rows are one-off: for them, hashing the row into a cache key, the L1 map
 * operations and an L2 round trip cost more than scoring the row (about 1 µs), and storing them
 * would evict rows that do repeat.
 *
 * Sightings are 32-bit fingerprints in a fixed direct-mapped table (no allocation, no GC work per
 * request). A newer row may overwrite an older row's slot: that row is then cached one sighting
 * later. Two rows sharing slot and fingerprint make the second look seen: it is cached early,
 * which is the behaviour without admission. Neither case ever returns a wrong score: admitted
 * rows still go through the exact cache key (see cacheKey in scorer.ts).
 */
export class SightingFilter {
  private readonly slots: Uint32Array;
  private readonly mask: number;
  /** The row's bits as integers: the row is copied here (one memcpy) rather than viewed, which would allocate a view per request. */
  private floats = new Float32Array(256);
  private ints = new Int32Array(this.floats.buffer);

  /** `capacity`: rows remembered, rounded up to a power of two. */
  constructor(capacity: number) {
    let size = 1024;
    while (size < capacity && size < 1 << 26) size *= 2;
    this.slots = new Uint32Array(size);
    this.mask = size - 1;
  }

  /** Whether the row was seen before (recently); records this sighting either way. */
  seenBefore(row: Float32Array): boolean {
    const n = row.length;
    if (this.floats.length < n) {
      this.floats = new Float32Array(n * 2);
      this.ints = new Int32Array(this.floats.buffer);
    }
    this.floats.set(row);
    const words = this.ints;
    // Two independent 32-bit hashes of the row's bits (murmur3-style mixing): one picks the slot,
    // the other is the fingerprint stored there.
    let h1 = 0x9747b28c ^ n;
    let h2 = 0x3c6ef372 ^ n;
    for (let i = 0; i < n; i++) {
      let k = Math.imul(words[i], 0xcc9e2d51);
      k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
      h1 ^= k;
      h1 = (Math.imul((h1 << 13) | (h1 >>> 19), 5) + 0xe6546b64) | 0;
      h2 = Math.imul(h2 ^ words[i], 0x85ebca6b);
      h2 ^= h2 >>> 13;
    }
    h1 = fmix(h1);
    // 0 marks an empty slot, so a fingerprint is never 0.
    const fingerprint = fmix(h2 ^ h1) >>> 0 || 1;
    const slot = h1 & this.mask;
    if (this.slots[slot] === fingerprint) return true;
    this.slots[slot] = fingerprint;
    return false;
  }

  /** Forgets every sighting (tests, and a cleared cache). */
  clear(): void {
    this.slots.fill(0);
  }
}

/** murmur3's finalizer: spreads every input bit over the whole word. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}
