/**
 * Retries for any ObjectStore: throttling and transient failures are tried
 * again after a backoff with full jitter (a random delay up to an
 * exponentially growing cap), each attempt under its own timeout, all of it
 * bounded by one deadline per operation.  Not-found, auth and other final
 * errors are never retried.  The clock, sleep and randomness are passed in.
 */
import { log } from '../log';
import { isRetryable, ObjectStoreError, type GetRange, type ObjectInfo, type ObjectStore, type PutCondition, type VersionedObject } from './object_store';

export interface RetryOptions {
  /** An operation gives up once this much time has passed since it began. */
  deadlineMs: number;
  /** Each attempt is aborted after this long. */
  attemptTimeoutMs: number;
  baseDelayMs: number;
  delayMsMax: number;
  clock?: () => number;
  random?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** A signal that aborts after `ms` (an attempt's timeout); default: Node's timers. */
  timeout?: (ms: number) => AbortSignal;
}

export interface RetryCounters {
  attemptCount: number;
  retryCount: number;
  throttledCount: number;
  failedCount: number;
}

const realSleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A backoff that ends early when the caller gives up. */
async function backoff(sleep: (ms: number) => Promise<void>, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (!signal) return sleep(ms);
  let onAbort!: () => void;
  const aborted = new Promise<void>((resolve) => {
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    await Promise.race([sleep(ms), aborted]);
  } finally {
    signal.removeEventListener('abort', onAbort);
  }
}

export class RetryingObjectStore implements ObjectStore {
  readonly description: string;
  readonly counters: RetryCounters = { attemptCount: 0, retryCount: 0, throttledCount: 0, failedCount: 0 };
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly sleep: (ms: number) => Promise<void>;

  constructor(
    readonly inner: ObjectStore,
    private readonly options: RetryOptions,
  ) {
    this.description = inner.description;
    this.clock = options.clock ?? Date.now;
    this.random = options.random ?? Math.random;
    this.sleep = options.sleep ?? realSleep;
  }

  private async attempt<T>(what: string, signal: AbortSignal | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const started = this.clock();
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw new ObjectStoreError('Transient', `${what}: aborted`, { cause: signal.reason });
      this.counters.attemptCount += 1;
      const timeout = (this.options.timeout ?? AbortSignal.timeout)(this.options.attemptTimeoutMs);
      try {
        return await fn(signal ? AbortSignal.any([signal, timeout]) : timeout);
      } catch (raw) {
        const error =
          raw instanceof ObjectStoreError
            ? raw
            : new ObjectStoreError(timeout.aborted ? 'Transient' : 'Fatal', `${what}: ${(raw as Error).message}`, { cause: raw });
        if (error.kind === 'Throttled') this.counters.throttledCount += 1;
        const delayMs = this.random() * Math.min(this.options.delayMsMax, this.options.baseDelayMs * 2 ** attempt);
        const elapsedMs = this.clock() - started;
        if (!isRetryable(error) || signal?.aborted || elapsedMs + delayMs >= this.options.deadlineMs) {
          this.counters.failedCount += 1;
          if (isRetryable(error))
            throw new ObjectStoreError(error.kind, `${error.message} (gave up after ${attempt + 1} attempts in ${elapsedMs} ms)`, {
              cause: error,
            });
          throw error;
        }
        this.counters.retryCount += 1;
        log.debug('object store retry', { what, attempt: attempt + 1, kind: error.kind, delayMs: Math.round(delayMs) });
        await backoff(this.sleep, delayMs, signal);
      }
    }
  }

  put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void> {
    return this.attempt(`put ${key}`, signal, (s) => this.inner.put(key, body, s));
  }

  get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer> {
    return this.attempt(`get ${key}`, signal, (s) => this.inner.get(key, range, s));
  }

  getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined> {
    return this.attempt(`get ${key}`, signal, (s) => this.inner.getVersioned(key, s));
  }

  /**
   * Retried like any put.  A retry after an attempt that did land is
   * refused by its own condition: callers that must know tell the two apart
   * by what they wrote (the writer lease carries a nonce).
   */
  putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string> {
    return this.attempt(`put ${key}`, signal, (s) => this.inner.putIf(key, body, condition, s));
  }

  head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    return this.attempt(`head ${key}`, signal, (s) => this.inner.head(key, s));
  }

  /** A listing is retried as a whole, page by page collected first (it never yields a key twice). */
  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    const all = await this.attempt(`list ${prefix}`, signal, async (s) => {
      const items: ObjectInfo[] = [];
      for await (const item of this.inner.list(prefix, s)) items.push(item);
      return items;
    });
    yield* all;
  }

  listNames(prefix: string, signal?: AbortSignal): Promise<string[]> {
    return this.attempt(`list ${prefix}`, signal, (s) => this.inner.listNames(prefix, s));
  }

  delete(key: string, signal?: AbortSignal): Promise<void> {
    return this.attempt(`delete ${key}`, signal, (s) => this.inner.delete(key, s));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
