//===- FileIO.h - Mapped input files and atomic output files ----*- C++ -*-===//
//
// Shared by the token data and the checkpoints: both read large files
// through mmap (no copies) and write files that must never be seen half
// written, even after a crash.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_SUPPORT_FILEIO_H
#define HOTSTAGE_RUNTIME_SUPPORT_FILEIO_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace hotstage::rt {

/// A regular file mapped read-only for as long as the object lives.
class MappedFile {
public:
  /// Errors name the path: missing file, not a regular file, mmap failure.
  static std::unique_ptr<MappedFile> open(const std::string &path,
                                          std::string &error);
  ~MappedFile();
  MappedFile(const MappedFile &) = delete;
  MappedFile &operator=(const MappedFile &) = delete;

  const uint8_t *data() const { return data_; }
  size_t size() const { return size_; }
  const std::string &path() const { return path_; }

private:
  MappedFile(std::string path, const uint8_t *data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t *data_; // nullptr for an empty file
  size_t size_;
};

/// A piece of a file to write.
struct ByteRange {
  const void *data;
  size_t size;
};

/// Writes the pieces, in order, to `path.tmp.<pid>` in the same directory,
/// fsyncs it, renames it over `path` and fsyncs the directory: a reader
/// sees the old file or the complete new one, never a partial one. On
/// failure the temporary file is removed and `path` is untouched.
bool writeFileAtomically(const std::string &path,
                         const std::vector<ByteRange> &pieces,
                         std::string &error);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_SUPPORT_FILEIO_H
