/**
 * Operating errors of tierfs: typed, with a stable code and a cause.  Lower
 * layers throw them; the FUSE boundary maps each code to one errno
 * (src/fuse/errno.ts), the CLI prints their message as one line.
 *
 * Programmer errors are asserts, never TierfsErrors.
 */
export const errorCodes = [
  'NOT_FOUND', // ENOENT
  'EXISTS', // EEXIST
  'NOT_DIR', // ENOTDIR
  'IS_DIR', // EISDIR
  'NOT_EMPTY', // ENOTEMPTY
  'NAME_TOO_LONG', // ENAMETOOLONG
  'NO_SPACE', // ENOSPC
  'ACCESS', // EACCES: permission bits deny
  'NOT_PERMITTED', // EPERM: only the owner or root may
  'INVALID', // EINVAL
  'BAD_HANDLE', // EBADF
  'TOO_MANY_LINKS', // EMLINK
  'FILE_TOO_BIG', // EFBIG
  'NO_XATTR', // ENODATA
  'RANGE', // ERANGE: a buffer too small for the answer
  'NOT_SUPPORTED', // EOPNOTSUPP
  'BUSY', // EBUSY
  'READ_ONLY', // EROFS: this appliance lost the writer role (the writer lease)
  'STALE', // ESTALE: a follower's open file was changed by the writer since it was opened
  'CHECKSUM', // EIO: bytes read back do not match their checksum
  'IO', // EIO: the device failed
  'UNAVAILABLE', // EIO: the object tier did not answer in time (degraded mode)
  'NOT_OURS', // not a tierfs flash tier (CLI/daemon only)
  'VERSION', // a newer on-disk format (CLI/daemon only)
  'CORRUPT', // superblock or metadata damaged (CLI/daemon only)
  'USAGE', // bad command line or configuration (CLI/daemon only)
] as const;

export type ErrorCode = (typeof errorCodes)[number];

/**
 * Codes that answer a question (no such name, no such attribute) rather
 * than report a failure: they are built without a stack trace.  The kernel
 * asks for security.capability before every write; capturing a stack for
 * each "no" cost more than the 4 KiB write itself.
 */
const answerCodes: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['NOT_FOUND', 'NO_XATTR']);

export class TierfsError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    const stackTraceLimit = Error.stackTraceLimit;
    if (answerCodes.has(code)) Error.stackTraceLimit = 0;
    super(message, options);
    Error.stackTraceLimit = stackTraceLimit;
    this.name = 'TierfsError';
    this.code = code;
  }
}

export function isTierfsError(error: unknown, code?: ErrorCode): error is TierfsError {
  return error instanceof TierfsError && (code === undefined || error.code === code);
}
