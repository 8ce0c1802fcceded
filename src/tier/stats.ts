/**
 * Figures for status and metrics: rates of growing counters over the last
 * minute and a window of recent latencies.  Both are bounded (a ring of
 * samples), whatever the traffic.
 */

/** Bytes per second of a growing total, over the last `windowMs`. */
export class RateMeter {
  private readonly samples: { atMs: number; total: number }[] = [];

  constructor(
    private readonly clock: () => number,
    private readonly windowMs = 60_000,
    private readonly sampleMsMin = 1000,
  ) {}

  /** Note the total now (at most one sample per sampleMsMin is kept). */
  sample(total: number): void {
    const now = this.clock();
    const last = this.samples[this.samples.length - 1];
    if (last && now - last.atMs < this.sampleMsMin) return;
    this.samples.push({ atMs: now, total });
    while (this.samples.length > 2 && now - this.samples[1].atMs >= this.windowMs) this.samples.shift();
  }

  /** Per second, between the oldest sample in the window and `total` now. */
  perSecond(total: number): number {
    this.sample(total);
    const first = this.samples[0];
    const elapsedMs = this.clock() - first.atMs;
    return elapsedMs <= 0 ? 0 : ((total - first.total) * 1000) / elapsedMs;
  }
}

/** The last `countMax` latencies: percentiles for status (metrics keep their own histogram). */
export class LatencyWindow {
  private readonly values: number[] = [];
  private next = 0;
  count = 0;

  constructor(private readonly countMax = 1024) {}

  record(ms: number): void {
    this.count += 1;
    if (this.values.length < this.countMax) this.values.push(ms);
    else {
      this.values[this.next] = ms;
      this.next = (this.next + 1) % this.countMax;
    }
  }

  /** The p-th percentile (0-100) of the window, or null when nothing was recorded. */
  percentile(p: number): number | null {
    if (this.values.length === 0) return null;
    const sorted = [...this.values].sort((a, b) => a - b);
    const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
    return sorted[index];
  }
}
