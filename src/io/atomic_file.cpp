#include "io/atomic_file.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "io/interrupt.h"
#include "sdrt/error.h"

namespace sdrt::io {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kTmpSuffix = ".tmp-XXXXXX";
constexpr size_t kWriteChunk = size_t{16} << 20;  // an interrupt is honoured between chunks
constexpr int kMaxLinks = 40;                     // as the kernel's ELOOP limit

// The TemporaryFolder objects being filled: (temporary folder, the folder asked for).
std::mutex live_folders_mutex;
std::vector<std::pair<fs::path, fs::path>> live_folders;

// `path` as the user knows it: a file inside a temporary folder is named where it would be in the folder
// asked for (the temporary one is removed with everything in it when the error unwinds).
fs::path as_named(const fs::path& path) {
  const std::lock_guard lock(live_folders_mutex);
  for (const auto& [temporary, requested] : live_folders) {
    const auto [t, p] = std::mismatch(temporary.begin(), temporary.end(), path.begin(), path.end());
    if (t != temporary.end()) continue;
    fs::path named = requested;
    for (auto it = p; it != path.end(); ++it) named /= *it;
    return named;
  }
  return path;
}

[[noreturn]] void fail(const fs::path& path, const std::string& what) {
  throw Error(ErrorKind::kIo, fmt::format("{}: {}", as_named(path).string(), what));
}

const char* special_type(mode_t mode) {
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Follows `path` while it is a symbolic link; relative targets are taken against the link's folder.
fs::path follow_links(const fs::path& path) {
  fs::path p = path;
  for (int i = 0; i < kMaxLinks; ++i) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return p;
    std::error_code ec;
    const fs::path target = fs::read_symlink(p, ec);
    if (ec) fail(path, "cannot read the symbolic link: " + ec.message());
    p = target.is_absolute() ? target : (p.has_parent_path() ? p.parent_path() : fs::path(".")) / target;
  }
  fail(path, "too many levels of symbolic links");
}

fs::path folder_of(const fs::path& p) {
  return p.has_parent_path() ? p.parent_path() : fs::path(".");
}

// The target's folder exists and is writable, and ".<name>.tmp-XXXXXX" fits the name length limit.
void check_folder_and_name(const fs::path& requested, const fs::path& target) {
  const fs::path parent = folder_of(target);
  struct stat st {};
  if (::stat(parent.c_str(), &st) != 0)
    fail(requested, fmt::format("output folder {} does not exist", parent.string()));
  if (!S_ISDIR(st.st_mode)) fail(requested, fmt::format("{} is not a folder", parent.string()));
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    fail(requested, fmt::format("cannot write in folder {}: {}", parent.string(), std::strerror(errno)));
  const std::string name = target.filename().string();
  if (name.empty() || name == "." || name == "..") fail(requested, "is a folder, not a file name");
  long name_max = ::pathconf(parent.c_str(), _PC_NAME_MAX);
  if (name_max <= 0) name_max = NAME_MAX;
  const size_t needed = 1 + name.size() + kTmpSuffix.size();
  if (needed > static_cast<size_t>(name_max))
    fail(requested, fmt::format("file name is too long ({} bytes; with the temporary suffix sdrt writes "
                                "first it must stay within {})",
                                name.size(), name_max - 1 - static_cast<long>(kTmpSuffix.size())));
}

std::string temporary_template(const fs::path& target) {
  std::string name = ".";
  name.append(target.filename().string());
  name.append(kTmpSuffix);
  return (folder_of(target) / name).string();
}

}  // namespace

fs::path resolve_output_file(const fs::path& path) {
  if (path.empty()) throw Error(ErrorKind::kInvalidArgument, "empty output path");
  const fs::path target = follow_links(path);
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) {
    const std::string via =
        target == path ? "" : fmt::format(" (the symbolic link leads to {})", target.string());
    if (S_ISDIR(st.st_mode)) fail(path, fmt::format("is a folder, not a file{}", via));
    if (!S_ISREG(st.st_mode))
      fail(path, fmt::format("exists and is {}{}; refusing to replace it (give the path of a regular file)",
                             special_type(st.st_mode), via));
  }
  check_folder_and_name(path, target);
  return target;
}

fs::path resolve_output_folder(const fs::path& path) {
  if (path.empty()) throw Error(ErrorKind::kInvalidArgument, "empty output path");
  fs::path target = follow_links(path);
  // "out/" names the folder "out".
  if (!target.has_filename() && target.has_parent_path()) target = target.parent_path();
  struct stat st {};
  if (::stat(target.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      fail(path, fmt::format("exists and is {}, not a folder; refusing to replace it",
                             S_ISREG(st.st_mode) ? "a file" : special_type(st.st_mode)));
    std::error_code ec;
    if (!fs::is_empty(target, ec) || ec)
      fail(path, ec ? "cannot read the folder: " + ec.message() : "output folder exists and is not empty");
  }
  check_folder_and_name(path, target);
  return target;
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  const fs::path target = resolve_output_file(path);
  throw_if_interrupted(path.string());
  // Keep the permissions of the file replaced; a new file gets the usual 0666 minus umask.
  mode_t mode;
  if (struct stat st{}; ::stat(target.c_str(), &st) == 0) {
    mode = st.st_mode & 07777;
  } else {
    const mode_t mask = ::umask(0);
    ::umask(mask);
    mode = 0666 & ~mask;
  }

  std::string tmp = temporary_template(target);
  const int fd = mkostemp(tmp.data(), O_CLOEXEC);
  if (fd < 0) fail(path, fmt::format("cannot create file: {}", std::strerror(errno)));
  const auto abandon = [&](const std::string& what) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail(path, what);
  };
  size_t done = 0;
  while (done < bytes.size()) {
    if (interrupt_signal() != 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      throw_if_interrupted(path.string());
    }
    const size_t chunk = std::min(kWriteChunk, bytes.size() - done);
    const ssize_t n = ::write(fd, bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) abandon(fmt::format("write failed: {}", std::strerror(errno)));
    if (n == 0) abandon("write failed: no progress");
    done += static_cast<size_t>(n);
  }
  ::fchmod(fd, mode);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, fmt::format("write failed: {}", std::strerror(err)));
  }
  if (interrupt_signal() != 0) {
    ::unlink(tmp.c_str());
    throw_if_interrupted(path.string());
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(path, fmt::format("cannot write: {}", std::strerror(err)));
  }
}

TemporaryFolder::TemporaryFolder(const fs::path& path)
    : requested_(path), target_(resolve_output_folder(path)) {
  std::string tmp = temporary_template(target_);
  if (::mkdtemp(tmp.data()) == nullptr)
    fail(path, fmt::format("cannot create a folder next to it: {}", std::strerror(errno)));
  temporary_ = tmp;
  const std::lock_guard lock(live_folders_mutex);
  live_folders.emplace_back(temporary_, requested_);
  // mkdtemp creates 0700; give the folder the usual permissions (0777 minus umask).
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(temporary_.c_str(), 0777 & ~mask);
}

TemporaryFolder::~TemporaryFolder() {
  {
    const std::lock_guard lock(live_folders_mutex);
    std::erase_if(live_folders, [this](const auto& entry) { return entry.first == temporary_; });
  }
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(temporary_, ec);
}

void TemporaryFolder::commit() {
  throw_if_interrupted(requested_.string());
  // rename(2) replaces an empty folder at the target, and fails when a folder there is not empty.
  if (::rename(temporary_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    if (err == ENOTEMPTY || err == EEXIST) fail(requested_, "output folder exists and is not empty");
    fail(requested_, fmt::format("cannot rename the finished folder into place: {}", std::strerror(err)));
  }
  committed_ = true;
}

}  // namespace sdrt::io
