//===- SafeTensors.h - The safetensors checkpoint format --------*- C++ -*-===//
//
// A file is: a u64 little-endian header length N, N bytes of JSON
//   {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [b, e]},
//    ..., "__metadata__": {"key": "value"}}
// then the raw row-major tensor data, offsets relative to its start. The
// reader checks everything the reference implementation checks (and names
// the file in every error); the writer produces what the reference writes:
// the header padded with spaces to a multiple of 8 bytes, tensors laid out
// largest element size first, so each is aligned to its element size.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_CHECKPOINT_SAFETENSORS_H
#define HOTSTAGE_RUNTIME_CHECKPOINT_SAFETENSORS_H

#include "runtime/support/FileIO.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace hotstage::rt {

enum class DType {
  Bool,
  U8,
  I8,
  F8E5M2,
  F8E4M3,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  F64,
  I64,
  U64,
};

/// The name in the header: "F32", "BF16", "F8_E4M3", "BOOL", ...
const char *dtypeName(DType dtype);
/// Bytes per element.
size_t dtypeSize(DType dtype);
/// The dtype a header name stands for.
std::optional<DType> parseDType(std::string_view name);

struct TensorEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void *data; // into the mapping; aligned only if the writer aligned it
  size_t bytes;

  int64_t numElements() const;
};

class SafeTensorsFile {
public:
  /// Maps and validates the whole file.
  static std::unique_ptr<SafeTensorsFile> open(const std::string &path,
                                               std::string &error);

  const std::string &path() const { return file_->path(); }
  /// nullptr if there is no such tensor.
  const TensorEntry *find(std::string_view name) const;
  /// In the order of their data in the file.
  const std::vector<TensorEntry> &tensors() const { return tensors_; }
  const std::map<std::string, std::string> &metadata() const {
    return metadata_;
  }

private:
  SafeTensorsFile() = default;

  std::unique_ptr<MappedFile> file_;
  std::vector<TensorEntry> tensors_;
  std::unordered_map<std::string_view, size_t> index_; // views into tensors_
  std::map<std::string, std::string> metadata_;
};

class SafeTensorsWriter {
public:
  /// Records a tensor; `data` must stay alive until writeAtomically
  /// returns. Problems (a duplicate name, bytes that do not match the
  /// shape) are reported by writeAtomically.
  void add(std::string name, DType dtype, std::vector<int64_t> shape,
           const void *data, size_t bytes);
  void setMetadata(std::string key, std::string value);

  /// The header JSON as it will be written, padding included; errors (no
  /// file named) go to `error`.
  bool buildHeader(std::string &header, std::string &error) const;

  /// Writes `path.tmp.<pid>`, fsyncs it, renames it over `path` and fsyncs
  /// the directory, so a crash leaves the old file or the new one.
  bool writeAtomically(const std::string &path, std::string &error) const;

private:
  struct Pending {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    const void *data;
    size_t bytes;
  };
  /// Pending tensors in the order of their data.
  std::vector<const Pending *> dataOrder() const;

  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_CHECKPOINT_SAFETENSORS_H
