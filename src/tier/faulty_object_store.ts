/**
 * Fault injection around any ObjectStore, for tests: scripted faults
 * (fail, throttle, delay, hang until aborted, corrupt or truncate what is
 * read or written) matched by operation and key, each for a number of calls,
 * and a switch that makes the whole tier unreachable.
 */
import { ObjectStoreError, type GetRange, type ObjectInfo, type ObjectStore, type PutCondition, type VersionedObject } from './object_store';

type Operation = 'put' | 'get' | 'head' | 'list' | 'delete';

export interface Fault {
  op?: Operation;
  /** Only keys containing this. */
  keyIncludes?: string;
  kind: 'fail' | 'throttle' | 'auth' | 'delay' | 'hang' | 'corrupt' | 'truncate';
  /** delay: milliseconds. */
  delayMs?: number;
  /** Calls it applies to; Infinity for all. */
  count: number;
}

export class FaultyObjectStore implements ObjectStore {
  readonly description: string;
  readonly faults: Fault[] = [];
  /** Every operation fails as a network failure would. */
  unreachable = false;
  readonly calls: Record<Operation, number> = { put: 0, get: 0, head: 0, list: 0, delete: 0 };

  constructor(readonly inner: ObjectStore) {
    this.description = inner.description;
  }

  inject(fault: Fault): void {
    this.faults.push({ ...fault });
  }

  private take(op: Operation, key: string): Fault | undefined {
    const fault = this.faults.find((f) => (f.op === undefined || f.op === op) && (f.keyIncludes === undefined || key.includes(f.keyIncludes)) && f.count > 0);
    if (fault) fault.count -= 1;
    return fault;
  }

  /** Apply the fault before the call; returns the fault when it acts on the data instead. */
  private async before(op: Operation, key: string, signal?: AbortSignal): Promise<Fault | undefined> {
    this.calls[op] += 1;
    if (this.unreachable) throw new ObjectStoreError('Transient', `${op} ${key}: connect ECONNREFUSED (injected)`);
    const fault = this.take(op, key);
    if (!fault) return undefined;
    switch (fault.kind) {
      case 'fail':
        throw new ObjectStoreError('Transient', `${op} ${key}: InternalError (HTTP 500, injected)`);
      case 'throttle':
        throw new ObjectStoreError('Throttled', `${op} ${key}: SlowDown (HTTP 503, injected)`);
      case 'auth':
        throw new ObjectStoreError('Auth', `${op} ${key}: AccessDenied (HTTP 403, injected)`);
      case 'delay':
        await new Promise((resolve) => setTimeout(resolve, fault.delayMs ?? 100));
        return undefined;
      case 'hang':
        await new Promise<void>((_resolve, reject) => {
          if (signal?.aborted) reject(new ObjectStoreError('Transient', `${op} ${key}: timed out (injected hang)`));
          signal?.addEventListener('abort', () => reject(new ObjectStoreError('Transient', `${op} ${key}: timed out (injected hang)`)), { once: true });
        });
        return undefined;
      default:
        return fault;
    }
  }

  async put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void> {
    const fault = await this.before('put', key, signal);
    if (fault?.kind === 'truncate') {
      const whole = Buffer.concat(body);
      return this.inner.put(key, [whole.subarray(0, Math.floor(whole.length / 2))], signal);
    }
    if (fault?.kind === 'corrupt') {
      const whole = Buffer.concat(body);
      whole[Math.floor(whole.length / 2)] ^= 0x5a;
      return this.inner.put(key, [whole], signal);
    }
    return this.inner.put(key, body, signal);
  }

  async get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer> {
    const fault = await this.before('get', key, signal);
    const data = await this.inner.get(key, range, signal);
    if (fault?.kind === 'corrupt') {
      const copy = Buffer.from(data);
      copy[Math.floor(copy.length / 2)] ^= 0x5a;
      return copy;
    }
    if (fault?.kind === 'truncate') throw new ObjectStoreError('Transient', `get ${key}: ${data.length >> 1} bytes received, ${data.length} expected (injected)`);
    return data;
  }

  async getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined> {
    await this.before('get', key, signal);
    return this.inner.getVersioned(key, signal);
  }

  async putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string> {
    await this.before('put', key, signal);
    return this.inner.putIf(key, body, condition, signal);
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    await this.before('head', key, signal);
    return this.inner.head(key, signal);
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    await this.before('list', prefix, signal);
    yield* this.inner.list(prefix, signal);
  }

  async listNames(prefix: string, signal?: AbortSignal): Promise<string[]> {
    await this.before('list', prefix, signal);
    return this.inner.listNames(prefix, signal);
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    await this.before('delete', key, signal);
    return this.inner.delete(key, signal);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
