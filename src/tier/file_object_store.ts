/**
 * ObjectStore on a local directory (file:///dir): the embedded default and
 * the simplest backend to reason about.  A put writes a temporary file,
 * fsyncs it, renames it into place and fsyncs the directory, so an object is
 * either absent or complete — the same all-or-nothing a bucket gives.
 * Keys map to paths below the root; ".." and empty segments are refused.
 * Conditional puts hold an flock on one lock file at the root while they
 * compare and replace, so processes sharing the directory see them atomic;
 * an object's version tag is a hash of its bytes.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { constants } from '../constants';
import { native } from '../native';
import { ObjectStoreError, type GetRange, type ObjectInfo, type ObjectStore, type PutCondition, type VersionedObject } from './object_store';

const TEMP_SUFFIX = '.tierfs-partial';
/** The lock conditional puts hold (its name ends like a partial object's: never listed, never a key). */
const CONDITIONAL_LOCK = `conditional-put${TEMP_SUFFIX}`;

function etagOf(data: Buffer): string {
  return `"${createHash('sha256').update(data).digest('hex').slice(0, 32)}"`;
}

function fsError(error: unknown, what: string): ObjectStoreError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return new ObjectStoreError('NotFound', `${what}: no such object`, { cause: error });
  if (code === 'EACCES' || code === 'EPERM') return new ObjectStoreError('Auth', `${what}: permission denied`, { cause: error });
  if (code === 'EIO' || code === 'EAGAIN' || code === 'EMFILE' || code === 'ENFILE' || code === 'EBUSY')
    return new ObjectStoreError('Transient', `${what}: ${code}`, { cause: error });
  return new ObjectStoreError('Fatal', `${what}: ${(error as Error).message}`, { cause: error });
}

export class FileObjectStore implements ObjectStore {
  readonly description: string;

  constructor(readonly root: string) {
    this.description = `file://${root}`;
  }

  private pathOf(key: string): string {
    const segments = key.split('/');
    if (key.length === 0 || segments.some((s) => s === '' || s === '.' || s === '..') || key.endsWith(TEMP_SUFFIX))
      throw new ObjectStoreError('Fatal', `bad object key ${JSON.stringify(key)}`);
    return path.join(this.root, ...segments);
  }

  async put(key: string, body: Buffer[]): Promise<void> {
    await this.write(key, body);
  }

  private async write(key: string, body: Buffer[]): Promise<void> {
    const target = this.pathOf(key);
    const temp = `${target}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`;
    try {
      await fsp.mkdir(path.dirname(target), { recursive: true });
      const handle = await fsp.open(temp, 'w', 0o600);
      try {
        await handle.writev(body);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      await fsp.rename(temp, target);
      const dir = await fsp.open(path.dirname(target), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    } catch (error) {
      await fsp.rm(temp, { force: true });
      throw fsError(error, `put ${key}`);
    }
  }

  async get(key: string, range?: GetRange): Promise<Buffer> {
    const file = this.pathOf(key);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(file, 'r');
    } catch (error) {
      throw fsError(error, `get ${key}`);
    }
    try {
      const sizeBytes = (await handle.stat()).size;
      const offset = range?.offsetBytes ?? 0;
      const length = range?.lengthBytes ?? sizeBytes;
      if (offset + length > sizeBytes)
        throw new ObjectStoreError('Fatal', `get ${key}: range ${offset}+${length} beyond its ${sizeBytes} bytes`);
      const buffer = range?.into && range.into.length >= length ? range.into.subarray(0, length) : Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await handle.read(buffer, done, length - done, offset + done);
        if (bytesRead === 0) throw new ObjectStoreError('Transient', `get ${key}: short read`);
        done += bytesRead;
      }
      return buffer;
    } catch (error) {
      if (error instanceof ObjectStoreError) throw error;
      throw fsError(error, `get ${key}`);
    } finally {
      await handle.close();
    }
  }

  async getVersioned(key: string): Promise<VersionedObject | undefined> {
    try {
      const body = await fsp.readFile(this.pathOf(key));
      return { body, etag: etagOf(body) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw error instanceof ObjectStoreError ? error : fsError(error, `get ${key}`);
    }
  }

  async putIf(key: string, body: Buffer, condition: PutCondition): Promise<string> {
    this.pathOf(key); // a bad key is refused before the lock
    await fsp.mkdir(this.root, { recursive: true }).catch((error: unknown) => {
      throw fsError(error, `put ${key}`);
    });
    const lock = await fsp.open(path.join(this.root, CONDITIONAL_LOCK), 'a', 0o600).catch((error: unknown) => {
      throw fsError(error, `put ${key}`);
    });
    try {
      for (let waitedMs = 0; !native.lockExclusive(lock.fd); waitedMs += 2) {
        if (waitedMs >= constants.conditionalPutLockWaitMs) throw new ObjectStoreError('Transient', `put ${key}: the directory's conditional-put lock stayed held`);
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
      const current = await this.getVersioned(key);
      const holds = 'ifMatch' in condition ? current?.etag === condition.ifMatch : current === undefined;
      if (!holds) throw new ObjectStoreError('PreconditionFailed', `put ${key}: ${current ? `the object is at version ${current.etag}` : 'no such object'} (HTTP 412)`);
      await this.write(key, [body]);
      return etagOf(body);
    } finally {
      await lock.close(); // closing the last descriptor drops the flock
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const stat = await fsp.stat(this.pathOf(key));
      return stat.isFile() ? { key, sizeBytes: stat.size } : undefined;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
      throw fsError(error, `head ${key}`);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Walk from the deepest directory the prefix names; filter the rest by string prefix.
    const slash = prefix.lastIndexOf('/');
    const base = slash < 0 ? '' : prefix.slice(0, slash);
    const stack = [base];
    while (stack.length > 0) {
      const rel = stack.pop()!;
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(path.join(this.root, ...rel.split('/').filter(Boolean)), { withFileTypes: true });
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') continue;
        throw fsError(error, `list ${prefix}`);
      }
      for (const entry of entries) {
        const key = rel === '' ? entry.name : `${rel}/${entry.name}`;
        if (entry.isDirectory()) {
          if (prefix.startsWith(`${key}/`) || key.startsWith(prefix) || `${key}/`.startsWith(prefix)) stack.push(key);
        } else if (entry.isFile() && key.startsWith(prefix) && !key.endsWith(TEMP_SUFFIX)) {
          const stat = await fsp.stat(path.join(this.root, ...key.split('/')));
          yield { key, sizeBytes: stat.size };
        }
      }
    }
  }

  async listNames(prefix: string): Promise<string[]> {
    const slash = prefix.lastIndexOf('/');
    const dir = slash < 0 ? '' : prefix.slice(0, slash);
    const start = prefix.slice(slash + 1);
    let entries: fs.Dirent[];
    try {
      entries = await fsp.readdir(path.join(this.root, ...dir.split('/').filter(Boolean)), { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return [];
      throw fsError(error, `list ${prefix}`);
    }
    return entries
      .filter((e) => e.name.startsWith(start) && (e.isDirectory() || (e.isFile() && !e.name.endsWith(TEMP_SUFFIX))))
      .map((e) => e.name.slice(start.length))
      .sort();
  }

  async delete(key: string): Promise<void> {
    try {
      await fsp.rm(this.pathOf(key), { force: true });
    } catch (error) {
      throw fsError(error, `delete ${key}`);
    }
  }

  async close(): Promise<void> {}
}
