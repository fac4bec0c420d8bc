import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { readCsvFile } from '../src/dataset/read-csv.js';
import { prepareDataset } from '../src/dataset/prepare.js';
import { typedRows } from '../src/preprocessing/fit.js';
import { coerceFeatures } from '../src/preprocessing/coerce.js';
import { categoryOf } from '../src/preprocessing/category.js';
import { Encoder } from '../src/preprocessing/transform.js';
import { featureWidth, parseFeatureSpec, type FeatureDef, type FeatureSpec } from '../src/preprocessing/feature-spec.js';
import { shopperFeatureRows } from './helpers/shoppers.js';

/**
 * Training/serving skew check: the bundled version's spec applied to the real CSV the way training
 * builds its matrix, and to the same rows sent as JSON the way a client does, must give identical
 * model inputs, bit for bit.
 */

const SPEC_PATH = 'model-store/versions/shoppers-mlp-v1/feature-spec.json';
const CSV_PATH = 'data/online_shoppers_intention.csv';
const CATEGORICAL_CODES = ['OperatingSystems', 'Browser', 'Region', 'TrafficType'];

type Json = number | string | boolean | null;

let spec: FeatureSpec;
let encoder: Encoder;
let csvRows: Record<string, string>[];

/** A CSV row as a storefront would send it: numbers as numbers, code columns as numbers, blanks as null. */
function asClientJson(row: Record<string, string>): Record<string, Json> {
  const out: Record<string, Json> = {};
  for (const f of spec.features) {
    const cell = (row[f.name] ?? '').trim();
    if (cell === '') out[f.name] = null;
    else if (f.type === 'numeric') out[f.name] = Number(cell);
    else if (f.type === 'boolean') out[f.name] = cell.toUpperCase() === 'TRUE';
    else out[f.name] = /^-?\d+$/.test(cell) ? Number(cell) : cell;
  }
  // Through the wire format, so nothing survives that JSON cannot carry.
  return JSON.parse(JSON.stringify(out)) as Record<string, Json>;
}

function encodeServing(features: unknown): { vector: Float32Array; oov: string[] | undefined } {
  const { values, issues } = coerceFeatures(spec, features);
  expect(issues).toEqual([]);
  const vector = new Float32Array(encoder.width);
  const oov = encoder.encodeInto(values, vector, 0);
  return { vector, oov };
}

function expectSameMatrix(serving: Float32Array, training: Float32Array): void {
  let firstMismatch = -1;
  for (let i = 0; i < training.length && firstMismatch < 0; i++) if (!Object.is(training[i], serving[i])) firstMismatch = i;
  expect(firstMismatch, firstMismatch < 0 ? '' : `row ${Math.floor(firstMismatch / encoder.width)} column ${firstMismatch % encoder.width}`).toBe(-1);
  expect(Buffer.from(serving.buffer).equals(Buffer.from(training.buffer))).toBe(true);
}

function featureIndex(name: string): number {
  const i = spec.features.findIndex((f) => f.name === name);
  if (i < 0) throw new Error(`no feature ${name}`);
  return i;
}

beforeAll(() => {
  spec = parseFeatureSpec(JSON.parse(readFileSync(SPEC_PATH, 'utf8')));
  encoder = new Encoder(spec);
  // Exactly the rows training sees: duplicates and unlabeled rows dropped by prepareDataset.
  const prepared = prepareDataset(readCsvFile(CSV_PATH), { label: 'Revenue', positive: 'TRUE', categorical: CATEGORICAL_CODES });
  expect(prepared.columnTypes).toEqual(spec.features.map((f) => ({ name: f.name, type: f.type })));
  csvRows = prepared.rows;
});

describe('training matrix vs serving path on the real CSV', () => {
  it('uses enough rows, including blank cells and -1 durations', () => {
    expect(csvRows.length).toBeGreaterThanOrEqual(1000);
    const withBlanks = csvRows.filter((r) => spec.features.some((f) => (r[f.name] ?? '').trim() === ''));
    const withMinusOne = csvRows.filter((r) => ['Administrative_Duration', 'Informational_Duration', 'ProductRelated_Duration'].some((c) => r[c] === '-1'));
    expect(withBlanks.length).toBeGreaterThan(0);
    expect(withMinusOne.length).toBeGreaterThan(0);
    // Blank cells only occur in features the spec declares nullable, so the JSON nulls are valid.
    for (const r of withBlanks) for (const f of spec.features) if ((r[f.name] ?? '').trim() === '') expect(f.nullable, f.name).toBe(true);
  });

  it('encodes every row identically (exact Float32 equality)', () => {
    const training = encoder.encodeRows(typedRows(spec, csvRows));
    expect(training.length).toBe(csvRows.length * encoder.width);
    const serving = new Float32Array(csvRows.length * encoder.width);
    const wire = csvRows.map(asClientJson);
    expect(wire.some((row) => Object.values(row).includes(null))).toBe(true);
    wire.forEach((features, i) => {
      const { values, issues } = coerceFeatures(spec, features);
      expect(issues, `row ${i}`).toEqual([]);
      encoder.encodeInto(values, serving, i * encoder.width);
    });
    expectSameMatrix(serving, training);
  });

  it('the compiled reader (what /v1/predict runs first) encodes every row identically too', () => {
    const training = encoder.encodeRows(typedRows(spec, csvRows));
    const serving = new Float32Array(csvRows.length * encoder.width);
    csvRows.map(asClientJson).forEach((features, i) => {
      expect(encoder.readInto(features, serving, i * encoder.width), `row ${i}`).not.toBeNull();
    });
    expectSameMatrix(serving, training);
  });

  it('a null (blank) value is imputed, not encoded as zero', () => {
    const row = csvRows.find((r) => r.Administrative_Duration === '')!;
    expect(row).toBeDefined();
    const { vector } = encodeServing(asClientJson(row));
    const i = featureIndex('Administrative_Duration');
    const f = spec.features[i] as Extract<FeatureDef, { type: 'numeric' }>;
    const imputed = new Float32Array(1);
    imputed[0] = (Math.log1p(Math.min(f.clip!.max, Math.max(f.clip!.min, f.impute))) - f.mean) / f.std;
    expect(vector[encoder.offsetOf(i)]).toBe(imputed[0]);
  });

  it('the test helper rows (what the HTTP tests send) are valid for the spec', () => {
    const rows = shopperFeatureRows(200);
    expect(rows).toHaveLength(200);
    for (const r of rows) expect(coerceFeatures(spec, r).issues).toEqual([]);
  });
});

describe('encoder properties', () => {
  const categorical = () => spec.features.filter((f): f is Extract<FeatureDef, { type: 'categorical' }> => f.type === 'categorical');
  const numeric = () => spec.features.filter((f): f is Extract<FeatureDef, { type: 'numeric' }> => f.type === 'numeric');
  const baseRow = () => fc.integer({ min: 0, max: csvRows.length - 1 }).map((i) => asClientJson(csvRows[i]));

  it('a categorical number and its string form encode the same', () => {
    fc.assert(
      fc.property(
        baseRow(),
        fc.constantFrom(...categorical().map((f) => f.name)),
        fc.oneof(fc.integer({ min: -50, max: 50 }), fc.double({ noNaN: true, noDefaultInfinity: true })),
        (row, name, n) => {
          const asNumber = encodeServing({ ...row, [name]: n });
          const asString = encodeServing({ ...row, [name]: String(n) });
          expect(asNumber.vector).toEqual(asString.vector);
          expect(asNumber.oov).toEqual(asString.oov);
        },
      ),
      { numRuns: 300 },
    );
    // And the concrete case from the brief: 2 is a known OperatingSystems code.
    const row = asClientJson(csvRows[0]);
    const two = encodeServing({ ...row, OperatingSystems: 2 });
    expect(two.vector).toEqual(encodeServing({ ...row, OperatingSystems: '2' }).vector);
    expect(two.oov ?? []).not.toContain('OperatingSystems');
  });

  it('boolean true / "TRUE" / "true" / "True" encode the same (and likewise false)', () => {
    const i = featureIndex('Weekend');
    fc.assert(
      fc.property(baseRow(), fc.constantFrom<Json>(true, 'TRUE', 'true', 'True'), fc.constantFrom<Json>(false, 'FALSE', 'false', 'False'), (row, t, f) => {
        const vt = encodeServing({ ...row, Weekend: t }).vector;
        const vf = encodeServing({ ...row, Weekend: f }).vector;
        expect(vt).toEqual(encodeServing({ ...row, Weekend: true }).vector);
        expect(vf).toEqual(encodeServing({ ...row, Weekend: false }).vector);
        expect(vt[encoder.offsetOf(i)]).toBe(1);
        expect(vf[encoder.offsetOf(i)]).toBe(0);
      }),
      { numRuns: 200 },
    );
  });

  it('an unseen category sets only the out-of-vocabulary slot and is named', () => {
    fc.assert(
      fc.property(baseRow(), fc.constantFrom(...categorical().map((f) => f.name)), fc.string({ maxLength: 20 }), (row, name, value) => {
        const i = featureIndex(name);
        const f = spec.features[i] as Extract<FeatureDef, { type: 'categorical' }>;
        // Unseen as a category: "1 " or "2.0" name a known code (categoryOf).
        fc.pre(!f.vocabulary.map(categoryOf).includes(categoryOf(value)));
        const { vector, oov } = encodeServing({ ...row, [name]: value });
        const block = Array.from(vector.subarray(encoder.offsetOf(i), encoder.offsetOf(i) + featureWidth(f)));
        expect(block.at(-1)).toBe(1);
        expect(block.slice(0, -1).every((v) => v === 0)).toBe(true);
        expect(oov).toContain(name);
      }),
      { numRuns: 300 },
    );
  });

  it('a known category sets exactly its own slot and is not reported', () => {
    for (const f of categorical()) {
      const i = featureIndex(f.name);
      f.vocabulary.forEach((v, k) => {
        const { vector, oov } = encodeServing({ ...asClientJson(csvRows[0]), [f.name]: v });
        const block = Array.from(vector.subarray(encoder.offsetOf(i), encoder.offsetOf(i) + featureWidth(f)));
        expect(block).toEqual(block.map((_, j) => (j === k ? 1 : 0)));
        expect(oov ?? []).not.toContain(f.name);
      });
    }
  });

  it('encoded values are finite for any finite numeric input (and null where nullable)', () => {
    const numericValues = fc.record(
      Object.fromEntries(
        numeric().map((f) => {
          // The API accepts numbers within float32 range (beyond it a value would encode to Infinity).
          const finite = fc.double({ noNaN: true, min: -3.4e38, max: 3.4e38 });
          return [f.name, f.nullable ? fc.option(finite, { nil: null }) : finite];
        }),
      ) as Record<string, fc.Arbitrary<number | null>>,
    );
    fc.assert(
      fc.property(baseRow(), numericValues, (row, values) => {
        const { vector } = encodeServing({ ...row, ...values });
        for (let k = 0; k < vector.length; k++) expect(Number.isFinite(vector[k]), `column ${k}`).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});
