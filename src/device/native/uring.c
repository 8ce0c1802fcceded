/*
 * io_uring for the flash tier: reads, writes and fdatasync submitted in
 * batches, completions delivered on Node's event loop.
 *
 *   ringOpen(entries, results, onComplete, nvme) -> ring
 *                        nvme: 128-byte submissions and 32-byte completions,
 *                        as NVMe passthrough commands need
 *   ringPrep(ring, op, fd, buffer, offsetBytes, tag, slot) -> submitted count
 *                        op 0 read, 1 write, 2 fdatasync (buffer null);
 *                        slot: a registered buffer's index, or -1; the
 *                        count is of operations queued before it that a full
 *                        submission queue made it submit first (usually 0)
 *   ringPrepNvme(ring, fd, opcode, nsid, buffer, slba, blockCount, tag) -> submitted count
 *                        an NVMe I/O command (read 0x02, write 0x01, flush
 *                        0x00: buffer null) to a namespace's generic
 *                        character device (/dev/ngXnY) through uring_cmd;
 *                        its result is the NVMe status (0: success)
 *   ringNvmeNow(same arguments) -> NVMe status
 *                        the same, submitted and waited for at once (the
 *                        probe at open, on an idle ring)
 *   ringSubmit(ring) -> submitted count
 *   ringSubmitWait(ring) -> submitted count, having waited for a completion
 *   ringReap(ring) -> completions copied into results (no onComplete call)
 *   ringRegister(ring, arrayBuffer) -> slot, or -1 (no slot, or refused)
 *   ringClose(ring)
 *
 * No thread of ours: the ring signals an eventfd when a completion is
 * posted, libuv watches the eventfd (uv_poll) with the rest of the loop, and
 * its callback copies every completion (tag, result) into `results` (an
 * Int32Array shared with JavaScript) and calls onComplete(count) once per
 * batch.  The watch holds the loop open only while operations are in
 * flight, so an idle ring never keeps a process alive.
 *
 * Registered buffers (io_uring's fixed buffers) spare the kernel pinning
 * the pages of every transfer.  The table is sparse; a buffer is entered
 * when the pools make it (JavaScript decides which) and removed when it is
 * garbage collected, by a finalizer on its ArrayBuffer, so a slot never
 * outlives the memory it names.  The kernel accounts the pinned pages to
 * RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK: a refusal only means
 * that buffer goes unregistered.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <linux/nvme_ioctl.h>
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <uv.h>
#include "napi_helpers.h"
#include "uring.h"

#define SLOTS_MAX 1024

struct ring {
  struct io_uring uring;
  napi_env env;
  int eventfd;
  uv_poll_t poll;
  napi_ref on_complete;
  napi_ref results_ref;
  napi_async_context async;
  int32_t *results; /* pairs (tag, result) */
  size_t results_pairs;
  unsigned in_flight; /* prepared and not yet completed */
  bool referenced;    /* the uv_poll handle holds the loop open */
  bool closed;
  unsigned holders; /* the JavaScript object, the poll handle until it is closed, each registered buffer */
  uint8_t slot_used[SLOTS_MAX];
  unsigned slots_free_hint;
};

struct registration {
  struct ring *ring;
  unsigned slot;
};

static void ring_release(struct ring *r) {
  if (--r->holders == 0) free(r);
}

static struct ring *get_ring(napi_env env, napi_value v) {
  struct ring *r = NULL;
  if (napi_get_value_external(env, v, (void **)&r) != napi_ok || r == NULL) {
    napi_throw_type_error(env, NULL, "expected a ring");
    return NULL;
  }
  if (r->closed) {
    napi_throw_error(env, "EBADF", "the ring is closed");
    return NULL;
  }
  return r;
}

static void hold_loop(struct ring *r, bool hold) {
  if (hold == r->referenced) return;
  r->referenced = hold;
  if (hold) uv_ref((uv_handle_t *)&r->poll);
  else uv_unref((uv_handle_t *)&r->poll);
}

/* Copy posted completions into `results` (as many as fit); how many. */
static unsigned reap(struct ring *r) {
  struct io_uring_cqe *cqe;
  unsigned head, count = 0;
  io_uring_for_each_cqe(&r->uring, head, cqe) {
    if (count == r->results_pairs) break;
    r->results[2 * count] = (int32_t)cqe->user_data;
    r->results[2 * count + 1] = cqe->res;
    count++;
  }
  if (count == 0) return 0;
  io_uring_cq_advance(&r->uring, count);
  r->in_flight -= count;
  if (r->in_flight == 0) hold_loop(r, false);
  return count;
}

/* Every posted completion to JavaScript, in batches as large as `results`. */
static void deliver(struct ring *r) {
  napi_env env = r->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, resource, argv[1], ignored;
  napi_get_reference_value(env, r->on_complete, &callback);
  napi_create_object(env, &resource);
  for (;;) {
    unsigned count = reap(r);
    if (count == 0) break;
    napi_create_uint32(env, count, &argv[0]);
    /* napi_make_callback runs the microtasks the callback queued (the resolved promises) before it returns. */
    if (napi_make_callback(env, r->async, resource, callback, 1, argv, &ignored) != napi_ok) {
      /* An exception in onComplete: let Node report it as uncaught, as any callback's would be. */
      bool pending = false;
      napi_is_exception_pending(env, &pending);
      if (pending) {
        napi_value error;
        napi_get_and_clear_last_exception(env, &error);
        napi_fatal_exception(env, error);
      }
      break;
    }
    if (r->closed) break;
  }
  napi_close_handle_scope(env, scope);
}

static void clear_eventfd(struct ring *r) {
  uint64_t value;
  while (read(r->eventfd, &value, sizeof value) > 0) {
  }
}

static void on_eventfd(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  struct ring *r = handle->data;
  clear_eventfd(r);
  if (!r->closed) deliver(r);
}

/* A NOP there and back: the ring works here (a seccomp filter can allow io_uring_setup and refuse io_uring_enter). */
static int probe(struct io_uring *uring) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(uring);
  struct io_uring_cqe *cqe;
  if (!sqe) return -EBUSY;
  io_uring_prep_nop(sqe);
  int res = io_uring_submit_and_wait(uring, 1);
  if (res < 0) return res;
  res = io_uring_peek_cqe(uring, &cqe);
  if (res < 0) return res;
  res = cqe->res;
  io_uring_cqe_seen(uring, cqe);
  return res;
}

static void poll_closed(uv_handle_t *handle) { ring_release(handle->data); }

/* Stop watching, tear the ring down (the kernel unregisters its buffers and eventfd), let libuv close the handle. */
static void ring_teardown(struct ring *r) {
  r->closed = true;
  uv_poll_stop(&r->poll);
  io_uring_queue_exit(&r->uring);
  close(r->eventfd);
  uv_close((uv_handle_t *)&r->poll, poll_closed);
}

static void ring_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct ring *r = data;
  /* Collected without ringClose (the process is ending): nothing is in flight that JavaScript still waits for. */
  if (!r->closed) ring_teardown(r);
  ring_release(r); /* the JavaScript object's hold */
}

static napi_value ring_open(napi_env env, napi_callback_info info) {
  napi_value argv[4], result;
  bool nvme = false;
  uint32_t entries;
  napi_typedarray_type type;
  size_t length;
  void *data;
  napi_value arraybuffer;
  size_t byte_offset;
  if (!get_args(env, info, 4, argv)) return NULL;
  if (napi_get_value_uint32(env, argv[0], &entries) != napi_ok || entries == 0 || entries > 4096 || napi_get_value_bool(env, argv[3], &nvme) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, &arraybuffer, &byte_offset) != napi_ok || type != napi_int32_array ||
      length < 2) {
    napi_throw_type_error(env, NULL, "ringOpen(entries: 1..4096, results: Int32Array, onComplete: Function, nvme: boolean)");
    return NULL;
  }
  struct ring *r = calloc(1, sizeof *r);
  if (!r) return throw_errno(env, ENOMEM, "io_uring");
  r->env = env;
  r->results = data;
  r->results_pairs = length / 2;
  int res = io_uring_queue_init(entries, &r->uring, nvme ? IORING_SETUP_SQE128 | IORING_SETUP_CQE32 : 0);
  if (res < 0) {
    free(r);
    return throw_errno(env, -res, "io_uring_setup");
  }
  res = probe(&r->uring);
  if (res < 0) {
    io_uring_queue_exit(&r->uring);
    free(r);
    return throw_errno(env, -res, "io_uring_enter");
  }
  r->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (r->eventfd < 0 || (res = io_uring_register_eventfd(&r->uring, r->eventfd)) < 0) {
    int err = r->eventfd < 0 ? errno : -res;
    if (r->eventfd >= 0) close(r->eventfd);
    io_uring_queue_exit(&r->uring);
    free(r);
    return throw_errno(env, err, "io_uring eventfd");
  }
  /* The sparse table of fixed buffers; a kernel without it (before 5.19) just gets no registered buffers. */
  if (io_uring_register_buffers_sparse(&r->uring, SLOTS_MAX) < 0) memset(r->slot_used, 1, sizeof r->slot_used);
  uv_loop_t *loop;
  napi_value resource_name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &r->poll, r->eventfd) != 0) {
    close(r->eventfd);
    io_uring_queue_exit(&r->uring);
    free(r);
    napi_throw_error(env, "EIO", "cannot watch the io_uring eventfd");
    return NULL;
  }
  r->poll.data = r;
  uv_poll_start(&r->poll, UV_READABLE, on_eventfd);
  uv_unref((uv_handle_t *)&r->poll);
  r->holders = 2;
  napi_create_reference(env, argv[2], 1, &r->on_complete);
  napi_create_reference(env, argv[1], 1, &r->results_ref);
  napi_create_string_utf8(env, "tierfs:io_uring", NAPI_AUTO_LENGTH, &resource_name);
  napi_async_init(env, NULL, resource_name, &r->async);
  if (napi_create_external(env, r, ring_finalize, NULL, &result) != napi_ok) {
    napi_throw_error(env, NULL, "cannot create the ring object");
    return NULL;
  }
  return result;
}

/* A free submission entry; when the queue is full, what it holds is handed to the kernel first (*submitted says how many). NULL with an exception pending on failure. */
static struct io_uring_sqe *next_sqe(napi_env env, struct ring *r, int *submitted) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&r->uring);
  if (sqe) return sqe;
  *submitted = io_uring_submit(&r->uring);
  if (*submitted < 0) {
    throw_errno(env, -*submitted, "io_uring_enter");
    return NULL;
  }
  sqe = io_uring_get_sqe(&r->uring);
  if (!sqe) throw_errno(env, EBUSY, "io_uring submission queue");
  return sqe;
}

/* The operation is in the ring: count it, hold the loop open until it completes, answer the count submitted to make room. */
static napi_value prepared(napi_env env, struct ring *r, struct io_uring_sqe *sqe, uint32_t tag, int submitted) {
  napi_value result;
  io_uring_sqe_set_data64(sqe, tag);
  r->in_flight++;
  hold_loop(r, true);
  napi_create_int32(env, submitted, &result);
  return result;
}

static napi_value ring_prep(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  uint32_t op, tag;
  int submitted = 0;
  int32_t fd, slot;
  int64_t offset;
  void *data = NULL;
  size_t length = 0;
  if (!get_args(env, info, 7, argv)) return NULL;
  struct ring *r = get_ring(env, argv[0]);
  if (!r) return NULL;
  if (napi_get_value_uint32(env, argv[1], &op) != napi_ok || op > 2 || napi_get_value_int32(env, argv[2], &fd) != napi_ok || fd < 0 ||
      napi_get_value_int64(env, argv[4], &offset) != napi_ok || offset < 0 || napi_get_value_uint32(env, argv[5], &tag) != napi_ok ||
      napi_get_value_int32(env, argv[6], &slot) != napi_ok || slot >= SLOTS_MAX) {
    napi_throw_type_error(env, NULL, "ringPrep(ring, op, fd, buffer, offset, tag, slot): bad argument");
    return NULL;
  }
  if (op != 2) {
    napi_typedarray_type type;
    napi_value arraybuffer;
    size_t byte_offset;
    if (napi_get_typedarray_info(env, argv[3], &type, &length, &data, &arraybuffer, &byte_offset) != napi_ok || type != napi_uint8_array ||
        length > UINT32_MAX) {
      napi_throw_type_error(env, NULL, "ringPrep: expected a Buffer");
      return NULL;
    }
  }
  struct io_uring_sqe *sqe = next_sqe(env, r, &submitted);
  if (!sqe) return NULL;
  if (op == 0 && slot >= 0) io_uring_prep_read_fixed(sqe, fd, data, (unsigned)length, (uint64_t)offset, slot);
  else if (op == 0) io_uring_prep_read(sqe, fd, data, (unsigned)length, (uint64_t)offset);
  else if (op == 1 && slot >= 0) io_uring_prep_write_fixed(sqe, fd, data, (unsigned)length, (uint64_t)offset, slot);
  else if (op == 1) io_uring_prep_write(sqe, fd, data, (unsigned)length, (uint64_t)offset);
  else io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
  return prepared(env, r, sqe, tag, submitted);
}

/* Fill a 128-byte entry with an NVMe I/O command for uring_cmd. */
static void fill_nvme(struct io_uring_sqe *sqe, int fd, uint32_t opcode, uint32_t nsid, void *data, size_t length, int64_t slba, uint32_t block_count) {
  memset(sqe, 0, 2 * sizeof *sqe); /* the command lives in the entry's second half */
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = fd;
  sqe->cmd_op = NVME_URING_CMD_IO;
  struct nvme_uring_cmd *cmd = (struct nvme_uring_cmd *)sqe->cmd;
  cmd->opcode = (uint8_t)opcode;
  cmd->nsid = nsid;
  cmd->addr = (uint64_t)(uintptr_t)data;
  cmd->data_len = (uint32_t)length;
  cmd->cdw10 = (uint32_t)((uint64_t)slba & 0xffffffffu);
  cmd->cdw11 = (uint32_t)((uint64_t)slba >> 32);
  cmd->cdw12 = block_count > 0 ? block_count - 1 : 0; /* NLB is zero-based */
}

struct nvme_args {
  struct ring *ring;
  int32_t fd;
  uint32_t opcode, nsid, block_count, tag;
  int64_t slba;
  void *data;
  size_t length;
};

/* (ring, fd, opcode, nsid, buffer|null, slba, blockCount, tag) */
static int get_nvme_args(napi_env env, napi_callback_info info, struct nvme_args *a) {
  napi_value argv[8];
  napi_valuetype buffer_type;
  memset(a, 0, sizeof *a);
  if (!get_args(env, info, 8, argv) || !(a->ring = get_ring(env, argv[0]))) return 0;
  if (napi_get_value_int32(env, argv[1], &a->fd) != napi_ok || a->fd < 0 || napi_get_value_uint32(env, argv[2], &a->opcode) != napi_ok ||
      a->opcode > 0xff || napi_get_value_uint32(env, argv[3], &a->nsid) != napi_ok || napi_typeof(env, argv[4], &buffer_type) != napi_ok ||
      napi_get_value_int64(env, argv[5], &a->slba) != napi_ok || a->slba < 0 || napi_get_value_uint32(env, argv[6], &a->block_count) != napi_ok ||
      a->block_count > 65536 || napi_get_value_uint32(env, argv[7], &a->tag) != napi_ok || !(a->ring->uring.flags & IORING_SETUP_SQE128)) {
    napi_throw_type_error(env, NULL, "NVMe command (ring, fd, opcode, nsid, buffer, slba, blockCount, tag): bad argument, or not an NVMe ring");
    return 0;
  }
  if (buffer_type != napi_null) {
    napi_typedarray_type type;
    napi_value arraybuffer;
    size_t byte_offset;
    if (napi_get_typedarray_info(env, argv[4], &type, &a->length, &a->data, &arraybuffer, &byte_offset) != napi_ok || type != napi_uint8_array ||
        a->length > UINT32_MAX) {
      napi_throw_type_error(env, NULL, "NVMe command: expected a Buffer or null");
      return 0;
    }
  }
  return 1;
}

static napi_value ring_prep_nvme(napi_env env, napi_callback_info info) {
  struct nvme_args a;
  int submitted = 0;
  if (!get_nvme_args(env, info, &a)) return NULL;
  struct io_uring_sqe *sqe = next_sqe(env, a.ring, &submitted);
  if (!sqe) return NULL;
  fill_nvme(sqe, a.fd, a.opcode, a.nsid, a.data, a.length, a.slba, a.block_count);
  return prepared(env, a.ring, sqe, a.tag, submitted);
}

/*
 * The same command, submitted and waited for on the spot: for the probe at
 * open, before the ring carries anything else (its completion is taken here,
 * not delivered).  Answers the NVMe status, or throws the errno.
 */
static napi_value ring_nvme_now(napi_env env, napi_callback_info info) {
  struct nvme_args a;
  napi_value result;
  struct io_uring_cqe *cqe;
  if (!get_nvme_args(env, info, &a)) return NULL;
  if (a.ring->in_flight > 0 || io_uring_sq_ready(&a.ring->uring) > 0) {
    napi_throw_error(env, "EBUSY", "ringNvmeNow: the ring is carrying other operations");
    return NULL;
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe(&a.ring->uring);
  if (!sqe) return throw_errno(env, EBUSY, "io_uring submission queue");
  fill_nvme(sqe, a.fd, a.opcode, a.nsid, a.data, a.length, a.slba, a.block_count);
  io_uring_sqe_set_data64(sqe, a.tag);
  int res = io_uring_submit_and_wait(&a.ring->uring, 1);
  if (res < 0) return throw_errno(env, -res, "io_uring_enter");
  res = io_uring_peek_cqe(&a.ring->uring, &cqe);
  if (res < 0) return throw_errno(env, -res, "io_uring completion");
  int status = cqe->res;
  io_uring_cqe_seen(&a.ring->uring, cqe);
  if (status < 0) return throw_errno(env, -status, "uring_cmd");
  napi_create_int32(env, status, &result);
  return result;
}

/* Hand the queued operations to the kernel, waiting in the same call for `wait_nr` completions; how many it took (0 for EAGAIN, EBUSY, EINTR: try again). */
static napi_value submit(napi_env env, napi_callback_info info, unsigned wait_nr) {
  napi_value argv[1], result;
  if (!get_args(env, info, 1, argv)) return NULL;
  struct ring *r = get_ring(env, argv[0]);
  if (!r) return NULL;
  int res = io_uring_submit_and_wait(&r->uring, wait_nr);
  if (res < 0 && res != -EAGAIN && res != -EINTR && res != -EBUSY) return throw_errno(env, -res, "io_uring_enter");
  napi_create_int32(env, res < 0 ? 0 : res, &result);
  return result;
}

static napi_value ring_submit(napi_env env, napi_callback_info info) { return submit(env, info, 0); }

/*
 * ringSubmitWait: submit and wait for one completion in the same system
 * call, for a lone small read, where the eventfd's wake-up and read would
 * cost more than the read (the caller then takes the completion with
 * ringReap).
 */
static napi_value ring_submit_wait(napi_env env, napi_callback_info info) { return submit(env, info, 1); }

/* ringReap: completions posted so far into `results`, without calling onComplete; how many. */
static napi_value ring_reap(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  if (!get_args(env, info, 1, argv)) return NULL;
  struct ring *r = get_ring(env, argv[0]);
  if (!r) return NULL;
  unsigned count = reap(r);
  if (count > 0) clear_eventfd(r); /* what it announced is taken: no wake-up for nothing */
  napi_create_uint32(env, count, &result);
  return result;
}

static void registration_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct registration *reg = data;
  struct ring *r = reg->ring;
  if (!r->closed) {
    struct iovec empty = {NULL, 0};
    __u64 tag = 0;
    /* Nothing in flight uses it (JavaScript holds a buffer until its operation completes); the kernel unpins the pages now. */
    if (io_uring_register_buffers_update_tag(&r->uring, reg->slot, &empty, &tag, 1) == 1) r->slot_used[reg->slot] = 0;
  }
  free(reg);
  ring_release(r);
}

static napi_value ring_register(napi_env env, napi_callback_info info) {
  napi_value argv[2], result;
  void *data;
  size_t length;
  if (!get_args(env, info, 2, argv)) return NULL;
  struct ring *r = get_ring(env, argv[0]);
  if (!r) return NULL;
  if (napi_get_arraybuffer_info(env, argv[1], &data, &length) != napi_ok) {
    napi_throw_type_error(env, NULL, "ringRegister(ring, arrayBuffer)");
    return NULL;
  }
  int slot = -1;
  for (unsigned i = 0; i < SLOTS_MAX && slot < 0; i++) {
    unsigned at = (r->slots_free_hint + i) % SLOTS_MAX;
    if (!r->slot_used[at]) slot = (int)at;
  }
  struct registration *reg = slot < 0 ? NULL : malloc(sizeof *reg);
  if (reg) {
    struct iovec iov = {data, length};
    __u64 tag = 0;
    if (io_uring_register_buffers_update_tag(&r->uring, (unsigned)slot, &iov, &tag, 1) == 1 &&
        napi_add_finalizer(env, argv[1], reg, registration_finalize, NULL, NULL) == napi_ok) {
      reg->ring = r;
      reg->slot = (unsigned)slot;
      r->slot_used[slot] = 1;
      r->slots_free_hint = (unsigned)slot + 1;
      r->holders++;
    } else {
      free(reg);
      slot = -1;
    }
  }
  napi_create_int32(env, slot, &result);
  return result;
}

static napi_value ring_close(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  struct ring *r = get_ring(env, argv[0]);
  if (!r) return NULL;
  if (r->in_flight > 0) {
    napi_throw_error(env, "EBUSY", "ringClose: operations are still in flight");
    return NULL;
  }
  napi_delete_reference(env, r->on_complete);
  napi_delete_reference(env, r->results_ref);
  napi_async_destroy(env, r->async);
  ring_teardown(r);
  return NULL;
}

void uring_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      EXPORT_FUNCTION("ringOpen", ring_open),
      EXPORT_FUNCTION("ringPrep", ring_prep),
      EXPORT_FUNCTION("ringPrepNvme", ring_prep_nvme),
      EXPORT_FUNCTION("ringNvmeNow", ring_nvme_now),
      EXPORT_FUNCTION("ringSubmit", ring_submit),
      EXPORT_FUNCTION("ringSubmitWait", ring_submit_wait),
      EXPORT_FUNCTION("ringReap", ring_reap),
      EXPORT_FUNCTION("ringRegister", ring_register),
      EXPORT_FUNCTION("ringClose", ring_close),
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
}
