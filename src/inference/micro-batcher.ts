/**
 * Coalesces concurrent single-row predictions into one model call. Requests that arrive in
 * the same event-loop turn (or within maxWaitMs) share a batch of at most maxBatch rows.
 */
export class MicroBatcher {
  private rows: Float32Array[] = [];
  private waiters: { resolve: (p: number) => void; reject: (e: unknown) => void }[] = [];
  private scheduled = false;
  batches = 0;
  rowsScored = 0;

  constructor(
    private readonly width: number,
    private readonly runBatch: (data: Float32Array, rows: number) => Float32Array,
    private readonly opts: { maxBatch: number; maxWaitMs: number; onBatch?: (rows: number) => void },
  ) {}

  score(row: Float32Array): Promise<number> {
    return new Promise((resolve, reject) => {
      this.rows.push(row);
      this.waiters.push({ resolve, reject });
      if (this.rows.length >= this.opts.maxBatch) this.flush();
      else if (!this.scheduled) {
        this.scheduled = true;
        if (this.opts.maxWaitMs > 0) setTimeout(() => this.flush(), this.opts.maxWaitMs);
        else setImmediate(() => this.flush());
      }
    });
  }

  get pending(): number {
    return this.rows.length;
  }

  flush(): void {
    this.scheduled = false;
    const rows = this.rows;
    const waiters = this.waiters;
    if (rows.length === 0) return;
    this.rows = [];
    this.waiters = [];
    try {
      const data = new Float32Array(rows.length * this.width);
      rows.forEach((r, i) => data.set(r, i * this.width));
      const out = this.runBatch(data, rows.length);
      this.batches++;
      this.rowsScored += rows.length;
      this.opts.onBatch?.(rows.length);
      waiters.forEach((w, i) => w.resolve(out[i]));
    } catch (err) {
      waiters.forEach((w) => w.reject(err));
    }
  }
}
