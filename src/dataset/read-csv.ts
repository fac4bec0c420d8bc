import { readFileSync } from 'node:fs';
import { parse } from 'csv-parse/sync';

export interface CsvTable {
  columns: string[];
  rows: Record<string, string>[];
  delimiter: string;
}

/**
 * Picks the delimiter (comma or semicolon) that splits the header line into the most fields,
 * counting only outside double quotes: `"Name, first";"Name, last"` is semicolon-separated.
 */
export function detectDelimiter(text: string): string {
  let commas = 0;
  let semicolons = 0;
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted; // an escaped quote ("") toggles twice
    else if (!quoted && (c === '\n' || c === '\r')) break;
    else if (!quoted && c === ',') commas++;
    else if (!quoted && c === ';') semicolons++;
  }
  return semicolons > commas ? ';' : ',';
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
  const seen = new Set<string>();
  const repeated = columns.filter((c) => seen.size === seen.add(c).size);
  if (repeated.length) throw new Error(`CSV header repeats column name(s) ${[...new Set(repeated)].map((c) => JSON.stringify(c)).join(', ')}: every column needs its own name`);
  const rows = body.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i] ?? ''])));
  return { columns, rows, delimiter };
}

export function readCsvFile(path: string): CsvTable {
  return parseCsvText(readFileSync(path, 'utf8'));
}
