/**
 * Longest userId (and sessionId), in characters, anywhere users enter the service: predict bodies,
 * audience CSVs and the /v1/users/:userId routes, so every stored user can be looked up and erased.
 */
export const MAX_USER_ID_LENGTH = 256;

/**
 * Whether an id is well-formed Unicode. JSON can carry an unpaired surrogate ("\ud800") that no
 * URL can: percent-encoded it is malformed UTF-8, so a user stored under such an id could never be
 * looked up or erased through /v1/users/:userId.
 */
export function isWellFormedId(id: string): boolean {
  return id.isWellFormed();
}
