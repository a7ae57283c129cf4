#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "sdrt/error.h"

namespace sdrt::io {

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
  namespace fs = std::filesystem;
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    throw Error(ErrorKind::kIo,
                fmt::format("{}: output folder {} does not exist", path.string(), parent.string()));
  if (fs::is_directory(path, ec))
    throw Error(ErrorKind::kIo, fmt::format("{}: is a folder, not a file", path.string()));

  std::string tmpl = (parent / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = mkstemp(tmpl.data());
  if (fd < 0)
    throw Error(ErrorKind::kIo, fmt::format("{}: cannot create file: {}", path.string(), strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(tmpl.c_str());
      throw Error(ErrorKind::kIo, fmt::format("{}: write failed: {}", path.string(), strerror(err)));
    }
    done += static_cast<size_t>(n);
  }
  // mkstemp creates 0600; give the file the usual permissions (0666 minus umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  if (::close(fd) != 0 || ::rename(tmpl.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmpl.c_str());
    throw Error(ErrorKind::kIo, fmt::format("{}: cannot write: {}", path.string(), strerror(err)));
  }
}

}  // namespace sdrt::io
