import type { FeatureDef } from '../preprocessing/feature-spec.js';
import { NUMERIC_TEXT } from '../lib/numeric-text.js';
import { isMissingMarker } from '../lib/missing-cell.js';
import { booleanWord } from '../preprocessing/category.js';

/**
 * Column type from its non-blank values: all decimal numbers → numeric, all true/false (any case) → boolean,
 * otherwise categorical. Missing-value markers ("NA", "?"…, see missing-cell.ts) among numbers or
 * flags are blanks, not a reason to call the column categorical. `categorical` forces integer
 * code columns (Region, Browser…).
 */
export function inferColumnType(values: string[], forceCategorical = false): FeatureDef['type'] {
  if (forceCategorical) return 'categorical';
  const present = values.map((v) => v.trim()).filter((v) => v !== '' && !isMissingMarker(v));
  if (present.length === 0) return 'categorical';
  // The values requests can send for these types: true/false in any case, decimal numbers (not
  // "0x10" or "Infinity", which Number() would take).
  if (present.every((v) => booleanWord(v) !== undefined)) return 'boolean';
  if (present.every((v) => NUMERIC_TEXT.test(v))) return 'numeric';
  return 'categorical';
}

const POSITIVE_WORDS = new Set(['true', 'yes', 'y', '1', 'positive']);

/**
 * Whether a label cell means the positive class (case-insensitive; true/yes/1 match each other).
 * null: the row has no label (blank, or a missing-value marker such as "NA" that is not the
 * positive value itself; "-" excepted), so it is left out rather than counted as a negative.
 */
export function labelMatcher(positive: string): (cell: string) => boolean | null {
  const p = positive.trim().toLowerCase();
  const pIsWord = POSITIVE_WORDS.has(p);
  // A numeric positive matches by value: labels exported as floats ("1.0") still say 1.
  const pNumber = NUMERIC_TEXT.test(p) ? Number(p) : NaN;
  return (cell) => {
    const c = cell.trim().toLowerCase();
    if (c === '') return null;
    if (c === p) return true;
    if (pIsWord && POSITIVE_WORDS.has(c)) return true;
    if (!Number.isNaN(pNumber) && NUMERIC_TEXT.test(c) && Number(c) === pNumber) return true;
    // "-" is no missing marker here: it is the negative class of +/- labels.
    if (c !== '-' && isMissingMarker(c)) return null;
    return false;
  };
}

