//===- DataCommand.h - hotstage data: text to token shards ------*- C++ -*-===//
//
//   hotstage data --bytes IN.txt -o OUT.bin
//
// Byte-level tokenization: every byte of the file is one token (vocabulary
// 256), written as one llm.c shard (magic 20240520, version 1, uint16).
// Plain C++: the driver links it with the runtime's shard writer.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_DRIVER_DATACOMMAND_H
#define HOTSTAGE_COMPILER_DRIVER_DATACOMMAND_H

#include <cstdint>
#include <string>

namespace hotstage {

/// Writes the bytes of `input` as tokens to the shard `output`; returns
/// the token count, or -1 with `error`.
int64_t writeByteShard(const std::string &input, const std::string &output,
                       std::string &error);

} // namespace hotstage

#endif // HOTSTAGE_COMPILER_DRIVER_DATACOMMAND_H
