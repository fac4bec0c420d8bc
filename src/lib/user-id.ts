/**
 * Longest userId (and sessionId), in characters, anywhere users enter the service: predict bodies,
 * audience CSVs and the /v1/users/:userId routes, so every stored user can be looked up and erased.
 */
export const MAX_USER_ID_LENGTH = 256;
