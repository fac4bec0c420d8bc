import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify';
import { parseApiKeys, type Scope } from '../config/env.js';
import { AppError } from '../lib/errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Who made the request, for audit records (key fingerprint or "anonymous"). */
    actor?: string;
    /** Scopes of the key that authenticated the request (open mode: predict, and segments for reading). */
    scopes?: ReadonlySet<Scope>;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * Bearer-key auth with scopes. Keys are compared as sha256 digests with timingSafeEqual over
 * every configured key, so timing reveals neither the key nor which entry matched.
 * Without API_KEYS the service is open for predict and for reading (GET/HEAD); anything that changes
 * state there (segment definitions, user erasure, jobs) and every admin route is refused, so an
 * unconfigured deployment cannot be used to delete data.
 */
export class Authenticator {
  private readonly keys: { digest: Buffer; scopes: Set<Scope> }[];
  readonly open: boolean;

  constructor(apiKeys: string | undefined) {
    this.open = apiKeys === undefined;
    this.keys = apiKeys === undefined ? [] : parseApiKeys(apiKeys).map((k) => ({ digest: digest(k.key), scopes: k.scopes }));
  }

  scopesFor(header: string | undefined): { scopes: Set<Scope>; actor: string } | null {
    const m = header?.match(/^Bearer\s+(\S+)\s*$/i);
    if (!m) return null;
    const presented = digest(m[1]);
    let found: Set<Scope> | null = null;
    for (const k of this.keys) if (timingSafeEqual(presented, k.digest)) found = k.scopes;
    // The actor recorded in model history: a key fingerprint, never the key itself.
    return found ? { scopes: found, actor: `key:${presented.toString('hex').slice(0, 8)}` } : null;
  }

  /** `read` accepts a key of any scope (and is open without API_KEYS). */
  require(scope: Scope | 'read'): onRequestHookHandler {
    return (request: FastifyRequest, _reply: FastifyReply, done) => {
      if (this.open) {
        if (scope === 'admin') return done(new AppError(403, 'forbidden', 'admin routes are disabled: set API_KEYS with an admin key'));
        if (scope !== 'predict' && !SAFE_METHODS.has(request.method)) {
          const needed = scope === 'read' ? 'any configured key' : `a key with the "${scope}" scope`;
          return done(new AppError(403, 'forbidden', `changes are disabled without API_KEYS: set API_KEYS and send ${needed}`));
        }
        request.actor = 'anonymous';
        request.scopes = OPEN_SCOPES;
        return done();
      }
      const found = this.scopesFor(request.headers.authorization);
      if (!found) return done(new AppError(401, 'unauthorized', 'missing or invalid API key (Authorization: Bearer <key>)'));
      if (scope !== 'read' && !found.scopes.has(scope)) return done(new AppError(403, 'forbidden', `this API key lacks the "${scope}" scope`));
      request.actor = found.actor;
      request.scopes = found.scopes;
      done();
    };
  }

  /** Throws 403 unless the authenticated request holds `scope` (for checks that depend on the resource). */
  static assertScope(request: FastifyRequest, scope: Scope, what: string): void {
    if (!request.scopes?.has(scope)) throw new AppError(403, 'forbidden', `${what} needs the "${scope}" scope`);
  }
}

const OPEN_SCOPES: ReadonlySet<Scope> = new Set<Scope>(['predict', 'segments']);
/** Methods open without API_KEYS on routes outside the predict scope. */
const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD']);
