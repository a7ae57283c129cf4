// Opening the files sdrt reads so that a FIFO, a device or a folder given where a file is expected gets a
// clear error naming it — never a hang (opening a FIFO for reading blocks until a writer comes) and never "no
// such file" for something that exists.
#pragma once

#include <filesystem>
#include <string>

namespace sdrt::io {

// What the file at `path` is, in words for messages: "a regular file", "a folder", "a FIFO (named pipe)",
// "a character device", "a block device", "a socket", "a symbolic link", "missing" (follows symlinks).
std::string describe_file_type(const std::filesystem::path& path);

// Throws sdrt::Error (kIo) naming `path` unless it is, or links to, a regular file:
// "<path>: cannot open: No such file or directory", "<path>: is a FIFO (named pipe), not a regular file",
// "<path>: is a folder, not a regular file", "<path>: cannot open: Permission denied".
void require_regular_file(const std::filesystem::path& path);

// Opens a regular file read-only (O_CLOEXEC) and returns the descriptor (the caller closes it). The type is
// checked before opening and again on the open descriptor (O_NONBLOCK until then, so a FIFO swapped in
// between cannot block); errors as require_regular_file.
int open_regular_file(const std::filesystem::path& path);

// The whole content of a regular file; errors as open_regular_file, plus "read failed: <os error>".
std::string read_regular_file(const std::filesystem::path& path);

}  // namespace sdrt::io
