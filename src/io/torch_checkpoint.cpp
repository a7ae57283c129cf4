#include "io/torch_checkpoint.h"

#include <fmt/format.h>

#include "io/zip_archive.h"
#include "sdrt/error.h"

namespace sdrt::io {

namespace fs = std::filesystem;

TorchCheckpoint TorchCheckpoint::open(const fs::path& path) {
  TorchCheckpoint c;
  c.path_ = path;
  c.zip_ = std::make_shared<const ZipArchive>(ZipArchive::open(path));
  c.parse();
  return c;
}

TorchCheckpoint TorchCheckpoint::parse_borrowed(const std::byte* data, size_t size, const fs::path& label) {
  TorchCheckpoint c;
  c.path_ = label;
  c.zip_ = std::make_shared<const ZipArchive>(ZipArchive::parse_borrowed(data, size, label));
  c.parse();
  return c;
}

const std::byte* TorchCheckpoint::file_data() const {
  return zip_->bytes();
}

void TorchCheckpoint::parse() {
  // torch.save names every entry "<archive>/..."; the archive name varies ("archive", the file's stem, ...),
  // so it is taken from the one top-level "<archive>/data.pkl".
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip_->entries()) {
    const auto slash = e.name.find('/');
    if (slash == std::string::npos || slash == 0 ||
        e.name.compare(slash, std::string::npos, "/data.pkl") != 0)
      continue;
    if (pkl)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: more than one data.pkl in the archive", path_.string()));
    pkl = &e;
  }
  if (!pkl)
    throw Error(ErrorKind::kFormat,
                fmt::format("{}: no <archive>/data.pkl entry: not a torch.save checkpoint", path_.string()));
  const std::string prefix = pkl->name.substr(0, pkl->name.size() - 8) + "data/";  // "<archive>/data/"

  const StorageResolver resolve = [&](const std::string& key) -> std::span<const std::byte> {
    const ZipEntry* e = zip_->find(prefix + key);
    if (!e)
      throw Error(ErrorKind::kFormat,
                  fmt::format("{}: storage {} has no entry {}", path_.string(), quote_pickle_string(key),
                              quote_pickle_string(prefix + key)));
    return zip_->data(*e);
  };
  for (PickledTensor& t : read_state_dict_pickle(zip_->data(*pkl), resolve, path_)) {
    std::string name = t.name;
    tensors_.emplace(std::move(name), std::move(t));
  }
}

}  // namespace sdrt::io
