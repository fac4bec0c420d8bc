import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** What a caller's X-Request-Id may look like: a trace or uuid-like token, nothing a log could be abused with. */
const CALLER_ID = /^[A-Za-z0-9._:\-]{1,128}$/;
let counter = 0;
/** Per process, so ids made by different replicas or after a restart do not repeat. */
const BOOT = randomBytes(3).toString('hex');

/**
 * The request id in every log line of a request. A caller's X-Request-Id is kept, so logs join up
 * across services, but only when it is a short token: anything else (16 KB of JSON, a userId)
 * would be copied unchecked into every log line, so a fresh id is made instead.
 */
export function requestId(req: IncomingMessage): string {
  const given = req.headers['x-request-id'];
  if (typeof given === 'string' && CALLER_ID.test(given)) return given;
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `req-${BOOT}-${counter.toString(36)}`;
}
