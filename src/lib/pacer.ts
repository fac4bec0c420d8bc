/**
 * Caps the CPU a long computation takes to a share of one core: call pause() between chunks of
 * work; after ~4 ms of work it sleeps long enough to keep the average at `share`. Retraining
 * runs beside the serving event loop, and on a small machine an unpaced training thread shows up
 * directly in prediction latency. Results are unchanged, only slower.
 */
export class Pacer {
  private sliceStart = performance.now();

  constructor(readonly share: number) {}

  get active(): boolean {
    return this.share > 0 && this.share < 1;
  }

  async pause(): Promise<void> {
    if (!this.active) return;
    const busy = performance.now() - this.sliceStart;
    if (busy < 4) return;
    await new Promise((resolve) => setTimeout(resolve, (busy * (1 - this.share)) / this.share));
    this.sliceStart = performance.now();
  }
}
