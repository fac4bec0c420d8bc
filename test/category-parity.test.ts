import { describe, expect, it } from 'vitest';
import { parseCsvText } from '../src/dataset/read-csv.js';
import { prepareDataset } from '../src/dataset/prepare.js';
import { fitFeatureSpec, typedRows } from '../src/preprocessing/fit.js';
import { booleanWord, categoryOf } from '../src/preprocessing/category.js';
import { coerceFeatures, csvCellValue } from '../src/preprocessing/coerce.js';
import { Encoder } from '../src/preprocessing/transform.js';
import type { FeatureSpec } from '../src/preprocessing/feature-spec.js';

/**
 * One reading of categories and flags for training cells, uploaded cells and request values
 * (categoryOf, booleanWord): a value the model learned is found again however a client sends it.
 */

describe('categoryOf', () => {
  it('reads decimal number text as the number a JSON client would send', () => {
    const cases: [string | number, string][] = [
      ['2', '2'],
      ['2.0', '2'],
      ['2.', '2'],
      ['+2', '2'],
      [' 2 ', '2'],
      [2, '2'],
      ['1.50', '1.5'],
      [1.5, '1.5'],
      ['-0', '0'],
      [-0, '0'],
      ['.5', '0.5'],
      ['0.5', '0.5'],
      ['1e3', '1000'],
      ['-3', '-3'],
    ];
    for (const [input, expected] of cases) expect(categoryOf(input), JSON.stringify(input)).toBe(expected);
  });

  it('keeps codes with leading zeros, long digit strings and other text as written (trimmed)', () => {
    const cases: [string, string][] = [
      ['02', '02'],
      ['007', '007'],
      ['-01', '-01'],
      ['00', '00'],
      ['1234567890123456789', '1234567890123456789'],
      ['0x10', '0x10'],
      ['Infinity', 'Infinity'],
      ['1,5', '1,5'],
      ['1e400', '1e400'],
      [' C ', 'C'],
      ['Nov', 'Nov'],
      ['', ''],
    ];
    for (const [input, expected] of cases) expect(categoryOf(input), JSON.stringify(input)).toBe(expected);
  });
});

describe('booleanWord', () => {
  it('is true/false in any case, trimmed, and nothing else', () => {
    for (const w of ['true', 'TRUE', 'True', 'tRUE', ' true ']) expect(booleanWord(w), w).toBe(true);
    for (const w of ['false', 'FALSE', 'False', 'fAlSe', 'false\t']) expect(booleanWord(w), w).toBe(false);
    for (const w of ['yes', 'no', '1', '0', 't', '', 'truee', 'tru']) expect(booleanWord(w), w).toBeUndefined();
  });
});

/** Messy export: code column with float and signed spellings, padded text, blanks, markers, any-case flags. */
const CSV = (() => {
  const codes = ['1', '2.0', '2', '02', '1.50', '3', '-0', '+4', '1.0', '3'];
  const cats = ['A', ' B ', '"C"', '', 'NA', 'A', 'B', ' C', 'A', 'D'];
  const flags = ['TRUE', 'tRUE', 'false', 'False', '', 'true', 'FALSE', 'True', 'fAlSe', 'TRUE'];
  const nums = ['1', '2.5', '', 'inf', '4', '-1', '1e2', '?', '3', '7'];
  const lines = ['num,code,cat,flag,y'];
  for (let i = 0; i < 300; i++) lines.push([nums[i % 10], codes[(i * 3) % 10], cats[(i * 7) % 10], flags[i % 10], i % 4 === 0 ? 'yes' : 'no'].join(','));
  // Distinct rows, so de-duplication leaves enough of every value.
  return lines.map((l, i) => (i === 0 ? `${l},id` : `${l},${i}`)).join('\n');
})();

function trained(): { spec: FeatureSpec; rows: Record<string, string>[]; encoder: Encoder } {
  const prepared = prepareDataset(parseCsvText(CSV), { label: 'y', positive: 'yes', categorical: ['code'], exclude: ['id'] });
  const spec = fitFeatureSpec(prepared.columnTypes, prepared.rows, { name: 'y', positive: 'yes' }, { minCategoryCount: 1 });
  return { spec, rows: prepared.rows, encoder: new Encoder(spec) };
}

/** How a client might send a CSV row: code and category text as written (untrimmed) or as numbers, flags as the cell's word. */
function asRequest(spec: FeatureSpec, row: Record<string, string>, codesAsNumbers: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of spec.features) {
    const cell = row[f.name] ?? '';
    const t = cell.trim();
    const missing = t === '' || (f.type !== 'categorical' && ['NA', '?', 'inf'].includes(t));
    if (missing) out[f.name] = null;
    else if (f.type === 'numeric') out[f.name] = Number(t);
    else if (f.type === 'boolean') out[f.name] = cell;
    else out[f.name] = codesAsNumbers && /^[-+]?(0|[1-9]\d*)(\.\d*)?$/.test(t) && !/^[-+]?0\d/.test(t) ? Number(t) : cell;
  }
  return JSON.parse(JSON.stringify(out)) as Record<string, unknown>;
}

describe('training cells and request values name the same categories', () => {
  it('infers the messy columns as their types, with "inf" and "?" as blanks, not as a reason to call "num" categorical', () => {
    const { spec } = trained();
    expect(spec.features.map((f) => [f.name, f.type, f.nullable])).toEqual([
      ['num', 'numeric', true],
      ['code', 'categorical', false],
      ['cat', 'categorical', true],
      ['flag', 'boolean', true],
    ]);
    const code = spec.features[1];
    expect(code.type === 'categorical' && [...code.vocabulary].sort()).toEqual(['0', '02', '1', '1.5', '2', '3', '4']);
    const cat = spec.features[2];
    expect(cat.type === 'categorical' && [...cat.vocabulary].sort()).toEqual(['A', 'B', 'C', 'D', 'NA']);
  });

  it('every training row, sent as text or as numbers, through either serving path, encodes to the training matrix', () => {
    const { spec, rows, encoder } = trained();
    const training = encoder.encodeRows(typedRows(spec, rows));
    for (const codesAsNumbers of [false, true]) {
      const generic = new Float32Array(training.length);
      const compiled = new Float32Array(training.length);
      rows.forEach((row, i) => {
        const request = asRequest(spec, row, codesAsNumbers);
        const { values, issues } = coerceFeatures(spec, request);
        expect(issues, JSON.stringify(request)).toEqual([]);
        expect(encoder.encodeInto(values, generic, i * encoder.width), JSON.stringify(request)).toBeUndefined(); // nothing out of vocabulary
        expect(encoder.readInto(request, compiled, i * encoder.width), JSON.stringify(request)).not.toBeNull();
      });
      expect(Array.from(generic)).toEqual(Array.from(training));
      expect(Array.from(compiled)).toEqual(Array.from(training));
    }
  });

  it('an uploaded CSV row (audience scoring) encodes to the training matrix too', () => {
    const { spec, rows, encoder } = trained();
    const training = encoder.encodeRows(typedRows(spec, rows));
    const uploaded = new Float32Array(training.length);
    rows.forEach((row, i) => {
      const features = Object.fromEntries(spec.features.map((f) => [f.name, csvCellValue(f.type, row[f.name])]));
      const { values, issues } = coerceFeatures(spec, features);
      expect(issues).toEqual([]);
      encoder.encodeInto(values, uploaded, i * encoder.width);
    });
    expect(Array.from(uploaded)).toEqual(Array.from(training));
  });

  it('a vocabulary stored with other spellings ("1.50", "-0", "+4", " C ") is reached by the values requests send', () => {
    const spec: FeatureSpec = {
      specVersion: 1,
      features: [{ name: 'code', type: 'categorical', nullable: false, impute: '+4', vocabulary: ['1.50', '-0', '+4', ' C ', '02'] }],
      label: { name: 'y', positive: 'yes' },
      threshold: 0.5,
    };
    const encoder = new Encoder(spec);
    const slot = (v: unknown) => {
      const out = new Float32Array(encoder.width);
      const read = encoder.readInto({ code: v }, out, 0);
      expect(read?.oov, String(v)).toBeUndefined();
      return out.indexOf(1);
    };
    expect([1.5, '1.5', 0, '0', 4, '4', 'C', '02'].map(slot)).toEqual([0, 0, 1, 1, 2, 2, 3, 4]);
    // 2 is not the code "02".
    const out = new Float32Array(encoder.width);
    expect(encoder.readInto({ code: 2 }, out, 0)?.oov).toEqual(['code']);
  });
});
