#!/usr/bin/env python3
"""Ownership and permission semantics for callers that are not root.

Run as root: python3 ownership_checks.py DIR
Each step runs in a child process that takes on a user's uid, gid and
supplementary groups (setgroups, setresgid, setresuid), so the file system
sees real callers.  Prints one JSON list of [step, result]: "ok", an errno
name, or a value the step returns.  The test runs it on a tierfs mount and
on a directory of the host's ext4 and compares the two lists.
"""
import errno
import json
import os
import stat
import sys

root_dir = sys.argv[1]
A = (4001, 4001, [4001, 4100])  # uid, gid, groups: a member of group 4100
B = (4002, 4002, [4002])
ROOT = (0, 0, [0])
results = []


def p(*parts):
    return os.path.join(root_dir, *parts)


def as_user(who, fn):
    """Run fn as `who` in a child; returns its value (JSON) or the errno name."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            uid, gid, groups = who
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            value = fn()
            out = "ok" if value is None else value
        except OSError as e:
            out = errno.errorcode.get(e.errno, str(e.errno))
        os.write(write_end, json.dumps(out).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b'"no result"')


def step(name, who, fn):
    results.append([name, as_user(who, fn)])


def create(path, mode=0o644):
    def run():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, mode))
    return run


def owner(path):
    return lambda: [os.stat(path).st_uid, os.stat(path).st_gid]


def mode(path):
    return lambda: oct(stat.S_IMODE(os.stat(path).st_mode))


def write_some(path):
    def run():
        fd = os.open(path, os.O_WRONLY)
        os.write(fd, b"data")
        os.close(fd)
    return run


def read_some(path):
    def run():
        fd = os.open(path, os.O_RDONLY)
        os.close(fd)
    return run


os.chmod(root_dir, 0o1777)

step("A creates a file", A, create(p("fa")))
step("the file belongs to A's uid and gid", ROOT, owner(p("fa")))
step("A makes a directory", A, lambda: os.mkdir(p("da"), 0o755))
step("the directory belongs to A", ROOT, owner(p("da")))
step("B creates in A's 0755 directory", B, create(p("da", "x")))
step("B unlinks A's file in a sticky directory", B, lambda: os.unlink(p("fa")))
step("B renames A's file in a sticky directory", B, lambda: os.rename(p("fa"), p("fb")))
step("A chmods its file 0600", A, lambda: os.chmod(p("fa"), 0o600))
step("B opens it for reading", B, read_some(p("fa")))
step("B chmods A's file", B, lambda: os.chmod(p("fa"), 0o644))
step("B chowns A's file to itself", B, lambda: os.chown(p("fa"), 4002, -1))
step("A gives its file to B", A, lambda: os.chown(p("fa"), 4002, -1))
step("A chgrps to a supplementary group", A, lambda: os.chown(p("fa"), -1, 4100))
step("the group changed", ROOT, owner(p("fa")))
step("A chgrps to a group it is not in", A, lambda: os.chown(p("fa"), -1, 4002))
step("A sets nanosecond times", A, lambda: os.utime(p("fa"), ns=(1_000_000_000_111_222_333, 1_100_000_000_444_555_666)))
step("the times, to the nanosecond", ROOT, lambda: [str(os.stat(p("fa")).st_atime_ns), str(os.stat(p("fa")).st_mtime_ns)])
step("B sets times on A's file", B, lambda: os.utime(p("fa"), ns=(1, 2)))
step("B touches A's file it cannot write", B, lambda: os.utime(p("fa"), None))

os.mkdir(p("sg"))
os.chown(p("sg"), 0, 4100)
os.chmod(p("sg"), 0o2775)
step("A creates in a setgid directory of its supplementary group", A, create(p("sg", "f")))
step("the file takes the directory's group", ROOT, owner(p("sg", "f")))
step("A makes a directory in it", A, lambda: os.mkdir(p("sg", "sub"), 0o755))
step("the subdirectory takes the group and the setgid bit", ROOT, lambda: [os.stat(p("sg", "sub")).st_gid, mode(p("sg", "sub"))()])
step("B creates in the setgid directory (not in its group)", B, create(p("sg", "g")))

os.chown(p("fa"), 4001, 5000)
step("A sets setgid on its file whose group it is not in", A, lambda: os.chmod(p("fa"), 0o2755))
step("the setgid bit was dropped", ROOT, mode(p("fa")))
step("A sets setuid on its own file", A, lambda: os.chmod(p("fa"), 0o4755))
step("setuid kept", ROOT, mode(p("fa")))
os.chmod(p("fa"), 0o4777)
step("B writes A's world-writable setuid file", B, write_some(p("fa")))
step("the write dropped setuid", ROOT, mode(p("fa")))
os.chmod(p("fa"), 0o4777)
step("B truncates A's world-writable setuid file", B, lambda: os.truncate(p("fa"), 1))
step("the truncate dropped setuid", ROOT, mode(p("fa")))

step("A hard-links its file", A, lambda: os.link(p("fa"), p("da", "hl")))
step("link count", ROOT, lambda: os.stat(p("fa")).st_nlink)
step("B makes a private directory", B, lambda: os.mkdir(p("db"), 0o700))
step("A looks inside B's private directory", A, lambda: os.stat(p("db", "anything")))
step("A lists B's private directory", A, lambda: os.listdir(p("db")))
step("A removes B's directory from the sticky directory", A, lambda: os.rmdir(p("db")))

fd = os.open(p("grp"), os.O_CREAT | os.O_WRONLY, 0o060)
os.close(fd)
os.chown(p("grp"), 0, 4100)
os.chmod(p("grp"), 0o060)
step("A opens a group-only file through a supplementary group", A, lambda: os.close(os.open(p("grp"), os.O_RDWR)))
step("B opens it", B, lambda: os.close(os.open(p("grp"), os.O_RDWR)))
step("root opens it whatever the mode", ROOT, lambda: os.close(os.open(p("grp"), os.O_RDWR)))
step("access(W_OK) for A and B", ROOT, lambda: [as_user(A, lambda: os.access(p("grp"), os.W_OK)), as_user(B, lambda: os.access(p("grp"), os.W_OK))])

def create_mode_0_and_ftruncate():
    fd = os.open(p("da", "mode0"), os.O_CREAT | os.O_RDWR, 0)
    try:
        os.ftruncate(fd, 8192)
        os.pwrite(fd, b"tail", 8188)
        os.ftruncate(fd, 100)
        return [os.fstat(fd).st_size, oct(stat.S_IMODE(os.fstat(fd).st_mode))]
    finally:
        os.close(fd)


step("A creates a mode-0 file and ftruncates it through that descriptor", A, create_mode_0_and_ftruncate)
step("A truncates the mode-0 file by name", A, lambda: os.truncate(p("da", "mode0"), 0))
step("the mode-0 file keeps its size", ROOT, lambda: os.stat(p("da", "mode0")).st_size)

os.close(os.open(p("rootfile"), os.O_CREAT | os.O_WRONLY, 0o644))
step("A truncates root's 0644 file", A, lambda: os.truncate(p("rootfile"), 0))
step("A writes root's 0644 file", A, write_some(p("rootfile")))
step("A unlinks root's file in the sticky directory", A, lambda: os.unlink(p("rootfile")))

os.chmod(p("fa"), 0o644)
step("A sets a user xattr on its file", A, lambda: os.setxattr(p("fa"), "user.a", b"1"))
step("B sets a user xattr on A's 0644 file", B, lambda: os.setxattr(p("fa"), "user.b", b"1"))
step("B reads A's user xattr", B, lambda: os.getxattr(p("fa"), "user.a").decode())
os.chmod(p("fa"), 0o600)
step("B reads it once the file is 0600", B, lambda: os.getxattr(p("fa"), "user.a").decode())
step("A sets a trusted xattr", A, lambda: os.setxattr(p("fa"), "trusted.a", b"1"))
step("A mknods a character device", A, lambda: os.mknod(p("dev"), 0o600 | stat.S_IFCHR, os.makedev(1, 3)))
step("A makes a fifo", A, lambda: os.mkfifo(p("fifo"), 0o600))
step("the fifo belongs to A", ROOT, owner(p("fifo")))
step("A symlinks", A, lambda: os.symlink("fa", p("ln")))
step("the symlink belongs to A", ROOT, lambda: [os.lstat(p("ln")).st_uid, os.lstat(p("ln")).st_gid])

print(json.dumps(results))
