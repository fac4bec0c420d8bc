/**
 * Coalesces concurrent single-row predictions into one model call. Requests that arrive in
 * the same event-loop turn (or within maxWaitMs) share a batch of at most maxBatch rows.
 *
 * Rows are copied into one preallocated matrix as they arrive, so a request allocates nothing
 * here but its promise, and the caller may reuse its row buffer as soon as score() returns.
 */
export class MicroBatcher {
  private readonly matrix: Float32Array;
  private count = 0;
  private resolvers: ((p: number) => void)[] = [];
  private rejecters: ((e: unknown) => void)[] = [];
  private scheduled = false;
  batches = 0;
  rowsScored = 0;

  constructor(
    private readonly width: number,
    /** Must finish with the matrix before returning (it is reused by the next batch). */
    private readonly runBatch: (data: Float32Array, rows: number) => Float32Array,
    private readonly opts: { maxBatch: number; maxWaitMs: number; onBatch?: (rows: number) => void },
  ) {
    this.matrix = new Float32Array(opts.maxBatch * width);
  }

  score(row: Float32Array): Promise<number> {
    return new Promise((resolve, reject) => {
      this.matrix.set(row, this.count * this.width);
      this.count++;
      this.resolvers.push(resolve);
      this.rejecters.push(reject);
      if (this.count >= this.opts.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        if (this.opts.maxWaitMs > 0) setTimeout(() => this.flush(), this.opts.maxWaitMs);
        else setImmediate(() => this.flush());
      }
    });
  }

  get pending(): number {
    return this.count;
  }

  flush(): void {
    this.scheduled = false;
    const rows = this.count;
    if (rows === 0) return;
    const resolvers = this.resolvers;
    const rejecters = this.rejecters;
    this.count = 0;
    this.resolvers = [];
    this.rejecters = [];
    let out: Float32Array;
    try {
      out = this.runBatch(this.matrix.subarray(0, rows * this.width), rows);
    } catch (err) {
      for (const reject of rejecters) reject(err);
      return;
    }
    this.batches++;
    this.rowsScored += rows;
    // Answers first: a failing observer (metrics) must not leave requests waiting.
    for (let i = 0; i < rows; i++) resolvers[i](out[i]);
    try {
      this.opts.onBatch?.(rows);
    } catch {
      /* an observer's failure is not the batch's */
    }
  }
}
