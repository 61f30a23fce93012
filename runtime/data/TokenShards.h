//===- TokenShards.h - llm.c token shards and the batch loader --*- C++ -*-===//
//
// llm.c's .bin shards: a 256 x int32 little-endian header (magic, version,
// token count, then zeros) followed by the tokens. Magic 20240520 with
// version 1 holds uint16 tokens; magic 20240801 with version 7 holds
// uint32 tokens. Shards are mmap'd read-only and validated once, token by
// token, at open, so training never meets a bad token id.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_DATA_TOKENSHARDS_H
#define HOTSTAGE_RUNTIME_DATA_TOKENSHARDS_H

#include "runtime/support/FileIO.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace hotstage::rt {

constexpr int32_t kShardMagic16 = 20240520; // version 1, uint16 tokens
constexpr int32_t kShardMagic32 = 20240801; // version 7, uint32 tokens
constexpr size_t kShardHeaderBytes = 256 * sizeof(int32_t);

/// One validated shard: a view into its mapping.
struct TokenShard {
  std::string path;
  const uint8_t *tokens; // the first token, just past the header
  int64_t count;
  int width; // bytes per token: 2 or 4

  /// Token i, read as uint32 whatever the width.
  uint32_t operator[](int64_t i) const {
    const uint8_t *p = tokens + i * width;
    if (width == 2)
      return uint32_t(p[0]) | uint32_t(p[1]) << 8;
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
           uint32_t(p[3]) << 24;
  }
};

class TokenDataset {
public:
  /// Opens every file matching the glob `pattern`, in byte order of the
  /// names, and checks each header, size and token (every id must be below
  /// `vocab`). Errors name the file and, for a bad token, its index.
  static std::unique_ptr<TokenDataset> open(const std::string &pattern,
                                            int64_t vocab, std::string &error);

  size_t numShards() const { return shards_.size(); }
  const TokenShard &shard(size_t i) const { return shards_[i]; }
  /// Tokens of shard i.
  int64_t numTokens(size_t i) const { return shards_[i].count; }
  int64_t totalTokens() const;
  const std::string &path(size_t i) const { return shards_[i].path; }
  std::vector<std::string> paths() const;
  int64_t vocab() const { return vocab_; }

  /// Copies tokens [begin, begin + n) of shard i as int32 (valid because
  /// every id is below a vocabulary of at most 2^31).
  void copyTokens(size_t shard, int64_t begin, int64_t n, int32_t *out) const;

private:
  TokenDataset() = default;

  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<TokenShard> shards_;
  int64_t vocab_ = 0;
};

/// Serves batches of `batch` sequences of `seq` tokens. Each shard is cut
/// into windows of seq + 1 tokens with stride seq (never crossing shards);
/// every epoch visits every window once, in the order of a permutation
/// drawn from (seed, epoch) with the Philox generator, so the stream of
/// batches is the same on every machine.
class BatchLoader {
public:
  /// Where the next sequence comes from: `position` indexes the epoch's
  /// permutation. Saving it in a checkpoint and seek()ing back to it
  /// resumes the exact stream.
  struct Cursor {
    uint64_t epoch = 0;
    uint64_t position = 0;
    bool operator==(const Cursor &o) const {
      return epoch == o.epoch && position == o.position;
    }
  };

  /// The dataset must outlive the loader.
  BatchLoader(const TokenDataset &data, int64_t batch, int64_t seq,
              uint64_t seed);

  /// Counts the sequences; fails if batch or seq is not positive or no
  /// shard holds seq + 1 tokens. Call before anything else.
  bool init(std::string &error);

  /// Fills tokens[batch * seq] with inputs and targets[batch * seq] with
  /// the same windows shifted by one, then advances by `batch` sequences,
  /// starting a new epoch (and permutation) when one runs out.
  void next(int32_t *tokens, int32_t *targets);

  /// Advances as `batches` calls of next() would, without reading tokens.
  void skip(int64_t batches);

  Cursor cursor() const { return cursor_; }
  /// Fails if position is past the end of an epoch.
  bool seek(Cursor c, std::string &error);

  uint64_t numSequences() const { return numSequences_; }
  int64_t batchSize() const { return batch_; }
  int64_t seqLen() const { return seq_; }
  uint64_t seed() const { return seed_; }

  /// The stream whose permutation orders `epoch`; kept apart from the
  /// streams that initialize parameters under the same seed.
  static uint64_t epochStream(uint64_t epoch);

private:
  void ensurePermutation();
  /// The shard and first token of sequence `index` (in shard order).
  void locate(uint64_t index, size_t &shard, int64_t &offset) const;

  const TokenDataset &data_;
  int64_t batch_, seq_;
  uint64_t seed_;
  uint64_t numSequences_ = 0;
  /// firstSequence_[i]: global index of shard i's first sequence; one more
  /// entry holds the total.
  std::vector<uint64_t> firstSequence_;
  Cursor cursor_;
  std::vector<uint64_t> permutation_;
  uint64_t permutationEpoch_ = 0;
  bool havePermutation_ = false;
};

/// Writes an llm.c shard atomically: uint32 tokens (magic 20240801,
/// version 7) if `wide`, else uint16 (magic 20240520, version 1), which
/// fails on a token above 65535.
bool writeTokenShard(const std::string &path,
                     const std::vector<uint32_t> &tokens, bool wide,
                     std::string &error);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_DATA_TOKENSHARDS_H
