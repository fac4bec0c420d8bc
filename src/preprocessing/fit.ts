import { FLOAT32_MAX, parseCell } from './coerce.js';
import { numericPreStandardize } from './transform.js';
import { UNSENDABLE_NAME, type FeatureDef, type FeatureSpec, type FeatureValues } from './feature-spec.js';

export interface FitOptions {
  /** Categories seen fewer times than this share the out-of-vocabulary bucket, so it gets trained. */
  minCategoryCount?: number;
  /** Skewness above which non-negative numeric columns get a log1p transform. */
  log1pSkew?: number;
  /**
   * Columns with blank cells anywhere in the data, not only in the rows fitted on: nullable even
   * when those rows have none, so serving accepts the blank that training imputed in a validation
   * or test row.
   */
  blankSomewhere?: ReadonlySet<string>;
}

/**
 * Fits normalization stats, vocabularies and imputation values on the training rows only.
 *
 * A column with no value in these rows is left out of the spec (see `unfittedColumns`): nothing
 * about it can be learned, a categorical one would have no vocabulary (the spec needs at least one
 * entry, so the version could not be loaded), and any value a request sent for it would meet
 * weights that were never trained. Throws when that leaves no feature at all.
 */
export function fitFeatureSpec(
  columnTypes: { name: string; type: FeatureDef['type'] }[],
  rows: Record<string, string>[],
  label: { name: string; positive: string },
  opts: FitOptions = {},
): FeatureSpec {
  const minCount = opts.minCategoryCount ?? 3;
  const skewLimit = opts.log1pSkew ?? 2;
  const features: FeatureDef[] = [];
  for (const { name, type } of columnTypes) {
    if (name === UNSENDABLE_NAME) throw new Error(`column "${name}" cannot be a feature: no JSON body can carry that key (leave it out with --exclude, or "exclude" in a retrain request)`);
    const cells = rows.map((r) => parseCell(type, r[name]));
    const present = cells.filter((c) => c !== null);
    if (present.length === 0) continue;
    const nullable = present.length < cells.length || (opts.blankSomewhere?.has(name) ?? false);
    if (type === 'numeric') features.push(fitNumeric(name, present as number[], nullable, skewLimit));
    else if (type === 'boolean') {
      const trues = (present as boolean[]).filter(Boolean).length;
      const mean = trues / present.length;
      features.push({ name, type, nullable, impute: mean >= 0.5, mean });
    } else features.push(fitCategorical(name, present as string[], nullable, minCount));
  }
  if (features.length === 0) {
    throw new Error(`no feature column has a value in the training rows (${columnTypes.map((c) => c.name).join(', ')}): nothing to train on`);
  }
  return { specVersion: 1, features, label, threshold: 0.5 };
}

/** The columns `fitFeatureSpec` left out of `spec` (no value in the rows it was fitted on). */
export function unfittedColumns(columnTypes: { name: string }[], spec: FeatureSpec): string[] {
  const fitted = new Set(spec.features.map((f) => f.name));
  return columnTypes.map((c) => c.name).filter((n) => !fitted.has(n));
}

function fitNumeric(name: string, values: number[], nullable: boolean, skewLimit: number): FeatureDef {
  // Serving refuses such values (they encode to Infinity in float32), and their squares overflow the stats.
  const huge = values.find((v) => Math.abs(v) > FLOAT32_MAX);
  if (huge !== undefined) throw new Error(`numeric column "${name}" has a value beyond ±3.4e38 (${huge}); the model works in 32-bit floats`);
  const sorted = Float64Array.from(values).sort();
  const q = (p: number) => quantile(sorted, p);
  const clip = { min: q(0), max: q(0.999) };
  const clipped = values.map((v) => Math.min(clip.max, Math.max(clip.min, v)));
  const useLog = q(0.01) >= 0 && skewness(clipped) > skewLimit;
  const transform = useLog ? ('log1p' as const) : ('none' as const);
  const t = values.map((v) => numericPreStandardize({ clip, transform }, v));
  const mean = t.reduce((a, b) => a + b, 0) / Math.max(1, t.length);
  const variance = t.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, t.length);
  const std = Math.sqrt(variance) || 1;
  return { name, type: 'numeric', nullable, impute: q(0.5), clip, transform, mean, std };
}

function fitCategorical(name: string, values: string[], nullable: boolean, minCount: number): FeatureDef {
  const counts = new Map<string, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  const ranked = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0], 'en'));
  const kept = ranked.filter(([, n]) => n >= minCount);
  const vocab = kept.length ? kept : ranked.slice(0, 1);
  const total = Math.max(1, values.length);
  return {
    name,
    type: 'categorical',
    nullable,
    impute: ranked[0]?.[0] ?? '',
    vocabulary: vocab.map(([v]) => v),
    frequencies: vocab.map(([, n]) => n / total),
  };
}

export function quantile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return 0;
  const pos = (sorted.length - 1) * p;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function skewness(xs: number[]): number {
  const n = xs.length;
  if (n < 3) return 0;
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  let m2 = 0;
  let m3 = 0;
  for (const x of xs) {
    const d = x - mean;
    m2 += d * d;
    m3 += d * d * d;
  }
  m2 /= n;
  m3 /= n;
  return m2 === 0 ? 0 : m3 / m2 ** 1.5;
}

/** Typed rows for the encoder: blank cells stay null and are imputed by the encoder. */
export function typedRows(spec: FeatureSpec, rows: Record<string, string>[]): FeatureValues[] {
  return rows.map((r) => {
    const out: FeatureValues = {};
    for (const f of spec.features) out[f.name] = parseCell(f.type, r[f.name]);
    return out;
  });
}
