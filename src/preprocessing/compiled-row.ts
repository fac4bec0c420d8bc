import { STANDARD_SCORE_LIMIT, featureWidth, inputWidth, type FeatureSpec, type FeatureValues } from './feature-spec.js';
import { booleanWord, categoryOf } from './category.js';

/** A clean row's typed values and the categorical features that fell into their OOV bucket. */
export interface ReadRow {
  values: FeatureValues;
  oov: string[] | undefined;
}

/**
 * Checks a JSON `features` object and encodes it into `out` at `at` in one pass; null when the
 * object is not clean (missing, unknown or mistyped feature, or not a plain object), in which case
 * the caller runs coerceFeatures for the full list of problems and encodeInto for the row.
 */
export type RowReader = (input: unknown, out: Float32Array, at: number) => ReadRow | null;

const FLOAT32_MAX = 3.4028234663852886e38;

/** An exact JS literal of a finite number (String() round-trips every double except -0). */
function num(n: number): string {
  return Object.is(n, -0) ? '-0' : String(n);
}

/**
 * Compiles the spec into straight-line code, the way ajv and fast-json-stringify do: one named
 * property read per feature instead of keyed lookups by name, and the typed values built as one
 * object literal. It accepts exactly what coerceFeatures accepts and writes exactly what
 * Encoder.encodeInto writes (same arithmetic, same order); test/compiled-row.test.ts holds it to
 * that over the shoppers rows and over generated inputs. Names and numbers enter the source only
 * as JSON string literals and number literals.
 *
 * Returns undefined for a spec it cannot compile safely (a feature named "__proto__"); callers
 * then use the generic path.
 */
export function compileRowReader(spec: FeatureSpec): RowReader | undefined {
  if (spec.features.some((f) => f.name === '__proto__')) return undefined;
  const width = inputWidth(spec);
  const vocabs: Map<string, number>[] = [];
  const lines: string[] = [
    'if (input === null || typeof input !== "object") return null;',
    'const proto = Object.getPrototypeOf(input);',
    // A feature read through another prototype could be inherited rather than sent.
    'if (proto !== Object.prototype && proto !== null) return null;',
    'const o = input;',
  ];
  const encode: string[] = [`out.fill(0, at, at + ${width});`];
  let offset = 0;
  spec.features.forEach((f, i) => {
    const name = JSON.stringify(f.name);
    const r = `r${i}`;
    const v = `v${i}`;
    const nullCase = f.nullable ? `else if (${r} === null) ${v} = null;` : '';
    lines.push(`const ${r} = o[${name}]; let ${v};`);
    if (f.type === 'numeric') {
      lines.push(`if (typeof ${r} === "number" && ${r} <= ${FLOAT32_MAX} && ${r} >= -${FLOAT32_MAX}) ${v} = ${r}; ${nullCase} else return null;`);
      const steps = [`let x${i} = ${v} === null ? ${num(f.impute)} : ${v};`];
      if (f.clip) steps.push(`x${i} = Math.min(${num(f.clip.max)}, Math.max(${num(f.clip.min)}, x${i}));`);
      if (f.transform === 'log1p') steps.push(`x${i} = Math.log1p(Math.max(0, x${i}));`);
      steps.push(`out[at + ${offset}] = Math.min(${STANDARD_SCORE_LIMIT}, Math.max(-${STANDARD_SCORE_LIMIT}, (x${i} - ${num(f.mean)}) / ${num(f.std)}));`);
      encode.push(steps.join(' '));
    } else if (f.type === 'boolean') {
      lines.push(
        `if (${r} === true || ${r} === false) ${v} = ${r}; else if (typeof ${r} === "string" && (${v} = B(${r})) !== undefined); ${nullCase} else return null;`,
      );
      encode.push(`out[at + ${offset}] = (${v} === null ? ${f.impute} : ${v}) ? 1 : 0;`);
    } else {
      lines.push(`if (typeof ${r} === "string") ${v} = C(${r}); else if (typeof ${r} === "number" && ${r} - ${r} === 0) ${v} = String(${r}); ${nullCase} else return null;`);
      vocabs.push(vocabularyIndex(f.vocabulary));
      const vocab = `V[${vocabs.length - 1}]`;
      encode.push(
        `{ const k = ${vocab}.get(${v} === null ? ${JSON.stringify(categoryOf(f.impute))} : ${v}); if (k === undefined) { out[at + ${offset + f.vocabulary.length}] = 1; (oov ??= []).push(${name}); } else out[at + ${offset} + k] = 1; }`,
      );
    }
    offset += featureWidth(f);
  });
  // Every spec feature was read as a valid own value, so equal key counts mean no unknown keys.
  lines.push(`if (Object.keys(o).length !== ${spec.features.length}) return null;`);
  lines.push('let oov;', ...encode);
  lines.push(`return { values: { ${spec.features.map((f, i) => `${JSON.stringify(f.name)}: v${i}`).join(', ')} }, oov };`);
  const factory = new Function('V', 'C', 'B', `return function readRow(input, out, at) {\n${lines.join('\n')}\n};`) as (
    v: Map<string, number>[],
    c: typeof categoryOf,
    b: typeof booleanWord,
  ) => RowReader;
  return factory(vocabs, categoryOf, booleanWord);
}

/**
 * Category → one-hot index, keyed by each entry's categoryOf form: a vocabulary stored before that
 * rule (or written by hand for an import) may hold "1.50" or "-0", which requests now name as "1.5"
 * and "0". Where two entries have one form, the first keeps it.
 */
export function vocabularyIndex(vocabulary: readonly string[]): Map<string, number> {
  const index = new Map<string, number>();
  vocabulary.forEach((c, k) => {
    const key = categoryOf(c);
    if (!index.has(key)) index.set(key, k);
  });
  return index;
}
