import { inferColumnType, labelMatcher } from './infer-types.js';
import type { CsvTable } from './read-csv.js';
import type { FeatureDef } from '../preprocessing/feature-spec.js';

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
}

export interface PreparedDataset {
  rows: Record<string, string>[];
  labels: Uint8Array;
  columnTypes: { name: string; type: FeatureDef['type'] }[];
  report: CleaningReport;
}

/** Drops exact duplicate and unlabeled rows, counts blank cells, infers column types. */
export function prepareDataset(table: CsvTable, opts: PrepareOptions): PreparedDataset {
  if (!table.columns.includes(opts.label)) {
    throw new Error(`label column "${opts.label}" not in CSV (columns: ${table.columns.join(', ')})`);
  }
  const unknownCats = (opts.categorical ?? []).filter((c) => !table.columns.includes(c));
  if (unknownCats.length) throw new Error(`--categorical names unknown columns: ${unknownCats.join(', ')}`);

  const isPositive = labelMatcher(opts.positive);
  const seen = new Set<string>();
  const rows: Record<string, string>[] = [];
  const labels: number[] = [];
  let duplicatesDropped = 0;
  let unlabeledDropped = 0;
  for (const row of table.rows) {
    const key = table.columns.map((c) => row[c]).join('\u0001');
    if (seen.has(key)) {
      duplicatesDropped++;
      continue;
    }
    seen.add(key);
    const y = isPositive(row[opts.label] ?? '');
    if (y === null) {
      unlabeledDropped++;
      continue;
    }
    rows.push(row);
    labels.push(y ? 1 : 0);
  }
  const positives = labels.reduce((a, b) => a + b, 0);
  if (positives === 0 || positives === labels.length) {
    throw new Error(`label "${opts.label}" has a single class with positive "${opts.positive}"; need both classes`);
  }

  const featureColumns = table.columns.filter((c) => c !== opts.label && !(opts.exclude ?? []).includes(c));
  const forced = new Set(opts.categorical ?? []);
  const blankCells: Record<string, number> = {};
  const columnTypes = featureColumns.map((name) => {
    const values = rows.map((r) => r[name] ?? '');
    const blanks = values.filter((v) => v.trim() === '').length;
    if (blanks) blankCells[name] = blanks;
    return { name, type: inferColumnType(values, forced.has(name)) };
  });

  return {
    rows,
    labels: Uint8Array.from(labels),
    columnTypes,
    report: {
      rowsRead: table.rows.length,
      duplicatesDropped,
      unlabeledDropped,
      blankCells,
      rowsKept: rows.length,
      positives,
    },
  };
}
