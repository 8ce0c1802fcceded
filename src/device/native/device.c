/*
 * tierfs device helpers: the few system calls the flash tier needs that Node
 * does not expose.
 *
 *   alignedBuffer(bytes)        page-aligned memory for O_DIRECT transfers
 *   punchHole(fd, off, len)     fallocate(PUNCH_HOLE|KEEP_SIZE) on a file
 *   discard(fd, off, len)       BLKDISCARD on a block device
 *   blockDeviceBytes(fd)        BLKGETSIZE64 (fstat reports 0 for devices)
 *
 * Errors are thrown as Error objects carrying `code` (the errno name) and
 * `errno` (positive), like Node's own fs errors.  All calls are synchronous:
 * they are short and rare (discard runs after a commit, not per write).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define ALIGNMENT_BYTES 4096

static napi_value throw_errno(napi_env env, int err, const char *syscall) {
  napi_value code, msg, error, errnum;
  char text[160];
  snprintf(text, sizeof(text), "%s: %s", syscall, strerror(err));
  napi_create_string_utf8(env, strerrorname_np(err) ? strerrorname_np(err) : "EIO", NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_error(env, code, msg, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  napi_throw(env, error);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != want) {
    napi_throw_type_error(env, NULL, "wrong number of arguments");
    return 0;
  }
  return 1;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok || *out < 0) {
    napi_throw_type_error(env, NULL, "expected a non-negative integer");
    return 0;
  }
  return 1;
}

static void free_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

static napi_value aligned_buffer(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t bytes;
  void *data = NULL;
  if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &bytes)) return NULL;
  if (bytes == 0 || bytes % ALIGNMENT_BYTES != 0) {
    napi_throw_range_error(env, NULL, "aligned buffer size must be a positive multiple of 4096");
    return NULL;
  }
  int err = posix_memalign(&data, ALIGNMENT_BYTES, (size_t)bytes);
  if (err != 0) return throw_errno(env, err, "posix_memalign");
  memset(data, 0, (size_t)bytes);
  if (napi_create_external_arraybuffer(env, data, (size_t)bytes, free_aligned, NULL, &result) != napi_ok) {
    free(data);
    napi_throw_error(env, NULL, "cannot create external ArrayBuffer");
    return NULL;
  }
  napi_adjust_external_memory(env, bytes, &bytes);
  return result;
}

static napi_value punch_hole(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t fd, off, len;
  if (!get_args(env, info, 3, argv) || !get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &off) ||
      !get_i64(env, argv[2], &len))
    return NULL;
  if (fallocate((int)fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0)
    return throw_errno(env, errno, "fallocate");
  return NULL;
}

static napi_value discard(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int64_t fd, off, len;
  if (!get_args(env, info, 3, argv) || !get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &off) ||
      !get_i64(env, argv[2], &len))
    return NULL;
  uint64_t range[2] = {(uint64_t)off, (uint64_t)len};
  if (ioctl((int)fd, BLKDISCARD, range) != 0) return throw_errno(env, errno, "ioctl(BLKDISCARD)");
  return NULL;
}

static napi_value block_device_bytes(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  uint64_t bytes = 0;
  if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &fd)) return NULL;
  if (ioctl((int)fd, BLKGETSIZE64, &bytes) != 0) return throw_errno(env, errno, "ioctl(BLKGETSIZE64)");
  napi_create_int64(env, (int64_t)bytes, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"alignedBuffer", NULL, aligned_buffer, NULL, NULL, NULL, napi_default, NULL},
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_default, NULL},
      {"discard", NULL, discard, NULL, NULL, NULL, napi_default, NULL},
      {"blockDeviceBytes", NULL, block_device_bytes, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
