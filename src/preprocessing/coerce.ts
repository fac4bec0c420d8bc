import type { FeatureDef, FeatureSpec, FeatureValue, FeatureValues } from './feature-spec.js';
import type { FieldIssue } from '../lib/errors.js';
import { NUMERIC_TEXT } from '../lib/numeric-text.js';
import { isMissingMarker } from '../lib/missing-cell.js';
import { booleanWord, categoryOf } from './category.js';
import { cutText } from '../lib/cut-text.js';

export const FLOAT32_MAX = 3.4028234663852886e38;

/** A feature's check, in one object shape for all types (monomorphic reads on the hot path). */
interface CoerceStep {
  name: string;
  type: FeatureDef['type'];
  nullable: boolean;
}

const plans = new WeakMap<FeatureSpec, { steps: CoerceStep[]; names: Set<string> }>();
function planFor(spec: FeatureSpec) {
  let plan = plans.get(spec);
  if (!plan) {
    plan = { steps: spec.features.map((f) => ({ name: f.name, type: f.type, nullable: f.nullable })), names: new Set(spec.features.map((f) => f.name)) };
    plans.set(spec, plan);
  }
  return plan;
}

/** Issue paths are relative to the request's `features` (the batch route prefixes the instance). */
const PREFIX = 'features';

/** coerceValue's answer for a bad value (no allocation per check). */
const INVALID = Symbol('invalid');

/**
 * Validates a JSON `features` object against the spec and returns typed values.
 * Collects every problem instead of stopping at the first, so a client fixes a body in one go.
 */
export function coerceFeatures(spec: FeatureSpec, input: unknown): { values: FeatureValues; issues: FieldIssue[] } {
  const issues: FieldIssue[] = [];
  const values: FeatureValues = {};
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return { values, issues: [{ path: PREFIX, message: input === undefined ? 'required: an object of feature values' : 'must be an object of feature values' }] };
  }
  const obj = input as Record<string, unknown>;
  const { steps, names } = planFor(spec);
  for (let i = 0; i < steps.length; i++) {
    const f = steps[i];
    if (!Object.hasOwn(obj, f.name)) {
      issues.push({ path: `${PREFIX}.${f.name}`, message: `missing required ${f.type} feature` });
      continue;
    }
    const v = obj[f.name];
    const result = coerceValue(f, v);
    if (result === INVALID) issues.push({ path: `${PREFIX}.${f.name}`, message: invalidMessage(f, v) });
    else values[f.name] = result;
  }
  for (const key of Object.keys(obj)) if (!names.has(key)) issues.push({ path: `${PREFIX}.${key}`, message: 'unknown feature' });
  return { values, issues };
}

function coerceValue(f: CoerceStep, v: unknown): FeatureValue | typeof INVALID {
  if (v === null) return f.nullable ? null : INVALID;
  switch (f.type) {
    case 'numeric':
      // Beyond float32 range a value would encode to Infinity.
      return typeof v === 'number' && Number.isFinite(v) && Math.abs(v) <= FLOAT32_MAX ? v : INVALID;
    case 'boolean':
      if (typeof v === 'boolean') return v;
      return (typeof v === 'string' ? booleanWord(v) : undefined) ?? INVALID;
    case 'categorical':
      if (typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) return categoryOf(v);
      return INVALID;
  }
}

function invalidMessage(f: CoerceStep, v: unknown): string {
  if (v === null) return 'null is not allowed for this feature';
  switch (f.type) {
    case 'numeric':
      return `expected a finite number within ±3.4e38, got ${describe(v)}`;
    case 'boolean':
      return `expected true/false or the string "true"/"false" (any case), got ${describe(v)}`;
    case 'categorical':
      return `expected a string or number category, got ${describe(v)}`;
  }
}

function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (typeof v === 'number') return String(v);
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? cutText(v, 40) + '…' : v)}`;
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}

/** Parses CSV cells (strings) into typed values; blank cells become null (imputed later). */
export function parseCsvRow(spec: FeatureSpec, row: Record<string, string>): FeatureValues {
  const values: FeatureValues = {};
  for (const f of spec.features) values[f.name] = parseCell(f.type, row[f.name]);
  return values;
}

/**
 * A CSV cell as a request value, for scoring uploaded rows: blank is null, a numeric feature's
 * cell becomes a number only if it is one, anything else stays text. coerceFeatures then judges
 * it like a JSON request, so "abc" for a number or "maybe" for a boolean is an invalid row rather
 * than a silent null or false.
 */
export function csvCellValue(type: FeatureDef['type'], cell: string | undefined): string | number | null {
  const s = cell?.trim() ?? '';
  if (s === '' || (type !== 'categorical' && isMissingMarker(s))) return null;
  if (type === 'numeric' && NUMERIC_TEXT.test(s)) return Number(s);
  return type === 'categorical' ? categoryOf(s) : s;
}

/**
 * A training cell as a typed value. Blank cells and missing-value markers are null (imputed).
 * Otherwise it is read as a request's value is (categoryOf, booleanWord, decimal numbers only), so
 * what the model learns from a cell is what serving makes of the same value; a cell serving would
 * refuse is null too (type inference only calls a column numeric or boolean when none is).
 */
export function parseCell(type: FeatureDef['type'], cell: string | undefined): FeatureValue {
  const s = cell?.trim() ?? '';
  if (s === '' || (type !== 'categorical' && isMissingMarker(s))) return null;
  if (type === 'numeric') return NUMERIC_TEXT.test(s) ? Number(s) : null;
  if (type === 'boolean') return booleanWord(s) ?? null;
  return categoryOf(s);
}
