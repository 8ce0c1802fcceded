/*
 * tierfs's FUSE binding: libfuse 3's low-level (inode-based) API for Node.
 * One idea in one file (libfuse's callbacks, their messages to JavaScript and
 * the replies back), as long as the operation list is.
 *
 * The session is served on Node's event loop: /dev/fuse is non-blocking and
 * watched with uv_poll; when it is readable, requests are read
 * (fuse_session_receive_buf) and handed to libfuse, whose callbacks below
 * copy each request into one message (names, the write payload, the
 * caller's credentials) and call JavaScript's dispatch with it at once.
 * JavaScript answers whenever its work is done by calling one of the reply
 * functions below with the request's handle.
 *
 * Why not libfuse's own loop on native threads handing requests over with
 * thread-safe functions: waking Node's thread from epoll costs about 70 us
 * per request on these virtual machines, more than the rest of a request;
 * measured, that design served 0.8x the stat rate of fuse-native, this one
 * 2.2x (see docs/DESIGN-NOTES.md).  To avoid paying for the wake-up at all
 * while requests keep coming, the loop polls /dev/fuse without sleeping for
 * busyPollUs after each request that arrived within 2 ms of the one before
 * (uv_idle), then sleeps again.
 *
 *   mount(mountPoint, options, config, dispatch) -> session
 *   unmount(session) -> errno, destroy(session)
 *   replyErr, replyEntry, replyCreate, replyAttr, replyOpen, replyWrite,
 *   replyBuf, replyReadlink, replyXattrSize, replyStatfs, replyDirents
 *
 * dispatch(op, req, ino, fh, a, b, c, d, name, name2, data, uid, gid, pid, umask, groups)
 * is called once per request (see the table of ops in src/fuse/binding.ts).
 *
 * Ownership of a request: exactly one reply frees it, and the JavaScript side
 * guarantees that (src/fuse/fuse.ts keeps the requests in flight).  Forgets
 * are answered here.  No reply may follow destroy().
 *
 * Write payloads and xattr values reach JavaScript as views of libfuse's
 * receive buffer, valid only while dispatch runs (the next request reuses
 * it): src/fuse/fuse.ts copies them into buffers it pools.  Read replies go
 * to the kernel straight from the JavaScript buffer.
 */
#define _GNU_SOURCE
#define FUSE_USE_VERSION FUSE_MAKE_VERSION(3, 12)
#include <errno.h>
#include <fuse_lowlevel.h>
#include <dirent.h>
#include <fcntl.h>
#include <node_api.h>
#include "napi_helpers.h"
#include <pthread.h>
#include <time.h>
#include <uv.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

enum op {
  OP_INIT = 1, OP_ENDED, OP_INTERRUPT, OP_LOOKUP, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK,
  OP_MKNOD, OP_MKDIR, OP_UNLINK, OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ,
  OP_WRITE, OP_FLUSH, OP_RELEASE, OP_FSYNC, OP_OPENDIR, OP_READDIR, OP_READDIRPLUS, OP_RELEASEDIR,
  OP_FSYNCDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR, OP_LISTXATTR, OP_REMOVEXATTR, OP_ACCESS,
  OP_CREATE, OP_FALLOCATE,
};

/* The layout of an attribute array shared with JavaScript (Float64Array). */
enum attr_field {
  A_INO, A_MODE, A_NLINK, A_UID, A_GID, A_RDEV, A_SIZE, A_BLOCKS, A_ATIME_S, A_ATIME_NS,
  A_MTIME_S, A_MTIME_NS, A_CTIME_S, A_CTIME_NS, A_BLKSIZE, A_GENERATION, A_COUNT
};

#define GROUPS_MAX 65536

struct session {
  struct fuse_session *se;
  napi_env env;
  napi_ref dispatch;
  napi_async_context async;
  uv_poll_t poll;
  uv_idle_t idle;
  struct fuse_buf buf;
  uint64_t busy_poll_ns;
  uint64_t busy_until_ns;
  uint64_t last_wake_ns;
  unsigned max_write;
  int writeback_cache; /* asked for by serve's writebackCache: see docs/SEMANTICS.md */
  int ended;
  int destroyed;
  int handles_open;
  char *mountpoint;
};

struct msg {
  int op;
  fuse_req_t req;
  uint64_t ino, fh;
  double a, b, c, d;
  const char *name, *name2;
  char *data;
  size_t data_len;
  int data_is_doubles; /* data holds doubles: a Float64Array instead of a Buffer */
  int data_borrowed;   /* data points into libfuse's receive buffer: valid only during dispatch */
  uint32_t uid, gid, pid, umask;
  int ngroups; /* -1: not fetched */
  gid_t *groups;
  /* tail: names, data, groups */
};

static void call_js(struct session *s, struct msg *m);

/* ---- libfuse's log: kept for error messages, copied to stderr ---- */

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char last_log[512];

static void on_log(enum fuse_log_level level, const char *fmt, va_list ap) {
  char line[512];
  vsnprintf(line, sizeof line, fmt, ap);
  size_t n = strlen(line);
  while (n > 0 && line[n - 1] == '\n') line[--n] = '\0';
  pthread_mutex_lock(&log_lock);
  snprintf(last_log, sizeof last_log, "%s", line);
  pthread_mutex_unlock(&log_lock);
  if (level <= FUSE_LOG_WARNING) fprintf(stderr, "libfuse: %s\n", line);
}

static void take_last_log(char *out, size_t size) {
  pthread_mutex_lock(&log_lock);
  snprintf(out, size, "%s", last_log);
  last_log[0] = '\0';
  pthread_mutex_unlock(&log_lock);
}

/* ---- messages ---- */

static struct msg *new_msg(int op, fuse_req_t req, size_t tail) {
  struct msg *m = calloc(1, sizeof(struct msg) + tail);
  if (!m) return NULL;
  m->op = op;
  m->req = req;
  m->ngroups = -1;
  if (req) {
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    m->uid = ctx->uid;
    m->gid = ctx->gid;
    m->pid = ctx->pid;
    m->umask = ctx->umask;
  }
  return m;
}

static char *tail_of(struct msg *m) { return (char *)(m + 1); }

/* Copies strings into the tail, in order; returns the next free byte. */
static char *put_string(char *at, const char *s, const char **out) {
  size_t n = strlen(s) + 1;
  memcpy(at, s, n);
  *out = at;
  return at + n;
}

static void post(struct session *s, struct msg *m) { call_js(s, m); }

static void fail_alloc(fuse_req_t req) { fuse_reply_err(req, ENOMEM); }

/*
 * Supplementary groups of recent callers, by thread id, for a second: libfuse
 * reads them from /proc, which cost a third of a stat's time for callers who
 * are not root.  A thread that changes its groups (setgroups) is seen with
 * the old list for at most that long, and only by src/fs's own check: the
 * kernel has already checked the request with the caller's real credentials
 * (default_permissions).  One thread (the event loop) uses it: no lock.
 */
#define GROUP_CACHE_SLOTS 64
#define GROUP_CACHE_GROUPS 32
#define GROUP_CACHE_NS 1000000000ull
static struct {
  pid_t pid;
  uid_t uid;
  gid_t gid;
  int count;
  uint64_t at_ns;
  gid_t groups[GROUP_CACHE_GROUPS];
} group_cache[GROUP_CACHE_SLOTS];

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The caller's supplementary groups, for the permission checks of src/fs.
 * Root callers skip it.
 */
static struct msg *with_groups(struct msg *m) {
  if (m->uid == 0) return m;
  gid_t small[64];
  gid_t *list = small;
  gid_t *big = NULL;
  int n;
  uint64_t now = now_ns();
  unsigned slot = (unsigned)m->pid % GROUP_CACHE_SLOTS;
  if (group_cache[slot].pid == (pid_t)m->pid && group_cache[slot].uid == m->uid && group_cache[slot].gid == m->gid &&
      now - group_cache[slot].at_ns < GROUP_CACHE_NS) {
    n = group_cache[slot].count;
    memcpy(small, group_cache[slot].groups, sizeof(gid_t) * (size_t)n);
  } else {
    n = fuse_req_getgroups(m->req, 64, small);
    if (n < 0) return m; /* the process is gone or /proc unreadable: primary group only */
    if (n > 64) {
      if (n > GROUPS_MAX) n = GROUPS_MAX;
      big = malloc(sizeof(gid_t) * (size_t)n);
      if (!big) return m;
      n = fuse_req_getgroups(m->req, n, big);
      if (n < 0) { free(big); return m; }
      if (n > GROUPS_MAX) n = GROUPS_MAX;
      list = big;
    } else if (n <= GROUP_CACHE_GROUPS) {
      group_cache[slot].pid = (pid_t)m->pid;
      group_cache[slot].uid = m->uid;
      group_cache[slot].gid = m->gid;
      group_cache[slot].count = n;
      group_cache[slot].at_ns = now;
      memcpy(group_cache[slot].groups, small, sizeof(gid_t) * (size_t)n);
    }
  }
  /* Grow the message to hold the list; pointers into the old tail are rebased. */
  size_t tail_used = 0;
  const char *ends[3] = {m->name, m->name2, m->data_borrowed ? NULL : m->data};
  for (int i = 0; i < 3; i++) {
    if (!ends[i]) continue;
    size_t end = (size_t)(ends[i] - tail_of(m)) + (i == 2 ? m->data_len : strlen(ends[i]) + 1);
    if (end > tail_used) tail_used = end;
  }
  size_t align = (tail_used + 7) & ~(size_t)7;
  /* Offsets, not pointers, survive the realloc. */
  ptrdiff_t name_at = m->name ? m->name - (char *)m : -1;
  ptrdiff_t name2_at = m->name2 ? m->name2 - (char *)m : -1;
  ptrdiff_t data_at = m->data && !m->data_borrowed ? m->data - (char *)m : -1;
  struct msg *grown = realloc(m, sizeof(struct msg) + align + sizeof(gid_t) * (size_t)n);
  if (!grown) { free(big); return m; }
  if (name_at >= 0) grown->name = (char *)grown + name_at;
  if (name2_at >= 0) grown->name2 = (char *)grown + name2_at;
  if (data_at >= 0) grown->data = (char *)grown + data_at;
  grown->groups = (gid_t *)(tail_of(grown) + align);
  memcpy(grown->groups, list, sizeof(gid_t) * (size_t)n);
  grown->ngroups = n;
  free(big);
  return grown;
}

static void on_interrupt(fuse_req_t req, void *data) {
  struct session *s = data;
  struct msg *m = calloc(1, sizeof(struct msg));
  if (!m) return;
  m->op = OP_INTERRUPT;
  m->req = req; /* only an identifier here: the request is answered by its own reply */
  m->ngroups = -1;
  post(s, m);
}

/* ---- the operations ---- */

#define SESSION(req) ((struct session *)fuse_req_userdata(req))

static void send_simple(fuse_req_t req, int op, fuse_ino_t ino, uint64_t fh, double a, double b, int groups) {
  struct msg *m = new_msg(op, req, 0);
  if (!m) return fail_alloc(req);
  m->ino = ino;
  m->fh = fh;
  m->a = a;
  m->b = b;
  if (groups) m = with_groups(m);
  post(SESSION(req), m);
}

static void send_named(fuse_req_t req, int op, fuse_ino_t ino, const char *name, const char *name2, double a, double b, double c) {
  struct msg *m = new_msg(op, req, strlen(name) + 1 + (name2 ? strlen(name2) + 1 : 0));
  if (!m) return fail_alloc(req);
  m->ino = ino;
  char *at = put_string(tail_of(m), name, &m->name);
  if (name2) put_string(at, name2, &m->name2);
  m->a = a;
  m->b = b;
  m->c = c;
  post(SESSION(req), with_groups(m));
}

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  struct session *s = userdata;
  conn->max_write = s->max_write;
  conn->max_read = s->max_write;
  conn->max_readahead = s->max_write;
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  conn->time_gran = 1;
  unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_READDIRPLUS |
                  FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_PARALLEL_DIROPS | FUSE_CAP_HANDLE_KILLPRIV |
                  FUSE_CAP_EXPORT_SUPPORT; /* lookups of "." and ".." by node id: file handles (NFS) */
  if (s->writeback_cache) want |= FUSE_CAP_WRITEBACK_CACHE;
  conn->want |= want & conn->capable;
  /*
   * Local locks: the kernel keeps POSIX and flock locks itself (one client,
   * the kernel).  No asynchronous direct I/O: with it the kernel waits for a
   * direct read uninterruptibly, so a caller stuck on an unreachable bucket
   * could not even be killed; without it, an interrupt reaches us (EINTR).
   */
  conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE |
                  FUSE_CAP_SPLICE_MOVE | FUSE_CAP_ASYNC_DIO);
  struct msg *m = new_msg(OP_INIT, NULL, 0);
  if (!m) return;
  m->a = conn->max_write;
  m->b = conn->max_readahead;
  m->c = (conn->want & FUSE_CAP_WRITEBACK_CACHE) ? 1 : 0;
  m->d = conn->proto_major * 1000 + conn->proto_minor;
  post(s, m);
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  send_named(req, OP_LOOKUP, parent, name, NULL, 0, 0, 0);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  struct msg *m = new_msg(OP_FORGET, NULL, 2 * sizeof(double));
  if (m) {
    double *pair = (double *)tail_of(m);
    pair[0] = (double)ino;
    pair[1] = (double)nlookup;
    m->data = (char *)pair;
    m->data_len = 2 * sizeof(double);
    m->data_is_doubles = 1;
    post(SESSION(req), m);
  }
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  struct msg *m = new_msg(OP_FORGET, NULL, 2 * sizeof(double) * count);
  if (m) {
    double *pairs = (double *)tail_of(m);
    for (size_t i = 0; i < count; i++) {
      pairs[2 * i] = (double)forgets[i].ino;
      pairs[2 * i + 1] = (double)forgets[i].nlookup;
    }
    m->data = (char *)pairs;
    m->data_len = 2 * sizeof(double) * count;
    m->data_is_doubles = 1;
    post(SESSION(req), m);
  }
  fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  send_simple(req, OP_GETATTR, ino, fi ? fi->fh : 0, fi ? 1 : 0, 0, 0);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  struct msg *m = new_msg(OP_SETATTR, req, A_COUNT * sizeof(double));
  if (!m) return fail_alloc(req);
  double *v = (double *)tail_of(m);
  v[A_MODE] = attr->st_mode;
  v[A_UID] = attr->st_uid;
  v[A_GID] = attr->st_gid;
  v[A_SIZE] = (double)attr->st_size;
  v[A_ATIME_S] = (double)attr->st_atim.tv_sec;
  v[A_ATIME_NS] = (double)attr->st_atim.tv_nsec;
  v[A_MTIME_S] = (double)attr->st_mtim.tv_sec;
  v[A_MTIME_NS] = (double)attr->st_mtim.tv_nsec;
  v[A_CTIME_S] = (double)attr->st_ctim.tv_sec;
  v[A_CTIME_NS] = (double)attr->st_ctim.tv_nsec;
  m->data = (char *)v;
  m->data_len = A_COUNT * sizeof(double);
  m->data_is_doubles = 1;
  m->ino = ino;
  m->fh = fi ? fi->fh : 0;
  m->a = to_set;
  m->b = fi ? 1 : 0;
  post(SESSION(req), with_groups(m));
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) { send_simple(req, OP_READLINK, ino, 0, 0, 0, 0); }

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  send_named(req, OP_MKNOD, parent, name, NULL, mode, (double)rdev, 0);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  send_named(req, OP_MKDIR, parent, name, NULL, mode, 0, 0);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  send_named(req, OP_UNLINK, parent, name, NULL, 0, 0, 0);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  send_named(req, OP_RMDIR, parent, name, NULL, 0, 0, 0);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  send_named(req, OP_SYMLINK, parent, name, link, 0, 0, 0);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname, unsigned flags) {
  send_named(req, OP_RENAME, parent, name, newname, (double)newparent, flags, 0);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  send_named(req, OP_LINK, ino, newname, NULL, (double)newparent, 0, 0);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  send_simple(req, OP_OPEN, ino, 0, fi->flags, 0, 1);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  struct session *s = SESSION(req);
  struct msg *m = new_msg(OP_READ, req, 0);
  if (!m) return fail_alloc(req);
  m->ino = ino;
  m->fh = fi->fh;
  m->a = (double)size;
  m->b = (double)off;
  fuse_req_interrupt_func(req, on_interrupt, s); /* before post: the reply may free the request at once */
  post(s, m);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
  struct msg *m = new_msg(OP_WRITE, req, 0);
  if (!m) return fail_alloc(req);
  m->ino = ino;
  m->fh = fi->fh;
  m->a = (double)off;
  m->b = fi->writepage ? 1 : 0;
  m->data = (char *)buf;
  m->data_len = size;
  m->data_borrowed = 1;
  post(SESSION(req), m);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  send_simple(req, OP_FLUSH, ino, fi->fh, 0, 0, 0);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  send_simple(req, OP_RELEASE, ino, fi->fh, fi->flags, 0, 0);
}

static void fsync_like(fuse_req_t req, int op, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  struct session *s = SESSION(req);
  struct msg *m = new_msg(op, req, 0);
  if (!m) return fail_alloc(req);
  m->ino = ino;
  m->fh = fi ? fi->fh : 0;
  m->a = datasync;
  fuse_req_interrupt_func(req, on_interrupt, s);
  post(s, m);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  fsync_like(req, OP_FSYNC, ino, datasync, fi);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  fsync_like(req, OP_FSYNCDIR, ino, datasync, fi);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  send_simple(req, OP_OPENDIR, ino, 0, fi->flags, 0, 1);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  send_simple(req, OP_READDIR, ino, fi->fh, (double)size, (double)off, 0);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  send_simple(req, OP_READDIRPLUS, ino, fi->fh, (double)size, (double)off, 0);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  send_simple(req, OP_RELEASEDIR, ino, fi->fh, 0, 0, 0);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) { send_simple(req, OP_STATFS, ino, 0, 0, 0, 0); }

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  struct msg *m = new_msg(OP_SETXATTR, req, strlen(name) + 1);
  if (!m) return fail_alloc(req);
  m->ino = ino;
  put_string(tail_of(m), name, &m->name);
  m->data = (char *)value;
  m->data_len = size;
  m->data_borrowed = 1;
  m->a = flags;
  post(SESSION(req), with_groups(m));
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  send_named(req, OP_GETXATTR, ino, name, NULL, (double)size, 0, 0);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  send_simple(req, OP_LISTXATTR, ino, 0, (double)size, 0, 1);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  send_named(req, OP_REMOVEXATTR, ino, name, NULL, 0, 0, 0);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) { send_simple(req, OP_ACCESS, ino, 0, mask, 0, 1); }

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  send_named(req, OP_CREATE, parent, name, NULL, mode, fi->flags, 0);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, struct fuse_file_info *fi) {
  struct msg *m = new_msg(OP_FALLOCATE, req, 0);
  if (!m) return fail_alloc(req);
  m->ino = ino;
  m->fh = fi->fh;
  m->a = mode;
  m->b = (double)offset;
  m->c = (double)length;
  post(SESSION(req), m);
}

static const struct fuse_lowlevel_ops ll_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .forget_multi = ll_forget_multi,
  .getattr = ll_getattr,
  .setattr = ll_setattr,
  .readlink = ll_readlink,
  .mknod = ll_mknod,
  .mkdir = ll_mkdir,
  .unlink = ll_unlink,
  .rmdir = ll_rmdir,
  .symlink = ll_symlink,
  .rename = ll_rename,
  .link = ll_link,
  .open = ll_open,
  .read = ll_read,
  .write = ll_write,
  .flush = ll_flush,
  .release = ll_release,
  .fsync = ll_fsync,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .readdirplus = ll_readdirplus,
  .releasedir = ll_releasedir,
  .fsyncdir = ll_fsyncdir,
  .statfs = ll_statfs,
  .setxattr = ll_setxattr,
  .getxattr = ll_getxattr,
  .listxattr = ll_listxattr,
  .removexattr = ll_removexattr,
  .access = ll_access,
  .create = ll_create,
  .fallocate = ll_fallocate,
};

/* ---- the JavaScript side of the queue ---- */

static napi_value num(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static napi_value str_or_undefined(napi_env env, const char *s) {
  napi_value out;
  if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &out);
  else napi_get_undefined(env, &out);
  return out;
}

static void call_js(struct session *s, struct msg *m) {
  napi_env env = s->env;
  napi_value js_cb;
  napi_get_reference_value(env, s->dispatch, &js_cb);
  napi_value argv[16], undefined;
  napi_get_undefined(env, &undefined);
  argv[0] = num(env, m->op);
  argv[1] = num(env, (double)(uintptr_t)m->req);
  argv[2] = num(env, (double)m->ino);
  argv[3] = num(env, (double)m->fh);
  argv[4] = num(env, m->a);
  argv[5] = num(env, m->b);
  argv[6] = num(env, m->c);
  argv[7] = num(env, m->d);
  argv[8] = str_or_undefined(env, m->name);
  argv[9] = str_or_undefined(env, m->name2);
  argv[10] = undefined;
  if (m->data && m->data_is_doubles) {
    napi_value ab;
    void *copy;
    napi_create_arraybuffer(env, m->data_len, &copy, &ab);
    memcpy(copy, m->data, m->data_len);
    napi_create_typedarray(env, napi_float64_array, m->data_len / sizeof(double), ab, 0, &argv[10]);
  } else if (m->data) {
    /* a view of libfuse's buffer, no copy: JavaScript copies what it keeps before dispatch returns */
    napi_create_external_buffer(env, m->data_len, m->data, NULL, NULL, &argv[10]);
  }
  argv[11] = num(env, m->uid);
  argv[12] = num(env, m->gid);
  argv[13] = num(env, m->pid);
  argv[14] = num(env, m->umask);
  argv[15] = undefined;
  if (m->ngroups >= 0) {
    napi_create_array_with_length(env, (size_t)m->ngroups, &argv[15]);
    for (int i = 0; i < m->ngroups; i++) napi_set_element(env, argv[15], (uint32_t)i, num(env, m->groups[i]));
  }
  napi_value global;
  napi_get_global(env, &global);
  napi_status status = napi_call_function(env, global, js_cb, 16, argv, NULL);
  if (status != napi_ok) {
    /* dispatch must never throw; if it did, the request still gets its one answer */
    napi_value exception;
    napi_get_and_clear_last_exception(env, &exception);
    if (m->req && m->op != OP_INTERRUPT && m->op != OP_FORGET && m->op != OP_INIT && m->op != OP_ENDED) fuse_reply_err(m->req, EIO);
    fprintf(stderr, "tierfs fuse: dispatch threw; answered EIO\n");
  }
  free(m);
}

/* ---- the session ---- */

/*
 * Read and process the requests waiting, at most 64; returns how many.
 * Microtasks (the replies of work that did not wait) run when the callback
 * scope closes.  The kernel ending the session (ENODEV after an unmount)
 * stops the watch and dispatches ENDED.
 */
static void end_session(struct session *s, int res) {
  s->ended = 1;
  uv_poll_stop(&s->poll);
  uv_idle_stop(&s->idle);
  struct msg *m = calloc(1, sizeof(struct msg));
  if (!m) return;
  m->op = OP_ENDED;
  m->a = res;
  m->ngroups = -1;
  post(s, m);
}

static int drain(struct session *s) {
  napi_env env = s->env; /* JavaScript may call destroy() before this returns */
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value resource;
  napi_create_object(env, &resource);
  napi_callback_scope callback_scope;
  napi_open_callback_scope(env, resource, s->async, &callback_scope);
  int count = 0;
  while (count < 64 && !s->ended && !s->destroyed) {
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EAGAIN || res == -EINTR) break;
    count++;
    if (res <= 0) {
      end_session(s, res);
      break;
    }
    fuse_session_process_buf(s->se, &s->buf);
  }
  napi_close_callback_scope(env, callback_scope);
  napi_close_handle_scope(env, scope);
  return count;
}

static void on_idle(uv_idle_t *handle) {
  struct session *s = handle->data;
  if (s->destroyed || s->ended) return;
  if (drain(s) > 0) s->busy_until_ns = now_ns() + s->busy_poll_ns;
  else if (now_ns() > s->busy_until_ns && !s->destroyed) uv_idle_stop(&s->idle);
}

#define BURST_NS 2000000ull /* 2 ms */

static void on_readable(uv_poll_t *handle, int status, int events) {
  (void)events;
  struct session *s = handle->data;
  if (s->destroyed || s->ended) return;
  if (status < 0) {
    /* POLLERR: the connection is gone (unmounted or aborted); libuv stopped the watch */
    drain(s);
    if (!s->ended && !s->destroyed) end_session(s, -ENODEV);
    return;
  }
  /*
   * Busy-poll only within a burst: a request that follows the last wake-up
   * closely.  A lone request (a cold read, then the recall) keeps the CPU
   * free for whatever answers it.
   */
  uint64_t now = now_ns();
  int burst = now - s->last_wake_ns < BURST_NS;
  s->last_wake_ns = now;
  if (drain(s) > 0 && burst && !s->destroyed && !s->ended && s->busy_poll_ns > 0) {
    s->busy_until_ns = now_ns() + s->busy_poll_ns;
    uv_idle_start(&s->idle, on_idle);
  }
}

static napi_value throw_message(napi_env env, const char *code, const char *text) {
  napi_value error = coded_error(env, code, text);
  if (error) napi_throw(env, error);
  return NULL;
}

static int get_named_u32(napi_env env, napi_value obj, const char *name, uint32_t *out) {
  napi_value v;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_get_value_uint32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "bad mount config");
    return 0;
  }
  return 1;
}

/*
 * auto_unmount: fusermount3 stays behind, holding one end of a socket whose
 * other end libfuse leaves open in this process, and unmounts when it reads
 * EOF — but only if opening the mount point then answers ENOTCONN.  At exit
 * the kernel releases a process's files from the highest descriptor down;
 * libfuse's socket came out above /dev/fuse, so fusermount3 could wake
 * before the connection was aborted, get ECONNABORTED from its probe and
 * leave a dead mount (seen under load).  The socket is moved below
 * /dev/fuse (onto a descriptor reserved before the mount), and made
 * close-on-exec so no child of ours holds it open after we die.
 */
struct fd_set_big {
  unsigned char bits[65536 / 8];
};

static struct fd_set_big *open_fds(void) {
  struct fd_set_big *set = calloc(1, sizeof *set);
  DIR *dir = set ? opendir("/proc/self/fd") : NULL;
  if (!dir) return set;
  struct dirent *entry;
  while ((entry = readdir(dir)) != NULL) {
    int n = atoi(entry->d_name);
    if (n >= 0 && n < 65536) set->bits[n / 8] |= (unsigned char)(1u << (n % 8));
  }
  closedir(dir);
  return set;
}

static void settle_watchdog_socket(struct fd_set_big *before, int reserved, int fuse_fd) {
  struct fd_set_big *after = before ? open_fds() : NULL;
  int sock = -1;
  for (int n = 0; after && n < 65536; n++) {
    int was = (before->bits[n / 8] >> (n % 8)) & 1;
    int is = (after->bits[n / 8] >> (n % 8)) & 1;
    struct stat st;
    if (is && !was && n != fuse_fd && n != reserved && fstat(n, &st) == 0 && S_ISSOCK(st.st_mode)) sock = n;
  }
  if (sock >= 0 && reserved >= 0 && reserved < fuse_fd && dup3(sock, reserved, O_CLOEXEC) == reserved) {
    close(sock);
  } else {
    if (sock >= 0) fcntl(sock, F_SETFD, FD_CLOEXEC);
    if (reserved >= 0) close(reserved);
  }
  free(before);
  free(after);
}

static void free_session(struct session *s) {
  free(s->buf.mem);
  free(s->mountpoint);
  free(s);
}

/* mount(mountPoint, options string[], {maxWrite, busyPollUs}, dispatch) */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  char mountpoint[4096];
  size_t len;
  if (napi_get_value_string_utf8(env, argv[0], mountpoint, sizeof mountpoint, &len) != napi_ok || len == 0 || len >= sizeof mountpoint - 1)
    return throw_message(env, "EINVAL", "bad mount point");
  uint32_t count = 0;
  if (napi_get_array_length(env, argv[1], &count) != napi_ok || count > 32)
    return throw_message(env, "EINVAL", "bad mount options");
  char *args_storage[34];
  char *storage = calloc(count + 1, 1024);
  if (!storage) return throw_message(env, "ENOMEM", "out of memory");
  args_storage[0] = "tierfs";
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    napi_get_element(env, argv[1], i, &v);
    char *at = storage + 1024 * i;
    if (napi_get_value_string_utf8(env, v, at, 1024, &len) != napi_ok || len >= 1023) {
      free(storage);
      return throw_message(env, "EINVAL", "bad mount option");
    }
    args_storage[i + 1] = at;
  }
  uint32_t busy_poll_us, max_write, writeback_cache;
  if (!get_named_u32(env, argv[2], "busyPollUs", &busy_poll_us) || !get_named_u32(env, argv[2], "maxWrite", &max_write) ||
      !get_named_u32(env, argv[2], "writebackCache", &writeback_cache)) {
    free(storage);
    return NULL;
  }
  struct session *s = calloc(1, sizeof *s);
  if (!s) { free(storage); return throw_message(env, "ENOMEM", "out of memory"); }
  s->busy_poll_ns = (uint64_t)busy_poll_us * 1000;
  s->env = env;
  s->max_write = max_write;
  s->writeback_cache = writeback_cache != 0;
  s->mountpoint = strdup(mountpoint);

  fuse_set_log_func(on_log);
  char discard[512];
  take_last_log(discard, sizeof discard);
  struct fuse_args args = FUSE_ARGS_INIT((int)count + 1, args_storage);
  s->se = fuse_session_new(&args, &ll_ops, sizeof ll_ops, s);
  fuse_opt_free_args(&args);
  free(storage);
  char why[512];
  if (!s->se) {
    take_last_log(why, sizeof why);
    free_session(s);
    return throw_message(env, "EINVAL", why[0] ? why : "fuse_session_new failed");
  }
  struct fd_set_big *before = open_fds();
  int reserved = open("/dev/null", O_RDONLY | O_CLOEXEC); /* a number below any the mount opens */
  if (fuse_session_mount(s->se, mountpoint) != 0) {
    take_last_log(why, sizeof why);
    if (reserved >= 0) close(reserved);
    free(before);
    fuse_session_destroy(s->se);
    free_session(s);
    return throw_message(env, "EMOUNT", why[0] ? why : "mount failed");
  }
  int fd = fuse_session_fd(s->se);
  settle_watchdog_socket(before, reserved, fd);
  uv_loop_t *loop;
  napi_value name;
  napi_create_string_utf8(env, "tierfs-fuse", NAPI_AUTO_LENGTH, &name);
  if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0 || napi_get_uv_event_loop(env, &loop) != napi_ok ||
      uv_poll_init(loop, &s->poll, fd) != 0) {
    fuse_session_unmount(s->se);
    fuse_session_destroy(s->se);
    free_session(s);
    return throw_message(env, "EIO", "cannot watch /dev/fuse");
  }
  uv_idle_init(loop, &s->idle);
  s->poll.data = s;
  s->idle.data = s;
  s->handles_open = 2;
  napi_create_reference(env, argv[3], 1, &s->dispatch);
  napi_async_init(env, NULL, name, &s->async);
  uv_poll_start(&s->poll, UV_READABLE, on_readable);
  napi_value out;
  napi_create_external(env, s, NULL, NULL, &out);
  return out;
}

static napi_value result(napi_env env, int r) {
  napi_value out;
  napi_create_int32(env, r, &out);
  return out;
}

static struct session *get_session(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "expected a FUSE session");
    return NULL;
  }
  return p;
}

/*
 * unmount(session) -> errno: a lazy detach (root; others use fusermount3).
 * The loop goes on serving files still open until the kernel drops the
 * connection, then dispatches ENDED.
 */
static napi_value js_unmount(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  int r = umount2(s->mountpoint, MNT_DETACH) == 0 ? 0 : errno;
  return result(env, r);
}

static void on_handle_closed(uv_handle_t *handle) {
  struct session *s = handle->data;
  if (--s->handles_open == 0) free_session(s);
}

/*
 * destroy(session): only after ENDED and once every request has its answer
 * (the JavaScript side keeps that count): closes the device and frees the
 * session once libuv has let go of its handles.
 */
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct session *s = get_session(env, argv[0]);
  if (!s || s->destroyed) return NULL;
  s->destroyed = 1;
  uv_poll_stop(&s->poll);
  uv_idle_stop(&s->idle);
  fuse_session_destroy(s->se);
  s->se = NULL;
  napi_delete_reference(env, s->dispatch);
  napi_async_destroy(env, s->async);
  uv_close((uv_handle_t *)&s->poll, on_handle_closed);
  uv_close((uv_handle_t *)&s->idle, on_handle_closed);
  return NULL;
}

/* ---- replies ---- */

static fuse_req_t get_req(napi_env env, napi_value v) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || d <= 0) {
    napi_throw_type_error(env, NULL, "expected a request");
    return NULL;
  }
  return (fuse_req_t)(uintptr_t)d;
}

/* A stat from an attribute array (all but st_blksize, whose slot readdirplus reuses). */
static void attr_from(const double *a, struct stat *st) {
  memset(st, 0, sizeof *st);
  st->st_ino = (ino_t)a[A_INO];
  st->st_mode = (mode_t)a[A_MODE];
  st->st_nlink = (nlink_t)a[A_NLINK];
  st->st_uid = (uid_t)a[A_UID];
  st->st_gid = (gid_t)a[A_GID];
  st->st_rdev = (dev_t)a[A_RDEV];
  st->st_size = (off_t)a[A_SIZE];
  st->st_blocks = (blkcnt_t)a[A_BLOCKS];
  st->st_atim.tv_sec = (time_t)a[A_ATIME_S];
  st->st_atim.tv_nsec = (long)a[A_ATIME_NS];
  st->st_mtim.tv_sec = (time_t)a[A_MTIME_S];
  st->st_mtim.tv_nsec = (long)a[A_MTIME_NS];
  st->st_ctim.tv_sec = (time_t)a[A_CTIME_S];
  st->st_ctim.tv_nsec = (long)a[A_CTIME_NS];
}

static int get_attr(napi_env env, napi_value v, struct stat *st, double *generation) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array || length < A_COUNT) {
    napi_throw_type_error(env, NULL, "expected an attribute array");
    return 0;
  }
  const double *a = data;
  attr_from(a, st);
  st->st_blksize = (blksize_t)a[A_BLKSIZE];
  if (generation) *generation = a[A_GENERATION];
  return 1;
}

static int get_entry(napi_env env, napi_value attr, napi_value entry_timeout, napi_value attr_timeout, struct fuse_entry_param *e) {
  memset(e, 0, sizeof *e);
  double generation = 0;
  if (!get_attr(env, attr, &e->attr, &generation)) return 0;
  e->ino = e->attr.st_ino;
  e->generation = (uint64_t)generation;
  if (napi_get_value_double(env, entry_timeout, &e->entry_timeout) != napi_ok ||
      napi_get_value_double(env, attr_timeout, &e->attr_timeout) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected timeouts");
    return 0;
  }
  return 1;
}

static napi_value js_reply_err(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  int32_t err;
  if (!req || napi_get_value_int32(env, argv[1], &err) != napi_ok) return NULL;
  return result(env, fuse_reply_err(req, err));
}

/* The arguments replyEntry and replyCreate begin with: req, attr, entryTimeout, attrTimeout. */
static fuse_req_t get_req_entry(napi_env env, napi_callback_info info, size_t argc, napi_value *argv, struct fuse_entry_param *e) {
  if (!get_args(env, info, argc, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  if (!req || !get_entry(env, argv[1], argv[2], argv[3], e)) return NULL;
  return req;
}

/* replyEntry(req, attr, entryTimeout, attrTimeout) */
static napi_value js_reply_entry(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct fuse_entry_param e;
  fuse_req_t req = get_req_entry(env, info, 4, argv, &e);
  return req ? result(env, fuse_reply_entry(req, &e)) : NULL;
}

static void open_bits(struct fuse_file_info *fi, uint32_t bits) {
  fi->direct_io = (bits & 1) != 0;
  fi->keep_cache = (bits & 2) != 0;
  fi->nonseekable = (bits & 4) != 0;
  fi->cache_readdir = (bits & 8) != 0;
}

/* replyCreate(req, attr, entryTimeout, attrTimeout, fh, bits) */
static napi_value js_reply_create(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  struct fuse_entry_param e;
  fuse_req_t req = get_req_entry(env, info, 6, argv, &e);
  if (!req) return NULL;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  double fh;
  uint32_t bits;
  if (napi_get_value_double(env, argv[4], &fh) != napi_ok || napi_get_value_uint32(env, argv[5], &bits) != napi_ok) return NULL;
  fi.fh = (uint64_t)fh;
  open_bits(&fi, bits);
  return result(env, fuse_reply_create(req, &e, &fi));
}

/* replyAttr(req, attr, attrTimeout) */
static napi_value js_reply_attr(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  struct stat st;
  double timeout;
  if (!req || !get_attr(env, argv[1], &st, NULL) || napi_get_value_double(env, argv[2], &timeout) != napi_ok) return NULL;
  return result(env, fuse_reply_attr(req, &st, timeout));
}

/* replyOpen(req, fh, bits) */
static napi_value js_reply_open(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  double fh;
  uint32_t bits;
  if (!req || napi_get_value_double(env, argv[1], &fh) != napi_ok || napi_get_value_uint32(env, argv[2], &bits) != napi_ok) return NULL;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof fi);
  fi.fh = (uint64_t)fh;
  open_bits(&fi, bits);
  return result(env, fuse_reply_open(req, &fi));
}

/* replyWrite(req, count) and replyXattrSize(req, size): a request and a byte count. */
static napi_value reply_count(napi_env env, napi_callback_info info, int (*reply)(fuse_req_t, size_t)) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  double count;
  if (!req || napi_get_value_double(env, argv[1], &count) != napi_ok) return NULL;
  return result(env, reply(req, (size_t)count));
}

static napi_value js_reply_write(napi_env env, napi_callback_info info) { return reply_count(env, info, fuse_reply_write); }

static napi_value js_reply_xattr_size(napi_env env, napi_callback_info info) { return reply_count(env, info, fuse_reply_xattr); }

/* replyBuf(req, buffer | undefined) */
static napi_value js_reply_buf(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  if (!req) return NULL;
  void *data = NULL;
  size_t length = 0;
  napi_valuetype type;
  napi_typeof(env, argv[1], &type);
  if (type != napi_undefined && napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return NULL;
  }
  return result(env, fuse_reply_buf(req, data, length));
}

static napi_value js_reply_readlink(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  char target[4097];
  size_t len;
  if (!req || napi_get_value_string_utf8(env, argv[1], target, sizeof target, &len) != napi_ok) return NULL;
  return result(env, fuse_reply_readlink(req, target));
}

/* replyStatfs(req, Float64Array [bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax]) */
static napi_value js_reply_statfs(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (!req) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array || length < 9) {
    napi_throw_type_error(env, NULL, "expected a statfs array");
    return NULL;
  }
  const double *v = data;
  struct statvfs st;
  memset(&st, 0, sizeof st);
  st.f_bsize = (unsigned long)v[0];
  st.f_frsize = (unsigned long)v[1];
  st.f_blocks = (fsblkcnt_t)v[2];
  st.f_bfree = (fsblkcnt_t)v[3];
  st.f_bavail = (fsblkcnt_t)v[4];
  st.f_files = (fsfilcnt_t)v[5];
  st.f_ffree = (fsfilcnt_t)v[6];
  st.f_favail = (fsfilcnt_t)v[7];
  st.f_namemax = (unsigned long)v[8];
  return result(env, fuse_reply_statfs(req, &st));
}

/*
 * replyDirents(req, plus, size, names, meta, entryTimeout, attrTimeout) -> entries sent
 * meta: per entry [ino, mode, nextOffset] (readdir) or an attribute block whose
 * A_BLKSIZE slot is replaced by nextOffset (readdirplus).  Entries that do not
 * fit in `size` are left for the next call; the count tells the caller which
 * got a lookup reference.
 */
static napi_value js_reply_dirents(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 7, argv)) return NULL;
  fuse_req_t req = get_req(env, argv[0]);
  bool plus;
  double size_d, entry_timeout, attr_timeout;
  uint32_t count;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (!req || napi_get_value_bool(env, argv[1], &plus) != napi_ok || napi_get_value_double(env, argv[2], &size_d) != napi_ok ||
      napi_get_array_length(env, argv[3], &count) != napi_ok ||
      napi_get_typedarray_info(env, argv[4], &type, &length, &data, NULL, NULL) != napi_ok || type != napi_float64_array ||
      napi_get_value_double(env, argv[5], &entry_timeout) != napi_ok || napi_get_value_double(env, argv[6], &attr_timeout) != napi_ok) {
    napi_throw_type_error(env, NULL, "bad directory reply");
    return NULL;
  }
  size_t stride = plus ? A_COUNT : 3;
  if (length < stride * count) {
    napi_throw_type_error(env, NULL, "directory reply: meta too short");
    return NULL;
  }
  size_t size = (size_t)size_d;
  char *buf = malloc(size > 0 ? size : 1);
  if (!buf) return result(env, fuse_reply_err(req, ENOMEM));
  const double *meta = data;
  size_t used = 0;
  uint32_t sent = 0;
  char name[1024];
  for (; sent < count; sent++) {
    napi_value v;
    size_t len;
    napi_get_element(env, argv[3], sent, &v);
    if (napi_get_value_string_utf8(env, v, name, sizeof name, &len) != napi_ok) break;
    const double *m = meta + stride * sent;
    size_t need;
    if (plus) {
      struct fuse_entry_param e;
      memset(&e, 0, sizeof e);
      attr_from(m, &e.attr);
      e.attr.st_blksize = 4096;
      e.generation = (uint64_t)m[A_GENERATION];
      /* "." and "..": the kernel takes no reference, so no inode is given (ino 0) */
      int dots = strcmp(name, ".") == 0 || strcmp(name, "..") == 0;
      e.ino = dots ? 0 : e.attr.st_ino;
      e.entry_timeout = entry_timeout;
      e.attr_timeout = attr_timeout;
      need = fuse_add_direntry_plus(req, buf + used, size - used, name, &e, (off_t)m[A_BLKSIZE]);
    } else {
      struct stat st;
      memset(&st, 0, sizeof st);
      st.st_ino = (ino_t)m[0];
      st.st_mode = (mode_t)m[1];
      need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)m[2]);
    }
    if (need > size - used) break;
    used += need;
  }
  int r = fuse_reply_buf(req, buf, used);
  free(buf);
  return result(env, r < 0 ? r : (int)sent);
}

/* ---- module ---- */

#define EXPORT(name, fn)                                                     \
  do {                                                                       \
    napi_value f;                                                            \
    napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f);         \
    napi_set_named_property(env, exports, name, f);                          \
  } while (0)

static napi_value init_module(napi_env env, napi_value exports) {
  EXPORT("mount", js_mount);
  EXPORT("unmount", js_unmount);
  EXPORT("destroy", js_destroy);
  EXPORT("replyErr", js_reply_err);
  EXPORT("replyEntry", js_reply_entry);
  EXPORT("replyCreate", js_reply_create);
  EXPORT("replyAttr", js_reply_attr);
  EXPORT("replyOpen", js_reply_open);
  EXPORT("replyWrite", js_reply_write);
  EXPORT("replyBuf", js_reply_buf);
  EXPORT("replyReadlink", js_reply_readlink);
  EXPORT("replyXattrSize", js_reply_xattr_size);
  EXPORT("replyStatfs", js_reply_statfs);
  EXPORT("replyDirents", js_reply_dirents);
  napi_value version;
  napi_create_int32(env, fuse_version(), &version);
  napi_set_named_property(env, exports, "libfuseVersion", version);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init_module)
