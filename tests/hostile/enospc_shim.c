/* A test-only LD_PRELOAD shim that makes the disk "fill up": with SDRT_TEST_ENOSPC_AFTER=N in the
 * environment, writes to regular files (other than stdin/stdout/stderr, which the tests redirect to files)
 * succeed until N bytes have been written to such files in total, then fail with ENOSPC. The write that
 * crosses the limit is cut short at it, as on a real full disk (a short count, then ENOSPC on the next
 * write). Pipes, terminals, sockets and devices are never touched. Without the variable every call is passed
 * through unchanged, so the shim itself is harmless; a value that is not a whole number stops the process
 * (exit 125) so that a typo cannot turn a test into a silent no-op.
 *
 * Wrapped: write, pwrite, pwrite64, writev, pwritev, pwritev64 (sdrt writes every output with write(2), in
 * io/atomic_file.cpp). stdio (fwrite, fflush) reaches the kernel through glibc-internal calls that LD_PRELOAD
 * cannot intercept; sdrt writes no output through stdio, so it is not wrapped.
 *
 * Used by tests/hostile/test_hostile_files.cpp; not built with SDRT_SANITIZE (ASan must come first in
 * LD_PRELOAD). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void*, size_t);
typedef ssize_t (*pwrite_fn)(int, const void*, size_t, off_t);
typedef ssize_t (*pwrite64_fn)(int, const void*, size_t, off64_t);
typedef ssize_t (*writev_fn)(int, const struct iovec*, int);
typedef ssize_t (*pwritev_fn)(int, const struct iovec*, int, off_t);
typedef ssize_t (*pwritev64_fn)(int, const struct iovec*, int, off64_t);

static write_fn real_write;
static pwrite_fn real_pwrite;
static pwrite64_fn real_pwrite64;
static writev_fn real_writev;
static pwritev_fn real_pwritev;
static pwritev64_fn real_pwritev64;

static int active;                 /* SDRT_TEST_ENOSPC_AFTER is set */
static unsigned long long limit;   /* bytes allowed to regular files in total */
static unsigned long long granted; /* bytes granted so far (updated atomically) */

/* dlsym returns an object pointer; copying it avoids the ISO C object-to-function pointer conversion. */
#define RESOLVE(var, name)              \
  do {                                  \
    void* sym = dlsym(RTLD_NEXT, name); \
    memcpy(&(var), &sym, sizeof sym);   \
  } while (0)

static void init(void) {
  static int done;
  if (__atomic_load_n(&done, __ATOMIC_ACQUIRE)) return;
  RESOLVE(real_write, "write");
  RESOLVE(real_pwrite, "pwrite");
  RESOLVE(real_pwrite64, "pwrite64");
  RESOLVE(real_writev, "writev");
  RESOLVE(real_pwritev, "pwritev");
  RESOLVE(real_pwritev64, "pwritev64");
  const char* value = getenv("SDRT_TEST_ENOSPC_AFTER");
  if (value != NULL && *value != '\0') {
    char* end = NULL;
    errno = 0;
    const unsigned long long n = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || *value == '-') {
      static const char msg[] = "enospc_shim: SDRT_TEST_ENOSPC_AFTER must be a number of bytes\n";
      if (real_write != NULL) (void)real_write(STDERR_FILENO, msg, sizeof msg - 1);
      _exit(125);
    }
    limit = n;
    active = 1;
  }
  __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

__attribute__((constructor)) static void shim_constructor(void) {
  init();
}

/* Whether writes to `fd` count against the limit: a regular file other than the standard streams. */
static int counted(int fd) {
  if (!active || fd <= STDERR_FILENO) return 0;
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reserves up to `want` bytes of the budget; returns how many (0 when the "disk" is full). */
static size_t reserve(size_t want) {
  unsigned long long cur = __atomic_load_n(&granted, __ATOMIC_RELAXED);
  for (;;) {
    if (cur >= limit) return 0;
    const unsigned long long room = limit - cur;
    const size_t take = room < want ? (size_t)room : want;
    if (__atomic_compare_exchange_n(&granted, &cur, cur + take, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return take;
  }
}

/* Gives back what a reservation of `take` bytes did not use (the real call wrote `done`, or failed). */
static void settle(size_t take, ssize_t done) {
  const size_t used = done > 0 ? (size_t)done : 0;
  if (used < take) __atomic_fetch_sub(&granted, (unsigned long long)(take - used), __ATOMIC_RELAXED);
}

/* The first `take` bytes of `iov` as a new vector in `out` (at most `cnt` entries); returns its length. */
static int truncate_iov(const struct iovec* iov, int cnt, size_t take, struct iovec* out) {
  int n = 0;
  for (int i = 0; i < cnt && take > 0; ++i) {
    out[n] = iov[i];
    if (out[n].iov_len > take) out[n].iov_len = take;
    take -= out[n].iov_len;
    ++n;
  }
  return n;
}

static size_t iov_total(const struct iovec* iov, int cnt) {
  size_t total = 0;
  for (int i = 0; i < cnt; ++i) total += iov[i].iov_len;
  return total;
}

ssize_t write(int fd, const void* buf, size_t count) {
  init();
  if (count == 0 || !counted(fd)) return real_write(fd, buf, count);
  const size_t take = reserve(count);
  if (take == 0) {
    errno = ENOSPC;
    return -1;
  }
  const ssize_t n = real_write(fd, buf, take);
  settle(take, n);
  return n;
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t offset) {
  init();
  if (count == 0 || !counted(fd)) return real_pwrite(fd, buf, count, offset);
  const size_t take = reserve(count);
  if (take == 0) {
    errno = ENOSPC;
    return -1;
  }
  const ssize_t n = real_pwrite(fd, buf, take, offset);
  settle(take, n);
  return n;
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off64_t offset) {
  init();
  if (count == 0 || !counted(fd)) return real_pwrite64(fd, buf, count, offset);
  const size_t take = reserve(count);
  if (take == 0) {
    errno = ENOSPC;
    return -1;
  }
  const ssize_t n = real_pwrite64(fd, buf, take, offset);
  settle(take, n);
  return n;
}

/* The vectored calls: an iovcnt outside [1, IOV_MAX] goes to the real call unchanged (it reports EINVAL). */
#define IOV_LIMIT 1024

ssize_t writev(int fd, const struct iovec* iov, int iovcnt) {
  init();
  if (iovcnt <= 0 || iovcnt > IOV_LIMIT || !counted(fd)) return real_writev(fd, iov, iovcnt);
  const size_t total = iov_total(iov, iovcnt);
  if (total == 0) return real_writev(fd, iov, iovcnt);
  const size_t take = reserve(total);
  if (take == 0) {
    errno = ENOSPC;
    return -1;
  }
  struct iovec cut[IOV_LIMIT];
  const ssize_t n = real_writev(fd, cut, truncate_iov(iov, iovcnt, take, cut));
  settle(take, n);
  return n;
}

ssize_t pwritev(int fd, const struct iovec* iov, int iovcnt, off_t offset) {
  init();
  if (iovcnt <= 0 || iovcnt > IOV_LIMIT || !counted(fd)) return real_pwritev(fd, iov, iovcnt, offset);
  const size_t total = iov_total(iov, iovcnt);
  if (total == 0) return real_pwritev(fd, iov, iovcnt, offset);
  const size_t take = reserve(total);
  if (take == 0) {
    errno = ENOSPC;
    return -1;
  }
  struct iovec cut[IOV_LIMIT];
  const ssize_t n = real_pwritev(fd, cut, truncate_iov(iov, iovcnt, take, cut), offset);
  settle(take, n);
  return n;
}

ssize_t pwritev64(int fd, const struct iovec* iov, int iovcnt, off64_t offset) {
  init();
  if (iovcnt <= 0 || iovcnt > IOV_LIMIT || !counted(fd)) return real_pwritev64(fd, iov, iovcnt, offset);
  const size_t total = iov_total(iov, iovcnt);
  if (total == 0) return real_pwritev64(fd, iov, iovcnt, offset);
  const size_t take = reserve(total);
  if (take == 0) {
    errno = ENOSPC;
    return -1;
  }
  struct iovec cut[IOV_LIMIT];
  const ssize_t n = real_pwritev64(fd, cut, truncate_iov(iov, iovcnt, take, cut), offset);
  settle(take, n);
  return n;
}
