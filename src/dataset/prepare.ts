import { inferColumnType, labelMatcher } from './infer-types.js';
import type { CsvTable } from './read-csv.js';
import type { FeatureDef } from '../preprocessing/feature-spec.js';
import { parseCell } from '../preprocessing/coerce.js';
import { isMissingMarker } from '../lib/missing-cell.js';
import { NUMERIC_TEXT } from '../lib/numeric-text.js';

export interface PrepareOptions {
  label: string;
  positive: string;
  categorical?: string[];
  /** Columns to leave out of the features (ids and the like). */
  exclude?: string[];
}

export interface CleaningReport {
  rowsRead: number;
  duplicatesDropped: number;
  unlabeledDropped: number;
  blankCells: Record<string, number>;
  rowsKept: number;
  positives: number;
  /** Rows per label value as written (trimmed; blank is ""), over the de-duplicated rows: the most frequent LABEL_VALUES_SHOWN. */
  labelValues: Record<string, number>;
  /** Things in the data that are likely mistakes (see labelWarnings, categoricalWarnings); present only when there are some. */
  warnings?: string[];
  /**
   * Columns left out of the features because they have no value to learn from, with the reason:
   * blank in every row, or (added by training) blank in every row of the training split. Present
   * only when some column was left out.
   */
  columnsLeftOut?: Record<string, string>;
}

export interface PreparedDataset {
  rows: Record<string, string>[];
  labels: Uint8Array;
  columnTypes: { name: string; type: FeatureDef['type'] }[];
  report: CleaningReport;
}

/** The columns training uses, in table order: every column but the excluded ones (the label included). */
export function usedColumns(columns: string[], opts: { label: string; exclude?: string[] }): string[] {
  const excluded = new Set((opts.exclude ?? []).filter((c) => c !== opts.label));
  return columns.filter((c) => !excluded.has(c));
}

/**
 * Drops exact duplicate rows, keeping the first of each: rows equal in every column training uses
 * (the features and the label). Excluded columns (ids and the like) do not count, so rows that
 * differ only in an id are duplicates too: otherwise the same example could land in both the
 * training and the test split.
 */
export function dropDuplicateRows(table: CsvTable, opts: { label: string; exclude?: string[] }): { rows: Record<string, string>[]; duplicatesDropped: number } {
  const columns = usedColumns(table.columns, opts);
  const seen = new Set<string>();
  const rows: Record<string, string>[] = [];
  for (const row of table.rows) {
    // JSON of the cells: no separator character inside a cell can make two different rows equal.
    const key = JSON.stringify(columns.map((c) => row[c] ?? ''));
    if (seen.has(key)) continue;
    seen.add(key);
    rows.push(row);
  }
  return { rows, duplicatesDropped: table.rows.length - rows.length };
}

export const BLANK_IN_EVERY_ROW = 'blank in every row';

/**
 * Drops exact duplicate and unlabeled rows, counts blank cells, infers column types. A column
 * blank in every kept row is left out of the features (and reported): it has nothing to learn.
 */
/**
 * Why the table cannot be trained on because a column without a name holds values (a feature must
 * be named to be sent: a served model could never be given it); null when there is none. A nameless
 * column of blanks (a trailing separator) is fine: it is left out like any blank column.
 */
export function namelessColumnProblem(table: CsvTable): string | null {
  const at = table.columns.indexOf('');
  if (at < 0 || table.rows.every((r) => (r[''] ?? '').trim() === '' || isMissingMarker((r[''] ?? '').trim()))) return null;
  return `CSV column ${at + 1} has no name in the header but holds values: name it, or leave it out (a pandas index written by to_csv? write with index=False)`;
}

export function prepareDataset(table: CsvTable, opts: PrepareOptions): PreparedDataset {
  if (table.rows.length === 0) throw new Error('CSV has a header but no data rows');
  const nameless = namelessColumnProblem(table);
  if (nameless) throw new Error(nameless);
  if (!table.columns.includes(opts.label)) {
    throw new Error(`label column "${opts.label}" not in CSV (columns: ${table.columns.join(', ')})`);
  }
  const unknownCats = (opts.categorical ?? []).filter((c) => !table.columns.includes(c));
  if (unknownCats.length) throw new Error(`--categorical names unknown columns: ${unknownCats.join(', ')}`);
  // A misspelt exclusion would silently train on the column it meant to leave out.
  const unknownExcluded = (opts.exclude ?? []).filter((c) => !table.columns.includes(c));
  if (unknownExcluded.length) throw new Error(`--exclude names unknown columns: ${unknownExcluded.join(', ')}`);

  const isPositive = labelMatcher(opts.positive);
  const rows: Record<string, string>[] = [];
  const labels: number[] = [];
  let unlabeledDropped = 0;
  const deduped = dropDuplicateRows(table, opts);
  for (const row of deduped.rows) {
    const y = isPositive(row[opts.label] ?? '');
    if (y === null) {
      unlabeledDropped++;
      continue;
    }
    rows.push(row);
    labels.push(y ? 1 : 0);
  }
  const positives = labels.reduce((a, b) => a + b, 0);
  const labelValues = countLabelValues(deduped.rows, opts.label);
  if (positives === 0 || positives === labels.length) {
    throw new Error(`label "${opts.label}" has a single class with positive "${opts.positive}" (values: ${describeCounts(labelValues)}); need both classes`);
  }
  const warnings = labelWarnings(opts.label, labelValues, isPositive);

  const featureColumns = usedColumns(table.columns, opts).filter((c) => c !== opts.label);
  const forced = new Set(opts.categorical ?? []);
  const blankCells: Record<string, number> = {};
  const columnsLeftOut: Record<string, string> = {};
  const columnTypes: PreparedDataset['columnTypes'] = [];
  for (const name of featureColumns) {
    const values = rows.map((r) => r[name] ?? '');
    const blanks = values.filter((v) => v.trim() === '').length;
    // A column of nothing but blanks and missing-value markers has nothing to learn from either.
    if (values.every((v) => v.trim() === '' || isMissingMarker(v.trim()))) {
      columnsLeftOut[name] = BLANK_IN_EVERY_ROW;
      continue;
    }
    const type = inferColumnType(values, forced.has(name));
    if (type === 'categorical') warnings.push(...categoricalWarnings(name, values, forced.has(name)));
    // Missing-value markers in a numeric or boolean column are blanks too (parseCell reads them as null).
    const missing = type === 'categorical' ? blanks : values.filter((v) => parseCell(type, v) === null).length;
    if (missing) blankCells[name] = missing;
    columnTypes.push({ name, type });
  }
  if (columnTypes.length === 0) {
    const left = Object.keys(columnsLeftOut);
    throw new Error(
      `no feature columns to train on: every column but the label is excluded${left.length ? ` or blank in every row (${left.join(', ')})` : ''}`,
    );
  }

  return {
    rows,
    labels: Uint8Array.from(labels),
    columnTypes,
    report: {
      rowsRead: table.rows.length,
      duplicatesDropped: deduped.duplicatesDropped,
      unlabeledDropped,
      blankCells,
      rowsKept: rows.length,
      positives,
      labelValues,
      ...(warnings.length ? { warnings } : {}),
      ...(Object.keys(columnsLeftOut).length ? { columnsLeftOut } : {}),
    },
  };
}

/** How many label values the cleaning report lists (the most frequent ones). */
const LABEL_VALUES_SHOWN = 20;

function countLabelValues(rows: Record<string, string>[], label: string): Record<string, number> {
  const counts = new Map<string, number>();
  for (const row of rows) {
    const v = (row[label] ?? '').trim();
    counts.set(v, (counts.get(v) ?? 0) + 1);
  }
  return Object.fromEntries([...counts].sort((a, b) => b[1] - a[1]).slice(0, LABEL_VALUES_SHOWN));
}

/**
 * Label values that suggest the file is not the binary label it was taken for: negatives spelled
 * more than one way once case and number formatting are ignored (`<=50K` and `>50K.`: only the
 * positive value and its spellings are positive), and missing-value markers, whose rows are left
 * out as unlabeled although they may be a class here.
 */
function labelWarnings(label: string, counts: Record<string, number>, isPositive: (cell: string) => boolean | null): string[] {
  const values = Object.entries(counts);
  const pick = (read: boolean | null) => values.filter(([v]) => v !== '' && isPositive(v) === read);
  const [positive, negative, unlabeled] = [pick(true), pick(false), pick(null)];
  const spelling = (v: string) => (NUMERIC_TEXT.test(v) ? String(Number(v)) : v.toLowerCase());
  const out: string[] = [];
  if (new Set(negative.map(([v]) => spelling(v))).size > 1) {
    const list = (xs: [string, number][]) => describeCounts(Object.fromEntries(xs));
    out.push(`label "${label}" has more than two values: positive ${list(positive)}; negative ${list(negative)}. Every value but the positive one counts as negative`);
  }
  if (unlabeled.length) {
    out.push(`label "${label}": rows whose label is a missing-value marker (${describeCounts(Object.fromEntries(unlabeled))}) are left out as unlabeled`);
  }
  return out;
}

/** `yes ×300, no ×2000, "" ×4`: the values as a reader can check them against the file. */
export function describeCounts(counts: Record<string, number>): string {
  return Object.entries(counts)
    .map(([v, n]) => `${v === '' ? '(blank)' : v} ×${n}`)
    .join(', ');
}

/** Numbers written with thousands separators or a decimal comma ("158,577", "93,4"). */
const COMMA_NUMBER = /^[-+]?(\d{1,3}(,\d{3})+(\.\d+)?|\d+,\d+)$/;
/** Below this many rows, "a different value in almost every row" says little. */
const ID_LIKE_MIN_ROWS = 50;

/**
 * Likely mistakes in a column read as categorical: numbers that only failed to parse because of
 * commas (their order and size are lost), and an id-like column (a different value in almost every
 * row: no category is seen often enough to learn from, so it only adds out-of-vocabulary warnings).
 */
function categoricalWarnings(name: string, values: string[], forced: boolean): string[] {
  const present = values.map((v) => v.trim()).filter((v) => v !== '' && !isMissingMarker(v));
  if (present.length === 0) return [];
  const out: string[] = [];
  const commaNumbers = present.filter((v) => COMMA_NUMBER.test(v));
  if (!forced && commaNumbers.length >= 0.9 * present.length) {
    out.push(
      `column "${name}" looks numeric, but its numbers contain commas (e.g. "${commaNumbers[0]}"), so it is read as categorical: write numbers without thousands separators and with a decimal point`,
    );
  }
  if (present.length >= ID_LIKE_MIN_ROWS && new Set(present).size >= 0.9 * present.length) {
    out.push(
      `column "${name}" has a different value in almost every row (an id?): as a category it cannot generalize; leave it out with --exclude ("exclude" in a retrain request)`,
    );
  }
  return out;
}
