import { kmeans } from 'ml-kmeans';
import { z } from 'zod';
import { featureWidth, type FeatureSpec } from '../preprocessing/feature-spec.js';
import { createRng } from '../lib/random.js';
import type { Pacer } from '../lib/pacer.js';

/**
 * Learned personas: k-means on the encoded (standardized, one-hot) training rows, k picked by
 * silhouette on a sample. Stored with the model version (personas.json); every prediction is
 * assigned the nearest centroid.
 */
export const PersonasSchema = z.object({
  method: z.literal('kmeans-encoded-input'),
  k: z.number().int().positive(),
  silhouette: z.number(),
  centroids: z.array(z.array(z.number())),
  personas: z.array(
    z.object({
      id: z.number().int(),
      label: z.string(),
      size: z.number(),
      share: z.number(),
      highlights: z.array(z.object({ feature: z.string(), text: z.string(), score: z.number() })),
    }),
  ),
});
export type Personas = z.infer<typeof PersonasSchema>;

export async function fitPersonas(
  spec: FeatureSpec,
  data: Float32Array,
  rows: number,
  opts: { seed: number; k?: number; kRange?: [number, number]; pacer?: Pacer },
): Promise<Personas> {
  const width = data.length / rows;
  const points = Array.from({ length: rows }, (_, i) => Array.from(data.subarray(i * width, (i + 1) * width)));
  const rng = createRng(opts.seed);
  const sampleIdx = Array.from({ length: Math.min(rows, 1500) }, () => Math.floor(rng() * rows));
  if (opts.k !== undefined && opts.k >= rows) throw new Error(`${opts.k} personas need more than ${opts.k} training rows (there are ${rows}): ask for fewer`);
  if (rows < 3) throw new Error(`personas need at least 3 training rows (there are ${rows})`);
  // k-means needs fewer clusters than points: a small data set gets a smaller range.
  const [wantLo, wantHi] = opts.k ? [opts.k, opts.k] : (opts.kRange ?? [3, 6]);
  const hi = Math.min(wantHi, rows - 1);
  const lo = Math.min(wantLo, hi);
  let best: { k: number; silhouette: number; centroids: number[][]; clusters: number[] } | undefined;
  for (let k = lo; k <= hi; k++) {
    await opts.pacer?.pause();
    const result = kmeans(points, k, { seed: opts.seed, initialization: 'kmeans++', maxIterations: 100 });
    await opts.pacer?.pause();
    const s = silhouette(points, result.clusters, sampleIdx);
    if (!best || s > best.silhouette) best = { k, silhouette: s, centroids: result.centroids, clusters: result.clusters };
  }
  const chosen = best!;
  const sizes = new Array(chosen.k).fill(0);
  for (const c of chosen.clusters) sizes[c]++;
  return {
    method: 'kmeans-encoded-input',
    k: chosen.k,
    silhouette: chosen.silhouette,
    centroids: chosen.centroids.map((c) => c.map((v) => Math.round(v * 1e6) / 1e6)),
    personas: chosen.centroids.map((centroid, id) => {
      const highlights = describeCentroid(spec, centroid);
      return {
        id,
        label: highlights.slice(0, 3).map((h) => h.text).join(' · ') || `persona ${id + 1}`,
        size: sizes[id],
        share: sizes[id] / rows,
        highlights,
      };
    }),
  };
}

/**
 * Index of the nearest centroid (squared Euclidean distance; the first on a tie). Runs on every
 * single prediction: a centroid's sum stops as soon as it reaches the best so far, which it can
 * then no longer beat (the sum only grows).
 */
export function assignPersona(centroids: number[][], row: Float32Array, offset = 0): number {
  let best = 0;
  let bestD = Infinity;
  for (let c = 0; c < centroids.length; c++) {
    const cen = centroids[c];
    const n = cen.length;
    let d = 0;
    let j = 0;
    for (; j < n; j++) {
      const diff = row[offset + j] - cen[j];
      d += diff * diff;
      if (d >= bestD) break;
    }
    if (j === n && d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best;
}

/**
 * The centroid's most distinctive features, as standardized differences from the population:
 * numeric inputs are already z-scores; one-hot and boolean shares are compared with the
 * training shares (difference / binomial std).
 */
export function describeCentroid(spec: FeatureSpec, centroid: number[]): { feature: string; text: string; score: number }[] {
  const out: { feature: string; text: string; score: number }[] = [];
  let at = 0;
  for (const f of spec.features) {
    if (f.type === 'numeric') {
      const z = centroid[at];
      if (Math.abs(z) >= 0.3) out.push({ feature: f.name, text: `${z > 0 ? 'high' : 'low'} ${f.name}`, score: Math.abs(z) });
    } else if (f.type === 'boolean') {
      const pop = f.mean ?? 0.5;
      const share = centroid[at];
      const score = Math.abs(share - pop) / Math.sqrt(Math.max(pop * (1 - pop), 1e-3));
      if (score >= 0.3) out.push({ feature: f.name, text: share > pop ? f.name : `not ${f.name}`, score });
    } else {
      let bestScore = 0;
      let bestValue = '';
      f.vocabulary.forEach((value, i) => {
        const pop = f.frequencies?.[i] ?? 1 / f.vocabulary.length;
        const share = centroid[at + i];
        const score = (share - pop) / Math.sqrt(Math.max(pop * (1 - pop), 1e-3));
        if (share >= 0.5 && score > bestScore) {
          bestScore = score;
          bestValue = value;
        }
      });
      if (bestScore >= 0.3) out.push({ feature: f.name, text: categoryText(f.name, bestValue), score: bestScore });
    }
    at += featureWidth(f);
  }
  return out.sort((a, b) => b.score - a.score).slice(0, 5).map((h) => ({ ...h, score: Math.round(h.score * 1000) / 1000 }));
}

function categoryText(feature: string, value: string): string {
  if (/^-?\d+(\.\d+)?$/.test(value)) return `${feature} ${value}`;
  const words = value.replace(/_/g, ' ');
  return /visitor$/i.test(words) ? `${words}s` : words;
}

/** Mean silhouette over a sample of points (full distance to every point's cluster). */
function silhouette(points: number[][], clusters: number[], sample: number[]): number {
  const k = Math.max(...clusters) + 1;
  let total = 0;
  let n = 0;
  for (const i of sample) {
    const sum = new Array(k).fill(0);
    const cnt = new Array(k).fill(0);
    for (const j of sample) {
      if (i === j) continue;
      sum[clusters[j]] += Math.sqrt(sq(points[i], points[j]));
      cnt[clusters[j]]++;
    }
    const own = clusters[i];
    if (cnt[own] === 0) continue;
    const a = sum[own] / cnt[own];
    let b = Infinity;
    for (let c = 0; c < k; c++) if (c !== own && cnt[c] > 0) b = Math.min(b, sum[c] / cnt[c]);
    if (!Number.isFinite(b)) continue;
    total += (b - a) / Math.max(a, b);
    n++;
  }
  return n ? total / n : 0;
}

function sq(a: number[], b: number[]): number {
  let d = 0;
  for (let j = 0; j < a.length; j++) d += (a[j] - b[j]) ** 2;
  return d;
}
