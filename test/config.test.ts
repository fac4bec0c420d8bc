import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseApiKeys } from '../src/config/env.js';

function rejects(env: Record<string, string>, variable: string): ConfigError {
  let caught: unknown;
  try {
    loadConfig(env);
  } catch (err) {
    caught = err;
  }
  expect(caught, `${JSON.stringify(env)} should be rejected`).toBeInstanceOf(ConfigError);
  const err = caught as ConfigError;
  expect(err.message).toMatch(new RegExp(`^\\s*${variable}:`, 'm'));
  return err;
}

/** Runs the server with `env` until it exits (killed after 45 s: a regression that starts it instead). */
async function runServer(env: NodeJS.ProcessEnv): Promise<{ code: number | null; stderr: string }> {
  const child = spawn('npx', ['tsx', 'src/server.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdout.resume();
  const guard = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  clearTimeout(guard);
  return { code, stderr };
}

describe('loadConfig', () => {
  it('has defaults for everything (PORT 8080)', () => {
    const c = loadConfig({});
    expect(c.PORT).toBe(8080);
    expect(c.HOST).toBe('0.0.0.0');
    expect(c.MODEL_STORE).toBe('./model-store');
    expect(c.TF_BACKEND).toBe('auto');
    expect(c.REDIS_URL).toBeUndefined();
    expect(c.API_KEYS).toBeUndefined();
    expect(c.BATCH_MAX_INSTANCES).toBe(10_000);
    expect(c.LOG_LEVEL).toBe('info');
  });

  it('coerces numbers and treats empty strings as unset', () => {
    const c = loadConfig({ PORT: '9090', BATCH_MAX_WAIT_MS: '2', REDIS_URL: '' });
    expect(c.PORT).toBe(9090);
    expect(c.BATCH_MAX_WAIT_MS).toBe(2);
    expect(c.REDIS_URL).toBeUndefined();
  });

  it('refuses an empty API_KEYS instead of silently opening the service', () => {
    expect(() => loadConfig({ API_KEYS: '' })).toThrow(/API_KEYS: set but empty/);
    expect(() => loadConfig({ API_KEYS: ' , ' })).toThrow(/API_KEYS/);
  });

  it('ignores variables it does not own', () => {
    expect(() => loadConfig({ PATH: '/usr/bin', NODE_ENV: 'test' })).not.toThrow();
  });

  it('rejects PORT=abc naming PORT and the value', () => {
    const err = rejects({ PORT: 'abc' }, 'PORT');
    expect(err.message).toContain('"abc"');
  });

  it.each([['70000'], ['-1'], ['80.5']])('rejects PORT=%s', (port) => {
    rejects({ PORT: port }, 'PORT');
  });

  // Each would start and then fail: a timer Node fires at once, an array too large to allocate.
  it.each([
    ['SHUTDOWN_TIMEOUT_MS', '3000000000'],
    ['BATCH_MAX_SIZE', '100000000'],
    ['CACHE_MAX_ENTRIES', '1e8'],
    ['REDIS_COMMAND_TIMEOUT_MS', '2147483648'],
    ['BATCH_MAX_WAIT_MS', '5000'],
    ['MEMBERSHIP_TTL_DAYS', '100000'],
  ])('rejects %s=%s (over its upper bound), naming it', (variable, value) => {
    expect(rejects({ [variable]: value }, variable).message).toMatch(/Too big/);
  });

  it('accepts values at the upper bounds', () => {
    const config = loadConfig({ SHUTDOWN_TIMEOUT_MS: '3600000', BATCH_MAX_SIZE: '10000', CACHE_MAX_ENTRIES: '10000000', BATCH_MAX_WAIT_MS: '1000' });
    expect([config.SHUTDOWN_TIMEOUT_MS, config.BATCH_MAX_SIZE, config.CACHE_MAX_ENTRIES, config.BATCH_MAX_WAIT_MS]).toEqual([3_600_000, 10_000, 10_000_000, 1000]);
  });

  it('rejects TF_BACKEND=gpu naming TF_BACKEND', () => {
    const err = rejects({ TF_BACKEND: 'gpu' }, 'TF_BACKEND');
    expect(err.message).toContain('"gpu"');
  });

  it('rejects REDIS_URL=localhost:6379 naming REDIS_URL', () => {
    const err = rejects({ REDIS_URL: 'localhost:6379' }, 'REDIS_URL');
    expect(err.message).toMatch(/redis:\/\//);
    expect(loadConfig({ REDIS_URL: 'redis://localhost:6379' }).REDIS_URL).toBe('redis://localhost:6379');
    expect(loadConfig({ REDIS_URL: 'rediss://cache.internal:6380/1' }).REDIS_URL).toBe('rediss://cache.internal:6380/1');
  });

  it('rejects a key listed twice (only one entry\'s scopes would apply), without echoing it', () => {
    const err = rejects({ API_KEYS: 'predict:samekey123,segments:samekey123' }, 'API_KEYS');
    expect(err.message).toMatch(/entry 2 repeats an earlier key/);
    expect(err.message).not.toContain('samekey123');
    expect(parseApiKeys('predict+segments:samekey123')[0].scopes).toEqual(new Set(['predict', 'segments']));
  });

  it('rejects API_KEYS with an unknown scope, naming API_KEYS and the entry but never echoing it', () => {
    const err = rejects({ API_KEYS: 'predict:pkey-123456,predict+root:rkey-123456' }, 'API_KEYS');
    expect(err.message).toMatch(/entry 2 has an unknown scope/);
    // Written backwards (key:scope), the "scope" is the key: it must not reach the startup log.
    const backwards = rejects({ API_KEYS: 'predict:pkey-123456,s3cr3tAdminKey99:admin' }, 'API_KEYS');
    expect(backwards.message).not.toContain('s3cr3tAdminKey99');
  });

  it('rejects other malformed API_KEYS entries', () => {
    rejects({ API_KEYS: 'predict:short' }, 'API_KEYS');
    rejects({ API_KEYS: 'pkey-123456' }, 'API_KEYS');
    rejects({ API_KEYS: 'predict:' }, 'API_KEYS');
    expect(parseApiKeys(' predict:pkey-123456 , segments+admin:akey-123456 ').map((k) => [k.key, [...k.scopes]])).toEqual([
      ['pkey-123456', ['predict']],
      ['akey-123456', ['segments', 'admin']],
    ]);
  });

  it.each([
    ['PORT', ' '],
    ['PORT', '0x50'],
    ['CACHE_TTL_SECONDS', '0b101'],
    ['REDIS_TIMEOUT_MS', 'Infinity'],
    ['SHUTDOWN_GRACE_MS', '-1'],
  ])('rejects %s=%j: numbers are decimal text (not blanks, hex, binary or Infinity, which Number() takes)', (variable, value) => {
    expect(rejects({ [variable]: value }, variable).message).toMatch(/expected a decimal number|Too small/);
  });

  it('rejects HOST, MODEL_STORE or DATA_DIR of blanks, and a training share so small its pauses would overflow a timer', () => {
    rejects({ HOST: ' ' }, 'HOST');
    rejects({ MODEL_STORE: '  ' }, 'MODEL_STORE');
    rejects({ DATA_DIR: '\t' }, 'DATA_DIR');
    rejects({ TRAINING_CPU_SHARE: '1e-300' }, 'TRAINING_CPU_SHARE');
    expect(loadConfig({ TRAINING_CPU_SHARE: '0.01' }).TRAINING_CPU_SHARE).toBe(0.01);
  });

  it('says a fractional value for a whole-number setting is not whole (not that it is no decimal number)', () => {
    for (const variable of ['PORT', 'CACHE_MAX_ENTRIES', 'SHUTDOWN_GRACE_MS']) expect(rejects({ [variable]: '80.5' }, variable).message).toMatch(/expected a whole number/);
    expect(loadConfig({ TRAINING_CPU_SHARE: '0.5' }).TRAINING_CPU_SHARE).toBe(0.5);
  });

  it('takes an IP address or a host name for HOST, and refuses anything else', () => {
    for (const host of ['0.0.0.0', '127.0.0.1', '::', '::1', 'localhost', 'api.example.com', 'svc-1.internal.']) expect(loadConfig({ HOST: host }).HOST).toBe(host);
    for (const host of ['not a host', '256.1.1.1', '1.2.3', 'host_name', '-bad.example', 'http://x']) expect(rejects({ HOST: host }, 'HOST').message).toMatch(/expected an IP address or a host name/);
  });

  it('rejects a REDIS_URL that is no URL with a host, masking its password in the message', () => {
    for (const url of ['redis://', 'redis://h:notaport', 'redis://exa mple', 'redis://:s3cretPassw0rd@redis.internal:99999/0']) {
      const err = rejects({ REDIS_URL: url }, 'REDIS_URL');
      expect(err.message).not.toContain('s3cretPassw0rd');
    }
    expect(rejects({ REDIS_URL: 'redis://user:pw-secret@host:99999' }, 'REDIS_URL').message).toContain('redis://user:***@host:99999');
    expect(loadConfig({ REDIS_URL: 'rediss://:pw@cache.internal:6380/2' }).REDIS_URL).toBe('rediss://:pw@cache.internal:6380/2');
  });

  it('rejects API_KEYS whose key has whitespace (a space where a comma was meant): no request could ever send it', () => {
    for (const keys of ['predict:abcdefgh admin:zzzzzzzzzz', 'predict: abcdefgh', 'predict:abc def gh']) {
      const err = rejects({ API_KEYS: keys }, 'API_KEYS');
      expect(err.message).toContain('whitespace');
      expect(err.message).not.toContain('abcdefgh');
    }
  });

  it('names every bad variable at once', () => {
    const err = rejects({ PORT: 'abc', TF_BACKEND: 'gpu', LOG_LEVEL: 'loud' }, 'PORT');
    expect(err.message).toMatch(/^\s*TF_BACKEND:/m);
    expect(err.message).toMatch(/^\s*LOG_LEVEL:/m);
  });
});

describe('server startup', () => {
  it('exits non-zero with PORT=abc and names PORT on stderr', async () => {
    const { PORT: _p, ...inherited } = process.env;
    const { code, stderr } = await runServer({ ...inherited, PORT: 'abc', LOG_LEVEL: 'silent', MODEL_STORE: './model-store' });
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(stderr).toMatch(/PORT/);
    expect(stderr).toContain('invalid configuration');
  });

  it('exits 2 when MODEL_STORE does not exist, naming it on stderr (checked while the app is built)', async () => {
    const { code, stderr } = await runServer({ ...process.env, PORT: '0', LOG_LEVEL: 'silent', MODEL_STORE: './no-such-model-store' });
    expect(code).toBe(2);
    expect(stderr).toContain('MODEL_STORE: directory "./no-such-model-store" does not exist');
  });

  it('exits 2 when MODEL_STORE is a file, naming it', async () => {
    const { code, stderr } = await runServer({ ...process.env, PORT: '0', LOG_LEVEL: 'silent', MODEL_STORE: './package.json' });
    expect(code).toBe(2);
    expect(stderr).toContain('MODEL_STORE: "./package.json" is not a directory');
  });

  it('exits 2 when HOST names no address of this machine, naming it', async () => {
    const { code, stderr } = await runServer({ ...process.env, PORT: '0', LOG_LEVEL: 'silent', TF_BACKEND: 'wasm', HOST: 'no-such-host.invalid' });
    expect(code).toBe(2);
    expect(stderr).toMatch(/HOST: cannot listen on "no-such-host.invalid" \((ENOTFOUND|EAI_AGAIN)\)/);
  });
});
