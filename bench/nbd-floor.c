// nbd-floor.c - the least CPU an NBD server can spend per request on this machine: a memory
// export served with nothing but the system calls and copies every such server must make, so that
// nbd-bench.sh (FLOOR=1) can set pfnblock's and nbdkit's server CPU per request beside it.
//   - one thread per connection, blocking sockets (the client's batches decide how many requests
//     one receive brings);
//   - each receive reads as much as the socket holds into an 8 MiB buffer, and every complete
//     request in it is served before the next receive;
//   - a write's payload is copied from that buffer into a MAP_SHARED mapping of a /dev/shm file
//     (glibc memcpy: ordinary stores, no fence, as nbdkit's memory plugin; with --nt, non-temporal
//     stores and a store fence per write, as a pmem server must before it acknowledges one; the
//     export's pages are populated at start);
//   - a read's reply header and data go out by sendmsg with an iovec pointing into the mapping
//     (the kernel's copy into the socket is the only one);
//   - every reply of a receive goes out in one sendmsg (up to IOV_MAX pieces at a time);
//   - 4 MiB socket buffers, as pfnblock serve sets them.
// Simple replies only (structured replies and meta contexts are refused, as the protocol allows);
// NBD_OPT_EXPORT_NAME, NBD_OPT_INFO/GO, NBD_OPT_ABORT; READ, WRITE, FLUSH (a no-op: the export is
// memory, as nbdkit's memory plugin), DISC. Ranges outside the export get EINVAL.
// Not a server to use: no persistence, no checks beyond the range, no TRIM.
// Build: gcc -O2 -pthread -o nbd-floor nbd-floor.c
// Run:   ./nbd-floor SOCKET FILE BYTES [--nt]   (FILE is created or truncated to BYTES and populated)
#define _GNU_SOURCE
#include <emmintrin.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define NBDMAGIC 0x4e42444d41474943ULL
#define IHAVEOPT 0x49484156454F5054ULL
#define REPLY_MAGIC 0x3e889045565a9ULL
#define REQUEST_MAGIC 0x25609513U
#define SIMPLE_REPLY_MAGIC 0x67446698U
#define RECV_BYTES (8u << 20)
#define MAX_REPLIES 1024

static uint8_t *export_base;
static uint64_t export_size;
static int nt_writes; // --nt

// The pmem write: 16-byte streaming stores where both sides allow, then one fence.
static void write_nt(uint8_t *dst, const uint8_t *src, size_t n) {
  size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
  if (head > n) head = n;
  memcpy(dst, src, head); dst += head; src += head; n -= head;
  for (; n >= 64; n -= 64, dst += 64, src += 64) {
    __m128i a = _mm_loadu_si128((const __m128i *)src), b = _mm_loadu_si128((const __m128i *)(src + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(src + 32)), d = _mm_loadu_si128((const __m128i *)(src + 48));
    _mm_stream_si128((__m128i *)dst, a); _mm_stream_si128((__m128i *)(dst + 16), b);
    _mm_stream_si128((__m128i *)(dst + 32), c); _mm_stream_si128((__m128i *)(dst + 48), d);
  }
  memcpy(dst, src, n);
  _mm_sfence();
}

static int read_full(int fd, void *p, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = recv(fd, (char *)p + got, n - got, 0);
    if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
    got += (size_t)r;
  }
  return 0;
}
static int write_full(int fd, const void *p, size_t n) {
  for (size_t put = 0; put < n;) {
    ssize_t r = send(fd, (const char *)p + put, n - put, MSG_NOSIGNAL);
    if (r <= 0) { if (r < 0 && errno == EINTR) continue; return -1; }
    put += (size_t)r;
  }
  return 0;
}
static int option_reply(int fd, uint32_t opt, uint32_t type, const void *data, uint32_t len) {
  uint8_t h[20];
  uint64_t m = htobe64(REPLY_MAGIC); uint32_t o = htobe32(opt), t = htobe32(type), l = htobe32(len);
  memcpy(h, &m, 8); memcpy(h + 8, &o, 4); memcpy(h + 12, &t, 4); memcpy(h + 16, &l, 4);
  return write_full(fd, h, 20) || (len && write_full(fd, data, len)) ? -1 : 0;
}

// Fixed newstyle negotiation; 0 when the client entered transmission, -1 when it left.
static int negotiate(int fd) {
  const uint16_t tflags = 1 | 4 | 256; // HAS_FLAGS | SEND_FLUSH | CAN_MULTI_CONN
  uint8_t hello[18];
  uint64_t a = htobe64(NBDMAGIC), b = htobe64(IHAVEOPT); uint16_t hf = htobe16(1 | 2);
  memcpy(hello, &a, 8); memcpy(hello + 8, &b, 8); memcpy(hello + 16, &hf, 2);
  if (write_full(fd, hello, 18)) return -1;
  uint32_t cflags;
  if (read_full(fd, &cflags, 4)) return -1;
  int no_zeroes = (be32toh(cflags) & 2) != 0;
  for (;;) {
    uint8_t h[16];
    if (read_full(fd, h, 16)) return -1;
    uint32_t opt, len;
    memcpy(&opt, h + 8, 4); memcpy(&len, h + 12, 4); opt = be32toh(opt); len = be32toh(len);
    if (len > 65536) return -1;
    uint8_t data[65536];
    if (len && read_full(fd, data, len)) return -1;
    uint64_t size_be = htobe64(export_size); uint16_t tf_be = htobe16(tflags);
    if (opt == 1) { // EXPORT_NAME
      uint8_t r[10 + 124] = {0};
      memcpy(r, &size_be, 8); memcpy(r + 8, &tf_be, 2);
      return write_full(fd, r, no_zeroes ? 10 : sizeof r);
    } else if (opt == 6 || opt == 7) { // INFO, GO
      uint8_t info[12]; uint16_t type = 0;
      memcpy(info, &type, 2); memcpy(info + 2, &size_be, 8); memcpy(info + 10, &tf_be, 2);
      if (option_reply(fd, opt, 3, info, 12) || option_reply(fd, opt, 1, NULL, 0)) return -1;
      if (opt == 7) return 0;
    } else if (opt == 2) { // ABORT
      option_reply(fd, opt, 1, NULL, 0);
      return -1;
    } else if (option_reply(fd, opt, 0x80000001u, NULL, 0)) { // ERR_UNSUP
      return -1;
    }
  }
}

struct reply { uint32_t magic, error; uint64_t handle; };

static void *serve(void *arg) {
  int fd = (int)(intptr_t)arg;
  uint8_t *buf = malloc(RECV_BYTES);
  struct reply *replies = malloc(sizeof(struct reply) * MAX_REPLIES);
  struct iovec *iov = malloc(sizeof(struct iovec) * 2 * MAX_REPLIES);
  if (!buf || !replies || !iov || negotiate(fd)) goto out;
  // 4 MiB socket buffers, as pfnblock serve sets them: a 1 MiB reply leaves in one go.
  int sockbuf = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof sockbuf);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof sockbuf);
  size_t have = 0, at = 0; // bytes in buf, start of the first unserved request
  int full = 0;             // the last pass stopped at MAX_REPLIES: serve the rest before receiving
  for (;;) {
    if (!full) {
      ssize_t r = recv(fd, buf + have, RECV_BYTES - have, 0);
      if (r <= 0) { if (r < 0 && errno == EINTR) continue; goto out; }
      have += (size_t)r;
    }
    int nrep = 0, niov = 0;
    size_t need; // bytes of the first request not yet served whole
    for (;;) {
      need = 28;
      if (have - at < 28) break;
      uint8_t *q = buf + at;
      uint32_t magic, len; uint16_t type; uint64_t handle, off;
      memcpy(&magic, q, 4); memcpy(&type, q + 6, 2); memcpy(&handle, q + 8, 8);
      memcpy(&off, q + 16, 8); memcpy(&len, q + 24, 4);
      magic = be32toh(magic); type = be16toh(type); off = be64toh(off); len = be32toh(len);
      if (magic != REQUEST_MAGIC) goto out;
      need = 28 + (type == 1 ? len : 0);
      if (need > RECV_BYTES) goto out;
      if (have - at < need) break;
      if (type == 2) goto out; // DISC
      int ok = off <= export_size && len <= export_size - off;
      struct reply *rp = &replies[nrep++];
      rp->magic = htobe32(SIMPLE_REPLY_MAGIC); rp->handle = handle; rp->error = htobe32(ok ? 0 : 22);
      iov[niov].iov_base = rp; iov[niov++].iov_len = sizeof *rp;
      if (type == 0 && ok) { iov[niov].iov_base = export_base + off; iov[niov++].iov_len = len; }
      else if (type == 1 && ok) {
        if (nt_writes) write_nt(export_base + off, q + 28, len);
        else memcpy(export_base + off, q + 28, len);
      }
      else if (type != 3 && type != 0 && type != 1) rp->error = htobe32(22);
      at += need;
      if (nrep == MAX_REPLIES) break;
    }
    // Every reply of this receive in as few sendmsg calls as IOV_MAX allows.
    for (int i = 0; i < niov;) {
      struct msghdr mh = {0};
      mh.msg_iov = iov + i; mh.msg_iovlen = niov - i > IOV_MAX ? IOV_MAX : niov - i;
      ssize_t s = sendmsg(fd, &mh, MSG_NOSIGNAL);
      if (s < 0) { if (errno == EINTR) continue; goto out; }
      while (s > 0 && i < niov) { // advance over what went out
        if ((size_t)s >= iov[i].iov_len) { s -= (ssize_t)iov[i].iov_len; i++; }
        else { iov[i].iov_base = (char *)iov[i].iov_base + s; iov[i].iov_len -= (size_t)s; s = 0; }
      }
    }
    full = nrep == MAX_REPLIES;
    if (at == have) at = have = 0;
    else if (at + need > RECV_BYTES) { // move the unserved tail to the front only when it must
      memmove(buf, buf + at, have - at); have -= at; at = 0;
    }
  }
out:
  close(fd); free(buf); free(replies); free(iov);
  return NULL;
}

int main(int argc, char **argv) {
  nt_writes = argc == 5 && strcmp(argv[4], "--nt") == 0;
  if (argc != 4 && !nt_writes) { fprintf(stderr, "usage: %s SOCKET FILE BYTES [--nt]\n", argv[0]); return 2; }
  export_size = strtoull(argv[3], NULL, 0);
  int ffd = open(argv[2], O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (ffd < 0 || ftruncate(ffd, (off_t)export_size) || posix_fallocate(ffd, 0, (off_t)export_size)) {
    perror(argv[2]); return 1;
  }
  export_base = mmap(NULL, export_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ffd, 0);
  if (export_base == MAP_FAILED) { perror("mmap"); return 1; }
  signal(SIGPIPE, SIG_IGN);
  int ls = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof sa.sun_path) { fprintf(stderr, "socket path too long\n"); return 2; }
  strcpy(sa.sun_path, argv[1]);
  unlink(argv[1]);
  if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 64)) { perror(argv[1]); return 1; }
  for (;;) {
    int fd = accept(ls, NULL, NULL);
    if (fd < 0) { if (errno == EINTR) continue; perror("accept"); return 1; }
    pthread_t t;
    if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd)) { close(fd); continue; }
    pthread_detach(t);
  }
}
