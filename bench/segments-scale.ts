/**
 * npx tsx bench/segments-scale.ts   (also run by `npm run bench -- --only segments`)
 *
 * Segments at scale, against a real redis-server started here (TestRedis):
 *   1. loads SEGMENTS_SCALE_MEMBERS (1,000,000) users into `high-intent` directly through
 *      RedisMembershipStore.record, in pipelined batches of 5,000; the first
 *      SEGMENTS_SCALE_FEATURE_USERS (100,000) also get real shopper features and join the rule
 *      segment `bench-100k` (for the profile);
 *   2. builds the real app on that Redis and listens on a loopback port;
 *   3. GET /v1/segments/high-intent/members?limit=100 at ~SEGMENTS_SCALE_PAGES (500) random
 *      cursors, over real HTTP (fetch): p50 / p99;
 *   4. exports all members as CSV over real HTTP (3 runs), reading the body as a stream while
 *      sampling the process RSS: growth over the RSS just before the request (after a full GC),
 *      plus heap growth and what is still retained after a full GC once the export is done;
 *   5. GET /v1/segments/bench-100k/profile, timed (5 runs).
 * Targets (ACCEPTANCE 2): export RSS growth ≤ 50 MB, page p99 ≤ 20 ms, profile ≤ 1 s.
 * Prints the figures and one `SEGMENTS_SCALE_RESULT {json}` line; exits 0 (a measurement).
 * Server and client share this process, so latencies include the client's own fetch overhead.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { TestRedis } from '../test/helpers/redis-server.js';
import { buildTestApp } from '../test/helpers/app.js';
import { shopperFeatureRows } from '../test/helpers/shoppers.js';
import { RedisMembershipStore } from '../src/segments/redis-membership-store.js';
import { encodeCursor, type MembershipRecord } from '../src/segments/membership-store.js';
import type { FeatureValues } from '../src/preprocessing/feature-spec.js';

const num = (v: string | undefined, d: number) => (v && Number.isFinite(Number(v)) ? Number(v) : d);
const MEMBERS = num(process.env.SEGMENTS_SCALE_MEMBERS, 1_000_000);
const FEATURE_USERS = Math.min(MEMBERS, num(process.env.SEGMENTS_SCALE_FEATURE_USERS, 100_000));
const PAGES = num(process.env.SEGMENTS_SCALE_PAGES, 500);
const BATCH = 5000;
const PAGE_LIMIT = 100;
const EXPORT_RUNS = 3;
const VERSION = 'shoppers-mlp-v1';
const SEGMENT = 'high-intent';
const PROFILE_SEGMENT = 'bench-100k';

export const TARGETS = { exportRssGrowthMb: 50, pageP99Ms: 20, profileMs: 1000 };

export interface ExportRun {
  seconds: number;
  rssBeforeMb: number;
  rssPeakMb: number;
  rssGrowthMb: number;
  heapGrowthMb: number;
  heapRetainedAfterGcMb: number;
}

export interface SegmentsScaleResult {
  members: number;
  featureUsers: number;
  loadSeconds: number;
  redisMemoryMb: number;
  pages: number;
  pageP50Ms: number;
  pageP99Ms: number;
  pageMaxMs: number;
  exportRows: number;
  exportMb: number;
  exportRuns: ExportRun[];
  /** The worst run's RSS growth. */
  exportRssGrowthMb: number;
  profileMs: number[];
  profileMedianMs: number;
  profileMaxMs: number;
  profileSample: { members: number; population: number };
}

// A real full GC before the RSS baseline, without requiring --expose-gc on the command line.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const mb = (bytes: number) => bytes / (1024 * 1024);
const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];

export async function runSegmentsScale(log: (line: string) => void = (l) => process.stdout.write(`${l}\n`)): Promise<SegmentsScaleResult> {
  const redis = await TestRedis.start();
  const client = new Redis(redis.url);
  let app: Awaited<ReturnType<typeof buildTestApp>> | undefined;
  try {
    // 1. Load through the store, as the service writes: one pipeline per 5,000 records.
    const store = new RedisMembershipStore(client, 30 * 86_400);
    const now = new Date().toISOString();
    await store.putRule({ id: PROFILE_SEGMENT, name: 'Bench: 100k users with kept features', rule: { all: [{ feature: 'VisitorType', in: ['Returning_Visitor'] }, { score: { gte: 0.6 } }] }, created: now, updated: now });
    const categorical = new Set(['Month', 'OperatingSystems', 'Browser', 'Region', 'TrafficType', 'VisitorType']);
    const rows: FeatureValues[] = shopperFeatureRows().map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, categorical.has(k) ? String(v) : v])));
    // mulberry32: a seeded 32-bit generator (scores repeat only as float32 rounding makes them).
    let seed = 42;
    const rand = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const t0 = performance.now();
    for (let start = 0; start < MEMBERS; start += BATCH) {
      const batch: MembershipRecord[] = [];
      const withFeatures = start < FEATURE_USERS;
      for (let i = start; i < Math.min(MEMBERS, start + BATCH); i++) {
        const kept = i < FEATURE_USERS;
        batch.push({
          userId: `u${String(i).padStart(7, '0')}`,
          probability: Math.fround(0.6 + 0.4 * rand()), // float32, like the model's outputs
          version: VERSION,
          persona: i % 3,
          segments: kept ? [SEGMENT, PROFILE_SEGMENT] : [SEGMENT],
          at: Date.now(),
          ...(kept ? { features: rows[i % rows.length] } : {}),
        });
      }
      await store.record(batch, withFeatures ? [SEGMENT, PROFILE_SEGMENT] : [SEGMENT]);
      if ((start / BATCH) % 40 === 39) log(`  loaded ${(start + BATCH).toLocaleString('en-US')} members (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
    const loadSeconds = (performance.now() - t0) / 1000;
    const size = await client.zcard(`pi:seg:${SEGMENT}`);
    if (size !== MEMBERS) throw new Error(`expected ${MEMBERS} members, Redis has ${size}`);
    const redisMemoryMb = mb(Number(/used_memory:(\d+)/.exec(await client.info('memory'))![1]));
    log(`loaded ${MEMBERS.toLocaleString('en-US')} members (${FEATURE_USERS.toLocaleString('en-US')} with features) in ${loadSeconds.toFixed(1)} s; Redis uses ${redisMemoryMb.toFixed(0)} MB`);

    // 2. The real app on that Redis, listening on loopback.
    app = await buildTestApp({ REDIS_URL: redis.url });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;

    // 3. Pages at random cursors: a cursor is (score, userId) of a random member.
    const cursorAt = async (rank: number) => {
      const [userId, score] = await client.zrange(`pi:seg:${SEGMENT}`, rank, rank, 'REV', 'WITHSCORES');
      return encodeCursor({ userId, score: Number(score) });
    };
    const getPage = async (cursor: string) => {
      const t = performance.now();
      const res = await fetch(`${base}/v1/segments/${SEGMENT}/members?limit=${PAGE_LIMIT}&cursor=${cursor}`);
      const body = (await res.json()) as { members: unknown[] };
      const ms = performance.now() - t;
      if (res.status !== 200 || body.members.length === 0) throw new Error(`page failed: ${res.status}`);
      return ms;
    };
    for (let i = 0; i < 50; i++) await getPage(await cursorAt(Math.floor(rand() * (MEMBERS - PAGE_LIMIT)))); // warm-up
    const times: number[] = [];
    for (let i = 0; i < PAGES; i++) times.push(await getPage(await cursorAt(Math.floor(rand() * (MEMBERS - PAGE_LIMIT)))));
    times.sort((a, b) => a - b);
    const pageP50Ms = quantile(times, 0.5);
    const pageP99Ms = quantile(times, 0.99);
    log(`members pages (limit ${PAGE_LIMIT}, ${PAGES} random cursors over HTTP): p50 ${pageP50Ms.toFixed(2)} ms, p99 ${pageP99Ms.toFixed(2)} ms, max ${times[times.length - 1].toFixed(2)} ms`);

    // 4. CSV export of every member over HTTP, consumed as a stream while RSS is sampled; three
    //    runs (V8 decides when to collect, so the figure varies); the worst run is the headline.
    //    After each run a forced full GC shows how much was retained rather than uncollected garbage.
    const exportRuns: ExportRun[] = [];
    let bytes = 0;
    let exportRows = 0;
    for (let run = 0; run < EXPORT_RUNS; run++) {
      gc();
      await new Promise((r) => setTimeout(r, 200));
      gc();
      const before = process.memoryUsage();
      let rssPeak = before.rss;
      let heapPeak = before.heapUsed;
      const sample = () => {
        const m = process.memoryUsage();
        rssPeak = Math.max(rssPeak, m.rss);
        heapPeak = Math.max(heapPeak, m.heapUsed);
      };
      const sampler = setInterval(sample, 10);
      const te = performance.now();
      const res = await fetch(`${base}/v1/segments/${SEGMENT}/export?format=csv`);
      if (res.status !== 200 || !res.body) throw new Error(`export failed: ${res.status}`);
      bytes = 0;
      let newlines = 0;
      const reader = res.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
        for (let i = 0; i < value.length; i++) if (value[i] === 10) newlines++;
        sample();
      }
      clearInterval(sampler);
      const seconds = (performance.now() - te) / 1000;
      exportRows = newlines - 1; // minus the header line
      if (exportRows !== MEMBERS) throw new Error(`export had ${exportRows} rows, expected ${MEMBERS}`);
      gc();
      const after = process.memoryUsage();
      const r: ExportRun = {
        seconds,
        rssBeforeMb: mb(before.rss),
        rssPeakMb: mb(rssPeak),
        rssGrowthMb: mb(rssPeak - before.rss),
        heapGrowthMb: mb(heapPeak - before.heapUsed),
        heapRetainedAfterGcMb: mb(after.heapUsed - before.heapUsed),
      };
      exportRuns.push(r);
      log(
        `CSV export run ${run + 1}: ${exportRows.toLocaleString('en-US')} rows, ${mb(bytes).toFixed(1)} MB in ${seconds.toFixed(1)} s; RSS ${r.rssBeforeMb.toFixed(0)} → peak ${r.rssPeakMb.toFixed(0)} MB (growth ${r.rssGrowthMb.toFixed(1)} MB); heap growth ${r.heapGrowthMb.toFixed(1)} MB, retained after a full GC ${r.heapRetainedAfterGcMb.toFixed(1)} MB`,
      );
    }
    const worst = exportRuns.reduce((a, b) => (b.rssGrowthMb > a.rssGrowthMb ? b : a));

    // 5. Profile of the 100k-member segment (sampled: 5,000 members vs 5,000 scored users).
    const profileMs: number[] = [];
    let profileSample = { members: 0, population: 0 };
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const r = await fetch(`${base}/v1/segments/${PROFILE_SEGMENT}/profile`);
      const p = (await r.json()) as { size: number; sample: { members: number; population: number }; distinctive?: unknown[] };
      profileMs.push(performance.now() - t);
      if (r.status !== 200 || p.size !== FEATURE_USERS || !p.distinctive?.length) throw new Error(`profile failed: ${r.status} ${JSON.stringify(p).slice(0, 200)}`);
      profileSample = p.sample;
    }
    const sortedProfile = [...profileMs].sort((a, b) => a - b);
    const profileMedianMs = quantile(sortedProfile, 0.5);
    const profileMaxMs = sortedProfile[sortedProfile.length - 1];
    log(`profile of ${FEATURE_USERS.toLocaleString('en-US')} members (sample ${profileSample.members} members / ${profileSample.population} users): ${profileMs.map((m) => m.toFixed(0)).join(', ')} ms (median ${profileMedianMs.toFixed(0)}, max ${profileMaxMs.toFixed(0)})`);

    return {
      members: MEMBERS,
      featureUsers: FEATURE_USERS,
      loadSeconds,
      redisMemoryMb,
      pages: PAGES,
      pageP50Ms,
      pageP99Ms,
      pageMaxMs: times[times.length - 1],
      exportRows,
      exportMb: mb(bytes),
      exportRuns,
      exportRssGrowthMb: worst.rssGrowthMb,
      profileMs,
      profileMedianMs,
      profileMaxMs,
      profileSample,
    };
  } finally {
    await app?.close();
    client.disconnect();
    await redis.close();
  }
}

export function verdicts(r: SegmentsScaleResult): { name: string; target: string; measured: string; pass: boolean }[] {
  return [
    { name: `export RSS growth (${r.members.toLocaleString('en-US')} CSV)`, target: `<= ${TARGETS.exportRssGrowthMb} MB`, measured: `${r.exportRssGrowthMb.toFixed(1)} MB (worst of ${r.exportRuns.length})`, pass: r.exportRssGrowthMb <= TARGETS.exportRssGrowthMb },
    { name: `members page p99 (${r.members.toLocaleString('en-US')})`, target: `<= ${TARGETS.pageP99Ms} ms`, measured: `${r.pageP99Ms.toFixed(2)} ms (p50 ${r.pageP50Ms.toFixed(2)})`, pass: r.pageP99Ms <= TARGETS.pageP99Ms },
    { name: `profile (${r.featureUsers.toLocaleString('en-US')} members)`, target: `<= ${TARGETS.profileMs} ms`, measured: `${r.profileMaxMs.toFixed(0)} ms max of ${r.profileMs.length}`, pass: r.profileMaxMs <= TARGETS.profileMs },
  ];
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runSegmentsScale()
    .then((r) => {
      process.stdout.write('\nACCEPTANCE 2 targets:\n');
      for (const v of verdicts(r)) process.stdout.write(`  ${v.pass ? 'PASS' : 'FAIL'}  ${v.name.padEnd(32)} ${v.measured.padEnd(26)} target ${v.target}\n`);
      process.stdout.write(`SEGMENTS_SCALE_RESULT ${JSON.stringify(r)}\n`);
    })
    .catch((err) => {
      process.stderr.write(`segments-scale failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    });
}
