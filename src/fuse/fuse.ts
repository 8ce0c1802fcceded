/**
 * The FUSE front end: serves a FileSystem through our libfuse 3 low-level
 * binding (src/fuse/binding.ts), on the event loop.  Requests arrive by inode with the caller's
 * uid, gid, supplementary groups, pid and umask; each is handed to src/fs
 * with those credentials and answered exactly once, whenever its promise
 * settles.  Any error becomes an errno through errnoOf(); one that is not a
 * TierfsError (a bug) is logged and answered EIO, and the mount lives on.
 *
 * The kernel checks permissions itself (default_permissions, with the
 * caller's full credentials); src/fs checks again with the same caller.
 * A read or fsync the caller gives up on (a signal: the kernel sends
 * INTERRUPT) is answered EINTR at once; its work finishes in the background.
 * The kernel's lookup references reach src/fs (remember/forget), so a file
 * unlinked while the kernel still knows it keeps its inode until forgotten.
 */
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { constants } from '../constants';
import { log } from '../log';
import { TierfsError } from '../errors';
import {
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Credentials,
  type FileSystem,
  type Ino,
  type SetAttr,
  type TimeSpec,
} from '../fs/fs';
import { A, fuseNative as native, Op, opNames, SetAttrBit, type Session } from './binding';
import { errnoOf } from './errno';
import { detach, mountsAt, prepareMountPoint } from './mount_point';

const E = os.constants.errno;
const NS_PER_S = 1_000_000_000n;
/** Operations answered EINTR as soon as the caller is interrupted. */
const interruptible = new Set<number>([Op.READ, Op.FSYNC, Op.FSYNCDIR]);
const FALLOC_FL_KEEP_SIZE = 1;

export interface MountOptions {
  /** Let every user reach the mount (the kernel checks modes: default_permissions). */
  allowOther?: boolean;
  /** How long the kernel may cache names and attributes, in seconds (tierfs is their only writer). */
  attrTimeoutS?: number;
  /** Busy-poll window after each request, in microseconds (0: always sleep between requests). */
  busyPollUs?: number;
  /**
   * Ask for the kernel's writeback cache: write(2) returns once the page
   * cache has the bytes, and the kernel sends them later in large requests
   * (at the latest at fsync or close).  Unsynced writes die with the daemon.
   */
  writebackCache?: boolean;
}

/** What the kernel agreed to at INIT. */
export interface Negotiated {
  maxWriteBytes: number;
  maxReadaheadBytes: number;
  writebackCache: boolean;
  /** FUSE protocol, major * 1000 + minor. */
  protocol: number;
}

/** Whether allow_other may be used: always as root, otherwise only with user_allow_other in /etc/fuse.conf. */
export function allowOtherPermitted(): boolean {
  if (process.getuid?.() === 0) return true;
  try {
    return /^\s*user_allow_other\s*$/m.test(fs.readFileSync('/etc/fuse.conf', 'utf8'));
  } catch {
    return false;
  }
}

function splitNs(ns: bigint, out: Float64Array, seconds: number, nanos: number): void {
  out[seconds] = Number(ns / NS_PER_S);
  out[nanos] = Number(ns % NS_PER_S);
}

function timeOf(seconds: number, nanos: number): bigint {
  return BigInt(seconds) * NS_PER_S + BigInt(nanos);
}

/** Fill `out` (from `at`) with an inode's attributes in the binding's layout. */
function putAttr(attr: Attr, out: Float64Array, at = 0, generation = 0): void {
  const v = at === 0 ? out : out.subarray(at, at + A.COUNT);
  v[A.INO] = attr.ino;
  v[A.MODE] = attr.mode;
  v[A.NLINK] = attr.nlink;
  v[A.UID] = attr.uid;
  v[A.GID] = attr.gid;
  v[A.RDEV] = attr.rdev;
  v[A.SIZE] = attr.sizeBytes;
  v[A.BLOCKS] = attr.blocks;
  splitNs(attr.atimeNs, v, A.ATIME_S, A.ATIME_NS);
  splitNs(attr.mtimeNs, v, A.MTIME_S, A.MTIME_NS);
  splitNs(attr.ctimeNs, v, A.CTIME_S, A.CTIME_NS);
  v[A.BLKSIZE] = constants.blockSizeBytes;
  v[A.GENERATION] = generation;
}

/**
 * What the front end needs of a file system: src/fs's FileSystem, or the
 * benchmark's memory-backed one.  write() must not keep `data` once its
 * promise settles: the buffer is reused for a later request.
 */
export type FuseBackend = Pick<FileSystem,
  'lookup' | 'getattr' | 'setattr' | 'readlink' | 'mknod' | 'mkdir' | 'unlink' | 'rmdir' | 'symlink' | 'rename' | 'link' |
  'open' | 'create' | 'read' | 'write' | 'flush' | 'release' | 'fsync' | 'readdir' | 'statfs' |
  'setxattr' | 'getxattr' | 'listxattr' | 'removexattr' | 'access' | 'remember' | 'forget'> & {
  /** Set when the kernel agreed to its writeback cache (FileSystem.kernelWritebackCache says what changes). */
  kernelWritebackCache?: boolean;
  /**
   * True when write() has copied `data` before it returns (not merely before
   * its promise settles): it then gets the view of libfuse's buffer itself,
   * no copy.  src/fs waits for the inode's lock first, so it does not.
   */
  readonly consumesWriteAtOnce?: boolean;
  /**
   * The generation of every node id (the same for all: inode numbers are
   * never reused within one generation); with it an NFS client's file
   * handle stays valid across restarts.  0 when absent.
   */
  readonly generation?: number;
};

export class FuseMount {
  readonly mountPoint: string;
  private session: Session | undefined;
  /** Requests not yet answered: req → op. */
  private readonly inFlight = new Map<number, number>();
  /** Open directories: who opened them (readdir checks nothing more). */
  private readonly dirHandles = new Map<number, Credentials>();
  private nextDirHandle = 1;
  private readonly attrOut = new Float64Array(A.COUNT);
  private readonly generation: number;
  /** Buffers for write payloads and read replies, reused: no allocation (and no garbage) per 1 MiB request. */
  private readonly writeBuffers: Buffer[] = [];
  /** Idle buffers for small write payloads, by size (powers of two below fusePooledWriteBytesMin). */
  private readonly smallWriteBuffers = new Map<number, Buffer[]>();
  private readonly readBuffers: Buffer[] = [];
  private readonly statfsOut = new Float64Array(9);
  private readonly attrTimeoutS: number;
  private negotiated: Negotiated | undefined;
  private initWaiter: { resolve: () => void; reject: (error: Error) => void } | undefined;
  private ended: Promise<number>;
  private endedResolve!: (result: number) => void;
  private unmounting = false;
  private unmounted: Promise<void> | undefined;
  private minor: number | undefined;
  /** Called when the kernel drops the mount without our unmount (umount by hand, aborted connection). */
  onLost: (() => void) | undefined;

  constructor(
    private readonly fileSystem: FuseBackend,
    mountPoint: string,
    private readonly options: MountOptions = {},
  ) {
    this.mountPoint = path.resolve(mountPoint);
    this.attrTimeoutS = options.attrTimeoutS ?? constants.fuseAttrTimeoutS;
    this.generation = fileSystem.generation ?? 0;
    this.ended = new Promise((resolve) => (this.endedResolve = resolve));
  }

  /** What the kernel negotiated at INIT (after mount()). */
  get connection(): Negotiated | undefined {
    return this.negotiated;
  }

  /** Requests in progress (for status and tests). */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  async mount(): Promise<void> {
    await prepareMountPoint(this.mountPoint);
    const allowOther = this.options.allowOther ?? allowOtherPermitted();
    const opts = ['fsname=tierfs', 'subtype=tierfs', 'default_permissions', 'auto_unmount', `max_read=${constants.fuseRequestBytesMax}`];
    if (allowOther) opts.push('allow_other');
    const initialized = new Promise<void>((resolve, reject) => (this.initWaiter = { resolve, reject }));
    try {
      this.session = native.mount(this.mountPoint, ['-o', opts.join(',')], {
        maxWrite: constants.fuseRequestBytesMax,
        busyPollUs: this.options.busyPollUs ?? constants.fuseBusyPollUs,
        writebackCache: this.options.writebackCache ? 1 : 0,
      }, (...args) => this.dispatch(...args));
    } catch (error) {
      throw new Error(`mount ${this.mountPoint}: ${(error as Error).message}`);
    }
    const entry = mountsAt(this.mountPoint).pop();
    this.minor = entry?.minor;
    const timer = setTimeout(() => this.initWaiter?.reject(new Error('the kernel sent no INIT within 10 s')), 10_000);
    try {
      await initialized;
    } catch (error) {
      await this.unmount().catch(() => undefined);
      throw error;
    } finally {
      clearTimeout(timer);
    }
    if (entry) this.setReadahead(entry.device);
  }

  /**
   * The kernel starts a FUSE mount with 128 KiB of readahead whatever INIT
   * says; sequential reads need several 1 MiB requests in flight (measured:
   * 0.6 GB/s at 128 KiB, 1.1 GB/s at 4 MiB).  Needs root; otherwise logged.
   */
  private setReadahead(device: string): void {
    const file = `/sys/class/bdi/${device}/read_ahead_kb`;
    try {
      fs.writeFileSync(file, String(constants.fuseReadaheadBytes / 1024));
    } catch (error) {
      log.info('kernel readahead left at its default', { file, error: (error as NodeJS.ErrnoException).code });
    }
  }

  /**
   * Detach the mount, wait for the kernel to let go (files still open keep
   * being served meanwhile; after constants.fuseUnmountWaitMs the connection
   * is aborted), wait for the requests in flight, then free the session.
   */
  unmount(): Promise<void> {
    this.unmounted ??= this.detachAndFree();
    return this.unmounted;
  }

  /**
   * With the writeback cache, files still open may have pages the kernel
   * has not sent: have it send them (syncfs, by `sync -f` in a process of its
   * own, while this loop serves the writes) before the detach, after which
   * a connection aborted for files kept open would drop them.
   */
  private sendDirtyPages(): Promise<void> {
    return new Promise((resolve) => {
      execFile('sync', ['-f', this.mountPoint], { timeout: constants.fuseUnmountWaitMs }, (error) => {
        if (error) log.warn('the kernel did not send its cached writes before the unmount', { mount: this.mountPoint, error: error.message });
        resolve();
      });
    });
  }

  private async detachAndFree(): Promise<void> {
    const session = this.session;
    if (!session) return;
    this.unmounting = true;
    if (mountsAt(this.mountPoint).length > 0) {
      if (this.negotiated?.writebackCache) await this.sendDirtyPages();
      const errno = native.unmount(session);
      if (errno !== 0 && mountsAt(this.mountPoint).length > 0) {
        if (errno !== E.EPERM) log.warn('umount failed; trying fusermount3', { mount: this.mountPoint, errno });
        await detach(this.mountPoint);
      }
    }
    if (!(await this.within(this.ended, constants.fuseUnmountWaitMs))) {
      log.warn('the kernel still holds the mount (files open); aborting the connection', { mount: this.mountPoint, minor: this.minor });
      this.abortConnection();
      if (!(await this.within(this.ended, constants.fuseUnmountWaitMs))) throw new Error(`${this.mountPoint}: the FUSE connection did not end`);
    }
    const deadline = Date.now() + constants.fuseUnmountWaitMs;
    while (this.inFlight.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.inFlight.size > 0) {
      // Their replies would reach a freed session: keep it (a small leak) and drop them.
      log.warn('requests still running at unmount; their answers are dropped', { count: this.inFlight.size });
      this.inFlight.clear();
      this.session = undefined;
      return;
    }
    this.session = undefined;
    native.destroy(session);
  }

  private async within(promise: Promise<unknown>, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const done = await Promise.race([promise.then(() => true), timeout]);
    clearTimeout(timer);
    return done;
  }

  private abortConnection(): void {
    if (this.minor === undefined) return;
    const abort = `/sys/fs/fuse/connections/${this.minor}/abort`;
    // systemd mounts FUSE's control file system; where nothing did (a container), root mounts it here.
    if (!fs.existsSync(abort) && process.getuid?.() === 0) spawnSync('mount', ['-t', 'fusectl', 'fusectl', '/sys/fs/fuse/connections'], { timeout: 5000 });
    try {
      fs.writeFileSync(abort, '1');
    } catch (error) {
      log.warn('cannot abort the FUSE connection', { minor: this.minor, error: (error as Error).message });
    }
  }

  // ---- requests ----

  /** Answer `req` once: a second answer (after an interrupt) is dropped. */
  private answer(req: number, reply: () => number): number {
    if (!this.inFlight.delete(req)) return -E.ENOENT;
    return reply();
  }

  private fail(req: number, op: number, ino: number, error: unknown): void {
    const errno = errnoOf(error, opNames[op] ?? String(op), `inode ${ino}`);
    this.answer(req, () => native.replyErr(req, errno));
  }

  /** Run one request's work; its value goes to `reply`, any error (or throw) to fail(). */
  private run<T>(req: number, op: number, ino: number, work: () => Promise<T>, reply: (value: T) => number): void {
    let promise: Promise<T>;
    try {
      promise = work();
    } catch (error) {
      this.fail(req, op, ino, error);
      return;
    }
    promise.then(
      (value) => {
        try {
          this.answer(req, () => reply(value));
        } catch (error) {
          this.fail(req, op, ino, error);
        }
      },
      (error: unknown) => this.fail(req, op, ino, error),
    );
  }

  private ok(req: number): number {
    return native.replyErr(req, 0);
  }

  private entry(req: number, attr: Attr): number {
    putAttr(attr, this.attrOut, 0, this.generation);
    const result = native.replyEntry(req, this.attrOut, this.attrTimeoutS, this.attrTimeoutS);
    if (result === 0) this.fileSystem.remember(attr.ino);
    return result;
  }

  private attr(req: number, attr: Attr): number {
    putAttr(attr, this.attrOut, 0, this.generation);
    return native.replyAttr(req, this.attrOut, this.attrTimeoutS);
  }

  private dispatch(
    op: number, req: number, ino: number, fh: number, a: number, b: number, c: number, d: number,
    name: string | undefined, name2: string | undefined, data: Buffer | Float64Array | undefined,
    uid: number, gid: number, _pid: number, _umask: number, groups: number[] | undefined,
  ): void {
    try {
      if (op === Op.FORGET) return this.forget(data as Float64Array);
      if (op === Op.INTERRUPT) return this.interrupt(req);
      if (op === Op.INIT) return this.init(a, b, c, d);
      if (op === Op.ENDED) return this.end(a);
      this.inFlight.set(req, op);
      this.request(op, req, ino as Ino, fh, a, b, c, name!, name2!, data, { uid, gid, groups: groups ?? [] });
    } catch (error) {
      if (this.inFlight.has(req)) this.fail(req, op, ino, error);
      else log.error('FUSE dispatch failed', { op: opNames[op], error: (error as Error)?.stack ?? String(error) });
    }
  }

  private init(maxWriteBytes: number, maxReadaheadBytes: number, writeback: number, protocol: number): void {
    this.negotiated = { maxWriteBytes, maxReadaheadBytes, writebackCache: writeback === 1, protocol };
    if (this.options.writebackCache && !this.negotiated.writebackCache) log.warn('the kernel refused its writeback cache: writes go through as without it');
    this.fileSystem.kernelWritebackCache = this.negotiated.writebackCache;
    log.info('FUSE connection', { ...this.negotiated, libfuse: native.libfuseVersion });
    this.initWaiter?.resolve();
  }

  private end(result: number): void {
    this.endedResolve(result);
    this.initWaiter?.reject(new Error('the FUSE session ended before INIT'));
    if (!this.unmounting) {
      log.warn('the kernel ended the FUSE session (unmounted from outside?)', { mount: this.mountPoint, result });
      this.unmount().catch((error) => log.error('cleanup after a lost mount failed', { error }));
      this.onLost?.();
    }
  }

  private forget(pairs: Float64Array): void {
    for (let i = 0; i + 1 < pairs.length; i += 2) this.fileSystem.forget(pairs[i] as Ino, pairs[i + 1]);
  }

  private interrupt(req: number): void {
    const op = this.inFlight.get(req);
    if (op === undefined || !interruptible.has(op)) return;
    log.info('request interrupted by its caller; answering EINTR', { op: opNames[op] });
    // After libfuse's interrupt callback returns (it holds the request's lock meanwhile).
    queueMicrotask(() => this.answer(req, () => native.replyErr(req, E.EINTR)));
  }

  private request(
    op: number, req: number, ino: Ino, fh: number, a: number, b: number, c: number,
    name: string, name2: string, data: Buffer | Float64Array | undefined, who: Credentials,
  ): void {
    const fsys = this.fileSystem;
    const run = <T>(work: () => Promise<T>, reply: (value: T) => number) => this.run(req, op, ino, work, reply);
    const done = () => this.ok(req);
    const entry = (attr: Attr) => this.entry(req, attr);
    switch (op) {
      case Op.LOOKUP:
        return run(() => fsys.lookup(ino, name, who), entry);
      case Op.GETATTR:
        return run(() => fsys.getattr(ino), (attr) => this.attr(req, attr));
      case Op.SETATTR:
        return run(() => fsys.setattr(ino, setAttrOf(a, data as Float64Array), who, b ? fh : undefined), (attr) => this.attr(req, attr));
      case Op.READLINK:
        return run(() => fsys.readlink(ino), (target) => native.replyReadlink(req, target));
      case Op.MKNOD:
        return run(() => fsys.mknod(ino, name, a, b, who), entry);
      case Op.MKDIR:
        return run(() => fsys.mkdir(ino, name, a, who), entry);
      case Op.UNLINK:
        return run(() => fsys.unlink(ino, name, who), done);
      case Op.RMDIR:
        return run(() => fsys.rmdir(ino, name, who), done);
      case Op.SYMLINK:
        return run(() => fsys.symlink(ino, name, name2, who), entry);
      case Op.RENAME:
        return run(() => fsys.rename(ino, name, a as Ino, name2, b, who), done);
      case Op.LINK:
        return run(() => fsys.link(ino, a as Ino, name, who), entry);
      case Op.OPEN:
        return run(() => fsys.open(ino, a, who), (handle) => native.replyOpen(req, handle, 0));
      case Op.CREATE:
        return run(() => fsys.create(ino, name, a, b, who), ({ attr, fh: handle }) => {
          putAttr(attr, this.attrOut, 0, this.generation);
          const result = native.replyCreate(req, this.attrOut, this.attrTimeoutS, this.attrTimeoutS, handle, 0);
          if (result === 0) fsys.remember(attr.ino);
          else fsys.release(handle).catch(() => undefined); // the caller is gone: nobody will close it
          return result;
        });
      case Op.READ: {
        const into = a <= constants.fuseRequestBytesMax ? this.readBuffers.pop() ?? Buffer.allocUnsafeSlow(constants.fuseRequestBytesMax) : undefined;
        const recycle = () => {
          if (into && this.readBuffers.length < constants.fuseWriteBufferCountMax) this.readBuffers.push(into);
        };
        // The reply copies into the kernel at once, so the buffer is free again right after it.
        return run(() => fsys.read(fh, b, a, into).catch((error) => {
          recycle();
          throw error;
        }), (bytes) => {
          const result = native.replyBuf(req, bytes);
          recycle();
          return result;
        });
      }
      case Op.WRITE: {
        if (fsys.consumesWriteAtOnce) return run(() => fsys.write(fh, a, data as Buffer), (count) => native.replyWrite(req, count));
        const { bytes, done: recycle } = this.copyPayload(data as Buffer);
        return run(() => fsys.write(fh, a, bytes).finally(recycle), (count) => native.replyWrite(req, count));
      }
      case Op.FLUSH:
        return run(() => fsys.flush(fh), done);
      case Op.RELEASE:
        return run(() => fsys.release(fh), done);
      case Op.FSYNC:
        return run(() => fsys.fsync(fh), done);
      case Op.FSYNCDIR:
        return run(() => fsys.fsync(), done);
      case Op.OPENDIR:
        return run(() => fsys.readdir(ino, 0, 0, who), () => {
          const handle = this.nextDirHandle++;
          this.dirHandles.set(handle, who);
          const result = native.replyOpen(req, handle, 0);
          if (result !== 0) this.dirHandles.delete(handle);
          return result;
        });
      case Op.READDIR:
      case Op.READDIRPLUS:
        return this.readdir(req, op, ino, fh, a, b);
      case Op.RELEASEDIR:
        this.dirHandles.delete(fh);
        return void this.answer(req, done);
      case Op.STATFS:
        return run(() => fsys.statfs(), (s) => {
          const v = this.statfsOut;
          v.set([s.blockSizeBytes, s.blockSizeBytes, s.blocks, s.blocksFree, s.blocksFree, s.files, s.filesFree, s.filesFree, s.nameBytesMax]);
          return native.replyStatfs(req, v);
        });
      case Op.SETXATTR:
        return run(() => fsys.setxattr(ino, name, Buffer.from((data as Buffer | undefined) ?? []), a & (XATTR_CREATE | XATTR_REPLACE), who), done);
      case Op.GETXATTR:
        return run(() => fsys.getxattr(ino, name, who), (value) => this.sized(req, value, a));
      case Op.LISTXATTR:
        return run(() => fsys.listxattr(ino, who), (names) => this.sized(req, Buffer.from(names.map((n) => `${n}\0`).join('')), a));
      case Op.REMOVEXATTR:
        return run(() => fsys.removexattr(ino, name, who), done);
      case Op.ACCESS:
        return run(() => fsys.access(ino, a, who), done);
      case Op.FALLOCATE:
        return run(() => this.fallocate(ino, a, b, c, who), done);
      default:
        return void this.answer(req, () => native.replyErr(req, E.ENOSYS));
    }
  }

  /**
   * A write payload arrives as a view of libfuse's receive buffer, valid only
   * during dispatch: it is copied into a pooled buffer (big ones: a request's
   * maximum; small ones: the power of two that holds them) given back when
   * the write settles.
   */
  private copyPayload(view: Buffer): { bytes: Buffer; done: () => void } {
    if (view.length < constants.fusePooledWriteBytesMin) {
      // Size classes of powers of two from 4 KiB: a fresh 4 KiB buffer per write was an allocation, page faults and garbage each.
      let size = 4096;
      while (size < view.length) size *= 2;
      const idle = this.smallWriteBuffers.get(size) ?? [];
      this.smallWriteBuffers.set(size, idle);
      const small = idle.pop() ?? Buffer.allocUnsafeSlow(size);
      view.copy(small);
      return {
        bytes: small.subarray(0, view.length),
        done: () => {
          if (idle.length * size < constants.fusePooledWriteBytesMin * constants.fuseWriteBufferCountMax) idle.push(small);
        },
      };
    }
    const pooled = this.writeBuffers.pop() ?? Buffer.allocUnsafeSlow(constants.fuseRequestBytesMax);
    view.copy(pooled);
    return {
      bytes: pooled.subarray(0, view.length),
      done: () => {
        if (this.writeBuffers.length < constants.fuseWriteBufferCountMax) this.writeBuffers.push(pooled);
      },
    };
  }

  /** getxattr/listxattr: size 0 asks for the size; a smaller buffer is ERANGE. */
  private sized(req: number, value: Buffer, sizeBytes: number): number {
    if (sizeBytes === 0) return native.replyXattrSize(req, value.length);
    if (value.length > sizeBytes) return native.replyErr(req, E.ERANGE);
    return native.replyBuf(req, value);
  }

  /** fallocate: mode 0 extends the size (flash is allocated at write, copy-on-write); KEEP_SIZE alone does nothing. */
  private async fallocate(ino: Ino, mode: number, offsetBytes: number, lengthBytes: number, who: Credentials): Promise<void> {
    if (mode & ~FALLOC_FL_KEEP_SIZE) throw new TierfsError('NOT_SUPPORTED', `fallocate mode ${mode}: holes and ranges are not supported`);
    const attr = await this.fileSystem.getattr(ino);
    if (mode === 0 && offsetBytes + lengthBytes > attr.sizeBytes) await this.fileSystem.setattr(ino, { sizeBytes: offsetBytes + lengthBytes }, who);
  }

  private readdir(req: number, op: number, ino: Ino, fh: number, sizeBytes: number, offset: number): void {
    const plus = op === Op.READDIRPLUS;
    const who = this.dirHandles.get(fh);
    if (!who) return void this.answer(req, () => native.replyErr(req, E.EBADF));
    // fuse_add_direntry: 24 bytes + name, 8-aligned; the plus form adds a 128-byte entry.
    const countMax = Math.max(1, Math.floor(sizeBytes / (plus ? 160 : 32)));
    this.run(req, op, ino, async () => {
      const entries = await this.fileSystem.readdir(ino, offset, countMax, who);
      const attrs = plus ? await Promise.all(entries.map((e) => this.fileSystem.getattr(e.ino))) : [];
      return { entries, attrs };
    }, ({ entries, attrs }) => {
      const stride = plus ? A.COUNT : 3;
      const meta = new Float64Array(entries.length * stride);
      const names: string[] = [];
      entries.forEach((entry, i) => {
        names.push(entry.name);
        if (plus) {
          putAttr(attrs[i]!, meta, i * stride, this.generation); // getattr does not wait: nothing can remove the entry in between
          meta[i * stride + A.BLKSIZE] = entry.nextOffset; // the binding reads the next offset from this slot
        } else {
          meta.set([entry.ino, entry.mode, entry.nextOffset], i * stride);
        }
      });
      const sent = native.replyDirents(req, plus, sizeBytes, names, meta, this.attrTimeoutS, this.attrTimeoutS);
      if (plus) for (let i = 0; i < sent; i++) if (names[i] !== '.' && names[i] !== '..') this.fileSystem.remember(entries[i].ino);
      return sent < 0 ? sent : 0;
    });
  }
}

/** The change a SETATTR asks for, from its to_set bits and attribute array. */
function setAttrOf(toSet: number, v: Float64Array): SetAttr {
  const change: SetAttr = {};
  if (toSet & SetAttrBit.MODE) change.mode = v[A.MODE];
  if (toSet & SetAttrBit.UID) change.uid = v[A.UID];
  if (toSet & SetAttrBit.GID) change.gid = v[A.GID];
  if (toSet & SetAttrBit.SIZE) change.sizeBytes = v[A.SIZE];
  const time = (set: number, now: number, s: number, ns: number): TimeSpec | undefined =>
    toSet & now ? 'now' : toSet & set ? timeOf(v[s], v[ns]) : undefined;
  change.atime = time(SetAttrBit.ATIME, SetAttrBit.ATIME_NOW, A.ATIME_S, A.ATIME_NS);
  change.mtime = time(SetAttrBit.MTIME, SetAttrBit.MTIME_NOW, A.MTIME_S, A.MTIME_NS);
  return change;
}
