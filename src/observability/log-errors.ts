/**
 * pino's serializer for `err`: an Error's type, message, code and stack, and nothing else. Errors
 * can carry their inputs as properties (ioredis puts the failed command's arguments on the error,
 * and those may be userIds or feature values), and pino's standard serializer logs every property.
 * Strings (code that logs `err: error.message`) pass through.
 */
export function errorForLog(err: unknown): unknown {
  if (!(err instanceof Error)) return typeof err === 'string' ? err : { type: typeof err, message: String(err) };
  const code = (err as { code?: unknown }).code;
  return {
    type: err.name !== 'Error' ? err.name : err.constructor?.name || 'Error',
    message: err.message,
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    stack: err.stack,
  };
}
