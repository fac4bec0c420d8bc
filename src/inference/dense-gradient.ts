import type { DenseStep } from './dense-chain.js';

interface PlainLayer {
  w: Float32Array; // [in × out], row-major as in the kernel
  b: Float32Array | null;
  inSize: number;
  outSize: number;
  relu: boolean;
}

/**
 * Path gradients of the logit for relu/linear dense chains ending in a sigmoid, in plain
 * typed-array arithmetic: for a network this small, hand-written forward and backward passes cost
 * a fraction of a millisecond, far less than building a gradient tape.
 */
export class DenseChainGradient {
  private readonly layers: PlainLayer[];

  constructor(steps: DenseStep[]) {
    this.layers = steps.map((s, i) => ({
      w: s.kernel.dataSync() as Float32Array,
      b: s.bias ? (s.bias.dataSync() as Float32Array) : null,
      inSize: s.kernel.shape[0],
      outSize: s.kernel.shape[1],
      relu: i < steps.length - 1 && s.activation === 'relu',
    }));
  }

  static supports(steps: DenseStep[]): boolean {
    const last = steps[steps.length - 1];
    return Boolean(last) && last.activation === 'sigmoid' && steps.slice(0, -1).every((s) => s.activation === 'relu' || s.activation === 'linear') && last.kernel.shape[1] === 1;
  }

  /**
   * Exact mean of ∂logit/∂x along the straight path from `base` to `x`. A relu network is linear
   * between the points where some hidden unit's pre-activation crosses zero, so the path splits
   * into segments of constant gradient: find each crossing in closed form, weight each segment's
   * gradient by its length. Integrated gradients then add up to logit(x) − logit(base) up to
   * rounding, at the cost of a few forward/backward passes per segment.
   */
  exactPathGradient(xIn: Float32Array, baseIn: Float32Array): Float64Array {
    const L = this.layers;
    const n = xIn.length;
    const base = Float64Array.from(baseIn);
    const dir = new Float64Array(n);
    for (let j = 0; j < n; j++) dir[j] = xIn[j] - base[j];
    const masks = L.map((l) => new Uint8Array(l.outSize));
    const pre = L.map((l) => new Float64Array(l.outSize));
    const preSlope = L.map((l) => new Float64Array(l.outSize));
    const grads = L.map((l) => new Float64Array(l.inSize));
    const total = new Float64Array(n);
    const val = new Float64Array(n);
    let a0 = 0;
    for (let segment = 0; a0 < 1 && segment < 10_000; segment++) {
      // With the masks of the region just after a0, every pre-activation is value + slope·(α − a0);
      // a unit is on there if positive, or exactly at zero and rising. The region ends at the first
      // zero crossing ahead.
      for (let j = 0; j < n; j++) val[j] = base[j] + a0 * dir[j];
      let v: Float64Array = val;
      let sl: Float64Array = dir;
      let next = 1;
      for (let li = 0; li < L.length; li++) {
        this.affine(li, v, pre[li], true);
        this.affine(li, sl, preSlope[li], false);
        if (!L[li].relu) break;
        const m = masks[li];
        for (let o = 0; o < L[li].outSize; o++) {
          const p = pre[li][o];
          const s = preSlope[li][o];
          const on = p > 1e-12 || (p >= -1e-12 && s > 0);
          m[o] = on ? 1 : 0;
          if (s !== 0) {
            const t = -p / s;
            if (t > 1e-12 && a0 + t < next) next = a0 + t;
          }
          if (!on) {
            pre[li][o] = 0;
            preSlope[li][o] = 0;
          }
        }
        v = pre[li];
        sl = preSlope[li];
      }
      // The gradient is constant on [a0, next]: one backward pass with the masks.
      let upstream: Float64Array = ONE;
      for (let li = L.length - 1; li >= 0; li--) {
        const { w, inSize, outSize } = L[li];
        const g = grads[li];
        for (let i = 0; i < inSize; i++) {
          let acc = 0;
          const row = i * outSize;
          for (let o = 0; o < outSize; o++) acc += w[row + o] * upstream[o];
          g[i] = acc;
        }
        if (li > 0 && L[li - 1].relu) for (let i = 0; i < inSize; i++) if (!masks[li - 1][i]) g[i] = 0;
        upstream = g;
      }
      const len = next - a0;
      for (let j = 0; j < n; j++) total[j] += upstream[j] * len;
      a0 = next;
    }
    return total;
  }

  private affine(li: number, input: Float64Array, out: Float64Array, withBias: boolean): void {
    const { w, b, inSize, outSize } = this.layers[li];
    for (let o = 0; o < outSize; o++) out[o] = withBias && b ? b[o] : 0;
    for (let i = 0; i < inSize; i++) {
      const x = input[i];
      if (x === 0) continue;
      const row = i * outSize;
      for (let o = 0; o < outSize; o++) out[o] += x * w[row + o];
    }
  }
}

const ONE = new Float64Array([1]);

