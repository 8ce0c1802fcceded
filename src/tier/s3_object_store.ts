/**
 * ObjectStore on S3 or an S3-compatible server (s3://bucket/prefix?endpoint=…&region=…).
 *
 * - Checksums are computed and validated only when an API requires them
 *   (WHEN_REQUIRED): with the SDK's defaults, streamed bodies are sent with
 *   aws-chunked framing that S3-compatible servers such as s3rver store
 *   inside the object.  tierfs verifies every byte itself (block CRCs).
 * - A custom endpoint implies path-style addressing.
 * - The SDK's own retries are off (maxAttempts 1): RetryingObjectStore is the
 *   one retry policy, bounded by time, for every backend.
 * - Bodies above partSizeBytes go up as a multipart upload (lib-storage),
 *   parts in parallel.
 * - Credentials come from the SDK's default chain, never from the URL.
 */
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import type { FinalizeRequestMiddleware, MetadataBearer } from '@smithy/types';
import { webcrypto } from 'node:crypto';
import {
  collectBody,
  isTransientNetworkError,
  kindOfStatus,
  ObjectStoreError,
  type GetRange,
  type ObjectInfo,
  type ObjectStore,
  type PutCondition,
  type VersionedObject,
} from './object_store';

const SHA256_HEADER = 'x-amz-content-sha256';
const OFF_THREAD_HASH_BYTES_MIN = 64 * 1024;

function hasHeader(headers: Record<string, string>, name: string): boolean {
  return Object.keys(headers).some((key) => key.toLowerCase() === name);
}

export interface S3Options {
  bucket: string;
  prefix: string;
  endpoint?: string;
  region?: string;
  partSizeBytes: number;
  partConcurrency: number;
}

function s3Error(error: unknown, what: string): ObjectStoreError {
  if (error instanceof ObjectStoreError) return error;
  const e = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  let kind = kindOfStatus(status);
  if (e.name === 'NoSuchKey' || e.name === 'NotFound') kind = 'NotFound';
  else if (e.name === 'SlowDown' || e.name === 'ThrottlingException' || e.name === 'TooManyRequestsException') kind = 'Throttled';
  else if (e.name === 'AbortError' || isTransientNetworkError(error)) kind = 'Transient';
  else if (e.name === 'NoSuchBucket' || e.name === 'CredentialsProviderError') kind = 'Fatal';
  else if (status === undefined && kind === 'Transient' && !e.$metadata) kind = 'Transient';
  return new ObjectStoreError(kind, `${what}: ${e.name ?? 'error'}${status ? ` (HTTP ${status})` : ''}: ${e.message ?? ''}`, { cause: error });
}

export class S3ObjectStore implements ObjectStore {
  readonly description: string;
  private readonly client: S3Client;
  private readonly prefix: string;

  constructor(private readonly options: S3Options) {
    this.prefix = options.prefix === '' ? '' : `${options.prefix.replace(/\/+$/, '')}/`;
    this.description = `s3://${options.bucket}/${options.prefix}${options.endpoint ? ` at ${options.endpoint}` : ''}`;
    // tierfs pins the SDK version with its lockfile; the SDK's Node 22 notice is not the user's business.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    this.client = new S3Client({
      region: options.region ?? process.env.AWS_REGION ?? 'us-east-1',
      ...(options.endpoint ? { endpoint: options.endpoint, forcePathStyle: true } : {}),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 1,
    });
    // SigV4 signs the SHA-256 of every body.  The SDK hashes on the event loop (a 32 MiB pack costs
    // tens of ms that stall every reader); WebCrypto's digest runs on the thread pool, and the
    // signer uses a hash it finds in x-amz-content-sha256 instead of computing one.
    const hashOffThread: FinalizeRequestMiddleware<object, MetadataBearer> = (next) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown };
      const body = request.body;
      if (request.headers && ArrayBuffer.isView(body) && body.byteLength >= OFF_THREAD_HASH_BYTES_MIN && !hasHeader(request.headers, SHA256_HEADER)) {
        const digest = await webcrypto.subtle.digest('SHA-256', body);
        request.headers[SHA256_HEADER] = Buffer.from(digest).toString('hex');
      }
      return next(args);
    };
    this.client.middlewareStack.addRelativeTo(hashOffThread, { relation: 'before', toMiddleware: 'httpSigningMiddleware', name: 'tierfsOffThreadPayloadHash' });
  }

  private keyOf(key: string): string {
    return this.prefix + key;
  }

  async put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void> {
    const sizeBytes = body.reduce((sum, part) => sum + part.length, 0);
    const data = body.length === 1 ? body[0] : Buffer.concat(body, sizeBytes);
    try {
      if (sizeBytes <= this.options.partSizeBytes) {
        await this.client.send(new PutObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key), Body: data, ContentLength: sizeBytes }), {
          abortSignal: signal,
        });
        return;
      }
      const upload = new Upload({
        client: this.client,
        params: { Bucket: this.options.bucket, Key: this.keyOf(key), Body: data },
        partSize: this.options.partSizeBytes,
        queueSize: this.options.partConcurrency,
        leavePartsOnError: false,
      });
      const abort = () => void upload.abort().catch(() => undefined);
      signal?.addEventListener('abort', abort, { once: true });
      try {
        await upload.done();
      } finally {
        signal?.removeEventListener('abort', abort);
      }
    } catch (error) {
      throw s3Error(error, `put ${key}`);
    }
  }

  async get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.options.bucket,
          Key: this.keyOf(key),
          ...(range ? { Range: `bytes=${range.offsetBytes}-${range.offsetBytes + range.lengthBytes - 1}` } : {}),
        }),
        { abortSignal: signal },
      );
      return await collectBody(key, out.Body as AsyncIterable<Uint8Array>, range?.lengthBytes ?? out.ContentLength, range?.into);
    } catch (error) {
      if ((error as { name?: string }).name === 'InvalidRange')
        throw new ObjectStoreError('Fatal', `get ${key}: range beyond the object`, { cause: error });
      throw s3Error(error, `get ${key}`);
    }
  }

  async getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined> {
    try {
      const out = await this.client.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }), { abortSignal: signal });
      const body = await collectBody(key, out.Body as AsyncIterable<Uint8Array>, out.ContentLength);
      if (!out.ETag) throw new ObjectStoreError('Fatal', `get ${key}: the server sent no ETag`);
      return { body, etag: out.ETag };
    } catch (error) {
      const mapped = s3Error(error, `get ${key}`);
      if (mapped.kind === 'NotFound') return undefined;
      throw mapped;
    }
  }

  async putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string> {
    try {
      const out = await this.client.send(
        new PutObjectCommand({
          Bucket: this.options.bucket,
          Key: this.keyOf(key),
          Body: body,
          ContentLength: body.length,
          ...('ifMatch' in condition ? { IfMatch: condition.ifMatch } : { IfNoneMatch: condition.ifNoneMatch }),
        }),
        { abortSignal: signal },
      );
      if (!out.ETag) throw new ObjectStoreError('Fatal', `put ${key}: the server sent no ETag`);
      return out.ETag;
    } catch (error) {
      throw s3Error(error, `put ${key}`);
    }
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }), { abortSignal: signal });
      return { key, sizeBytes: out.ContentLength ?? 0 };
    } catch (error) {
      const mapped = s3Error(error, `head ${key}`);
      if (mapped.kind === 'NotFound') return undefined;
      throw mapped;
    }
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: this.keyOf(prefix), ContinuationToken: token }),
          { abortSignal: signal },
        );
      } catch (error) {
        throw s3Error(error, `list ${prefix}`);
      }
      for (const item of out.Contents ?? []) {
        if (item.Key?.startsWith(this.prefix)) yield { key: item.Key.slice(this.prefix.length), sizeBytes: item.Size ?? 0 };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async listNames(prefix: string, signal?: AbortSignal): Promise<string[]> {
    const names = new Set<string>();
    let token: string | undefined;
    do {
      let out;
      try {
        out = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: this.keyOf(prefix), Delimiter: '/', ContinuationToken: token }),
          { abortSignal: signal },
        );
      } catch (error) {
        throw s3Error(error, `list ${prefix}`);
      }
      const start = this.keyOf(prefix).length;
      for (const p of out.CommonPrefixes ?? []) if (p.Prefix) names.add(p.Prefix.slice(start).replace(/\/$/, ''));
      for (const item of out.Contents ?? []) if (item.Key) names.add(item.Key.slice(start));
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
    return [...names].sort();
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.keyOf(key) }), { abortSignal: signal });
    } catch (error) {
      const mapped = s3Error(error, `delete ${key}`);
      if (mapped.kind !== 'NotFound') throw mapped;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}
