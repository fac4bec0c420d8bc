import { createHash } from 'node:crypto';

/**
 * The score-cache scope of a model version: its id plus a digest of its manifest (the sha256 of
 * every file it holds: weights, topology, feature spec, personas, card), as `<id>@<digest>`.
 *
 * Version ids are reusable (a deleted id can be registered again with other weights), so the id
 * alone must not key cached scores: a re-registered id would be answered with the old version's
 * scores, from L1 and from Redis on every replica. The manifest digest differs for any change of
 * content, while the same version loaded again (after a restart, or on another replica reading
 * the same store) gets the same scope, so the Redis L2 stays shared across replicas.
 *
 * Computed from the manifest's entries in name order, so it does not depend on how manifest.json
 * is formatted. 16 base64url characters (96 bits) of sha256: short, since it is hashed into every
 * request's key (see cacheKey in scorer.ts).
 */
export function cacheScope(id: string, manifest: { files: Record<string, string> }): string {
  const h = createHash('sha256').update(id).update('\0');
  const names = Object.keys(manifest.files).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) h.update(name).update('\0').update(manifest.files[name]).update('\n');
  return `${id}@${h.digest('base64url').slice(0, 16)}`;
}
