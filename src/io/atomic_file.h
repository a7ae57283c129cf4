// Writing output files and folders so that a failure or an interruption never leaves a partial file, a
// temporary file or a half-written folder behind, and never destroys what is at the output path when that is
// not a regular file.
//
// The rules (the same for every writer and for the checks a front end makes before any work):
//  - a symbolic link is written through: the file it leads to (followed to the end) is replaced, the link
//    stays;
//  - an existing output that is not a regular file (a FIFO, a character or block device such as /dev/null, a
//    folder, a socket) is refused, never replaced or written into;
//  - the output's folder must exist and be writable, and the temporary name (".<name>.tmp-XXXXXX") must fit
//    the file system's name length limit;
//  - writes stop when an interrupt is requested (io/interrupt.h): the temporary file is removed and
//    sdrt::Error (kCancelled) is thrown.
#pragma once

#include <filesystem>
#include <string_view>

namespace sdrt::io {

// Where a write to `path` lands (`path`, or the end of its chain of symbolic links), checked by the rules
// above. Throws sdrt::Error (kIo) naming `path` and what is wrong.
std::filesystem::path resolve_output_file(const std::filesystem::path& path);

// The same for an output folder (checkpoint conversion): it may be missing or an empty folder (or a link to
// one); anything else is refused.
std::filesystem::path resolve_output_folder(const std::filesystem::path& path);

// Writes `bytes` to a temporary file next to the resolved target, then renames it over the target. Throws
// sdrt::Error (kIo) naming the path when a rule above is broken or the write fails (ENOSPC, EFBIG, ...), and
// kCancelled when interrupted; the temporary file is removed in every case.
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

// A temporary sibling folder (".<name>.tmp-XXXXXX") that becomes `path` on commit(); removed with everything
// in it when destroyed uncommitted (an error or an interruption while it was being filled). While it lives,
// the errors of write_file_atomically for a file inside it name that file under `path`, not under the
// temporary name that is removed.
class TemporaryFolder {
 public:
  // `path` is checked with resolve_output_folder first.
  explicit TemporaryFolder(const std::filesystem::path& path);
  ~TemporaryFolder();
  TemporaryFolder(const TemporaryFolder&) = delete;
  TemporaryFolder& operator=(const TemporaryFolder&) = delete;

  const std::filesystem::path& path() const { return temporary_; }  // where to write now
  // Renames the temporary folder to the target (replacing an empty folder there). Throws kIo / kCancelled.
  void commit();

 private:
  std::filesystem::path requested_, target_, temporary_;
  bool committed_ = false;
};

}  // namespace sdrt::io
