import { readCsvFile } from '../../src/dataset/read-csv.js';

/** Real shoppers rows as JSON feature objects (the way a storefront would send them). */
export function shopperFeatureRows(limit = Infinity): Record<string, number | string | boolean>[] {
  const table = readCsvFile('data/online_shoppers_intention.csv');
  const categorical = new Set(['Month', 'OperatingSystems', 'Browser', 'Region', 'TrafficType', 'VisitorType']);
  return table.rows
    .filter((r) => r.Administrative !== '')
    .slice(0, limit)
    .map((r) => {
      const out: Record<string, number | string | boolean> = {};
      for (const c of table.columns) {
        if (c === 'Revenue') continue;
        if (c === 'Weekend') out[c] = r[c] === 'TRUE';
        else if (categorical.has(c)) out[c] = c === 'Month' || c === 'VisitorType' ? r[c] : Number(r[c]);
        else out[c] = Number(r[c]);
      }
      return out;
    });
}
