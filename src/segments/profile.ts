import type { FeatureSpec } from '../preprocessing/feature-spec.js';
import { quantile } from '../preprocessing/fit.js';
import type { UserRecord } from './membership-store.js';

export interface NumericSummary {
  mean: number;
  q1: number;
  median: number;
  q3: number;
}

export interface FeatureProfile {
  feature: string;
  type: 'numeric' | 'categorical' | 'boolean';
  distinctiveness: number;
  numeric?: { segment: NumericSummary; population: NumericSummary };
  categories?: { value: string; share: number; populationShare: number; lift: number }[];
}

export interface Profile {
  size: number;
  shareOfScoredUsers: number;
  sample: { members: number; population: number; sampled: boolean };
  score: { mean: number; median: number; histogram: { bin: string; count: number }[] };
  /** Absent when no sampled member has kept features (FEATURE_RETENTION=off), or when too few have (see featuresWithheld). */
  features?: FeatureProfile[];
  /** Why feature statistics are absent although members have kept features. */
  featuresWithheld?: string;
  distinctive?: { feature: string; distinctiveness: number; text: string }[];
  personas: { id: number; share: number }[];
}

/**
 * A segment's profile (画像) against the scored population. Distinctiveness is a standardized
 * difference: |mean_seg − mean_pop| / std_pop for numerics, and for categories the largest
 * |share_seg − share_pop| / sqrt(share_pop·(1 − share_pop)) over values.
 */
/**
 * Fewest members with kept features for which feature statistics are shown. Below it a profile
 * would give away individuals' behaviour (a 1-member segment's "mean" is that user's value), which
 * the API otherwise never returns; a rule narrow enough can isolate anyone.
 */
export const MIN_PROFILE_MEMBERS = 10;

export function computeProfile(
  spec: FeatureSpec | null,
  members: UserRecord[],
  population: UserRecord[],
  counts: { size: number; scoredUsers: number },
  /** The active version: persona ids are counted only from records it scored (another model's persona k is another group). */
  activeVersion: string | null = null,
): Profile {
  const probs = members.map((m) => m.probability).sort((a, b) => a - b);
  const histogram = Array.from({ length: 10 }, (_, b) => ({ bin: `${(b / 10).toFixed(1)}-${((b + 1) / 10).toFixed(1)}`, count: 0 }));
  for (const p of probs) histogram[Math.min(9, Math.floor(p * 10))].count++;

  const withKept = members.filter((m) => m.features);
  const withheld = withKept.length > 0 && withKept.length < MIN_PROFILE_MEMBERS;
  const withFeatures = withheld ? [] : withKept;
  const popWithFeatures = population.filter((m) => m.features);
  const features: FeatureProfile[] = [];
  /** Per categorical feature, the value its distinctiveness comes from (the text names that one). */
  const mostDistinct = new Map<string, string>();
  /** Features left out because too few members have a value for them (the rest sent null). */
  const sparse: string[] = [];
  for (const f of spec?.features ?? []) {
    const seg = withFeatures.map((m) => m.features![f.name]).filter((v) => v !== null && v !== undefined);
    const pop = popWithFeatures.map((m) => m.features![f.name]).filter((v) => v !== null && v !== undefined);
    // The minimum holds per feature: nine members without a value and one with it would show that one's.
    if (seg.length > 0 && seg.length < MIN_PROFILE_MEMBERS) sparse.push(f.name);
    if (seg.length < MIN_PROFILE_MEMBERS || pop.length === 0) continue;
    if (f.type === 'numeric') {
      const s = summarize(seg as number[]);
      const p = summarize(pop as number[]);
      const sd = std(pop as number[]);
      features.push({ feature: f.name, type: 'numeric', distinctiveness: sd > 0 ? Math.abs(s.mean - p.mean) / sd : 0, numeric: { segment: s, population: p } });
    } else {
      const segShares = shares(seg.map(String));
      const sampledPopShares = shares(pop.map(String));
      // The segment is part of the population, so a value's population share is at least its
      // segment share × size / scored users, even when the population sample happened to miss it
      // (which used to read as lift 999).
      const popShare = (value: string) => Math.max(sampledPopShares.get(value) ?? 0, ((segShares.get(value) ?? 0) * counts.size) / Math.max(1, counts.scoredUsers));
      const popShares = new Map([...new Set([...segShares.keys(), ...sampledPopShares.keys()])].map((v) => [v, popShare(v)]));
      const categories = [...segShares.entries()]
        .map(([value, share]) => {
          const populationShare = popShares.get(value) ?? 0;
          return { value, share, populationShare, lift: populationShare > 0 ? share / populationShare : Infinity };
        })
        .sort((a, b) => b.share - a.share);
      let distinctiveness = 0;
      let most: string | undefined;
      for (const value of new Set([...segShares.keys(), ...popShares.keys()])) {
        const ps = popShares.get(value) ?? 0;
        const d = Math.abs((segShares.get(value) ?? 0) - ps) / Math.sqrt(Math.max(ps * (1 - ps), 1e-3));
        if (d > distinctiveness) [distinctiveness, most] = [d, value];
      }
      // The ten commonest values in the segment, plus the one the score comes from, which may be
      // rare there or absent (a segment defined by "Month ne May" is distinctive for May).
      const listed = categories.slice(0, 10);
      if (most !== undefined && !listed.some((c) => c.value === most)) {
        const populationShare = popShares.get(most) ?? 0;
        const share = segShares.get(most) ?? 0;
        listed.push({ value: most, share, populationShare, lift: populationShare > 0 ? share / populationShare : Infinity });
      }
      if (most !== undefined) mostDistinct.set(f.name, most);
      features.push({
        feature: f.name,
        type: f.type,
        distinctiveness,
        categories: listed.map((c) => ({ ...c, lift: Number.isFinite(c.lift) ? c.lift : 999 })),
      });
    }
  }
  const distinctive = [...features]
    .sort((a, b) => b.distinctiveness - a.distinctiveness)
    .slice(0, 5)
    .map((f) => ({ feature: f.feature, distinctiveness: f.distinctiveness, text: describe(f, mostDistinct.get(f.feature)) }));

  const personaCounts = new Map<number, number>();
  for (const m of members) if (m.persona !== null && m.version === activeVersion) personaCounts.set(m.persona, (personaCounts.get(m.persona) ?? 0) + 1);

  return {
    size: counts.size,
    shareOfScoredUsers: counts.scoredUsers ? counts.size / counts.scoredUsers : 0,
    sample: { members: members.length, population: population.length, sampled: members.length < counts.size || population.length < counts.scoredUsers },
    score: { mean: probs.length ? probs.reduce((a, b) => a + b, 0) / probs.length : 0, median: quantile(probs, 0.5), histogram },
    ...(withFeatures.length ? { features, distinctive } : {}),
    ...(withheld
      ? { featuresWithheld: `fewer than ${MIN_PROFILE_MEMBERS} members with kept features: feature statistics are withheld so that no member's values can be read off` }
      : sparse.length
        ? { featuresWithheld: `${sparse.join(', ')}: fewer than ${MIN_PROFILE_MEMBERS} members have a value for ${sparse.length === 1 ? 'it' : 'them'}, so ${sparse.length === 1 ? 'its' : 'their'} statistics are withheld` }
        : {}),
    personas: [...personaCounts].map(([id, n]) => ({ id, share: n / Math.max(1, members.length) })).sort((a, b) => b.share - a.share),
  };
}

function summarize(xs: number[]): NumericSummary {
  const s = Float64Array.from(xs).sort();
  return { mean: xs.reduce((a, b) => a + b, 0) / xs.length, q1: quantile(s, 0.25), median: quantile(s, 0.5), q3: quantile(s, 0.75) };
}

function std(xs: number[]): number {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length);
}

function shares(values: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  for (const [k, n] of m) m.set(k, n / values.length);
  return m;
}

/** One line on a feature: the means, or the shares of the value its distinctiveness comes from. */
function describe(f: FeatureProfile, mostDistinct: string | undefined): string {
  if (f.numeric) {
    const { segment, population } = f.numeric;
    return `${f.feature}: mean ${fmt(segment.mean)} vs ${fmt(population.mean)} overall`;
  }
  const top = f.categories?.find((c) => c.value === mostDistinct);
  return top ? `${f.feature} = ${top.value}: ${pct(top.share)} vs ${pct(top.populationShare)} overall` : f.feature;
}

/** Three significant figures below 100, so small rates (0.0372 vs 0.0433) do not round to equal. */
const fmt = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : String(Number(x.toPrecision(3))));
const pct = (share: number) => {
  const p = share * 100;
  return `${p >= 10 || p === 0 ? p.toFixed(0) : String(Number(p.toPrecision(2)))}%`;
};
