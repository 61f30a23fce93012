//===- DataCommand.cpp - hotstage data: text to token shards --------------===//

#include "compiler/driver/DataCommand.h"

#include "runtime/data/TokenShards.h"
#include "runtime/support/FileIO.h"

#include <vector>

namespace hotstage {

int64_t writeByteShard(const std::string &input, const std::string &output,
                       std::string &error) {
  auto file = rt::MappedFile::open(input, error);
  if (!file)
    return -1;
  if (file->size() < 2) {
    error = input + ": needs at least 2 bytes (one input and one target)";
    return -1;
  }
  const uint8_t *bytes = file->data();
  std::vector<uint32_t> tokens(bytes, bytes + file->size());
  if (!rt::writeTokenShard(output, tokens, /*wide=*/false, error))
    return -1;
  return static_cast<int64_t>(tokens.size());
}

} // namespace hotstage
