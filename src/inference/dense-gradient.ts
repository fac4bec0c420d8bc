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
   * rounding, at the cost of a few forward/backward passes per segment (all but the first layer:
   * its part is affine in α along the whole path and is done once).
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
    // The first layer's pre-activations are affine in α along the whole path: computed once.
    const first = L[0];
    const firstAt0 = new Float64Array(first.outSize);
    const firstSlope = new Float64Array(first.outSize);
    this.affine(0, base, firstAt0, true);
    this.affine(0, dir, firstSlope, false);
    // Σ over segments of (gradient at the first layer's output) × (segment length); the input
    // gradient is linear in it, so the widest product (inputs × first layer) is done once, at the end.
    const firstOutGrad = new Float64Array(first.outSize);
    let a0 = 0;
    for (let segment = 0; a0 < 1 && segment < 10_000; segment++) {
      // With the masks of the region just after a0, every pre-activation is value + slope·(α − a0);
      // the region ends at the first zero crossing ahead.
      let v: Float64Array = pre[0];
      let sl: Float64Array = preSlope[0];
      let next = 1;
      for (let li = 0; li < L.length; li++) {
        if (li === 0) {
          for (let o = 0; o < first.outSize; o++) {
            pre[0][o] = firstAt0[o] + a0 * firstSlope[o];
            preSlope[0][o] = firstSlope[o];
          }
        } else {
          this.affine(li, v, pre[li], true);
          this.affine(li, sl, preSlope[li], false);
        }
        if (!L[li].relu) {
          // A linear layer (or the output) has no kinks: it passes its affine values on.
          v = pre[li];
          sl = preSlope[li];
          continue;
        }
        const m = masks[li];
        for (let o = 0; o < L[li].outSize; o++) {
          const p = pre[li][o];
          const s = preSlope[li][o];
          // A crossing within rounding distance of a0 counts as behind us: the unit is then in the
          // state it takes after the crossing (the slope's sign); otherwise in its current state.
          const t = s !== 0 ? -p / s : Infinity;
          const ahead = t > CROSSING_EPS;
          const on = ahead ? p > 0 : s !== 0 ? s > 0 : p > 0;
          m[o] = on ? 1 : 0;
          if (ahead && a0 + t < next) next = a0 + t;
          if (!on) {
            pre[li][o] = 0;
            preSlope[li][o] = 0;
          }
        }
        v = pre[li];
        sl = preSlope[li];
      }
      // The gradient is constant on [a0, next]: one backward pass with the masks, down to the
      // first layer's output.
      let upstream: Float64Array = ONE;
      for (let li = L.length - 1; li >= 1; li--) {
        const { w, inSize, outSize } = L[li];
        const g = grads[li];
        for (let i = 0; i < inSize; i++) {
          let acc = 0;
          const row = i * outSize;
          for (let o = 0; o < outSize; o++) acc += w[row + o] * upstream[o];
          g[i] = acc;
        }
        if (L[li - 1].relu) for (let i = 0; i < inSize; i++) if (!masks[li - 1][i]) g[i] = 0;
        upstream = g;
      }
      const len = next - a0;
      for (let o = 0; o < first.outSize; o++) firstOutGrad[o] += upstream[o] * len;
      a0 = next;
    }
    const total = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let acc = 0;
      const row = i * first.outSize;
      for (let o = 0; o < first.outSize; o++) acc += first.w[row + o] * firstOutGrad[o];
      total[i] = acc;
    }
    return total;
  }

  /** The chain's pre-sigmoid output at `x`, in doubles: the logit its probability is the sigmoid of. */
  logitAt(xIn: Float32Array): number {
    let h = Float64Array.from(xIn);
    for (let li = 0; li < this.layers.length; li++) {
      const out = new Float64Array(this.layers[li].outSize);
      this.affine(li, h, out, true);
      if (this.layers[li].relu) for (let o = 0; o < out.length; o++) if (out[o] < 0) out[o] = 0;
      h = out;
    }
    return h[0];
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
/** Crossings closer than this (in path fraction) are treated as already passed. */
const CROSSING_EPS = 1e-12;

