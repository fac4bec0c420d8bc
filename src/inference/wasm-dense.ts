import { tf } from './backend.js';
import type { DenseStep } from './dense-chain.js';

/** The parts of @tensorflow/tfjs-backend-wasm 4.x used here; checked before use. */
interface WasmModule {
  HEAPF32: Float32Array;
  HEAP32: Int32Array;
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  cwrap(name: string, ret: null, args: string[]): (...args: number[]) => void;
}
interface WasmBackend {
  wasm?: WasmModule;
  dataIdMap?: { get(dataId: object): { id: number; memoryOffset: number } | undefined };
}

/** tfjs-backend-wasm's FusableActivation codes. */
const ACTIVATION: Record<DenseStep['activation'], number> = { linear: 0, relu: 1, relu6: 2, sigmoid: 5, elu: 6 };

interface Layer {
  /** Backend ids of the layer's input, kernel, bias (0: none) and output tensors. */
  inId: number;
  kernelId: number;
  biasId: number;
  outId: number;
  /** Pointers to the Int32 shapes [1, rows, in] and [1, in, out] in WASM memory. */
  inShape: number;
  kernelShape: number;
  activation: number;
}

/**
 * The dense chain's call for the WASM backend, without tfjs-core in between: the input and every
 * layer's output live in tensors allocated once for `capacity` rows, and each layer is one call of
 * the backend's own _FusedMatMul function on them. Same kernel, same inputs as runDenseChain, so
 * the same outputs (tested); what goes away is the per-call tensor bookkeeping (making, tracking
 * and freeing four tensors, kernel lookup, shape arrays), which costs more than the arithmetic for
 * the micro-batches of the request path.
 */
export class WasmDenseRunner {
  private disposed = false;

  private constructor(
    private readonly wasm: WasmModule,
    private readonly fusedMatMul: (...args: number[]) => void,
    private readonly layers: Layer[],
    private readonly buffers: tf.Tensor[],
    private readonly shapePtrs: number[],
    private readonly inputOffset: number,
    private readonly outputOffset: number,
    private readonly width: number,
    readonly capacity: number,
  ) {}

  /** Null unless the WASM backend is active and has the internals this relies on. */
  static create(steps: DenseStep[], width: number, capacity: number): WasmDenseRunner | null {
    if (tf.getBackend() !== 'wasm') return null;
    const backend = tf.backend() as unknown as WasmBackend;
    const wasm = backend.wasm;
    const dataIds = backend.dataIdMap;
    if (!wasm || !dataIds || typeof wasm.cwrap !== 'function' || typeof wasm._malloc !== 'function' || !(wasm.HEAP32 instanceof Int32Array)) return null;
    const buffers: tf.Tensor[] = [];
    const shapePtrs: number[] = [];
    try {
      const info = (t: tf.Tensor) => {
        const d = dataIds.get(t.dataId);
        if (!d || typeof d.id !== 'number' || typeof d.memoryOffset !== 'number') throw new Error('unexpected WASM backend tensor record');
        return d;
      };
      const input = tf.keep(tf.zeros([1, capacity, width]));
      buffers.push(input);
      const layers: Layer[] = [];
      let inTensor = input;
      let inSize = width;
      for (const s of steps) {
        const outSize = s.kernel.shape[1];
        const out = tf.keep(tf.zeros([1, capacity, outSize]));
        buffers.push(out);
        const inShape = wasm._malloc(12);
        shapePtrs.push(inShape);
        const kernelShape = wasm._malloc(12);
        shapePtrs.push(kernelShape);
        wasm.HEAP32.set([1, capacity, inSize], inShape >> 2);
        wasm.HEAP32.set([1, inSize, outSize], kernelShape >> 2);
        const biasId = s.bias ? info(s.bias).id : 0;
        layers.push({ inId: info(inTensor).id, kernelId: info(s.batchKernel).id, biasId, outId: info(out).id, inShape, kernelShape, activation: ACTIVATION[s.activation] });
        inTensor = out;
        inSize = outSize;
      }
      const fusedMatMul = wasm.cwrap(tf._FusedMatMul, null, new Array(13).fill('number'));
      if (inSize !== 1 || typeof fusedMatMul !== 'function') throw new Error('not a one-output chain, or no _FusedMatMul export');
      return new WasmDenseRunner(wasm, fusedMatMul, layers, buffers, shapePtrs, info(input).memoryOffset, info(inTensor).memoryOffset, width, capacity);
    } catch {
      // Anything unexpected about the backend's internals: the caller keeps the tfjs path.
      for (const b of buffers) b.dispose();
      for (const p of shapePtrs) wasm._free(p);
      return null;
    }
  }

  /** Scores `rows` ≤ capacity encoded rows; returns a copy of the outputs. */
  run(data: Float32Array, rows: number): Float32Array {
    if (this.disposed) throw new Error('WasmDenseRunner is disposed');
    if (rows > this.capacity) throw new Error(`at most ${this.capacity} rows per call`);
    // Views are read on every call: the WASM memory may have grown (and been replaced) since.
    const { HEAPF32, HEAP32 } = this.wasm;
    HEAPF32.set(data.subarray(0, rows * this.width), this.inputOffset >> 2);
    for (const l of this.layers) {
      HEAP32[(l.inShape >> 2) + 1] = rows;
      this.fusedMatMul(l.inId, l.inShape, 3, l.kernelId, l.kernelShape, 3, 0, 0, l.activation, l.biasId, 0, 0, l.outId);
    }
    const at = this.outputOffset >> 2;
    return this.wasm.HEAPF32.slice(at, at + rows);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const b of this.buffers) b.dispose();
    for (const p of this.shapePtrs) this.wasm._free(p);
  }
}
