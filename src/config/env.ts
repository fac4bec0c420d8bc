import { isIP } from 'node:net';
import { z } from 'zod';
import { NUMERIC_TEXT } from '../lib/numeric-text.js';

/**
 * A number written in decimal ("8080", "0.3", "1e3"). z.coerce would also take " " (as 0), "0x50"
 * or "Infinity", which are typos here.
 */
const decimal = <T extends z.ZodType>(schema: T) => z.preprocess((v) => (typeof v === 'string' && NUMERIC_TEXT.test(v) ? Number(v) : v), schema);
// zod reports a number that is not whole as an invalid type too (expected "int").
const number = () =>
  z.number({ error: (issue) => (issue.code !== 'invalid_type' ? undefined : (issue as { expected?: string }).expected === 'int' ? 'expected a whole number' : 'expected a decimal number') });
const port = decimal(number().int().min(0).max(65535));
/**
 * Every number has an upper bound, so a typo fails at startup rather than later: timers above
 * 2^31-1 ms fire at once in Node, lru-cache allocates CACHE_MAX_ENTRIES slots up front, and the
 * micro-batcher allocates BATCH_MAX_SIZE input rows per model.
 */
const positiveInt = (max: number) => decimal(number().int().positive().max(max));
const nonNegative = (max: number) => decimal(number().min(0).max(max));
const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const GiB = 1024 ** 3;

/** Every setting the service reads from the environment, with defaults. */
export const ConfigSchema = z.object({
  PORT: port.default(8080),
  HOST: z.string().trim().min(1).refine(isHost, 'expected an IP address or a host name').default('0.0.0.0'),
  MODEL_STORE: z.string().trim().min(1).default('./model-store'),
  DATA_DIR: z.string().trim().min(1).default('./data'),
  REDIS_URL: z
    .string()
    .regex(/^rediss?:\/\//, 'must start with redis:// or rediss://')
    .refine(isRedisUrl, 'not a valid URL with a host (redis://[user:password@]host[:port][/db])')
    .optional(),
  CACHE_TTL_SECONDS: positiveInt(365 * 24 * 3600).default(3600),
  CACHE_MAX_ENTRIES: positiveInt(10_000_000).default(100_000),
  CACHE_ADMISSION: z.enum(['repeat', 'all']).default('repeat'),
  REDIS_TIMEOUT_MS: positiveInt(MINUTE_MS).default(5),
  REDIS_COMMAND_TIMEOUT_MS: positiveInt(10 * MINUTE_MS).default(5000),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  API_KEYS: z.string().optional(),
  TF_BACKEND: z.enum(['auto', 'node', 'wasm', 'cpu']).default('auto'),
  BATCH_MAX_SIZE: positiveInt(10_000).default(256),
  BATCH_MAX_WAIT_MS: nonNegative(1000).default(0),
  BATCH_MAX_INSTANCES: positiveInt(1_000_000).default(10_000),
  BODY_LIMIT_BYTES: positiveInt(GiB).default(16 * 1024 * 1024),
  UPLOAD_LIMIT_BYTES: positiveInt(10 * GiB).default(100 * 1024 * 1024),
  MEMBERSHIP_TTL_DAYS: positiveInt(3650).default(30),
  FEATURE_RETENTION: z.enum(['on', 'off']).default('on'),
  // At least 1 %: the pacer sleeps in proportion, and a sleep past 2^31-1 ms would fire at once.
  TRAINING_CPU_SHARE: decimal(number().min(0.01).max(1)).default(0.3),
  SHUTDOWN_TIMEOUT_MS: positiveInt(HOUR_MS).default(10_000),
  SHUTDOWN_GRACE_MS: decimal(number().int().min(0).max(HOUR_MS)).default(1000),
});

export type Config = z.infer<typeof ConfigSchema>;

const HOST_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** An IP address, or a host name that is not a mistyped IPv4 address ("256.1.1.1"). */
function isHost(s: string): boolean {
  if (isIP(s) !== 0) return true;
  return HOST_NAME.test(s) && !/^[\d.]+$/.test(s);
}

export class ConfigError extends Error {}

/** Parses the environment; a bad value throws a ConfigError naming each variable at fault. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // An empty variable means "use the default" — except API_KEYS, where empty must not silently open the service.
  const relevant = Object.fromEntries(
    Object.keys(ConfigSchema.shape).map((k) => [k, env[k] === '' && k !== 'API_KEYS' ? undefined : env[k]]),
  );
  const parsed = ConfigSchema.safeParse(relevant);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message} (got ${JSON.stringify(shown(String(i.path[0]), relevant[String(i.path[0])]))})`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  if (parsed.data.API_KEYS !== undefined) {
    // fail at startup, not per request
    if (parseApiKeys(parsed.data.API_KEYS).length === 0) throw new ConfigError('invalid configuration:\n  API_KEYS: set but empty; unset it to run open (predict and GET routes only)');
  }
  return parsed.data;
}

export const SCOPES = ['predict', 'segments', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** `predict:KEY1,segments+admin:KEY2` → [{ key, scopes }]. */
export function parseApiKeys(value: string): { key: string; scopes: Set<Scope> }[] {
  const entries = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const seen = new Set<string>();
  return entries.map((entry, i) => {
    const at = entry.indexOf(':');
    if (at <= 0 || at === entry.length - 1) throw new ConfigError('invalid configuration:\n  API_KEYS: each entry must be scope[+scope]:key');
    const scopes = entry.slice(0, at).split('+');
    const bad = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
    // The offending text is not echoed: an entry written backwards (key:scope) would print the key.
    if (bad.length) throw new ConfigError(`invalid configuration:\n  API_KEYS: entry ${i + 1} has an unknown scope (scopes: ${SCOPES.join(', ')}; entries are scope[+scope]:key)`);
    const key = entry.slice(at + 1);
    // A key is sent as "Authorization: Bearer <key>", which cannot carry whitespace: such an entry
    // could never authenticate (often a space where a comma was meant, or after the colon).
    if (/\s/.test(key)) throw new ConfigError(`invalid configuration:\n  API_KEYS: entry ${i + 1} has whitespace in its key (entries are separated by commas: scope[+scope]:key,scope:key)`);
    if (key.length < 8) throw new ConfigError('invalid configuration:\n  API_KEYS: keys must be at least 8 characters');
    // One key, one entry: a repeat would silently keep only one entry's scopes.
    if (seen.has(key)) throw new ConfigError(`invalid configuration:\n  API_KEYS: entry ${i + 1} repeats an earlier key; give one key all its scopes in one entry (scope+scope:key)`);
    seen.add(key);
    return { key, scopes: new Set(scopes as Scope[]) };
  });
}

function isRedisUrl(value: string): boolean {
  try {
    return new URL(value).hostname !== '';
  } catch {
    return false;
  }
}

/** A value as an error message may show it: a Redis URL's password is masked. */
function shown(name: string, value: string | undefined): string | undefined {
  if (name === 'REDIS_URL' && value) return value.replace(/^(rediss?:\/\/[^:@/]*:)[^@/]*@/, '$1***@');
  return value;
}
