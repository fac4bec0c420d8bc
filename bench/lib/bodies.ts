import { shopperFeatureRows } from '../../test/helpers/shoppers.js';

const SENTINEL = 987654321.125;
/** Seconds added to ProductRelated_Duration per pass over the dataset (≫ float32 resolution after log1p + standardization). */
const STEP = 0.5;

/**
 * Request bodies built from the real shoppers rows, never the same twice within a run: body n
 * uses row n mod R with ProductRelated_Duration raised by STEP × (pass number), so the encoded
 * vector (and the service's cache key) differs from every earlier body. Rows are pre-serialized
 * into prefix/suffix templates, so making a body is a string concat (cheap for the load generator).
 *
 * The counter is shared by every user of one instance (all phases), so a warm-up never pre-fills
 * the cache for the measurement that follows.
 */
export class ShopperBodies {
  private readonly templates: { pre: string; post: string; base: number }[];
  private n = 0;

  constructor(rows = shopperFeatureRows()) {
    if (rows.length === 0) throw new Error('no shoppers rows');
    this.templates = rows.map((row) => {
      const base = Number(row.ProductRelated_Duration);
      const json = JSON.stringify({ features: { ...row, ProductRelated_Duration: SENTINEL } });
      const at = json.indexOf(String(SENTINEL));
      return { pre: json.slice(0, at), post: json.slice(at + String(SENTINEL).length), base };
    });
  }

  get rows(): number {
    return this.templates.length;
  }

  /** Bodies produced so far (for reporting). */
  get produced(): number {
    return this.n;
  }

  /** One `{"features":{…}}` body (POST /v1/predict). */
  nextPredict(): string {
    const n = this.n++;
    const t = this.templates[n % this.templates.length];
    const pass = Math.floor(n / this.templates.length) + 1;
    return t.pre + String(t.base + pass * STEP) + t.post;
  }

  /** One `{"instances":[…]}` body of `size` distinct rows (POST /v1/predict/batch). */
  nextBatch(size: number): string {
    const parts = new Array<string>(size);
    for (let i = 0; i < size; i++) parts[i] = this.nextPredict();
    return `{"instances":[${parts.join(',')}]}`;
  }
}
