import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';

export interface CsvTable {
  columns: string[];
  rows: Record<string, string>[];
  delimiter: string;
}

/** Picks the delimiter that splits the header line into the most fields (comma or semicolon). */
export function detectDelimiter(text: string): string {
  const header = text.slice(0, text.search(/\r?\n|$/));
  const count = (d: string) => header.split(d).length;
  return count(';') > count(',') ? ';' : ',';
}

export function parseCsvText(text: string): CsvTable {
  const delimiter = detectDelimiter(text);
  const records: string[][] = parse(text, {
    delimiter,
    bom: true,
    skip_empty_lines: true,
    trim: true,
    relax_column_count: false,
  });
  const [header, ...body] = records;
  if (!header || header.length < 2) throw new Error('CSV needs a header row with at least two columns');
  const columns = header.map((h) => h.trim());
  const rows = body.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i] ?? ''])));
  return { columns, rows, delimiter };
}

export function readCsvFile(path: string): CsvTable {
  return parseCsvText(readFileSync(path, 'utf8'));
}
