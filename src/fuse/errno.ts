/**
 * The one mapping from tierfs error codes to errno, used at the FUSE
 * boundary.  Exhaustive: adding a code without an errno fails to compile.
 * Anything that is not a TierfsError is unexpected: logged loudly, EIO.
 */
import os from 'node:os';
import { isTierfsError, type ErrorCode } from '../errors';
import { log } from '../log';

const E = os.constants.errno;

const errnoByCode: Record<ErrorCode, number> = {
  NOT_FOUND: E.ENOENT,
  EXISTS: E.EEXIST,
  NOT_DIR: E.ENOTDIR,
  IS_DIR: E.EISDIR,
  NOT_EMPTY: E.ENOTEMPTY,
  NAME_TOO_LONG: E.ENAMETOOLONG,
  NO_SPACE: E.ENOSPC,
  ACCESS: E.EACCES,
  NOT_PERMITTED: E.EPERM,
  INVALID: E.EINVAL,
  BAD_HANDLE: E.EBADF,
  TOO_MANY_LINKS: E.EMLINK,
  FILE_TOO_BIG: E.EFBIG,
  NO_XATTR: E.ENODATA,
  RANGE: E.ERANGE,
  NOT_SUPPORTED: E.EOPNOTSUPP,
  BUSY: E.EBUSY,
  READ_ONLY: E.EROFS,
  STALE: E.ESTALE,
  CHECKSUM: E.EIO,
  IO: E.EIO,
  UNAVAILABLE: E.EIO,
  NOT_OURS: E.EIO,
  VERSION: E.EIO,
  CORRUPT: E.EIO,
  USAGE: E.EINVAL,
};

export const errorCounters = { unexpectedCount: 0, ioErrorCount: 0 };

/** Positive errno for an error thrown by an operation on `path`. */
export function errnoOf(error: unknown, op: string, path: string): number {
  if (isTierfsError(error)) {
    const errno = errnoByCode[error.code];
    if (errno === E.EIO) {
      errorCounters.ioErrorCount += 1;
      log.error('I/O error', { op, path, code: error.code, error: error.message });
    }
    return errno;
  }
  errorCounters.unexpectedCount += 1;
  log.error('unexpected error, answering EIO', { op, path, error: (error as Error)?.stack ?? String(error) });
  return E.EIO;
}
