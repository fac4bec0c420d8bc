import type { FeatureSpec } from '../preprocessing/feature-spec.js';
import type { FieldIssue } from '../lib/errors.js';

/**
 * How a canary's input contract falls short of the active version's: every request the active
 * version accepts must pass the canary's validation too (coerceFeatures), so the feature names
 * and types must be the same and the canary must accept null wherever the active version does.
 * Vocabularies may differ (an unseen category goes to the out-of-vocabulary bucket, not an error),
 * and so may encodings, imputation and order. Null when compatible.
 */
export function canaryIncompatibility(active: FeatureSpec, canary: FeatureSpec): { issues: FieldIssue[]; summary: string } | null {
  const found = differences(active, canary);
  if (!found.length) return null;
  const groups = new Map<string, string[]>();
  for (const d of found) groups.set(d.kind, [...(groups.get(d.kind) ?? []), d.short]);
  const listed = (names: string[]) => (names.length > 5 ? `${names.slice(0, 5).join(', ')} and ${names.length - 5} more` : names.join(', '));
  return {
    issues: found.map((d) => ({ path: `features.${d.name}`, message: d.message })),
    // One line: "missing: a, b; extra: c; type changed: d (numeric → boolean)".
    summary: [...groups].map(([kind, names]) => `${kind}: ${listed(names)}`).join('; '),
  };
}

interface Difference {
  kind: 'missing' | 'extra' | 'type changed' | 'null not accepted';
  name: string;
  /** For the one-line summary: "Weekend (boolean → numeric)". */
  short: string;
  message: string;
}

function differences(active: FeatureSpec, canary: FeatureSpec): Difference[] {
  const out: Difference[] = [];
  const theirs = new Map(canary.features.map((f) => [f.name, f]));
  const ours = new Set(active.features.map((f) => f.name));
  for (const f of active.features) {
    const c = theirs.get(f.name);
    if (!c) out.push({ kind: 'missing', name: f.name, short: f.name, message: `missing: the active version takes this ${f.type} feature, the canary does not` });
    else if (c.type !== f.type) out.push({ kind: 'type changed', name: f.name, short: `${f.name} (${f.type} → ${c.type})`, message: `type changed: ${f.type} in the active version, ${c.type} in the canary` });
    else if (f.nullable && !c.nullable) out.push({ kind: 'null not accepted', name: f.name, short: f.name, message: 'null is accepted by the active version, not by the canary' });
  }
  for (const c of canary.features) {
    if (!ours.has(c.name)) out.push({ kind: 'extra', name: c.name, short: c.name, message: `extra: the canary requires this ${c.type} feature, the active version does not take it` });
  }
  return out;
}
