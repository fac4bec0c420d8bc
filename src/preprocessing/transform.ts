import { featureWidth, inputWidth, type FeatureDef, type FeatureSpec, type FeatureValues } from './feature-spec.js';

/**
 * Row → model input. Used verbatim by training (matrix building) and serving (per request),
 * so the two can never drift apart.
 */
export class Encoder {
  readonly width: number;
  private readonly offsets: number[];
  private readonly vocabIndex: Map<string, number>[];

  constructor(readonly spec: FeatureSpec) {
    this.width = inputWidth(spec);
    this.offsets = [];
    let offset = 0;
    for (const f of spec.features) {
      this.offsets.push(offset);
      offset += featureWidth(f);
    }
    this.vocabIndex = spec.features.map((f) =>
      f.type === 'categorical' ? new Map(f.vocabulary.map((v, i) => [v, i])) : new Map(),
    );
  }

  /**
   * Writes the encoded row into `out` at `rowOffset`. Values must already be typed
   * (see coerceFeatures / parseCsvRow). Returns the names of categorical features whose value
   * fell into the out-of-vocabulary bucket.
   */
  encodeInto(values: FeatureValues, out: Float32Array, rowOffset: number): string[] | undefined {
    let oov: string[] | undefined;
    const feats = this.spec.features;
    for (let i = 0; i < feats.length; i++) {
      const f = feats[i];
      const at = rowOffset + this.offsets[i];
      const raw = values[f.name];
      if (f.type === 'numeric') {
        out[at] = encodeNumeric(f, raw == null ? f.impute : (raw as number));
      } else if (f.type === 'boolean') {
        out[at] = (raw == null ? f.impute : raw) ? 1 : 0;
      } else {
        const key = raw == null ? f.impute : String(raw);
        const idx = this.vocabIndex[i].get(key);
        const width = f.vocabulary.length + 1;
        for (let k = 0; k < width; k++) out[at + k] = 0;
        if (idx === undefined) {
          out[at + f.vocabulary.length] = 1;
          (oov ??= []).push(f.name);
        } else {
          out[at + idx] = 1;
        }
      }
    }
    return oov;
  }

  encodeRows(rows: FeatureValues[]): Float32Array {
    const out = new Float32Array(rows.length * this.width);
    rows.forEach((r, i) => this.encodeInto(r, out, i * this.width));
    return out;
  }

  /** Column offset of a feature in the input vector (for explanations). */
  offsetOf(index: number): number {
    return this.offsets[index];
  }
}

export function encodeNumeric(f: Extract<FeatureDef, { type: 'numeric' }>, value: number): number {
  let v = value;
  if (f.clip) v = Math.min(f.clip.max, Math.max(f.clip.min, v));
  if (f.transform === 'log1p') v = Math.log1p(Math.max(0, v));
  return (v - f.mean) / f.std;
}

/** The transform before standardization (used when fitting mean/std). */
export function numericPreStandardize(f: Pick<Extract<FeatureDef, { type: 'numeric' }>, 'clip' | 'transform'>, value: number): number {
  let v = value;
  if (f.clip) v = Math.min(f.clip.max, Math.max(f.clip.min, v));
  if (f.transform === 'log1p') v = Math.log1p(Math.max(0, v));
  return v;
}
