#include "io/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::io {

namespace {

const char* type_name(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

[[noreturn]] void throw_not_regular(const std::filesystem::path& path, mode_t mode) {
  if (S_ISDIR(mode))
    throw Error(ErrorKind::kIo, fmt::format("{}: is a folder, not a regular file", path.string()));
  throw Error(ErrorKind::kIo, fmt::format("{}: is {}, not a regular file", path.string(), type_name(mode)));
}

[[noreturn]] void throw_os_error(const std::filesystem::path& path, int err) {
  // strerror's words ("No such file or directory", "Permission denied"): the same as every other OS error.
  throw Error(ErrorKind::kIo, fmt::format("{}: cannot open: {}", path.string(), std::strerror(err)));
}

}  // namespace

std::string describe_file_type(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "missing";
  return type_name(st.st_mode);
}

void require_regular_file(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_os_error(path, errno);
  if (!S_ISREG(st.st_mode)) throw_not_regular(path, st.st_mode);
}

int open_regular_file(const std::filesystem::path& path) {
  require_regular_file(path);  // never open a FIFO or a device: opening alone may block or act
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_os_error(path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw_os_error(path, err);
  }
  if (!S_ISREG(st.st_mode)) {  // swapped between the stat and the open
    ::close(fd);
    throw_not_regular(path, st.st_mode);
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

std::string read_regular_file(const std::filesystem::path& path) {
  const int fd = open_regular_file(path);
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      if (err == EISDIR) throw_not_regular(path, S_IFDIR);
      throw Error(ErrorKind::kIo, fmt::format("{}: read failed: {}", path.string(), std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

}  // namespace sdrt::io
