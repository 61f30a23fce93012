//===- TokenShards.cpp - llm.c token shards and the batch loader ----------===//

#include "runtime/data/TokenShards.h"

#include "runtime/support/Random.h"

#include <algorithm>
#include <glob.h>

namespace hotstage::rt {

namespace {
int32_t readInt32LE(const uint8_t *p) {
  return int32_t(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                 uint32_t(p[3]) << 24);
}

void writeInt32LE(uint8_t *p, uint32_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v >> 16);
  p[3] = uint8_t(v >> 24);
}

bool expandGlob(const std::string &pattern, std::vector<std::string> &paths,
                std::string &error) {
  glob_t g;
  int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  if (rc == GLOB_NOMATCH) {
    error = "no file matches '" + pattern + "'";
    globfree(&g);
    return false;
  }
  if (rc != 0) {
    error = "cannot expand '" + pattern + "'" +
            (rc == GLOB_NOSPACE ? ": out of memory" : ": read error");
    globfree(&g);
    return false;
  }
  for (size_t i = 0; i < g.gl_pathc; ++i)
    paths.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  // glob sorts by the locale's collation; byte order is the same everywhere.
  std::sort(paths.begin(), paths.end());
  return true;
}

/// Checks the header and size of a mapped shard and fills `shard`.
bool checkShard(const MappedFile &file, TokenShard &shard, std::string &error) {
  const std::string &path = file.path();
  if (file.size() < kShardHeaderBytes) {
    error = path + ": file is " + std::to_string(file.size()) +
            " bytes, shorter than the " + std::to_string(kShardHeaderBytes) +
            "-byte header";
    return false;
  }
  int32_t magic = readInt32LE(file.data());
  int32_t version = readInt32LE(file.data() + 4);
  int32_t count = readInt32LE(file.data() + 8);
  int expectedVersion;
  if (magic == kShardMagic16) {
    shard.width = 2;
    expectedVersion = 1;
  } else if (magic == kShardMagic32) {
    shard.width = 4;
    expectedVersion = 7;
  } else {
    error = path + ": bad magic " + std::to_string(magic) + " (expected " +
            std::to_string(kShardMagic16) + " or " +
            std::to_string(kShardMagic32) + ")";
    return false;
  }
  if (version != expectedVersion) {
    error = path + ": version " + std::to_string(version) +
            " does not go with magic " + std::to_string(magic) +
            " (expected version " + std::to_string(expectedVersion) + ")";
    return false;
  }
  if (count < 0) {
    error = path + ": negative token count " + std::to_string(count);
    return false;
  }
  uint64_t expected =
      uint64_t(count) * uint64_t(shard.width) + kShardHeaderBytes;
  uint64_t actual = file.size();
  if (expected != actual) {
    std::string what = actual < expected ? "truncated"
                                         : std::to_string(actual - expected) +
                                               " trailing bytes";
    error = path + ": " + what + ": the header says " + std::to_string(count) +
            " tokens of " + std::to_string(shard.width) + " bytes, " +
            std::to_string(expected) + " bytes with the header, but the " +
            "file has " + std::to_string(actual) + " bytes";
    return false;
  }
  shard.path = path;
  shard.tokens = file.data() + kShardHeaderBytes;
  shard.count = count;
  return true;
}

/// Index of the first token >= limit, or -1. Split by width so the
/// compiler can vectorize the scan (shards hold ~10^8 tokens).
template <int Width>
int64_t firstTokenAtLeast(const uint8_t *p, int64_t n, uint32_t limit) {
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t *q = p + i * Width;
    uint32_t t = Width == 2 ? uint32_t(q[0]) | uint32_t(q[1]) << 8
                            : uint32_t(q[0]) | uint32_t(q[1]) << 8 |
                                  uint32_t(q[2]) << 16 | uint32_t(q[3]) << 24;
    if (t >= limit)
      return i;
  }
  return -1;
}

bool checkTokens(const TokenShard &shard, int64_t vocab, std::string &error) {
  // uint16 ids are always below a vocabulary of 65536 or more.
  if (shard.width == 2 && vocab >= 65536)
    return true;
  uint32_t limit = uint32_t(std::min<int64_t>(vocab, UINT32_MAX));
  int64_t bad = shard.width == 2
                    ? firstTokenAtLeast<2>(shard.tokens, shard.count, limit)
                    : firstTokenAtLeast<4>(shard.tokens, shard.count, limit);
  if (bad < 0)
    return true;
  error = shard.path + ": token " + std::to_string(bad) + " is " +
          std::to_string(shard[bad]) + ", not below the vocabulary size " +
          std::to_string(vocab);
  return false;
}
} // namespace

std::unique_ptr<TokenDataset> TokenDataset::open(const std::string &pattern,
                                                 int64_t vocab,
                                                 std::string &error) {
  // Tokens are handed out as int32.
  if (vocab <= 0 || vocab > (int64_t(1) << 31)) {
    error = pattern + ": vocabulary size " + std::to_string(vocab) +
            " is not in [1, 2^31]";
    return nullptr;
  }
  std::vector<std::string> paths;
  if (!expandGlob(pattern, paths, error))
    return nullptr;
  std::unique_ptr<TokenDataset> ds(new TokenDataset());
  ds->vocab_ = vocab;
  for (const std::string &path : paths) {
    std::unique_ptr<MappedFile> file = MappedFile::open(path, error);
    if (!file)
      return nullptr;
    TokenShard shard;
    if (!checkShard(*file, shard, error) || !checkTokens(shard, vocab, error))
      return nullptr;
    ds->files_.push_back(std::move(file));
    ds->shards_.push_back(std::move(shard));
  }
  return ds;
}

int64_t TokenDataset::totalTokens() const {
  int64_t total = 0;
  for (const TokenShard &s : shards_)
    total += s.count;
  return total;
}

std::vector<std::string> TokenDataset::paths() const {
  std::vector<std::string> out;
  for (const TokenShard &s : shards_)
    out.push_back(s.path);
  return out;
}

void TokenDataset::copyTokens(size_t shard, int64_t begin, int64_t n,
                              int32_t *out) const {
  const TokenShard &s = shards_[shard];
  for (int64_t i = 0; i < n; ++i)
    out[i] = int32_t(s[begin + i]);
}

BatchLoader::BatchLoader(const TokenDataset &data, int64_t batch, int64_t seq,
                         uint64_t seed)
    : data_(data), batch_(batch), seq_(seq), seed_(seed) {}

uint64_t BatchLoader::epochStream(uint64_t epoch) {
  // "DATA" in the high word; parameter streams count up from 0.
  return uint64_t(0x44415441) << 32 ^ epoch;
}

bool BatchLoader::init(std::string &error) {
  if (batch_ <= 0 || seq_ <= 0) {
    error = "batch size " + std::to_string(batch_) + " and sequence length " +
            std::to_string(seq_) + " must be positive";
    return false;
  }
  firstSequence_.clear();
  uint64_t total = 0;
  for (size_t i = 0; i < data_.numShards(); ++i) {
    firstSequence_.push_back(total);
    int64_t n = data_.numTokens(i);
    if (n >= seq_ + 1)
      total += uint64_t((n - 1) / seq_);
  }
  firstSequence_.push_back(total);
  numSequences_ = total;
  if (total == 0) {
    size_t largest = 0;
    for (size_t i = 1; i < data_.numShards(); ++i)
      if (data_.numTokens(i) > data_.numTokens(largest))
        largest = i;
    error = "no shard holds a sequence of " + std::to_string(seq_ + 1) +
            " tokens (sequence length " + std::to_string(seq_) +
            " plus one for the targets)";
    if (data_.numShards() > 0)
      error += "; the largest of " + std::to_string(data_.numShards()) +
               " shard(s), " + data_.path(largest) + ", has " +
               std::to_string(data_.numTokens(largest));
    return false;
  }
  cursor_ = Cursor();
  havePermutation_ = false;
  return true;
}

void BatchLoader::ensurePermutation() {
  if (havePermutation_ && permutationEpoch_ == cursor_.epoch)
    return;
  permutation_ =
      randomPermutation(numSequences_, seed_, epochStream(cursor_.epoch));
  permutationEpoch_ = cursor_.epoch;
  havePermutation_ = true;
}

void BatchLoader::locate(uint64_t index, size_t &shard, int64_t &offset) const {
  // The last shard whose first sequence is <= index and that has any.
  auto it =
      std::upper_bound(firstSequence_.begin(), firstSequence_.end() - 1, index);
  shard = size_t(it - firstSequence_.begin()) - 1;
  offset = int64_t(index - firstSequence_[shard]) * seq_;
}

void BatchLoader::next(int32_t *tokens, int32_t *targets) {
  if (numSequences_ == 0) {
    // init() failed or was not called: nothing to serve.
    std::fill(tokens, tokens + std::max<int64_t>(0, batch_ * seq_), 0);
    std::fill(targets, targets + std::max<int64_t>(0, batch_ * seq_), 0);
    return;
  }
  for (int64_t b = 0; b < batch_; ++b) {
    if (cursor_.position == numSequences_) {
      ++cursor_.epoch;
      cursor_.position = 0;
    }
    ensurePermutation();
    size_t shard;
    int64_t offset;
    locate(permutation_[cursor_.position++], shard, offset);
    const TokenShard &s = data_.shard(shard);
    int32_t *in = tokens + b * seq_;
    int32_t *out = targets + b * seq_;
    for (int64_t t = 0; t < seq_; ++t) {
      in[t] = int32_t(s[offset + t]);
      out[t] = int32_t(s[offset + t + 1]);
    }
  }
}

void BatchLoader::skip(int64_t batches) {
  if (batches <= 0 || numSequences_ == 0)
    return;
  uint64_t n = uint64_t(batches) * uint64_t(batch_);
  // Same arithmetic as next(): an epoch rolls over only when a sequence
  // is taken past its end.
  if (cursor_.position == numSequences_) {
    ++cursor_.epoch;
    cursor_.position = 0;
  }
  uint64_t total = cursor_.position + n;
  uint64_t epochs = (total - 1) / numSequences_;
  cursor_.epoch += epochs;
  cursor_.position = total - epochs * numSequences_;
}

bool BatchLoader::seek(Cursor c, std::string &error) {
  if (c.position > numSequences_) {
    error = "data cursor position " + std::to_string(c.position) +
            " is past the end of the epoch (" + std::to_string(numSequences_) +
            " sequences)";
    return false;
  }
  cursor_ = c;
  return true;
}

bool writeTokenShard(const std::string &path,
                     const std::vector<uint32_t> &tokens, bool wide,
                     std::string &error) {
  if (tokens.size() > size_t(INT32_MAX)) {
    error = path + ": " + std::to_string(tokens.size()) +
            " tokens do not fit the header's int32 count";
    return false;
  }
  int width = wide ? 4 : 2;
  std::vector<uint8_t> bytes(kShardHeaderBytes + tokens.size() * width, 0);
  writeInt32LE(bytes.data(), uint32_t(wide ? kShardMagic32 : kShardMagic16));
  writeInt32LE(bytes.data() + 4, wide ? 7 : 1);
  writeInt32LE(bytes.data() + 8, uint32_t(tokens.size()));
  uint8_t *p = bytes.data() + kShardHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    uint32_t t = tokens[i];
    if (wide) {
      writeInt32LE(p + 4 * i, t);
      continue;
    }
    if (t > 0xFFFF) {
      error = path + ": token " + std::to_string(i) + " is " +
              std::to_string(t) + ", too large for a uint16 shard";
      return false;
    }
    p[2 * i] = uint8_t(t);
    p[2 * i + 1] = uint8_t(t >> 8);
  }
  return writeFileAtomically(path, {{bytes.data(), bytes.size()}}, error);
}

} // namespace hotstage::rt
