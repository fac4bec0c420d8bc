import { describe, expect, it, beforeAll } from 'vitest';
import { initBackend } from '../src/inference/backend.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectDelimiter, parseCsvText, readCsvFileStreaming } from '../src/dataset/read-csv.js';
import { trainFromTable } from '../src/training/train.js';
import { stratifiedSplit } from '../src/training/split.js';
import { Encoder } from '../src/preprocessing/transform.js';
import { coerceFeatures, csvCellValue, parseCell } from '../src/preprocessing/coerce.js';
import { labelMatcher } from '../src/dataset/infer-types.js';
import { prepareDataset } from '../src/dataset/prepare.js';
import { parseFeatureSpec } from '../src/preprocessing/feature-spec.js';
import { fitPersonas } from '../src/segments/personas.js';

/** A small synthetic table: y depends on x; `code` is an integer code written as a float. */
function csv(rows: number, positives: number, opts: { codeAsFloat?: boolean; big?: number } = {}): string {
  const lines = ['x,code,y'];
  for (let i = 0; i < rows; i++) {
    const y = i < positives ? 'TRUE' : 'FALSE';
    const x = opts.big !== undefined && i === 0 ? opts.big : (i < positives ? 5 : 0) + ((i * 37) % 11) / 10;
    const code = (i % 3) + 1;
    lines.push(`${x},${opts.codeAsFloat ? `${code}.0` : code},${y}`);
  }
  return lines.join('\n');
}

describe('CSV reading', () => {
  it('counts separators outside quotes only when choosing the delimiter', () => {
    expect(detectDelimiter('"Name, first";"Name, last";"y"\n1;2;3')).toBe(';');
    expect(detectDelimiter('"a;b;c;d",e,y\n1,2,3')).toBe(',');
    expect(detectDelimiter('a;b,c;d\n')).toBe(';');
    const t = parseCsvText('"Name, first";"Name, last";"y"\n"A, B";"C";TRUE\n');
    expect(t.columns).toEqual(['Name, first', 'Name, last', 'y']);
    expect(t.rows[0]['Name, first']).toBe('A, B');
  });

  it('reads tab-separated files too, and skips records whose every field is blank (a spreadsheet\'s ",,,," rows)', () => {
    expect(detectDelimiter('a\tb,c\ty\n')).toBe('\t');
    expect(detectDelimiter('name, first\tname, last\ty\n')).toBe('\t'); // as many commas as tabs
    expect(detectDelimiter('a;b,c\n')).toBe(','); // comma before semicolon on a tie, as before
    const tsv = parseCsvText('a\tb c\ty\n1\t\tTRUE\n 2 \t x y \tFALSE\n\t\t\n"q\tr"\t3\tTRUE\n');
    expect(tsv.columns).toEqual(['a', 'b c', 'y']);
    expect(tsv.rows).toEqual([
      { a: '1', 'b c': '', y: 'TRUE' },
      { a: '2', 'b c': 'x y', y: 'FALSE' },
      { a: 'q\tr', 'b c': '3', y: 'TRUE' },
    ]);
    expect(parseCsvText('a,b,y\n1,,TRUE\n,,\n , , \n2,3,FALSE\n').rows).toHaveLength(2);
    expect(() => parseCsvText('a|b|y\n1|2|TRUE\n')).toThrow('CSV needs a header row with at least two columns, separated by commas, semicolons or tabs');
  });

  it('refuses a header that repeats a column name', () => {
    expect(() => parseCsvText('a,a,y\n1,2,TRUE\n')).toThrow(/repeats column name\(s\) "a"/);
  });

  it('the streaming reader (dataset uploads) builds the same table as the whole-text one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'csv-stream-'));
    try {
      const texts = [
        readFileSync('data/online_shoppers_intention.csv', 'utf8'),
        '\uFEFF"Name, first";"Name, last";"y"\r\n"A, B";"C";TRUE\r\n\r\n',
        'a\tb\ty\n1\t\tTRUE\n\t\t\n2\t3\tFALSE\n',
      ];
      for (const [i, text] of texts.entries()) {
        const path = join(dir, `${i}.csv`);
        writeFileSync(path, text);
        expect(await readCsvFileStreaming(path)).toEqual(parseCsvText(text));
      }
      writeFileSync(join(dir, 'dup.csv'), 'a,a,y\n1,2,TRUE\n');
      await expect(readCsvFileStreaming(join(dir, 'dup.csv'))).rejects.toThrow(/repeats column name/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('labels', () => {
  it('a numeric positive value matches labels written as floats, and nothing else', () => {
    const one = labelMatcher('1');
    expect(['1', '1.0', ' 1.00 ', '1e0'].map(one)).toEqual([true, true, true, true]);
    expect(['0', '0.0', '10', 'no', ''].map(one)).toEqual([false, false, false, false, null]);
    const word = labelMatcher('TRUE');
    expect(['true', 'yes', '1.0', 'no'].map(word)).toEqual([true, true, false, false]);
  });

  it('a missing-value marker in the label column is no label (the row is dropped and counted), unless it is the positive value', () => {
    const word = labelMatcher('yes');
    expect(['NA', ' n/a ', '?', 'null', '#N/A', 'no'].map(word)).toEqual([null, null, null, null, null, false]);
    expect(labelMatcher('?')('?')).toBe(true);
    // "+"/"-" labels (credit-approval style): "-" is the negative class, not a missing label.
    expect(['+', '-', 'NA'].map(labelMatcher('+'))).toEqual([true, false, null]);
    const lines = ['x,y', ...Array.from({ length: 12 }, (_, i) => `${i},${['yes', 'no', 'no', 'NA'][i % 4]}`)];
    const prepared = prepareDataset(parseCsvText(lines.join('\n')), { label: 'y', positive: 'yes' });
    expect(prepared.report.unlabeledDropped).toBe(3);
    expect(prepared.report.rowsKept).toBe(9);
    expect(prepared.report.positives).toBe(3);
    expect(Array.from(prepared.labels)).toEqual([1, 0, 0, 1, 0, 0, 1, 0, 0]);
  });
});

describe('training on awkward data', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });
  const train = (text: string, categorical: string[] = []) =>
    trainFromTable(parseCsvText(text), { label: 'y', positive: 'TRUE', categorical, seed: 3, hyperparameters: { epochs: 3, patience: 2 } });

  it('every split gets both classes when a class is rare; fewer than 3 rows of a class is a clear error', async () => {
    const split = stratifiedSplit(Uint8Array.from({ length: 200 }, (_, i) => (i < 3 ? 1 : 0)), { validation: 0.15, test: 0.15 }, 1);
    for (const k of ['train', 'validation', 'test'] as const) expect(split[k].filter((i) => i < 3)).toHaveLength(1);
    // A split not asked for stays empty (the hold-out evaluation trains on everything but its test rows).
    const noValidation = stratifiedSplit(Uint8Array.from({ length: 100 }, (_, i) => (i < 10 ? 1 : 0)), { validation: 0, test: 0.2 }, 1);
    expect(noValidation.validation).toEqual([]);
    expect(noValidation.train).toHaveLength(80);
    const result = await train(csv(200, 3));
    expect(result.metrics.validation.positives).toBe(1);
    expect(Number.isFinite(result.metrics.test.auc)).toBe(true);
    result.model.dispose();
    await expect(train(csv(200, 2))).rejects.toThrow(/only 2 positive row\(s\): training needs at least 3 of each class/);
  });

  it('refuses a "__proto__" column (no request could send it), pointing at --exclude; a spec naming it does not parse', async () => {
    const text = csv(100, 30).replace('x,code,y', 'x,__proto__,y');
    await expect(train(text)).rejects.toThrow(/column "__proto__" cannot be a feature.*--exclude/);
    const result = await trainFromTable(parseCsvText(text), { label: 'y', positive: 'TRUE', exclude: ['__proto__'], seed: 3, hyperparameters: { epochs: 2, patience: 1 } });
    expect(result.spec.features.map((f) => f.name)).toEqual(['x']);
    result.model.dispose();
    const spec = JSON.parse(JSON.stringify(result.spec).replace('"name":"x"', '"name":"__proto__"'));
    expect(() => parseFeatureSpec(spec)).toThrow(/cannot be a feature name/);
  });

  it('a header without rows, or a column with values but no name, is a clear error; a nameless blank column (a trailing separator) is left out', async () => {
    await expect(train('x,code,y\n')).rejects.toThrow('CSV has a header but no data rows');
    const indexed = csv(100, 30).split('\n').map((line, i) => `${i === 0 ? '' : i - 1},${line}`).join('\n'); // pandas to_csv with its index
    await expect(train(indexed)).rejects.toThrow(/CSV column 1 has no name in the header but holds values.*index=False/);
    const trailing = csv(100, 30).split('\n').map((line) => `${line},`).join('\n');
    const result = await train(trailing);
    expect(result.spec.features.map((f) => f.name)).toEqual(['x', 'code']);
    expect(result.cleaning.columnsLeftOut).toEqual({ '': 'blank in every row' });
    result.model.dispose();
  });

  it('an exclusion or a categorical override naming no column is an error, not a silent no-op', async () => {
    const text = csv(100, 30);
    await expect(trainFromTable(parseCsvText(text), { label: 'y', positive: 'TRUE', exclude: ['cod'], seed: 3 })).rejects.toThrow('--exclude names unknown columns: cod');
    await expect(train(text, ['Code'])).rejects.toThrow('--categorical names unknown columns: Code');
  });

  it('personas on a small training split: fewer of them than rows, and a clear error when more are asked for', async () => {
    const result = await train(csv(10, 5));
    const x = result.trainMatrix;
    expect(x.rows).toBeLessThanOrEqual(6);
    const personas = await fitPersonas(result.spec, x.data, x.rows, { seed: 1 });
    expect(personas.k).toBeLessThan(x.rows);
    expect(personas.personas.reduce((n, p) => n + p.size, 0)).toBe(x.rows);
    await expect(fitPersonas(result.spec, x.data, x.rows, { seed: 1, k: x.rows })).rejects.toThrow(`${x.rows} personas need more than ${x.rows} training rows (there are ${x.rows}): ask for fewer`);
    result.model.dispose();
  });

  it('refuses numeric values a 32-bit model cannot hold, naming the column', async () => {
    await expect(train(csv(100, 30, { big: 1e308 }))).rejects.toThrow(/numeric column "x" has a value beyond ±3.4e38/);
  });

  it('integer codes exported as floats ("1.0") are the categories a request names with 1', async () => {
    const result = await train(csv(120, 40, { codeAsFloat: true }), ['code']);
    const code = result.spec.features.find((f) => f.name === 'code')!;
    expect(code.type === 'categorical' && [...code.vocabulary].sort()).toEqual(['1', '2', '3']);
    const { values, issues } = coerceFeatures(result.spec, { x: 1, code: 2 });
    expect(issues).toEqual([]);
    const out = new Float32Array(new Encoder(result.spec).width);
    expect(new Encoder(result.spec).encodeInto(values, out, 0)).toBeUndefined(); // no out-of-vocabulary feature
    // Audience uploads read such cells the same way as training did.
    for (const cell of ['1.0', ' 2.00 ', '3']) expect(csvCellValue('categorical', cell)).toBe(parseCell('categorical', cell));
    expect(csvCellValue('categorical', '02')).toBe('02'); // a leading zero is part of a code, not a float
    result.model.dispose();
  });

  it('missing-value markers ("NA", "?", "null"…) in numeric and boolean columns are blanks; in a categorical column they are categories', async () => {
    const markers = ['NA', '?', 'null', 'N/A', 'nan', 'None', '-', '#N/A'];
    const lines = ['x,flag,region,n,gone,y'];
    for (let i = 0; i < 160; i++) {
      const positive = i < 50;
      const x = i % 10 === 0 ? markers[(i / 10) % markers.length] : String((positive ? 5 : 0) + ((i * 37) % 11) / 10);
      const flag = i % 13 === 0 ? 'NA' : i % 2 === 0 ? 'TRUE' : 'FALSE';
      const region = i % 4 === 0 ? 'NA' : i % 4 === 1 ? 'EU' : 'APAC';
      const gone = ['NA', '?', ''][i % 3]; // nothing but blanks and markers: left out
      lines.push(`${x},${flag},${region},${i},${gone},${positive ? 'TRUE' : 'FALSE'}`); // n keeps every row distinct
    }
    const text = lines.join('\n');
    const prepared = prepareDataset(parseCsvText(text), { label: 'y', positive: 'TRUE' });
    expect(prepared.columnTypes).toEqual([
      { name: 'x', type: 'numeric' },
      { name: 'flag', type: 'boolean' },
      { name: 'region', type: 'categorical' },
      { name: 'n', type: 'numeric' },
    ]);
    expect(prepared.report.blankCells).toEqual({ x: 16, flag: 13 });
    expect(prepared.report.columnsLeftOut).toEqual({ gone: 'blank in every row' });
    const result = await train(text);
    const byName = Object.fromEntries(result.spec.features.map((f) => [f.name, f]));
    expect(byName.x).toMatchObject({ type: 'numeric', nullable: true });
    expect(byName.flag).toMatchObject({ type: 'boolean', nullable: true });
    expect(byName.region.type === 'categorical' && [...byName.region.vocabulary].sort()).toEqual(['APAC', 'EU', 'NA']);
    // Uploaded rows are read the same way: a marker is null for numbers and flags, text for categories.
    for (const m of markers) {
      expect(parseCell('numeric', m)).toBeNull();
      expect(csvCellValue('numeric', m)).toBeNull();
      expect(parseCell('boolean', m)).toBeNull();
      expect(csvCellValue('boolean', m)).toBeNull();
    }
    expect(csvCellValue('categorical', 'NA')).toBe('NA');
    expect(csvCellValue('numeric', 'abc')).toBe('abc'); // not a marker: still refused as a number by coerceFeatures
    result.model.dispose();
  });

  it('a column whose only blank falls outside the training split is still nullable: serving accepts the row training imputed', async () => {
    const seed = 3;
    const n = 120;
    const labels = Uint8Array.from({ length: n }, (_, i) => (i < 40 ? 1 : 0));
    // The same split trainFromTable makes (no duplicates or unlabeled rows, so row i is label i).
    const blankRow = stratifiedSplit(labels, { validation: 0.15, test: 0.15 }, seed).test[0];
    const lines = ['x,z,y'];
    for (let i = 0; i < n; i++) lines.push(`${i === blankRow ? '' : (labels[i] ? 5 : 0) + (i % 7) / 10},${i % 5},${labels[i] ? 'TRUE' : 'FALSE'}`);
    const result = await trainFromTable(parseCsvText(lines.join('\n')), { label: 'y', positive: 'TRUE', seed, hyperparameters: { epochs: 1 } });
    expect(result.cleaning.blankCells).toEqual({ x: 1 });
    const x = result.spec.features.find((f) => f.name === 'x')!;
    expect(x.nullable).toBe(true);
    expect(coerceFeatures(result.spec, { x: null, z: 1 }).issues).toEqual([]);
    expect(result.spec.features.find((f) => f.name === 'z')!.nullable).toBe(false); // no blank anywhere
    result.model.dispose();
  });
});

describe('the cleaning report says what the label held and what looks wrong', () => {
  /** 120 rows: an id, a numeric x, income written with thousands separators, a label. */
  function table(label: (i: number) => string): string {
    const lines = ['id,x,income,y'];
    for (let i = 0; i < 120; i++) lines.push(`c${i},${i},"${1 + (i % 4)},${100 + (i % 3) * 100}",${label(i)}`);
    return lines.join('\n');
  }

  it('counts rows per label value, and names the values when --positive matches none of them', () => {
    const prepared = prepareDataset(parseCsvText(table((i) => (i % 3 ? 'no' : 'yes'))), { label: 'y', positive: 'yes', exclude: ['id'] });
    expect(prepared.report.labelValues).toEqual({ no: 80, yes: 40 });
    expect(() => prepareDataset(parseCsvText(table((i) => (i % 3 ? '0' : '1'))), { label: 'y', positive: '2' })).toThrow(
      'label "y" has a single class with positive "2" (values: 0 ×80, 1 ×40); need both classes',
    );
  });

  it('warns about a label with more than two values, numbers written with commas and an id-like column', () => {
    const prepared = prepareDataset(parseCsvText(table((i) => ['>50K', '<=50K', '<=50K', '>50K.', ''][i % 5])), { label: 'y', positive: '>50K' });
    expect(Object.entries(prepared.report.labelValues)).toEqual([['<=50K', 48], ['>50K', 24], ['>50K.', 24], ['', 24]]); // most frequent first
    expect(prepared.report.warnings).toEqual([
      'label "y" has more than two values: positive >50K ×24; negative <=50K ×48, >50K. ×24. Every value but the positive one counts as negative',
      'column "id" has a different value in almost every row (an id?): as a category it cannot generalize; leave it out with --exclude ("exclude" in a retrain request)',
      'column "income" looks numeric, but its numbers contain commas (e.g. "1,100"), so it is read as categorical: write numbers without thousands separators and with a decimal point',
    ]);
    // Spellings of the same two classes are no reason to warn; a marker read as no label is.
    for (const [values, positive] of [[['yes', 'no', 'Yes', 'NO'], 'yes'], [['1', '0', '1.0', '0.0'], '1'], [['TRUE', 'False', 'false'], 'TRUE']] as const) {
      const p = prepareDataset(parseCsvText(table((i) => values[i % values.length])), { label: 'y', positive, exclude: ['id', 'income'] });
      expect(p.report.warnings, values.join('/')).toBeUndefined();
    }
    const withNa = prepareDataset(parseCsvText(table((i) => ['EU', 'NA', 'ASIA'][i % 3])), { label: 'y', positive: 'EU', exclude: ['id', 'income'] });
    expect(withNa.report.warnings).toEqual(['label "y": rows whose label is a missing-value marker (NA ×40) are left out as unlabeled']);
    expect(withNa.report.unlabeledDropped).toBe(40);
    // A clean two-class label, ids excluded, plain numbers: nothing to warn about.
    const clean = prepareDataset(parseCsvText(table((i) => (i % 2 ? 'TRUE' : 'FALSE')).replace(/"(\d),(\d{3})"/g, '$1$2')), { label: 'y', positive: 'TRUE', exclude: ['id'] });
    expect(clean.columnTypes.find((c) => c.name === 'income')?.type).toBe('numeric');
    expect(clean.report.warnings).toBeUndefined();
  });
});

describe('duplicate rows are judged on the columns training uses', () => {
  /** Each (x, code, y) row twice, under two different ids; plus one row whose copy differs in its label only. */
  function withIds(): string {
    const lines = ['id,x,code,y'];
    let id = 0;
    for (let i = 0; i < 60; i++) {
      const row = `${(i * 0.37).toFixed(2)},${(i % 3) + 1},${i < 20 ? 'TRUE' : 'FALSE'}`;
      lines.push(`u${id++},${row}`, `u${id++},${row}`);
    }
    lines.push(`u${id++},99,1,TRUE`, `u${id++},99,1,FALSE`);
    return lines.join('\n');
  }

  it('rows that differ only in an excluded column are duplicates; a different label is not', () => {
    const table = parseCsvText(withIds());
    const prepared = prepareDataset(table, { label: 'y', positive: 'TRUE', exclude: ['id'] });
    expect(prepared.report.duplicatesDropped).toBe(60);
    expect(prepared.report.rowsKept).toBe(62);
    // The first of each pair is kept.
    expect(prepared.rows.slice(0, 2).map((r) => r.id)).toEqual(['u0', 'u2']);
    const features = prepared.rows.map((r) => `${r.x},${r.code},${r.y}`);
    expect(new Set(features).size).toBe(features.length);
    // An id that is a feature (not excluded) makes every row distinct.
    expect(prepareDataset(table, { label: 'y', positive: 'TRUE' }).report.duplicatesDropped).toBe(0);
  });

  it('so the same example cannot land in both the training and the test split', async () => {
    await initBackend('wasm');
    const result = await trainFromTable(parseCsvText(withIds()), { label: 'y', positive: 'TRUE', exclude: ['id'], seed: 3, hyperparameters: { epochs: 1, patience: 1 } });
    result.model.dispose();
    expect(result.cleaning.duplicatesDropped).toBe(60);
    expect(result.split.train + result.split.validation + result.split.test).toBe(62);
    // Only first copies (even ids) remain to be split, and the pair that differs in its label.
    for (const r of result.testSet.rows) expect(Number(r.id.slice(1)) % 2 === 0 || r.id === 'u121', r.id).toBe(true);
  });
});

describe('stratifiedSplit with large fractions', () => {
  it('rounding each split up to one row still leaves every class a training row', () => {
    const split = stratifiedSplit([1, 1, 1, 0, 0, 0, 0], { validation: 0.5, test: 0.4 }, 1);
    const labels = [1, 1, 1, 0, 0, 0, 0];
    expect(split.train.map((i) => labels[i]).sort()).toEqual([0, 1]);
    expect([...split.train, ...split.validation, ...split.test].sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
  });

  it('fractions that leave nothing for training are an error', () => {
    expect(() => stratifiedSplit([1, 1, 1, 0, 0, 0], { validation: 0.5, test: 0.5 }, 1)).toThrow(/leave rows for training/);
  });
});
