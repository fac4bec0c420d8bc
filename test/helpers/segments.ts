import type { FastifyInstance } from 'fastify';
import { expect } from 'vitest';
import type { FeatureSpec, FeatureValues } from '../../src/preprocessing/feature-spec.js';
import type { Rule } from '../../src/segments/rules.js';
import { until } from './http.js';

/**
 * Shared by test/segments.test.ts (embedded store) and test/segments-redis.test.ts (Redis): an
 * independent model of what every segment should contain, computed only from the API's answers
 * (probability, persona) and the features the test sent, plus HTTP helpers that read segments
 * the way a client would.
 */

export const API_KEYS = 'segments:seg-key-123,admin:adm-key-123,predict:pred-key-123';
export const KEY = { segments: 'seg-key-123', admin: 'adm-key-123', predict: 'pred-key-123' } as const;
export const bearer = (key: string) => ({ authorization: `Bearer ${key}` });

export type Row = Record<string, number | string | boolean>;
export interface Member {
  userId: string;
  score: number;
}
export interface PredictionBody {
  probability: number;
  modelVersion: string;
  cached: boolean;
  persona: { id: number; label: string } | null;
}
export interface Bands {
  high: number;
  medium: number;
}

const CATEGORICAL = new Set(['Month', 'OperatingSystems', 'Browser', 'Region', 'TrafficType', 'VisitorType']);
/** The feature values the service keeps: categories as strings, numbers and booleans as sent. */
export const coerced = (row: Row): FeatureValues => Object.fromEntries(Object.entries(row).map(([k, v]) => [k, CATEGORICAL.has(k) ? String(v) : v]));

/** A rule segment plus a plain-JS predicate written independently of src/segments/rules.ts. */
export interface RuleCase {
  id: string;
  name: string;
  rule: Rule;
  matches(f: Row, p: number): boolean;
}

export const RULE_CASES: RuleCase[] = [
  {
    id: 'returning-warm',
    name: 'Returning visitors, score ≥ 0.3',
    rule: { all: [{ feature: 'VisitorType', in: ['Returning_Visitor'] }, { score: { gte: 0.3 } }] },
    matches: (f, p) => f.VisitorType === 'Returning_Visitor' && p >= 0.3,
  },
  {
    // Categories compare as strings: 1 matches the category "1", "2" and 3 match 2 and 3.
    id: 'region1-or-traffic23',
    name: 'Region 1 or traffic type 2/3',
    rule: { any: [{ feature: 'Region', eq: 1 }, { feature: 'TrafficType', in: ['2', 3] }] },
    matches: (f) => Number(f.Region) === 1 || Number(f.TrafficType) === 2 || Number(f.TrafficType) === 3,
  },
  {
    id: 'long-browse-weekend',
    name: 'Weekend sessions outside 0–300 s of product browsing',
    rule: { all: [{ not: { feature: 'ProductRelated_Duration', between: [0, 300] } }, { feature: 'Weekend', eq: true }] },
    matches: (f) => f.Weekend === true && !((f.ProductRelated_Duration as number) >= 0 && (f.ProductRelated_Duration as number) <= 300),
  },
];

export const bandOfIndependent = (p: number, b: Bands) => (p >= b.high ? 'high-intent' : p >= b.medium ? 'medium-intent' : 'low-intent');

export interface ExpectedUser {
  userId: string;
  probability: number;
  persona: number | null;
  features: Row;
  segments: Set<string>;
}

/** What the segments should hold, from the responses: the latest answer per user wins. */
export class Expected {
  readonly users = new Map<string, ExpectedUser>();
  constructor(
    public bands: Bands,
    readonly rules: RuleCase[],
  ) {}

  apply(userId: string, features: Row, p: PredictionBody): void {
    const segments = new Set<string>([bandOfIndependent(p.probability, this.bands)]);
    for (const r of this.rules) if (r.matches(features, p.probability)) segments.add(r.id);
    if (p.persona) segments.add(`persona-${p.persona.id}`);
    this.users.set(userId, { userId, probability: p.probability, persona: p.persona?.id ?? null, features, segments });
  }

  /** After a re-score (a rule created or changed): every stored user's segments under the bands and rules now in force. */
  rescored(): void {
    for (const u of this.users.values()) {
      const segments = new Set<string>([bandOfIndependent(u.probability, this.bands)]);
      for (const r of this.rules) if (r.matches(u.features, u.probability)) segments.add(r.id);
      if (u.persona !== null) segments.add(`persona-${u.persona}`);
      u.segments = segments;
    }
  }

  members(segmentId: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const u of this.users.values()) if (u.segments.has(segmentId)) out.set(u.userId, u.probability);
    return out;
  }
}

/**
 * Scores users the way a storefront would: /v1/predict/batch in chunks (with userIds), the last
 * `singles` users one by one through /v1/predict; then waits for the membership writes.
 */
export async function scoreUsers(
  app: FastifyInstance,
  expected: Expected | null,
  users: { userId: string; features: Row }[],
  opts: { chunk?: number; singles?: number } = {},
): Promise<Map<string, PredictionBody>> {
  const chunk = opts.chunk ?? 1000;
  const singles = Math.min(opts.singles ?? 0, users.length);
  const out = new Map<string, PredictionBody>();
  const batched = users.slice(0, users.length - singles);
  for (let i = 0; i < batched.length; i += chunk) {
    const part = batched.slice(i, i + chunk);
    const res = await app.inject({ method: 'POST', url: '/v1/predict/batch', headers: bearer(KEY.predict), payload: { instances: part } });
    expect(res.statusCode, res.body).toBe(200);
    const preds = (res.json() as { predictions: PredictionBody[] }).predictions;
    expect(preds).toHaveLength(part.length);
    part.forEach((u, j) => {
      out.set(u.userId, preds[j]);
      expected?.apply(u.userId, u.features, preds[j]);
    });
  }
  for (const u of users.slice(users.length - singles)) {
    const res = await app.inject({ method: 'POST', url: '/v1/predict', headers: bearer(KEY.predict), payload: u });
    expect(res.statusCode, res.body).toBe(200);
    const p = res.json() as PredictionBody;
    out.set(u.userId, p);
    expected?.apply(u.userId, u.features, p);
  }
  await app.services.segments.flush();
  return out;
}

export async function getJson<T>(app: FastifyInstance, url: string, key: string = KEY.segments): Promise<T> {
  const res = await app.inject({ method: 'GET', url, headers: bearer(key) });
  expect(res.statusCode, `${url}: ${res.body}`).toBe(200);
  return res.json() as T;
}

interface Page {
  segment: string;
  members: Member[];
  nextCursor: string | null;
}

/** One page of /members. */
export function page(app: FastifyInstance, segmentId: string, q: { limit?: number; cursor?: string | null; minScore?: number }): Promise<Page> {
  const params = new URLSearchParams();
  if (q.limit !== undefined) params.set('limit', String(q.limit));
  if (q.cursor) params.set('cursor', q.cursor);
  if (q.minScore !== undefined) params.set('minScore', String(q.minScore));
  return getJson<Page>(app, `/v1/segments/${segmentId}/members?${params}`);
}

/** (score desc, then userId desc): the order member lists promise. */
export const before = (a: Member, b: Member) => a.score > b.score || (a.score === b.score && a.userId > b.userId);

/**
 * Follows nextCursor to the end (from `cursor` when given). Checks on the way: pages are full
 * until the last, no userId twice, order is score descending (ties: userId descending).
 */
export async function allMembers(
  app: FastifyInstance,
  segmentId: string,
  opts: { limit?: number; minScore?: number; cursor?: string | null } = {},
): Promise<{ members: Member[]; pages: number }> {
  const limit = opts.limit ?? 1000;
  const members: Member[] = [];
  const seen = new Set<string>();
  let cursor = opts.cursor ?? null;
  let pages = 0;
  for (;;) {
    const p = await page(app, segmentId, { limit, cursor, minScore: opts.minScore });
    pages++;
    expect(p.segment).toBe(segmentId);
    expect(p.members.length).toBeLessThanOrEqual(limit);
    if (p.nextCursor) expect(p.members.length, 'a page with a next cursor is full').toBe(limit);
    for (const m of p.members) {
      expect(seen.has(m.userId), `${m.userId} listed twice in ${segmentId}`).toBe(false);
      seen.add(m.userId);
      const prev = members[members.length - 1];
      if (prev) expect(before(prev, m), `${JSON.stringify(prev)} then ${JSON.stringify(m)}`).toBe(true);
      if (opts.minScore !== undefined) expect(m.score).toBeGreaterThanOrEqual(opts.minScore);
      members.push(m);
    }
    if (!p.nextCursor) break;
    cursor = p.nextCursor;
    expect(pages, 'pagination does not end').toBeLessThan(100_000);
  }
  return { members, pages };
}

interface SegmentSummary {
  id: string;
  kind: string;
  size: number;
  bounds?: { min: number; max: number };
}

/** ACCEPTANCE 1: every segment the API lists holds exactly the users the responses say it should. */
export async function expectSegmentsMatch(app: FastifyInstance, expected: Expected, personaCount: number): Promise<number> {
  const { segments } = await getJson<{ segments: SegmentSummary[] }>(app, '/v1/segments');
  const wanted = ['high-intent', 'medium-intent', 'low-intent', ...expected.rules.map((r) => r.id), ...Array.from({ length: personaCount }, (_, i) => `persona-${i}`)];
  expect(segments.map((s) => s.id).sort()).toEqual([...wanted].sort());
  let checked = 0;
  for (const s of segments) {
    const want = expected.members(s.id);
    const { members } = await allMembers(app, s.id, { limit: 1000 });
    const got = new Map(members.map((m) => [m.userId, m.score]));
    const missing = [...want.keys()].filter((id) => !got.has(id));
    const extra = [...got.keys()].filter((id) => !want.has(id));
    expect({ segment: s.id, missing: missing.slice(0, 5), extra: extra.slice(0, 5), missingCount: missing.length, extraCount: extra.length }).toEqual({
      segment: s.id,
      missing: [],
      extra: [],
      missingCount: 0,
      extraCount: 0,
    });
    for (const [id, score] of want) expect(got.get(id), `${s.id}/${id}`).toBe(score);
    expect(s.size, `size of ${s.id}`).toBe(want.size);
    checked += members.length;
  }
  // Every user is in exactly one band.
  const bandTotal = segments.filter((s) => s.kind === 'score-band').reduce((n, s) => n + s.size, 0);
  expect(bandTotal).toBe(expected.users.size);
  return checked;
}

/** Rows for n users: the first `distinct` rows once each, then repeats (so equal scores tie). */
export function usersOver(rows: Row[], n: number, distinct: number, prefix = 'user-'): { userId: string; features: Row }[] {
  return Array.from({ length: n }, (_, i) => ({ userId: `${prefix}${String(i).padStart(6, '0')}`, features: rows[i < distinct ? i : (i - distinct) % distinct] }));
}

// ---- ACCEPTANCE 3: profile distinctiveness computed here, independently of src/segments/profile.ts ----

export interface Distinct {
  feature: string;
  distinctiveness: number;
}

/**
 * Numeric features: |mean(segment) − mean(population)| / population std (divide by n).
 * Categorical and boolean features: the largest |share(segment) − share(population)| over values,
 * each divided by sqrt(max(p(1 − p), 0.001)) with p the population share.
 */
export function independentDistinctiveness(spec: FeatureSpec, members: FeatureValues[], population: FeatureValues[]): Distinct[] {
  const out: Distinct[] = [];
  for (const f of spec.features) {
    const seg = members.map((m) => m[f.name]).filter((v) => v !== null && v !== undefined);
    const pop = population.map((m) => m[f.name]).filter((v) => v !== null && v !== undefined);
    if (!seg.length || !pop.length) continue;
    if (f.type === 'numeric') {
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const mp = mean(pop as number[]);
      const sd = Math.sqrt(mean((pop as number[]).map((x) => (x - mp) ** 2)));
      out.push({ feature: f.name, distinctiveness: sd > 0 ? Math.abs(mean(seg as number[]) - mp) / sd : 0 });
    } else {
      const share = (xs: unknown[], v: string) => xs.filter((x) => String(x) === v).length / xs.length;
      let d = 0;
      for (const v of new Set([...seg, ...pop].map(String))) {
        const p = share(pop, v);
        d = Math.max(d, Math.abs(share(seg, v) - p) / Math.sqrt(Math.max(p * (1 - p), 1e-3)));
      }
      out.push({ feature: f.name, distinctiveness: d });
    }
  }
  return out.sort((a, b) => b.distinctiveness - a.distinctiveness);
}

export interface ProfileBody {
  segment: { id: string };
  size: number;
  shareOfScoredUsers: number;
  sample: { members: number; population: number; sampled: boolean };
  score: { mean: number; median: number; histogram: { bin: string; count: number }[] };
  features?: { feature: string; distinctiveness: number }[];
  distinctive?: { feature: string; distinctiveness: number; text: string }[];
  personas: { id: number; share: number }[];
}

/**
 * ACCEPTANCE 3 for one segment small enough to be profiled whole: the stored features of its
 * members (read back from the store) against those of every scored user; checks the top-5 ranking
 * and values, and that the stored features are the ones sent.
 */
export async function expectProfileMatches(app: FastifyInstance, expected: Expected, segmentId: string): Promise<ProfileBody> {
  const spec = app.services.models.active!.spec;
  const store = app.services.segments.store;
  const memberIds = (await allMembers(app, segmentId)).members.map((m) => m.userId);
  const storedFeatures = async (id: string) => {
    const u = await store.user(id);
    expect(u?.features, `stored features of ${id}`).toEqual(coerced(expected.users.get(id)!.features));
    return u!.features!;
  };
  const members = await Promise.all(memberIds.map(storedFeatures));
  const population = await Promise.all([...expected.users.keys()].map(storedFeatures));
  expect(members.length).toBeGreaterThan(10);
  expect(members.length).toBeLessThan(5000);
  expect(population.length).toBeLessThanOrEqual(5000);

  const profile = await getJson<ProfileBody>(app, `/v1/segments/${segmentId}/profile`);
  expect(profile.sample).toEqual({ members: members.length, population: population.length, sampled: false });
  expect(profile.size).toBe(members.length);
  expect(profile.shareOfScoredUsers).toBeCloseTo(members.length / population.length, 12);
  const probs = memberIds.map((id) => expected.users.get(id)!.probability);
  expect(profile.score.mean).toBeCloseTo(probs.reduce((a, b) => a + b, 0) / probs.length, 9);
  expect(profile.score.histogram.reduce((n, b) => n + b.count, 0)).toBe(members.length);

  const mine = independentDistinctiveness(spec, members, population);
  expect(profile.distinctive).toHaveLength(5);
  expect(profile.distinctive!.map((d) => d.feature)).toEqual(mine.slice(0, 5).map((d) => d.feature));
  profile.distinctive!.forEach((d, i) => expect(Math.abs(d.distinctiveness - mine[i].distinctiveness)).toBeLessThan(1e-9 * Math.max(1, mine[i].distinctiveness)));
  // Every per-feature figure agrees, not only the top five.
  const byFeature = new Map(mine.map((d) => [d.feature, d.distinctiveness]));
  for (const f of profile.features!) expect(Math.abs(f.distinctiveness - byFeature.get(f.feature)!)).toBeLessThan(1e-9 * Math.max(1, f.distinctiveness));
  expect(profile.features!.length).toBe(mine.length);
  // A clearly distinct segment: its top feature stands out.
  expect(mine[0].distinctiveness).toBeGreaterThan(0.2);
  return profile;
}

/** Parses the CSV export (header userId,score; userIds quoted when needed). */
export function parseCsvExport(body: string): Member[] {
  const lines = body.split('\n');
  expect(lines[0]).toBe('userId,score');
  expect(lines[lines.length - 1]).toBe('');
  return lines.slice(1, -1).map((line) => {
    const m = /^("(?:[^"]|"")*"|[^,]*),(.+)$/.exec(line)!;
    const id = m[1].startsWith('"') ? m[1].slice(1, -1).replace(/""/g, '"') : m[1];
    return { userId: id, score: Number(m[2]) };
  });
}

export const parseNdjsonExport = (body: string): Member[] =>
  body
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Member);

/**
 * Users whose ids start like spreadsheet formulas, scored into high-intent: the CSV export shows
 * each with a leading apostrophe (quoted when needed), NDJSON exactly as sent.
 */
export async function expectFormulaIdsDefused(app: FastifyInstance, expected: Expected): Promise<void> {
  const top = (await page(app, 'high-intent', { limit: 1 })).members[0];
  const features = expected.users.get(top.userId)!.features;
  const ids = ['=1+1', '+33 6 12', '-5', '@SUM(A1)', '\tcmd', '=HYPERLINK("x","y")'];
  await scoreUsers(app, expected, ids.map((userId) => ({ userId, features })));
  const csv = await app.inject({ method: 'GET', url: '/v1/segments/high-intent/export?format=csv', headers: bearer(KEY.segments) });
  const lines = new Set(csv.body.split('\n').map((l) => l.slice(0, l.lastIndexOf(','))));
  for (const cell of ["'=1+1", "'+33 6 12", "'-5", "'@SUM(A1)", "'\tcmd", '"\'=HYPERLINK(""x"",""y"")"']) expect(lines, cell).toContain(cell);
  const nd = await app.inject({ method: 'GET', url: '/v1/segments/high-intent/export?format=ndjson', headers: bearer(KEY.segments) });
  const exported = new Set(parseNdjsonExport(nd.body).map((m) => m.userId));
  for (const id of ids) expect(exported, id).toContain(id);
}

/** Waits for the re-score job a rule change started (named in its answer) to finish. */
export async function rescoreFinished(app: FastifyInstance, answer: { json(): unknown }): Promise<void> {
  const job = (answer.json() as { rescoreJob: { jobId: string } | null }).rescoreJob;
  expect(job).not.toBeNull();
  const jobs = app.services.scoringJobs;
  await until(() => ['succeeded', 'failed', 'cancelled'].includes(jobs.get(job!.jobId).status), 'the re-score to finish', 60_000);
  expect(jobs.get(job!.jobId).status).toBe('succeeded');
  await app.services.segments.flush();
}
