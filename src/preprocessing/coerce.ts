import type { FeatureDef, FeatureSpec, FeatureValue, FeatureValues } from './feature-spec.js';

import type { FieldIssue } from '../lib/errors.js';

const FLOAT32_MAX = 3.4028234663852886e38;
const TRUE_STRINGS = new Set(['true', 'TRUE', 'True']);
const FALSE_STRINGS = new Set(['false', 'FALSE', 'False']);

/**
 * Validates a JSON `features` object against the spec and returns typed values.
 * Collects every problem instead of stopping at the first, so a client fixes a body in one go.
 */
export function coerceFeatures(
  spec: FeatureSpec,
  input: unknown,
  pathPrefix = 'features',
): { values: FeatureValues; issues: FieldIssue[] } {
  const issues: FieldIssue[] = [];
  const values: FeatureValues = {};
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return { values, issues: [{ path: pathPrefix, message: 'must be an object of feature values' }] };
  }
  const obj = input as Record<string, unknown>;
  const known = featureNames(spec);
  for (const f of spec.features) {
    if (!Object.hasOwn(obj, f.name)) {
      issues.push({ path: `${pathPrefix}.${f.name}`, message: `missing required ${f.type} feature` });
      continue;
    }
    const result = coerceValue(f, obj[f.name]);
    if (typeof result === 'object' && result !== null && 'error' in result) issues.push({ path: `${pathPrefix}.${f.name}`, message: result.error });
    else values[f.name] = result as FeatureValue;
  }
  for (const key of Object.keys(obj)) {
    if (!known.has(key)) issues.push({ path: `${pathPrefix}.${key}`, message: 'unknown feature' });
  }
  return { values, issues };
}

const namesBySpec = new WeakMap<FeatureSpec, Set<string>>();
function featureNames(spec: FeatureSpec): Set<string> {
  let names = namesBySpec.get(spec);
  if (!names) namesBySpec.set(spec, (names = new Set(spec.features.map((f) => f.name))));
  return names;
}

function coerceValue(f: FeatureDef, v: unknown): FeatureValue | { error: string } {
  if (v === null) return f.nullable ? null : { error: 'null is not allowed for this feature' };
  switch (f.type) {
    case 'numeric':
      // Beyond float32 range a value would encode to Infinity.
      if (typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= FLOAT32_MAX) return v;
      return { error: `expected a finite number within ±3.4e38, got ${describe(v)}` };
    case 'boolean':
      if (typeof v === 'boolean') return v;
      if (typeof v === 'string' && TRUE_STRINGS.has(v)) return true;
      if (typeof v === 'string' && FALSE_STRINGS.has(v)) return false;
      return { error: `expected true/false or "TRUE"/"FALSE", got ${describe(v)}` };
    case 'categorical':
      if (typeof v === 'string') return v;
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      return { error: `expected a string or number category, got ${describe(v)}` };
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}

/** Parses CSV cells (strings) into typed values; blank cells become null (imputed later). */
export function parseCsvRow(spec: FeatureSpec, row: Record<string, string>): FeatureValues {
  const values: FeatureValues = {};
  for (const f of spec.features) values[f.name] = parseCell(f.type, row[f.name]);
  return values;
}

export function parseCell(type: FeatureDef['type'], cell: string | undefined): FeatureValue {
  const s = cell?.trim() ?? '';
  if (s === '') return null;
  if (type === 'numeric') {
    const n = Number(s);
    return Number.isFinite(n) ? n : null;
  }
  if (type === 'boolean') return /^(true|yes|1)$/i.test(s);
  return s;
}
