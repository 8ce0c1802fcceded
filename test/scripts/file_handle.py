#!/usr/bin/env python3
"""File handles as the kernel NFS server uses them, for tests of a FUSE mount's export support.

  file_handle.py encode PATH          prints the handle of PATH as hex (name_to_handle_at)
  file_handle.py open MOUNT HANDLE    opens the file a handle names (open_by_handle_at, needs
                                      CAP_DAC_READ_SEARCH) and prints "ok <sha256 of its bytes>" ("ok directory"),
                                      or "errno <name>"
"""
import ctypes
import errno
import hashlib
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
HANDLE_BYTES_MAX = 128


class FileHandle(ctypes.Structure):
    _fields_ = [('handle_bytes', ctypes.c_uint), ('handle_type', ctypes.c_int), ('f_handle', ctypes.c_ubyte * HANDLE_BYTES_MAX)]


def encode(path):
    handle = FileHandle(HANDLE_BYTES_MAX, 0)
    mount_id = ctypes.c_int(0)
    if libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(handle), ctypes.byref(mount_id), 0) != 0:
        sys.exit(f'name_to_handle_at {path}: {os.strerror(ctypes.get_errno())}')
    raw = bytes(handle.f_handle[:handle.handle_bytes])
    print(f'{handle.handle_type:08x}{raw.hex()}')


def open_handle(mount, text):
    handle = FileHandle(len(text) // 2 - 4, int(text[:8], 16))
    raw = bytes.fromhex(text[8:])
    ctypes.memmove(handle.f_handle, raw, len(raw))
    mount_fd = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    fd = libc.open_by_handle_at(mount_fd, ctypes.byref(handle), os.O_RDONLY)
    if fd < 0:
        print(f'errno {errno.errorcode[ctypes.get_errno()]}')
        return
    if os.path.isdir(f'/proc/self/fd/{fd}'):
        print('ok directory')
        os.close(fd)
        return
    digest = hashlib.sha256()
    with os.fdopen(fd, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    print(f'ok {digest.hexdigest()}')


if sys.argv[1] == 'encode':
    encode(sys.argv[2])
else:
    open_handle(sys.argv[2], sys.argv[3])
