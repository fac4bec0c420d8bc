import { join } from 'node:path';
import type { Redis } from 'ioredis';
import type { FastifyBaseLogger } from 'fastify';
import { existsSync, statSync } from 'node:fs';
import { ConfigError, type Config } from './config/env.js';
import { Authenticator } from './http/auth.js';
import { ScoreCache } from './cache/score-cache.js';
import { createRedis, redisStatus, RedisWatch, waitForRedis } from './cache/redis-client.js';
import { ModelStore } from './registry/model-store.js';
import { ModelManager } from './registry/model-manager.js';
import { Scorer } from './inference/scorer.js';
import { FleetState } from './registry/fleet-state.js';
import { scanStore } from './registry/import-version.js';
import { Lifecycle } from './registry/lifecycle.js';
import { attachShadowScoring } from './inference/shadow.js';
import { SegmentService } from './segments/segment-service.js';
import { RedisMembershipStore } from './segments/redis-membership-store.js';
import { MemoryMembershipStore } from './segments/memory-membership-store.js';
import { ScoringJobs } from './segments/scoring-jobs.js';
import { createMetrics, type Metrics } from './observability/metrics.js';
import { JobManager } from './training/job-manager.js';

/** The app's long-lived dependencies, built once and decorated onto Fastify as `app.services`. */
export interface Services {
  config: Config;
  backend: string;
  auth: Authenticator;
  store: ModelStore;
  models: ModelManager;
  cache: ScoreCache;
  scorer: Scorer;
  lifecycle: Lifecycle;
  segments: SegmentService;
  scoringJobs: ScoringJobs;
  metrics: Metrics;
  /** Retraining jobs (worker threads, one at a time). */
  jobs: JobManager;
  redis?: Redis;
  /** Redis as the service sees it: 'up' when all its connections are ready and answer in time. */
  redisStatus(): 'up' | 'down' | 'disabled';
  /** Set on SIGTERM (server.ts): /readyz answers 503 "shutting_down" while the service still serves its grace period. */
  shuttingDown: boolean;
  close(): Promise<void>;
}

export async function createServices(config: Config, backend: string, log: FastifyBaseLogger): Promise<Services> {
  const auth = new Authenticator(config.API_KEYS);
  // A path that does not exist is a typo far more often than a wish for an empty store.
  if (!existsSync(config.MODEL_STORE)) throw new ConfigError(`invalid configuration:\n  MODEL_STORE: directory ${JSON.stringify(config.MODEL_STORE)} does not exist`);
  if (!statSync(config.MODEL_STORE).isDirectory()) throw new ConfigError(`invalid configuration:\n  MODEL_STORE: ${JSON.stringify(config.MODEL_STORE)} is not a directory`);
  if (existsSync(config.DATA_DIR) && !statSync(config.DATA_DIR).isDirectory()) throw new ConfigError(`invalid configuration:\n  DATA_DIR: ${JSON.stringify(config.DATA_DIR)} is not a directory`);
  let store: ModelStore;
  try {
    store = new ModelStore(config.MODEL_STORE);
  } catch (err) {
    // An empty store this process cannot write to (a fresh volume owned by another user) could never hold a version.
    throw new ConfigError(`invalid configuration:\n  MODEL_STORE: cannot create ${JSON.stringify(join(config.MODEL_STORE, 'versions'))}: ${(err as Error).message}`);
  }
  store.sweepTemp();
  const commandTimeoutMs = config.REDIS_COMMAND_TIMEOUT_MS;
  const redis = config.REDIS_URL ? createRedis(config.REDIS_URL, log, 'redis', { commandTimeoutMs }) : undefined;
  // The score cache gets a connection of its own, so its reads never queue behind bulk segment work.
  const cacheRedis = config.REDIS_URL ? createRedis(config.REDIS_URL, log, 'redis-cache', { commandTimeoutMs }) : undefined;
  if (redis && cacheRedis) {
    const [up] = await Promise.all([waitForRedis(redis, 2000), waitForRedis(cacheRedis, 2000)]);
    if (!up) log.warn('redis not reachable at startup; serving from local state and reconnecting in the background');
  }
  // Segment writes, fleet state and admin changes use `redis`: a server that stopped answering is down for them too.
  const watch = redis ? new RedisWatch(redis) : undefined;
  const cache = new ScoreCache(
    { maxEntries: config.CACHE_MAX_ENTRIES, ttlSeconds: config.CACHE_TTL_SECONDS, redisTimeoutMs: config.REDIS_TIMEOUT_MS, admission: config.CACHE_ADMISSION },
    cacheRedis,
  );
  const metrics = createMetrics();
  metrics.observeCache(() => cache.l2?.stats() ?? {});
  const models = new ModelManager(
    store,
    { maxBatch: config.BATCH_MAX_SIZE, maxWaitMs: config.BATCH_MAX_WAIT_MS, onBatch: (rows) => metrics.batchSize.observe(rows) },
    log,
  );
  // Versions copied into the store by hand are registered (validated, checksummed) at startup.
  const scan = await scanStore(store);
  if (scan.added.length) log.info({ added: scan.added }, 'registered versions found in the store');
  for (const bad of scan.invalid) log.warn({ version: bad.id, reason: bad.reason }, 'ignoring invalid version directory');
  const fleet = new FleetState(store, redis, log);
  const lifecycle = new Lifecycle(store, models, fleet, log);
  await lifecycle.reconcile();
  if (!models.active) {
    if (store.listIds().length === 0) log.warn({ store: config.MODEL_STORE }, 'model store has no versions; predictions answer 503 until one is activated');
    else log.error({ store: config.MODEL_STORE }, 'no model is serving: the version to serve could not be loaded (error above); predictions answer 503 until a version is activated');
  }
  // Replicas converge on published changes, on reconnect, and on a slow poll in case a message was missed.
  await fleet.subscribe(() => void lifecycle.reconcile());
  const poll = redis ? setInterval(() => void lifecycle.reconcile(), 2000).unref() : undefined;

  const scorer = new Scorer(models, cache);
  scorer.router = (userId) => lifecycle.route(userId);
  attachShadowScoring(scorer, lifecycle, log);
  scorer.onCounted((version, cached, n) => metrics.countPredictions(version, cached, n));

  const ttlDays = config.MEMBERSHIP_TTL_DAYS;
  const membershipStore = redis ? new RedisMembershipStore(redis, ttlDays * 86_400) : new MemoryMembershipStore();
  const segments = new SegmentService(membershipStore, models, cache, log, { ttlDays, retainFeatures: config.FEATURE_RETENTION === 'on', flushWaitMs: config.REDIS_COMMAND_TIMEOUT_MS });
  await segments.start(scorer);
  const scoringJobs = new ScoringJobs(scorer, models, segments, log);
  // Memberships record the model version: after an activation requested here, re-score kept users.
  // Persona segments are emptied first: the new model's persona k is another group.
  lifecycle.onActivated((version, action) => {
    void segments
      .resetPersonas()
      .catch((err) => log.warn({ err: (err as Error).message }, 'could not empty persona segments'))
      .then(() => {
        if (config.FEATURE_RETENTION === 'off') return;
        const job = scoringJobs.rescoreAll(`version ${version} activated (${action})`);
        log.info({ job: job.id, version, action }, 're-scoring users with kept features');
      })
      .catch((err) => log.warn({ err: (err as Error).message }, 'no re-scoring job started'));
  });
  const jobs = new JobManager(store, lifecycle, models, log, { backend: config.TF_BACKEND, cpuShare: config.TRAINING_CPU_SHARE });
  return {
    shuttingDown: false,
    config,
    backend,
    auth,
    store,
    models,
    cache,
    scorer,
    lifecycle,
    segments,
    scoringJobs,
    metrics,
    jobs,
    redis,
    // A connected Redis whose reads keep timing out, or that leaves a PING unanswered, is as good as down.
    redisStatus: () => {
      cache.l2?.probeIfSlow();
      const status = redisStatus(redis, cacheRedis);
      return status === 'up' && (cache.l2?.slow || watch?.hung) ? 'down' : status;
    },
    async close() {
      clearInterval(poll);
      watch?.stop();
      await jobs.close();
      await scoringJobs.close();
      await segments.close();
      await fleet.close();
      await models.close();
      await cache.flush();
      redis?.disconnect();
      cacheRedis?.disconnect();
    },
  };
}
