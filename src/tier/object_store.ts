/**
 * The object tier as the tiering engine sees it: a flat key space holding
 * immutable objects (packs and, later, metadata snapshots).
 *
 * Backends register by URL scheme (file:, s3:, azure:).  Behaviour shared by
 * all of them — retries, fault injection — is a wrapper around this same
 * interface, never a flag inside a backend.  Every backend maps its failures
 * to ObjectStoreError with one of a few kinds, so wrappers can tell a
 * missing object from throttling from a transient network failure.
 *
 * Keys are relative to the target's prefix; backends never see credentials
 * in the URL (they come from each SDK's usual sources) and never log them.
 */
export interface ObjectInfo {
  key: string;
  sizeBytes: number;
}

/**
 * A range of an object for get(): bytes [offsetBytes, offsetBytes +
 * lengthBytes).  With `into` (at least lengthBytes long) the bytes are
 * received there and the result is a view of it; a backend that cannot
 * receive in place may return memory of its own, so callers use the result.
 */
export interface GetRange {
  offsetBytes: number;
  lengthBytes: number;
  into?: Buffer;
}

/** A conditional put's condition: the key is absent, or holds the version `ifMatch` names. */
export type PutCondition = { ifNoneMatch: '*' } | { ifMatch: string };

/** A whole object with its version tag (the ETag, or the directory target's content hash). */
export interface VersionedObject {
  body: Buffer;
  etag: string;
}

export interface ObjectStore {
  /** The target, for messages: scheme, bucket or directory, prefix; never a secret. */
  readonly description: string;
  /** Store `body` (its parts concatenated) as `key`, replacing any object there; large bodies go up as multipart or block uploads. */
  put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void>;
  /** Bytes [offsetBytes, offsetBytes + lengthBytes) of `key` (in range.into when given), or all of it; exactly that many bytes or an error. */
  get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer>;
  /** Size of `key`, or undefined when it does not exist. */
  head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined>;
  /** Every key under `prefix` (a key prefix, not a directory), in any order. */
  list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo>;
  /** The distinct names one level below `prefix` ("" or ending in "/"): what lies up to the next "/" (a delimited listing). */
  listNames(prefix: string, signal?: AbortSignal): Promise<string[]>;
  /** All of `key` with its version tag, or undefined when it does not exist. */
  getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined>;
  /**
   * Store `body` as `key` only while `condition` holds (S3 If-None-Match /
   * If-Match, Azure's ETag conditions, a lock on the directory target); the
   * new version tag.  PreconditionFailed when it does not hold.  Some
   * S3-compatible servers ignore the condition and store anyway: see
   * conditionalWritesWork() before relying on it.
   */
  putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string>;
  /** Remove `key`; removing a missing key succeeds. */
  delete(key: string, signal?: AbortSignal): Promise<void>;
  /** Release sockets and timers. */
  close(): Promise<void>;
}

export type ObjectStoreErrorKind = 'NotFound' | 'Throttled' | 'Transient' | 'Auth' | 'PreconditionFailed' | 'Corrupt' | 'Fatal';

export class ObjectStoreError extends Error {
  constructor(
    readonly kind: ObjectStoreErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ObjectStoreError';
  }
}

/** Errors a retry may cure. */
export function isRetryable(error: unknown): boolean {
  return error instanceof ObjectStoreError && (error.kind === 'Throttled' || error.kind === 'Transient');
}

/** Node's network failures and an aborted attempt: worth a retry. */
export function isTransientNetworkError(error: unknown): boolean {
  const code = (error as { code?: string }).code ?? '';
  const name = (error as { name?: string }).name ?? '';
  return (
    ['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_SOCKET'].includes(code) ||
    ['TimeoutError', 'RequestTimeout', 'NetworkingError'].includes(name)
  );
}

/** Kind of an HTTP failure status. */
export function kindOfStatus(status: number | undefined): ObjectStoreErrorKind {
  if (status === 404) return 'NotFound';
  if (status === 412 || status === 409) return 'PreconditionFailed';
  if (status === 401 || status === 403) return 'Auth';
  if (status === 429 || status === 503) return 'Throttled';
  if (status === undefined || status >= 500 || status === 408) return 'Transient';
  return 'Fatal';
}

/**
 * A response body, exactly `expectedBytes` long when that is known (a short
 * or long body is a Transient error: retry).  Chunks are copied once, into
 * `receiveInto` when it is given and long enough, else into a buffer of the
 * final size.
 */
export async function collectBody(key: string, body: AsyncIterable<Uint8Array>, expectedBytes: number | undefined, receiveInto?: Buffer): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  let received = 0;
  const into =
    expectedBytes === undefined ? undefined : receiveInto && receiveInto.length >= expectedBytes ? receiveInto.subarray(0, expectedBytes) : Buffer.allocUnsafe(expectedBytes);
  for await (const chunk of body) {
    if (into) {
      if (received + chunk.byteLength > into.length) throw new ObjectStoreError('Transient', `get ${key}: more than the ${expectedBytes} bytes expected`);
      into.set(chunk, received);
    } else chunks.push(chunk);
    received += chunk.byteLength;
  }
  if (expectedBytes !== undefined && received !== expectedBytes)
    throw new ObjectStoreError('Transient', `get ${key}: ${received} bytes received, ${expectedBytes} expected`);
  return into ?? Buffer.concat(chunks, received);
}

/**
 * Does `store` honour conditional puts?  Creates `probeKey` only if absent
 * twice over: the second must be refused.  A server that ignores the
 * condition (s3rver) stores both.  The probe object is removed.
 */
export async function conditionalWritesWork(store: ObjectStore, probeKey: string): Promise<boolean> {
  await store.delete(probeKey);
  try {
    await store.putIf(probeKey, Buffer.from('probe 1\n'), { ifNoneMatch: '*' });
    try {
      await store.putIf(probeKey, Buffer.from('probe 2\n'), { ifNoneMatch: '*' });
      return false;
    } catch (error) {
      if (error instanceof ObjectStoreError && error.kind === 'PreconditionFailed') return true;
      throw error;
    }
  } finally {
    await store.delete(probeKey).catch(() => undefined);
  }
}

/** The names one level below `prefix` among `keys` (for backends that list flat). */
export function namesBelow(prefix: string, keys: Iterable<string>): string[] {
  const names = new Set<string>();
  for (const key of keys) if (key.startsWith(prefix)) names.add(key.slice(prefix.length).split('/')[0]);
  return [...names].sort();
}

export { openObjectStore, parseTargetUrl, type TargetUrl } from './targets';
export { RetryingObjectStore, type RetryOptions } from './retrying_object_store';
export { FaultyObjectStore, type Fault } from './faulty_object_store';
