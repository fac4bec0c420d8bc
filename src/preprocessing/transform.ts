import { STANDARD_SCORE_LIMIT, featureWidth, inputWidth, type FeatureDef, type FeatureSpec, type FeatureValues } from './feature-spec.js';
import { compileRowReader, vocabularyIndex, type ReadRow, type RowReader } from './compiled-row.js';
import { categoryOf } from './category.js';

const NUMERIC = 0;
const BOOLEAN = 1;
const CATEGORICAL = 2;

/**
 * One feature's encoding, flattened into a single object shape for every feature type: the spec's
 * per-type objects would make every property read on the request path polymorphic.
 */
interface EncodeStep {
  kind: number;
  name: string;
  offset: number;
  /** Categorical: vocabulary size (the OOV slot is at offset + vocabSize). */
  vocabSize: number;
  vocab: Map<string, number>;
  mean: number;
  std: number;
  clip: boolean;
  clipMin: number;
  clipMax: number;
  log1p: boolean;
  imputeNumber: number;
  imputeKey: string;
}

/**
 * Row → model input. Used verbatim by training (matrix building) and serving (per request),
 * so the two can never drift apart.
 */
export class Encoder {
  readonly width: number;
  private readonly steps: EncodeStep[];
  private readonly reader: RowReader | undefined;

  constructor(readonly spec: FeatureSpec) {
    this.width = inputWidth(spec);
    this.reader = compileRowReader(spec);
    let offset = 0;
    this.steps = spec.features.map((f) => {
      const step: EncodeStep = {
        kind: f.type === 'numeric' ? NUMERIC : f.type === 'boolean' ? BOOLEAN : CATEGORICAL,
        name: f.name,
        offset,
        vocabSize: f.type === 'categorical' ? f.vocabulary.length : 0,
        vocab: f.type === 'categorical' ? vocabularyIndex(f.vocabulary) : new Map(),
        mean: f.type === 'numeric' ? f.mean : 0,
        std: f.type === 'numeric' ? f.std : 1,
        clip: f.type === 'numeric' && f.clip !== undefined,
        clipMin: f.type === 'numeric' && f.clip ? f.clip.min : 0,
        clipMax: f.type === 'numeric' && f.clip ? f.clip.max : 0,
        log1p: f.type === 'numeric' && f.transform === 'log1p',
        imputeNumber: f.type === 'numeric' ? f.impute : f.type === 'boolean' ? Number(f.impute) : 0,
        imputeKey: f.type === 'categorical' ? categoryOf(f.impute) : '',
      };
      offset += featureWidth(f);
      return step;
    });
  }

  /**
   * Writes the encoded row into `out` at `rowOffset`. Values must already be typed
   * (see coerceFeatures / parseCsvRow). Returns the names of categorical features whose value
   * fell into the out-of-vocabulary bucket.
   */
  encodeInto(values: FeatureValues, out: Float32Array, rowOffset: number): string[] | undefined {
    let oov: string[] | undefined;
    const steps = this.steps;
    for (let i = 0; i < steps.length; i++) {
      const s = steps[i];
      const at = rowOffset + s.offset;
      const raw = values[s.name];
      if (s.kind === NUMERIC) {
        let v = raw == null ? s.imputeNumber : (raw as number);
        // The compiled reader (compiled-row.ts) does the same arithmetic in the same order.
        if (s.clip) v = Math.min(s.clipMax, Math.max(s.clipMin, v));
        if (s.log1p) v = Math.log1p(Math.max(0, v));
        out[at] = Math.min(STANDARD_SCORE_LIMIT, Math.max(-STANDARD_SCORE_LIMIT, (v - s.mean) / s.std));
      } else if (s.kind === BOOLEAN) {
        out[at] = (raw == null ? s.imputeNumber : raw) ? 1 : 0;
      } else {
        const idx = s.vocab.get(raw == null ? s.imputeKey : String(raw));
        out.fill(0, at, at + s.vocabSize + 1);
        if (idx === undefined) {
          out[at + s.vocabSize] = 1;
          (oov ??= []).push(s.name);
        } else {
          out[at + idx] = 1;
        }
      }
    }
    return oov;
  }

  /**
   * The request path's shortcut: checks a JSON `features` object and encodes it in one pass.
   * Null when the object has any problem; coerceFeatures then names every one of them.
   */
  readInto(input: unknown, out: Float32Array, rowOffset: number): ReadRow | null {
    return this.reader ? this.reader(input, out, rowOffset) : null;
  }

  encodeRows(rows: FeatureValues[]): Float32Array {
    const out = new Float32Array(rows.length * this.width);
    rows.forEach((r, i) => this.encodeInto(r, out, i * this.width));
    return out;
  }

  /** Column offset of a feature in the input vector (for explanations). */
  offsetOf(index: number): number {
    return this.steps[index].offset;
  }
}


/** The transform before standardization (used when fitting mean/std). */
export function numericPreStandardize(f: Pick<Extract<FeatureDef, { type: 'numeric' }>, 'clip' | 'transform'>, value: number): number {
  let v = value;
  if (f.clip) v = Math.min(f.clip.max, Math.max(f.clip.min, v));
  if (f.transform === 'log1p') v = Math.log1p(Math.max(0, v));
  return v;
}
