/**
 * ObjectStore on Azure Blob storage (azure://container/prefix?endpoint=…).
 *
 * Packs are block blobs.  A body up to singleShotBytesMax (256 MiB, the
 * SDK's own uploadData threshold) goes up in one Put Blob — on azurite four
 * times faster than staging blocks; larger ones are staged as blocks
 * (stageBlock, several in parallel) and committed with one commitBlockList.
 * Either way a blob is absent or complete.  The SDK's retries are off (one
 * try): RetryingObjectStore is the one retry policy for every backend.
 *
 * Credentials: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with
 * AZURE_STORAGE_KEY; the URL's endpoint (for azurite or a sovereign cloud)
 * replaces the account's default one.  Never from the URL, never logged.
 */
import {
  BlobServiceClient,
  StorageSharedKeyCredential,
  type ContainerClient,
  type StoragePipelineOptions,
} from '@azure/storage-blob';
import { Readable } from 'node:stream';
import { constants } from '../constants';
import { TierfsError } from '../errors';
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

export interface AzureOptions {
  container: string;
  prefix: string;
  endpoint?: string;
  partSizeBytes: number;
  partConcurrency: number;
  /** Bodies up to this size go up in one Put Blob, as the SDK's own uploadData does (default 256 MiB). */
  singleShotBytesMax?: number;
}

function azureError(error: unknown, what: string): ObjectStoreError {
  if (error instanceof ObjectStoreError) return error;
  const e = error as { name?: string; message?: string; statusCode?: number; code?: string };
  let kind = kindOfStatus(e.statusCode);
  if (e.code === 'BlobNotFound') kind = 'NotFound';
  else if (e.code === 'ContainerNotFound') kind = 'Fatal';
  else if (e.name === 'AbortError' || isTransientNetworkError(error) || e.code === 'REQUEST_SEND_ERROR') kind = 'Transient';
  return new ObjectStoreError(kind, `${what}: ${e.code ?? e.name ?? 'error'}${e.statusCode ? ` (HTTP ${e.statusCode})` : ''}: ${(e.message ?? '').split('\n')[0]}`, {
    cause: error,
  });
}

function blockId(index: number): string {
  return Buffer.from(`tierfs-block-${String(index).padStart(8, '0')}`).toString('base64');
}

export class AzureObjectStore implements ObjectStore {
  readonly description: string;
  private readonly container: ContainerClient;
  private readonly prefix: string;

  constructor(private readonly options: AzureOptions, env: NodeJS.ProcessEnv = process.env) {
    this.prefix = options.prefix === '' ? '' : `${options.prefix.replace(/\/+$/, '')}/`;
    this.description = `azure://${options.container}/${options.prefix}${options.endpoint ? ` at ${options.endpoint}` : ''}`;
    const pipeline: StoragePipelineOptions = { retryOptions: { maxTries: 1 } };
    let service: BlobServiceClient;
    if (env.AZURE_STORAGE_CONNECTION_STRING) {
      let connection = env.AZURE_STORAGE_CONNECTION_STRING;
      if (options.endpoint) connection = `${connection.replace(/BlobEndpoint=[^;]*;?/i, '').replace(/;?$/, ';')}BlobEndpoint=${options.endpoint};`;
      service = BlobServiceClient.fromConnectionString(connection, pipeline);
    } else if (env.AZURE_STORAGE_ACCOUNT && env.AZURE_STORAGE_KEY) {
      const credential = new StorageSharedKeyCredential(env.AZURE_STORAGE_ACCOUNT, env.AZURE_STORAGE_KEY);
      const url = options.endpoint ?? `https://${env.AZURE_STORAGE_ACCOUNT}.blob.core.windows.net`;
      service = new BlobServiceClient(url, credential, pipeline);
    } else {
      throw new TierfsError(
        'USAGE',
        'azure target: set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY',
      );
    }
    this.container = service.getContainerClient(options.container);
  }

  private blob(key: string) {
    return this.container.getBlockBlobClient(this.prefix + key);
  }

  async put(key: string, body: Buffer[], signal?: AbortSignal): Promise<void> {
    const sizeBytes = body.reduce((sum, part) => sum + part.length, 0);
    const blob = this.blob(key);
    try {
      if (sizeBytes <= (this.options.singleShotBytesMax ?? constants.azureSingleShotBytesMax)) {
        // The parts streamed as they are: no copy of a 32 MiB pack into one buffer.
        await blob.upload(() => Readable.from(body, { objectMode: false }), sizeBytes, { abortSignal: signal });
        return;
      }
      const data = body.length === 1 ? body[0] : Buffer.concat(body, sizeBytes);
      const ids: string[] = [];
      for (let offset = 0; offset < sizeBytes; offset += this.options.partSizeBytes) ids.push(blockId(ids.length));
      let next = 0;
      const worker = async () => {
        while (next < ids.length) {
          const index = next++;
          const start = index * this.options.partSizeBytes;
          const part = data.subarray(start, Math.min(start + this.options.partSizeBytes, sizeBytes));
          await blob.stageBlock(ids[index], part, part.length, { abortSignal: signal });
        }
      };
      await Promise.all(Array.from({ length: Math.min(this.options.partConcurrency, ids.length) }, worker));
      await blob.commitBlockList(ids, { abortSignal: signal });
    } catch (error) {
      throw azureError(error, `put ${key}`);
    }
  }

  async get(key: string, range?: GetRange, signal?: AbortSignal): Promise<Buffer> {
    try {
      const out = await this.blob(key).download(range?.offsetBytes ?? 0, range?.lengthBytes, { abortSignal: signal });
      return await collectBody(key, out.readableStreamBody as AsyncIterable<Uint8Array>, range?.lengthBytes ?? out.contentLength, range?.into);
    } catch (error) {
      if ((error as { statusCode?: number }).statusCode === 416)
        throw new ObjectStoreError('Fatal', `get ${key}: range beyond the object`, { cause: error });
      throw azureError(error, `get ${key}`);
    }
  }

  async getVersioned(key: string, signal?: AbortSignal): Promise<VersionedObject | undefined> {
    try {
      const out = await this.blob(key).download(0, undefined, { abortSignal: signal });
      const body = await collectBody(key, out.readableStreamBody as AsyncIterable<Uint8Array>, out.contentLength);
      if (!out.etag) throw new ObjectStoreError('Fatal', `get ${key}: the server sent no ETag`);
      return { body, etag: out.etag };
    } catch (error) {
      const mapped = azureError(error, `get ${key}`);
      if (mapped.kind === 'NotFound') return undefined;
      throw mapped;
    }
  }

  async putIf(key: string, body: Buffer, condition: PutCondition, signal?: AbortSignal): Promise<string> {
    try {
      const conditions = 'ifMatch' in condition ? { ifMatch: condition.ifMatch } : { ifNoneMatch: condition.ifNoneMatch };
      const out = await this.blob(key).upload(body, body.length, { conditions, abortSignal: signal });
      if (!out.etag) throw new ObjectStoreError('Fatal', `put ${key}: the server sent no ETag`);
      return out.etag;
    } catch (error) {
      const mapped = azureError(error, `put ${key}`);
      // If-None-Match: * on an existing blob answers 409 BlobAlreadyExists, a failed If-Match 412.
      if ((error as { code?: string }).code === 'BlobAlreadyExists' || (error as { code?: string }).code === 'ConditionNotMet')
        throw new ObjectStoreError('PreconditionFailed', mapped.message, { cause: error });
      throw mapped;
    }
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectInfo | undefined> {
    try {
      const out = await this.blob(key).getProperties({ abortSignal: signal });
      return { key, sizeBytes: out.contentLength ?? 0 };
    } catch (error) {
      const mapped = azureError(error, `head ${key}`);
      if (mapped.kind === 'NotFound') return undefined;
      throw mapped;
    }
  }

  async *list(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    try {
      for await (const item of this.container.listBlobsFlat({ prefix: this.prefix + prefix, abortSignal: signal })) {
        yield { key: item.name.slice(this.prefix.length), sizeBytes: item.properties.contentLength ?? 0 };
      }
    } catch (error) {
      throw azureError(error, `list ${prefix}`);
    }
  }

  async listNames(prefix: string, signal?: AbortSignal): Promise<string[]> {
    const names = new Set<string>();
    const start = (this.prefix + prefix).length;
    try {
      for await (const item of this.container.listBlobsByHierarchy('/', { prefix: this.prefix + prefix, abortSignal: signal })) {
        names.add(item.name.slice(start).replace(/\/$/, ''));
      }
    } catch (error) {
      throw azureError(error, `list ${prefix}`);
    }
    return [...names].sort();
  }

  async delete(key: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.blob(key).deleteIfExists({ abortSignal: signal });
    } catch (error) {
      throw azureError(error, `delete ${key}`);
    }
  }

  async close(): Promise<void> {}
}
