/*
 * tierfs device helpers: the few system calls the flash tier needs that Node
 * does not expose.
 *
 *   alignedBuffer(bytes)        page-aligned memory for O_DIRECT transfers
 *   punchHole(fd, off, len)     fallocate(PUNCH_HOLE|KEEP_SIZE) on a file
 *   discard(fd, off, len)       BLKDISCARD on a block device
 *   blockDeviceBytes(fd)        BLKGETSIZE64 (fstat reports 0 for devices)
 *   lockExclusive(fd)           flock(LOCK_EX | LOCK_NB): true, or false while another holds it
 *   nvmeNamespaceId(fd)         NVME_IOCTL_ID: the namespace an NVMe block or generic device is
 *   nvmeDeallocate(fd, nsid, slba, blockCount)
 *                               NVMe Dataset Management, deallocate one range (the discard of
 *                               the passthrough path); a non-zero NVMe status throws EOPNOTSUPP
 *   crc32cBlocks(buf, blockBytes, out)
 *                               CRC-32C of each block of buf into out (u32 LE each)
 *   crc32c(buf)                 CRC-32C of buf
 *   sdNotify(socket, message)   sd_notify(3)
 *   ringOpen, ringPrep, ringSubmit, ringRegister, ringClose
 *                               io_uring reads, writes and fdatasync (uring.c)
 *
 * CRC-32C uses SSE4.2's crc32 instruction over four blocks at once: the four
 * dependency chains keep the unit busy every cycle (one block alone is bound
 * by the instruction's 3-cycle latency).  Without SSE4.2, a table per byte.
 * Errors are thrown as Error objects carrying `code` (the errno name) and
 * `errno` (positive), like Node's own fs errors.  All calls but the ring's
 * are synchronous: they are short and rare (discard runs after a commit, not
 * per write).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/nvme_ioctl.h>
#include <node_api.h>
#include "napi_helpers.h"
#include "uring.h"
#include <stdint.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define ALIGNMENT_BYTES 4096

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

#define MMAP_BYTES_MIN (1024 * 1024)

static void unmap_aligned(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
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
  // Large buffers (pack buffers, staging) come straight from mmap: page aligned and zero filled by
  // the kernel on first touch, so no memset faults every page in on the event loop's thread.
  bool mapped = bytes >= MMAP_BYTES_MIN;
  if (mapped) {
    data = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data == MAP_FAILED) return throw_errno(env, errno, "mmap");
  } else {
    int err = posix_memalign(&data, ALIGNMENT_BYTES, (size_t)bytes);
    if (err != 0) return throw_errno(env, err, "posix_memalign");
    memset(data, 0, (size_t)bytes);
  }
  if (napi_create_external_arraybuffer(env, data, (size_t)bytes, mapped ? unmap_aligned : free_aligned, (void *)(uintptr_t)bytes, &result) != napi_ok) {
    if (mapped) munmap(data, (size_t)bytes);
    else free(data);
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

/*
 * The lock belongs to the open file, which lives as long as anything holds
 * it: a process killed with io_uring writes in flight is reaped before the
 * kernel has finished them, and each holds the file until it completes.  A
 * successor that takes this lock first cannot have those late writes land on
 * blocks it has given new data.
 */
static napi_value lock_exclusive(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &fd)) return NULL;
  int res;
  do res = flock((int)fd, LOCK_EX | LOCK_NB);
  while (res != 0 && errno == EINTR);
  if (res != 0 && errno != EWOULDBLOCK) return throw_errno(env, errno, "flock");
  napi_get_boolean(env, res == 0, &result);
  return result;
}

static napi_value nvme_namespace_id(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  int64_t fd;
  if (!get_args(env, info, 1, argv) || !get_i64(env, argv[0], &fd)) return NULL;
  int nsid = ioctl((int)fd, NVME_IOCTL_ID);
  if (nsid < 0) return throw_errno(env, errno, "ioctl(NVME_IOCTL_ID)");
  napi_create_uint32(env, (uint32_t)nsid, &result);
  return result;
}

#define NVME_DATASET_MANAGEMENT 0x09
#define NVME_DSM_DEALLOCATE (1u << 2)

static napi_value nvme_deallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int64_t fd, nsid, slba, count;
  if (!get_args(env, info, 4, argv) || !get_i64(env, argv[0], &fd) || !get_i64(env, argv[1], &nsid) || !get_i64(env, argv[2], &slba) ||
      !get_i64(env, argv[3], &count))
    return NULL;
  if (count == 0 || count > UINT32_MAX || nsid > UINT32_MAX) {
    napi_throw_range_error(env, NULL, "nvmeDeallocate: 1 to 2^32-1 blocks in one range");
    return NULL;
  }
  /* One range: context attributes, length in logical blocks, starting LBA (16 bytes, little endian as the CPU). */
  struct {
    uint32_t attributes, blocks;
    uint64_t slba;
  } __attribute__((packed, aligned(16))) range = {0, (uint32_t)count, (uint64_t)slba};
  struct nvme_passthru_cmd cmd;
  memset(&cmd, 0, sizeof cmd);
  cmd.opcode = NVME_DATASET_MANAGEMENT;
  cmd.nsid = (uint32_t)nsid;
  cmd.addr = (uint64_t)(uintptr_t)&range;
  cmd.data_len = sizeof range;
  cmd.cdw10 = 0; /* one range (zero-based) */
  cmd.cdw11 = NVME_DSM_DEALLOCATE;
  int status = ioctl((int)fd, NVME_IOCTL_IO_CMD, &cmd);
  if (status < 0) return throw_errno(env, errno, "ioctl(NVME_IOCTL_IO_CMD)");
  if (status > 0) {
    /* A namespace without Dataset Management answers a status, not an errno: deallocation is advice, so it is "not supported". */
    char text[80];
    snprintf(text, sizeof text, "NVMe Dataset Management: status 0x%x", (unsigned)status);
    napi_value error = coded_error(env, "EOPNOTSUPP", text);
    if (error) napi_throw(env, error);
    return NULL;
  }
  return NULL;
}

static uint32_t crc_table[256];

static void crc_table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & -(c & 1));
    crc_table[i] = c;
  }
}

static uint32_t crc32c_table(const uint8_t *p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  while (n--) c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(const uint8_t *p, size_t n) {
  uint64_t c = 0xFFFFFFFFu;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = (uint32_t)c;
  for (; n > 0; n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32 ^ 0xFFFFFFFFu;
}

/* Four equal blocks at once; blockBytes is a multiple of 8. */
__attribute__((target("sse4.2"))) static void crc32c_hw4(const uint8_t *p, size_t blockBytes, uint32_t *out) {
  uint64_t a = 0xFFFFFFFFu, b = 0xFFFFFFFFu, c = 0xFFFFFFFFu, d = 0xFFFFFFFFu;
  const uint8_t *pa = p, *pb = p + blockBytes, *pc = p + 2 * blockBytes, *pd = p + 3 * blockBytes;
  for (size_t i = 0; i < blockBytes; i += 8) {
    uint64_t va, vb, vc, vd;
    memcpy(&va, pa + i, 8);
    memcpy(&vb, pb + i, 8);
    memcpy(&vc, pc + i, 8);
    memcpy(&vd, pd + i, 8);
    a = _mm_crc32_u64(a, va);
    b = _mm_crc32_u64(b, vb);
    c = _mm_crc32_u64(c, vc);
    d = _mm_crc32_u64(d, vd);
  }
  out[0] = (uint32_t)a ^ 0xFFFFFFFFu;
  out[1] = (uint32_t)b ^ 0xFFFFFFFFu;
  out[2] = (uint32_t)c ^ 0xFFFFFFFFu;
  out[3] = (uint32_t)d ^ 0xFFFFFFFFu;
}
#endif

static int have_sse42 = 0;

static uint32_t crc32c(const uint8_t *p, size_t n) {
#if defined(__x86_64__)
  if (have_sse42) return crc32c_hw(p, n);
#endif
  return crc32c_table(p, n);
}

static int get_buffer(napi_env env, napi_value v, uint8_t **data, size_t *length) {
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer ||
      napi_get_buffer_info(env, v, (void **)data, length) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return 0;
  }
  return 1;
}

static void put_u32le(uint8_t *out, uint32_t v) {
  out[0] = (uint8_t)v;
  out[1] = (uint8_t)(v >> 8);
  out[2] = (uint8_t)(v >> 16);
  out[3] = (uint8_t)(v >> 24);
}

static napi_value crc32c_blocks(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint8_t *data, *out;
  size_t length, out_length;
  int64_t block;
  if (!get_args(env, info, 3, argv) || !get_buffer(env, argv[0], &data, &length) || !get_i64(env, argv[1], &block) ||
      !get_buffer(env, argv[2], &out, &out_length))
    return NULL;
  if (block <= 0 || block % 8 != 0 || length % (size_t)block != 0 || out_length < length / (size_t)block * 4) {
    napi_throw_range_error(env, NULL, "crc32cBlocks: bad block size or output buffer");
    return NULL;
  }
  size_t count = length / (size_t)block, i = 0;
#if defined(__x86_64__)
  if (have_sse42) {
    uint32_t sums[4];
    for (; i + 4 <= count; i += 4) {
      crc32c_hw4(data + i * (size_t)block, (size_t)block, sums);
      for (int k = 0; k < 4; k++) put_u32le(out + (i + k) * 4, sums[k]);
    }
  }
#endif
  for (; i < count; i++) put_u32le(out + i * 4, crc32c(data + i * (size_t)block, (size_t)block));
  return NULL;
}

static napi_value crc32c_one(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  uint8_t *data;
  size_t length;
  if (!get_args(env, info, 1, argv) || !get_buffer(env, argv[0], &data, &length)) return NULL;
  napi_create_uint32(env, crc32c(data, length), &result);
  return result;
}

/*
 * sdNotify(socketPath, message): sd_notify(3) without libsystemd, one datagram
 * to the AF_UNIX socket systemd names in $NOTIFY_SOCKET (a path, or "@name" in
 * the abstract namespace).  Node has no AF_UNIX datagram sockets, and
 * libsystemd-dev would pull a systemd upgrade onto the build machine.
 */
static napi_value sd_notify_send(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  char message[4096];
  size_t path_len = 0, message_len = 0;
  if (!get_args(env, info, 2, argv)) return NULL;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &path_len) != napi_ok ||
      napi_get_value_string_utf8(env, argv[1], message, sizeof message, &message_len) != napi_ok) {
    napi_throw_type_error(env, NULL, "sdNotify(socketPath: string, message: string)");
    return NULL;
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if (path_len == 0 || path_len >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) {
    napi_throw_range_error(env, NULL, "NOTIFY_SOCKET must be an absolute path or an @abstract name that fits in sun_path");
    return NULL;
  }
  if (message_len >= sizeof message - 1) {
    napi_throw_range_error(env, NULL, "notify message longer than 4 KiB");
    return NULL;
  }
  memcpy(addr.sun_path, path, path_len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  socklen_t addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + path_len + (path[0] == '@' ? 0 : 1));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, errno, "socket");
  ssize_t sent = sendto(fd, message, message_len, MSG_NOSIGNAL, (struct sockaddr *)&addr, addr_len);
  int err = errno;
  close(fd);
  if (sent < 0) return throw_errno(env, err, "sendto");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  crc_table_init();
#if defined(__x86_64__)
  __builtin_cpu_init();
  have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
  napi_property_descriptor props[] = {
      EXPORT_FUNCTION("alignedBuffer", aligned_buffer),
      EXPORT_FUNCTION("punchHole", punch_hole),
      EXPORT_FUNCTION("discard", discard),
      EXPORT_FUNCTION("blockDeviceBytes", block_device_bytes),
      EXPORT_FUNCTION("lockExclusive", lock_exclusive),
      EXPORT_FUNCTION("nvmeNamespaceId", nvme_namespace_id),
      EXPORT_FUNCTION("nvmeDeallocate", nvme_deallocate),
      EXPORT_FUNCTION("crc32cBlocks", crc32c_blocks),
      EXPORT_FUNCTION("crc32c", crc32c_one),
      EXPORT_FUNCTION("sdNotify", sd_notify_send),
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  uring_define(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
