/**
 * Time, passed in (invariant 9 of the design): every part of tierfs that
 * reads the time, sleeps, keeps a periodic timer or gives up after a
 * deadline does it through a Clock.  The daemon's entry point hands out
 * `systemClock`; tests and the simulation hand out a `SimulatedClock`, whose
 * time moves only when they move it, so one seed replays one run.
 *
 * Timers never keep the process alive (a daemon has its mount for that),
 * and a sleep can be cut short by an AbortSignal.
 */

export interface Timer {
  stop(): void;
}

export interface Clock {
  /** Milliseconds since the epoch (wall-clock time: heat, cooling periods, records). */
  nowMs(): number;
  /** Nanoseconds since the epoch, as precise as the clock has it (file times). */
  nowNs(): bigint;
  /** A clock for measuring intervals (latencies), in milliseconds with a fraction. */
  monotonicMs(): number;
  /** Resolves after `ms`; rejects with the signal's reason once `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` every `ms` until stopped. */
  every(ms: number, fn: () => void): Timer;
  /** A signal that aborts `ms` from now (a deadline). */
  timeout(ms: number): AbortSignal;
}

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new Error('aborted');
}

/** The machine's clock and Node's timers. */
export const systemClock: Clock = {
  nowMs: () => Date.now(),
  nowNs: () => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n,
  monotonicMs: () => performance.now(),
  sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const onAbort = () => {
        clearTimeout(timer);
        reject(abortReason(signal!));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  },
  every(ms, fn) {
    const timer = setInterval(fn, ms);
    timer.unref();
    return { stop: () => clearInterval(timer) };
  },
  timeout: (ms) => AbortSignal.timeout(ms),
};

interface Scheduled {
  dueMs: number;
  order: number;
  fire: () => void;
  cancelled: boolean;
}

/**
 * Time that moves only when told: `advance(ms)` fires every timer due in
 * order (by due time, then by creation), letting the promises each one
 * settles run before the next.  Two runs that make the same calls see the
 * same times in the same order.
 */
export class SimulatedClock implements Clock {
  private now: number;
  private order = 0;
  private readonly queue: Scheduled[] = [];

  constructor(startMs = Date.UTC(2026, 0, 1)) {
    this.now = startMs;
  }

  nowMs(): number {
    return this.now;
  }

  nowNs(): bigint {
    return BigInt(Math.round(this.now * 1e6));
  }

  monotonicMs(): number {
    return this.now;
  }

  /** Timers waiting. */
  get pendingCount(): number {
    return this.queue.filter((s) => !s.cancelled).length;
  }

  /** When the next timer is due, or undefined when none waits. */
  get nextDueMs(): number | undefined {
    return this.queue.find((s) => !s.cancelled)?.dueMs;
  }

  private schedule(delayMs: number, fire: () => void): Scheduled {
    // Whole milliseconds, as Node's timers have them (a fractional time would reach code that expects an integer).
    const entry: Scheduled = { dueMs: this.now + Math.max(0, Math.ceil(delayMs)), order: this.order++, fire, cancelled: false };
    let i = this.queue.length;
    while (i > 0 && (this.queue[i - 1].dueMs > entry.dueMs || (this.queue[i - 1].dueMs === entry.dueMs && this.queue[i - 1].order > entry.order))) i--;
    this.queue.splice(i, 0, entry);
    return entry;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortReason(signal));
      const entry = this.schedule(ms, () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      const onAbort = () => {
        entry.cancelled = true;
        reject(abortReason(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  every(ms: number, fn: () => void): Timer {
    let entry: Scheduled;
    const arm = () => {
      entry = this.schedule(ms, () => {
        arm();
        fn();
      });
    };
    arm();
    return { stop: () => void (entry.cancelled = true) };
  }

  timeout(ms: number): AbortSignal {
    const controller = new AbortController();
    this.schedule(ms, () => controller.abort(new DOMException(`timed out after ${ms} ms`, 'TimeoutError')));
    return controller.signal;
  }

  /** Let every promise that can settle now settle (callbacks of I/O already done included). */
  async settle(): Promise<void> {
    for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Move time forward by `ms`, firing every timer due on the way, each at its own time. */
  async advance(ms: number): Promise<void> {
    const endMs = this.now + ms;
    await this.settle();
    for (;;) {
      const next = this.queue[0];
      if (next === undefined || next.dueMs > endMs) break;
      this.queue.shift();
      if (next.cancelled) continue;
      this.now = Math.max(this.now, next.dueMs);
      next.fire();
      await this.settle();
    }
    this.now = endMs;
  }
}
