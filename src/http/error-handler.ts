import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { AppError, type FieldIssue } from '../lib/errors.js';
import { RouteMethods } from './route-methods.js';
import { cutText } from '../lib/cut-text.js';

/**
 * Schema-validation failures (from zod via Fastify) as the service's `details` list. `skip` drops
 * issues by their raw path (before formatting, so a key named "features.x" is not mistaken for a
 * field under `features`): routes that re-check part of the body more precisely skip that part.
 */
export function schemaIssues(error: unknown, skip?: (path: readonly PropertyKey[]) => boolean): FieldIssue[] {
  if (!hasZodFastifySchemaValidationErrors(error)) return [];
  const context = (error as { validationContext?: string }).validationContext ?? 'body';
  const issues = error.validation.flatMap((v) => {
    // The provider joins the issue's path with "/": all-digit segments are array indexes (no route
    // validates a record with client-chosen keys through it; unknown keys come as the issue's `keys`).
    const path = v.instancePath.split('/').filter(Boolean).map((seg) => (/^\d+$/.test(seg) ? Number(seg) : seg));
    return issuesAt(path, { code: v.keyword, message: v.message ?? 'invalid', path: [], ...(v.params as object) }, context, skip);
  });
  return typeFirst(issues);
}

/** A zod error from a route's own check (outside Fastify's validation), in the same form. */
export function zodIssues(error: { issues: readonly unknown[] }, context: string): FieldIssue[] {
  return typeFirst(error.issues.flatMap((i) => issuesAt([], i as RawIssue, context)));
}

/** zod also runs a field's checks (length, range) on a value of the wrong type: the type is the news. */
function typeFirst(issues: FieldIssue[]): FieldIssue[] {
  const wrongType = new Set(issues.filter((i) => i.message.startsWith('Invalid input: expected')).map((i) => i.path));
  return issues.filter((i) => !wrongType.has(i.path) || i.message.startsWith('Invalid input: expected'));
}

interface RawIssue {
  code: string;
  message: string;
  path: PropertyKey[];
  keys?: string[];
  errors?: RawIssue[][];
}

/**
 * One zod issue as field issues. Unknown keys get one issue each, at their own path. A value that
 * matches no option of a union is reported by the option it came closest to (fewest problems, then
 * the deepest one), so `rule.all[0].gt: expected number` rather than `rule: Invalid input`.
 */
function issuesAt(base: PropertyKey[], issue: RawIssue, context: string, skip?: (path: readonly PropertyKey[]) => boolean): FieldIssue[] {
  const at = [...base, ...issue.path];
  if (issue.code === 'unrecognized_keys' && issue.keys?.length) {
    return issue.keys.filter((k) => !skip?.([...at, k])).map((k) => ({ path: formatPath([...at, k], context), message: 'unknown field' }));
  }
  if (skip?.(at)) return [];
  if (issue.code === 'invalid_union' && issue.errors?.length) {
    const branches = issue.errors.map((branch) => branch.flatMap((i) => issuesAt(at, i, context, skip)));
    const depth = (b: FieldIssue[]) => Math.max(...b.map((i) => i.path.length));
    const best = branches.reduce((a, b) => (b.length < a.length || (b.length === a.length && depth(b) > depth(a)) ? b : a));
    if (best.length) return best;
  }
  return [{ path: formatPath(at, context), message: issue.message }];
}

/** Array indexes as `[i]`, keys after a dot (as coerce.ts names features): `instances[0].features.x`; the context for the whole part. */
function formatPath(path: PropertyKey[], context: string): string {
  if (path.length === 0) return context;
  return path.reduce<string>((acc, seg, i) => (typeof seg === 'number' ? `${acc}[${seg}]` : i === 0 ? String(seg) : `${acc}.${String(seg)}`), '');
}

/** Clearer words for Fastify's body-parsing errors (the parser keeps no detail of its own). */
const BODY_MESSAGES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'body is not valid JSON, or has a "__proto__" key or a "constructor" object with a "prototype" (refused)',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'body is empty; send a JSON object',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported Content-Type: send application/json (multipart/form-data on the upload routes)',
};

/** @fastify/multipart's "too many parts/files/fields" (413 there): the upload's shape, not its size. */
const MULTIPART_COUNT_LIMITS: Record<string, string> = {
  FST_PARTS_LIMIT: 'too many parts',
  FST_FILES_LIMIT: 'too many files',
  FST_FIELDS_LIMIT: 'too many form fields',
};

/** ioredis failures that mean "Redis is down or not answering", not a bug: 503, not 500. */
function isRedisUnavailable(error: Error): boolean {
  return (
    error.name === 'MaxRetriesPerRequestError' ||
    /^(Command timed out|Connection is closed\.?|Stream isn't writeable)/.test(error.message)
  );
}

/** busboy's parse errors for a multipart body it cannot read (no boundary, cut off, bad headers). */
function isMalformedMultipart(error: Error): boolean {
  return /^(Multipart: |Malformed (part|urlencoded)|Unexpected end of (form|file)|Part terminated early)/.test(error.message);
}

const ROUTER_ERRORS: Record<string, { error: string; message: string }> = {
  FST_ERR_BAD_URL: { error: 'bad_request', message: 'malformed URL (bad percent-encoding)' },
  FST_ERR_MAX_PARAM_LENGTH: { error: 'uri_too_long', message: 'a path parameter is too long (at most 4,096 bytes)' },
};

/** Router-level errors (malformed URL, over-long path parameter) in the service's error body. */
export const frameworkErrors = (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void => {
  const status = error.statusCode ?? 400;
  const known = ROUTER_ERRORS[error.code];
  const body = known ?? (status >= 500 ? { error: 'internal_error', message: 'internal error' } : { error: 'bad_request', message: error.message });
  // Refused before routing, so the request-completed log would not run: its line is written here.
  request.log.info({ method: request.method, route: 'unmatched', status, err: error.code }, 'request refused before routing');
  void reply.code(status).send({ ...body, details: [] });
};

/** At most this many details in one error body, each path and message at most MAX_DETAIL_CHARS. */
export const MAX_DETAILS = 100;
const MAX_DETAIL_CHARS = 300;

const clip = (text: string) => (text.length > MAX_DETAIL_CHARS ? `${cutText(text, MAX_DETAIL_CHARS - 1)}…` : text);

/**
 * An error body's message and details, bounded: a 10,000-instance batch of empty objects, or a
 * body of 500,000 unknown keys, must not be answered with megabytes naming each one. The message
 * still counts them all. In a batch every bad instance is still named: the details take the first
 * problem of each bad instance before any second one, and when more instances are bad than
 * details fit, the message lists them all as index ranges.
 */
function bounded(message: string, details: FieldIssue[]): { message: string; details: FieldIssue[] } {
  const long = details.some((d) => d.path.length > MAX_DETAIL_CHARS || d.message.length > MAX_DETAIL_CHARS);
  if (details.length <= MAX_DETAILS && !long) return { message, details };
  const clipped = (d: FieldIssue) => ({ path: clip(d.path), message: clip(d.message) });
  if (details.length <= MAX_DETAILS) return { message, details: details.map(clipped) };
  const bad = badInstances(details);
  if (bad.length === 0) return { message: `${message} (the first ${MAX_DETAILS} listed)`, details: details.slice(0, MAX_DETAILS).map(clipped) };
  // One per instance first, then the rest, each kept in its original (instance) order.
  const seen = new Set<number>();
  const firsts: number[] = [];
  details.forEach((d, i) => {
    const n = instanceOf(d.path);
    if (n >= 0 && !seen.has(n)) {
      seen.add(n);
      firsts.push(i);
    }
  });
  const picked = new Set(firsts.slice(0, MAX_DETAILS));
  for (let i = 0; i < details.length && picked.size < MAX_DETAILS; i++) picked.add(i);
  const shown = [...picked].sort((a, b) => a - b).map((i) => clipped(details[i]));
  const instances = `${bad.length} invalid instance${bad.length === 1 ? '' : 's'}`;
  const note =
    bad.length <= MAX_DETAILS
      ? `${MAX_DETAILS} listed, at least one for each of the ${instances}`
      : `the first field of the first ${MAX_DETAILS} of ${instances} listed; all of them: ${clipRanges(indexRanges(bad))}`;
  return { message: `${message} (${note})`, details: shown };
}

/** The batch instance a path names (`instances[12].features.x` → 12), or -1. */
function instanceOf(path: string): number {
  const m = /^instances\[(\d+)\]/.exec(path);
  return m ? Number(m[1]) : -1;
}

function badInstances(details: FieldIssue[]): number[] {
  const set = new Set<number>();
  for (const d of details) {
    const n = instanceOf(d.path);
    if (n >= 0) set.add(n);
  }
  return [...set].sort((a, b) => a - b);
}

/** Sorted indices as ranges: [0, 1, 2, 5, 7, 8] → "0-2, 5, 7-8". */
function indexRanges(sorted: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(i === j ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** Index lists are cut at this length: every other instance of a 10,000-row batch bad takes ~30 KB. */
const MAX_RANGES_CHARS = 64_000;
const clipRanges = (text: string) => (text.length > MAX_RANGES_CHARS ? `${text.slice(0, text.lastIndexOf(', ', MAX_RANGES_CHARS))}, …` : text);

/** The error code for a 4xx status Fastify or a plugin raised without one of ours. */
const STATUS_CODES: Record<number, string> = {
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  406: 'not_acceptable',
  408: 'request_timeout',
  409: 'conflict',
  411: 'length_required',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  429: 'too_many_requests',
  431: 'request_header_fields_too_large',
};

/** The one error body: { error, message, details: [{ path, message }] }. 5xx never leak internals. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply) => {
    if (error instanceof AppError) {
      // RFC 6750: a 401 names the scheme the client should use.
      if (error.statusCode === 401) void reply.header('www-authenticate', 'Bearer');
      return reply.code(error.statusCode).send({ error: error.code, ...bounded(error.message, error.details) });
    }
    const issues = schemaIssues(error);
    if (issues.length) {
      return reply.code(400).send({ error: 'validation_error', ...bounded(`${issues.length} invalid field${issues.length === 1 ? '' : 's'}`, issues) });
    }
    if (isRedisUnavailable(error)) {
      request.log.warn({ err: error.message }, 'redis unavailable');
      return reply.code(503).send({ error: 'unavailable', message: 'redis is unavailable or not answering; try again later', details: [] });
    }
    if (error.statusCode === undefined && isMalformedMultipart(error)) {
      return reply.code(400).send({ error: 'bad_request', message: `malformed multipart body: ${error.message}`, details: [{ path: 'body', message: error.message }] });
    }
    // An upload whose body stopped before its end (the client went away, or sent a cut-off body):
    // the client's doing, not an unhandled error to alert on.
    if (error.statusCode === undefined && error.code === 'ERR_STREAM_PREMATURE_CLOSE') {
      request.log.info({ err: error.message }, 'request body ended early');
      return reply.code(400).send({ error: 'bad_request', message: 'the request body ended before it was complete', details: [{ path: 'body', message: 'ended early' }] });
    }
    const tooMany = error.code ? MULTIPART_COUNT_LIMITS[error.code] : undefined;
    if (tooMany) {
      const message = `${tooMany} for this route (dataset and audience uploads take one file part and no other fields)`;
      return reply.code(400).send({ error: 'bad_request', message, details: [{ path: 'body', message }] });
    }
    // A compressed body reaches the JSON parser as it is (request bodies are not decompressed):
    // say that, rather than that the JSON is malformed.
    const encoding = request.headers['content-encoding'];
    if (error.code === 'FST_ERR_CTP_INVALID_JSON_BODY' && encoding && encoding !== 'identity') {
      const message = `Content-Encoding "${cutText(String(encoding), 40)}" is not supported: send the body uncompressed`;
      return reply.code(415).send({ error: 'unsupported_media_type', message, details: [{ path: 'body', message }] });
    }
    const status = error.statusCode ?? 500;
    if (status < 500) {
      const code = STATUS_CODES[status] ?? 'bad_request';
      const message = BODY_MESSAGES[error.code] ?? error.message;
      const details = error.code?.startsWith('FST_ERR_CTP_') ? [{ path: 'body', message }] : [];
      return reply.code(status).send({ error: code, message, details });
    }
    // The logger's err serializer (errorForLog) keeps type, message, code and stack only: some
    // errors carry their inputs (ioredis keeps the command's arguments) and those must not be logged.
    request.log.error({ err: error }, 'unhandled error');
    return reply.code(500).send({ error: 'internal_error', message: 'internal error', details: [] });
  });
  const routes = new RouteMethods();
  app.addHook('onRoute', (route) => {
    routes.add(route.method, route.url);
    // The router also answers a plugin prefix's root with a trailing slash (`/docs/`), without an onRoute of its own.
    if (route.prefix && route.url === route.prefix) routes.add(route.method, `${route.url}/`);
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    const allowed = routes.methodsFor(path);
    if (allowed.length && !allowed.includes(request.method)) {
      void reply.code(405).header('allow', allowed.join(', '));
      return reply.send({ error: 'method_not_allowed', message: `${request.method} is not allowed on ${path}; allowed: ${allowed.join(', ')}`, details: [] });
    }
    reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${path}`, details: [] });
  });
}
