import { closeSync, createReadStream, openSync, readFileSync, readSync } from 'node:fs';
import { parse } from 'csv-parse/sync';
import { parse as parseStream } from 'csv-parse';

export interface CsvTable {
  columns: string[];
  rows: Record<string, string>[];
  delimiter: string;
}

/**
 * Picks the delimiter (comma, semicolon or tab) that splits the header line into the most fields,
 * counting only outside double quotes: `"Name, first";"Name, last"` is semicolon-separated.
 */
export function detectDelimiter(text: string): string {
  // In tie order: a tab is rarely part of a column name, a comma often is.
  const counts = { '\t': 0, ',': 0, ';': 0 };
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') quoted = !quoted; // an escaped quote ("") toggles twice
    else if (!quoted && (c === '\n' || c === '\r')) break;
    else if (!quoted && c in counts) counts[c as keyof typeof counts]++;
  }
  return (Object.keys(counts) as (keyof typeof counts)[]).reduce((best, d) => (counts[d] > counts[best] ? d : best));
}

// Records whose every field is blank (a spreadsheet's ",,,,," rows) are skipped like empty lines.
const parseOptions = (delimiter: string) => ({ delimiter, bom: true, skip_empty_lines: true, skip_records_with_empty_values: true, trim: true, relax_column_count: false });

export function parseCsvText(text: string): CsvTable {
  const delimiter = detectDelimiter(text);
  return tableOf(parse(text, parseOptions(delimiter)) as string[][], delimiter);
}

/**
 * The same table, parsed as a stream in chunks: a large upload then shares the event loop with
 * requests instead of holding it for the whole parse.
 */
export async function readCsvFileStreaming(path: string): Promise<CsvTable> {
  const delimiter = detectDelimiter(readHead(path, 64 * 1024));
  const records: string[][] = [];
  for await (const record of createReadStream(path).pipe(parseStream(parseOptions(delimiter)))) records.push(record as string[]);
  return tableOf(records, delimiter);
}

/** The first `bytes` of a file as text, without reading the rest. */
export function readHead(path: string, bytes: number): string {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    return buf.toString('utf8', 0, readSync(fd, buf, 0, bytes, 0));
  } finally {
    closeSync(fd);
  }
}

function tableOf(records: string[][], delimiter: string): CsvTable {
  const [header, ...body] = records;
  if (!header || header.length < 2) throw new Error('CSV needs a header row with at least two columns, separated by commas, semicolons or tabs');
  const columns = header.map((h) => h.trim());
  const repeated = repeatedNames(columns);
  if (repeated.length) throw new Error(`CSV header repeats column name(s) ${repeated.map((c) => JSON.stringify(c)).join(', ')}: every column needs its own name`);
  const rows = body.map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i] ?? ''])));
  return { columns, rows, delimiter };
}

export function readCsvFile(path: string): CsvTable {
  return parseCsvText(readFileSync(path, 'utf8'));
}

/** Names that occur more than once, each listed once, in order of their second occurrence. */
export function repeatedNames(names: readonly string[]): string[] {
  const seen = new Set<string>();
  return [...new Set(names.filter((c) => seen.size === seen.add(c).size))];
}
