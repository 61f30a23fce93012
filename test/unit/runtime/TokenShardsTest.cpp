//===- TokenShardsTest.cpp - llm.c shards and the batch loader ------------===//

#include "runtime/data/TokenShards.h"
#include "runtime/support/Random.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <sys/stat.h>

using namespace hotstage::rt;
using namespace hotstage::rt::test;

namespace {

std::vector<uint32_t> iota(uint32_t n, uint32_t start = 0,
                           uint32_t mod = UINT32_MAX) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i)
    v[i] = (start + i) % mod;
  return v;
}

std::unique_ptr<TokenDataset> openOk(const std::string &pattern,
                                     int64_t vocab) {
  std::string error;
  auto ds = TokenDataset::open(pattern, vocab, error);
  EXPECT_TRUE(ds) << error;
  return ds;
}

std::string openError(const std::string &pattern, int64_t vocab) {
  std::string error;
  auto ds = TokenDataset::open(pattern, vocab, error);
  EXPECT_FALSE(ds);
  return error;
}

TEST(TokenShards, RoundTripNarrow) {
  TempDir dir;
  std::vector<uint32_t> tokens = {0, 1, 2, 65535, 50256, 7};
  std::string error;
  ASSERT_TRUE(writeTokenShard(dir.file("a.bin"), tokens, false, error))
      << error;
  // The exact llm.c layout: header words, then little-endian uint16.
  std::vector<uint8_t> bytes = readBytes(dir.file("a.bin"));
  ASSERT_EQ(bytes.size(), 1024u + 2 * tokens.size());
  EXPECT_EQ(bytes[0] | bytes[1] << 8 | bytes[2] << 16 | bytes[3] << 24,
            20240520);
  EXPECT_EQ(bytes[4], 1);
  EXPECT_EQ(bytes[8], 6);
  for (size_t i = 12; i < 1024; ++i)
    ASSERT_EQ(bytes[i], 0) << i;
  EXPECT_EQ(bytes[1024 + 6], 0xFF);
  EXPECT_EQ(bytes[1024 + 7], 0xFF);

  auto ds = openOk(dir.file("a.bin"), 65536);
  ASSERT_TRUE(ds);
  ASSERT_EQ(ds->numShards(), 1u);
  EXPECT_EQ(ds->numTokens(0), 6);
  EXPECT_EQ(ds->shard(0).width, 2);
  for (size_t i = 0; i < tokens.size(); ++i)
    EXPECT_EQ(ds->shard(0)[int64_t(i)], tokens[i]);
  std::vector<int32_t> copy(3);
  ds->copyTokens(0, 2, 3, copy.data());
  EXPECT_EQ(copy, (std::vector<int32_t>{2, 65535, 50256}));
}

TEST(TokenShards, RoundTripWide) {
  TempDir dir;
  std::vector<uint32_t> tokens = {0, 70000, 1u << 30, 5, 65536};
  std::string error;
  ASSERT_TRUE(writeTokenShard(dir.file("w.bin"), tokens, true, error)) << error;
  std::vector<uint8_t> bytes = readBytes(dir.file("w.bin"));
  ASSERT_EQ(bytes.size(), 1024u + 4 * tokens.size());
  EXPECT_EQ(bytes[0] | bytes[1] << 8 | bytes[2] << 16 | bytes[3] << 24,
            20240801);
  EXPECT_EQ(bytes[4], 7);
  auto ds = openOk(dir.file("w.bin"), (int64_t(1) << 30) + 1);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->shard(0).width, 4);
  for (size_t i = 0; i < tokens.size(); ++i)
    EXPECT_EQ(ds->shard(0)[int64_t(i)], tokens[i]);
  EXPECT_EQ(ds->totalTokens(), 5);
}

TEST(TokenShards, EmptyShardIsValid) {
  TempDir dir;
  std::string error;
  ASSERT_TRUE(writeTokenShard(dir.file("e.bin"), {}, false, error)) << error;
  auto ds = openOk(dir.file("e.bin"), 10);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->numTokens(0), 0);
}

TEST(TokenShards, GlobSortsByName) {
  TempDir dir;
  std::string error;
  for (const char *name :
       {"train_002.bin", "train_000.bin", "train_001.bin", "val_000.bin"})
    ASSERT_TRUE(writeTokenShard(dir.file(name), {1, 2, 3}, false, error));
  auto ds = openOk(dir.file("train_*.bin"), 100);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->paths(), (std::vector<std::string>{dir.file("train_000.bin"),
                                                   dir.file("train_001.bin"),
                                                   dir.file("train_002.bin")}));
  EXPECT_EQ(ds->path(1), dir.file("train_001.bin"));
}

TEST(TokenShards, WriteNarrowRejectsLargeToken) {
  TempDir dir;
  std::string error;
  EXPECT_FALSE(writeTokenShard(dir.file("x.bin"), {1, 65536}, false, error));
  EXPECT_EQ(error, dir.file("x.bin") +
                       ": token 1 is 65536, too large for a uint16 shard");
  struct stat st;
  EXPECT_NE(stat(dir.file("x.bin").c_str(), &st), 0);
}

TEST(TokenShards, WriteIsAtomicAndLeavesNoTemporary) {
  TempDir dir;
  std::string error;
  ASSERT_TRUE(writeTokenShard(dir.file("a.bin"), iota(10), false, error));
  ASSERT_TRUE(writeTokenShard(dir.file("a.bin"), iota(20), true, error));
  auto ds = openOk(dir.file("a.bin"), 100);
  ASSERT_TRUE(ds);
  EXPECT_EQ(ds->numTokens(0), 20);
  auto all = openOk(dir.file("*"), 100);
  ASSERT_TRUE(all);
  EXPECT_EQ(all->numShards(), 1u);
  EXPECT_FALSE(
      writeTokenShard(dir.file("missing/a.bin"), iota(3), false, error));
  EXPECT_NE(error.find("missing/a.bin.tmp."), std::string::npos) << error;
}

// --- Corrupt shards --------------------------------------------------------

class CorruptShard : public ::testing::Test {
protected:
  /// A valid uint16 shard of `count` tokens, as bytes to break.
  std::vector<uint8_t> shard(uint32_t count) {
    std::string error;
    std::string path = dir.file("tmp.bin");
    EXPECT_TRUE(writeTokenShard(path, iota(count, 0, 50), false, error));
    return readBytes(path);
  }
  std::string put(const std::vector<uint8_t> &bytes) {
    std::string path = dir.file("bad.bin");
    writeBytes(path, bytes);
    return path;
  }
  TempDir dir;
};

TEST_F(CorruptShard, NoMatch) {
  std::string pattern = dir.file("nothing_*.bin");
  EXPECT_EQ(openError(pattern, 100), "no file matches '" + pattern + "'");
  EXPECT_EQ(openError(dir.file("plain.bin"), 100),
            "no file matches '" + dir.file("plain.bin") + "'");
}

TEST_F(CorruptShard, ShorterThanHeader) {
  std::string path = put(std::vector<uint8_t>(100, 0));
  EXPECT_EQ(openError(path, 100),
            path + ": file is 100 bytes, shorter than the 1024-byte header");
  path = put({});
  EXPECT_EQ(openError(path, 100),
            path + ": file is 0 bytes, shorter than the 1024-byte header");
}

TEST_F(CorruptShard, BadMagic) {
  std::vector<uint8_t> bytes = shard(10);
  putU32(bytes, 0, 12345);
  std::string path = put(bytes);
  EXPECT_EQ(openError(path, 100),
            path + ": bad magic 12345 (expected 20240520 or 20240801)");
}

TEST_F(CorruptShard, WrongVersion) {
  std::vector<uint8_t> bytes = shard(10);
  putU32(bytes, 4, 7);
  std::string path = put(bytes);
  EXPECT_EQ(openError(path, 100),
            path + ": version 7 does not go with magic 20240520 (expected "
                   "version 1)");
  putU32(bytes, 0, 20240801);
  putU32(bytes, 4, 1);
  path = put(bytes);
  EXPECT_EQ(openError(path, 100),
            path + ": version 1 does not go with magic 20240801 (expected "
                   "version 7)");
}

TEST_F(CorruptShard, Truncated) {
  std::vector<uint8_t> bytes = shard(10);
  bytes.resize(bytes.size() - 3);
  std::string path = put(bytes);
  EXPECT_EQ(openError(path, 100),
            path + ": truncated: the header says 10 tokens of 2 bytes, 1044 "
                   "bytes with the header, but the file has 1041 bytes");
}

TEST_F(CorruptShard, TrailingBytes) {
  std::vector<uint8_t> bytes = shard(10);
  bytes.resize(bytes.size() + 4);
  std::string path = put(bytes);
  EXPECT_EQ(openError(path, 100),
            path + ": 4 trailing bytes: the header says 10 tokens of 2 "
                   "bytes, 1044 bytes with the header, but the file has "
                   "1048 bytes");
}

TEST_F(CorruptShard, NegativeOrHugeCount) {
  std::vector<uint8_t> bytes = shard(10);
  putU32(bytes, 8, 0xFFFFFFFF);
  std::string path = put(bytes);
  EXPECT_EQ(openError(path, 100), path + ": negative token count -1");
  putU32(bytes, 8, 0x7FFFFFFF);
  path = put(bytes);
  EXPECT_NE(openError(path, 100).find("truncated"), std::string::npos);
}

TEST_F(CorruptShard, TokenOutOfVocabulary) {
  std::string error;
  std::vector<uint32_t> tokens = iota(100, 0, 50);
  tokens[77] = 50257;
  std::string path = dir.file("big.bin");
  ASSERT_TRUE(writeTokenShard(path, tokens, false, error));
  EXPECT_EQ(openError(path, 50257),
            path + ": token 77 is 50257, not below the vocabulary size 50257");
  // Wide shards are scanned the same way.
  tokens[77] = 3000000000u;
  ASSERT_TRUE(writeTokenShard(path, tokens, true, error));
  EXPECT_EQ(openError(path, 1 << 20),
            path + ": token 77 is 3000000000, not below the vocabulary size "
                   "1048576");
  EXPECT_EQ(openError(path, int64_t(1) << 31),
            path + ": token 77 is 3000000000, not below the vocabulary size "
                   "2147483648");
}

TEST_F(CorruptShard, LaterShardIsNamed) {
  std::string error;
  ASSERT_TRUE(writeTokenShard(dir.file("s0.bin"), iota(10), false, error));
  std::vector<uint8_t> bytes = shard(10);
  putU32(bytes, 0, 1);
  writeBytes(dir.file("s1.bin"), bytes);
  EXPECT_EQ(openError(dir.file("s*.bin"), 100),
            dir.file("s1.bin") +
                ": bad magic 1 (expected 20240520 or 20240801)");
}

TEST_F(CorruptShard, DirectoryAndBadVocab) {
  mkdir(dir.file("d.bin").c_str(), 0755);
  EXPECT_EQ(openError(dir.file("d.bin"), 100),
            dir.file("d.bin") + ": not a regular file");
  std::string error;
  ASSERT_TRUE(writeTokenShard(dir.file("ok.bin"), iota(3), false, error));
  EXPECT_NE(openError(dir.file("ok.bin"), 0).find("vocabulary size 0"),
            std::string::npos);
}

// --- The batch loader ------------------------------------------------------

/// Shards whose token at (shard s, index i) is s * 1000 + i, so a window
/// tells where it came from.
class Loader : public ::testing::Test {
protected:
  void make(const std::vector<uint32_t> &sizes) {
    std::string error;
    for (size_t s = 0; s < sizes.size(); ++s) {
      char name[32];
      std::snprintf(name, sizeof name, "shard_%03zu.bin", s);
      ASSERT_TRUE(writeTokenShard(
          dir.file(name), iota(sizes[s], uint32_t(s) * 1000), true, error))
          << error;
    }
    ds = openOk(dir.file("shard_*.bin"), 100000);
  }
  TempDir dir;
  std::unique_ptr<TokenDataset> ds;
};

TEST_F(Loader, CountsSequencesWithoutCrossingShards) {
  // seq 4: windows of 5 with stride 4. 9 tokens -> 2, 5 -> 1, 4 -> 0,
  // 13 -> 3, 0 -> 0.
  make({9, 5, 4, 13, 0});
  ASSERT_TRUE(ds);
  BatchLoader loader(*ds, 2, 4, 1);
  std::string error;
  ASSERT_TRUE(loader.init(error)) << error;
  EXPECT_EQ(loader.numSequences(), 6u);
}

TEST_F(Loader, NoFullSequenceIsAnError) {
  make({4, 3});
  ASSERT_TRUE(ds);
  BatchLoader loader(*ds, 1, 4, 1);
  std::string error;
  EXPECT_FALSE(loader.init(error));
  EXPECT_EQ(error, "no shard holds a sequence of 5 tokens (sequence length 4 "
                   "plus one for the targets); the largest of 2 shard(s), " +
                       dir.file("shard_000.bin") + ", has 4");
  BatchLoader bad(*ds, 0, 4, 1);
  EXPECT_FALSE(bad.init(error));
  EXPECT_NE(error.find("must be positive"), std::string::npos);
}

TEST_F(Loader, EpochVisitsEverySequenceOnce) {
  make({41, 1, 17, 30});
  ASSERT_TRUE(ds);
  const int64_t seq = 4, batch = 3;
  BatchLoader loader(*ds, batch, seq, 99);
  std::string error;
  ASSERT_TRUE(loader.init(error)) << error;
  uint64_t n = loader.numSequences();
  ASSERT_EQ(n, 10u + 0 + 4 + 7);
  // Cover 3 epochs; each window is identified by its first token.
  std::vector<std::vector<int32_t>> epochs(3);
  std::vector<int32_t> x(batch * seq), y(batch * seq);
  int64_t batches = int64_t(3 * n / batch);
  uint64_t taken = 0;
  for (int64_t b = 0; b < batches; ++b) {
    loader.next(x.data(), y.data());
    for (int64_t r = 0; r < batch; ++r, ++taken) {
      const int32_t *in = &x[r * seq], *out = &y[r * seq];
      for (int64_t t = 0; t < seq; ++t) {
        // Targets are inputs shifted by one; tokens are consecutive.
        ASSERT_EQ(out[t], in[t] + 1);
        if (t)
          ASSERT_EQ(in[t], in[t - 1] + 1);
      }
      // Starts are multiples of seq within a shard, never crossing it.
      int32_t shard = in[0] / 1000, offset = in[0] % 1000;
      ASSERT_EQ(offset % seq, 0);
      ASSERT_LE(offset + seq + 1, int32_t(ds->numTokens(size_t(shard))));
      epochs[taken / n].push_back(in[0]);
    }
  }
  ASSERT_EQ(taken, 3 * n);
  for (auto &e : epochs) {
    std::set<int32_t> unique(e.begin(), e.end());
    EXPECT_EQ(unique.size(), n);
  }
  // A fresh permutation each epoch.
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
  EXPECT_EQ(loader.cursor(), (BatchLoader::Cursor{2, n}));
}

TEST_F(Loader, DeterministicFromSeed) {
  make({200, 150});
  ASSERT_TRUE(ds);
  auto run = [&](uint64_t seed) {
    BatchLoader loader(*ds, 4, 8, seed);
    std::string error;
    EXPECT_TRUE(loader.init(error));
    std::vector<int32_t> all, x(32), y(32);
    for (int i = 0; i < 25; ++i) {
      loader.next(x.data(), y.data());
      all.insert(all.end(), x.begin(), x.end());
    }
    return all;
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

TEST_F(Loader, OrderMatchesDocumentedPermutation) {
  make({100});
  ASSERT_TRUE(ds);
  BatchLoader loader(*ds, 1, 9, 31);
  std::string error;
  ASSERT_TRUE(loader.init(error));
  uint64_t n = loader.numSequences();
  std::vector<uint64_t> perm0 =
      randomPermutation(n, 31, BatchLoader::epochStream(0));
  std::vector<uint64_t> perm1 =
      randomPermutation(n, 31, BatchLoader::epochStream(1));
  std::vector<int32_t> x(9), y(9);
  for (uint64_t i = 0; i < n; ++i) {
    loader.next(x.data(), y.data());
    ASSERT_EQ(uint64_t(x[0]), perm0[i] * 9);
  }
  loader.next(x.data(), y.data());
  EXPECT_EQ(uint64_t(x[0]), perm1[0] * 9);
}

TEST_F(Loader, SeekReproducesTheStream) {
  make({300, 77, 128});
  ASSERT_TRUE(ds);
  const int64_t batch = 5, seq = 8;
  BatchLoader reference(*ds, batch, seq, 4242);
  std::string error;
  ASSERT_TRUE(reference.init(error));
  // Batches of 5 over 61 sequences straddle epoch boundaries.
  ASSERT_EQ(reference.numSequences(), 37u + 9 + 15);
  std::vector<std::vector<int32_t>> xs, ys;
  std::vector<BatchLoader::Cursor> cursors;
  for (int i = 0; i < 60; ++i) {
    cursors.push_back(reference.cursor());
    std::vector<int32_t> x(batch * seq), y(batch * seq);
    reference.next(x.data(), y.data());
    xs.push_back(x);
    ys.push_back(y);
  }
  for (int start : {0, 1, 11, 12, 13, 37, 59}) {
    BatchLoader resumed(*ds, batch, seq, 4242);
    ASSERT_TRUE(resumed.init(error));
    ASSERT_TRUE(resumed.seek(cursors[start], error)) << error;
    for (int i = start; i < 60; ++i) {
      std::vector<int32_t> x(batch * seq), y(batch * seq);
      resumed.next(x.data(), y.data());
      ASSERT_EQ(x, xs[i]) << "resumed at " << start << ", batch " << i;
      ASSERT_EQ(y, ys[i]);
    }
  }
  // skip() lands where next() would.
  for (int k : {0, 1, 12, 13, 25, 59}) {
    BatchLoader skipper(*ds, batch, seq, 4242);
    ASSERT_TRUE(skipper.init(error));
    skipper.skip(k);
    EXPECT_EQ(skipper.cursor(), cursors[k]) << k;
    std::vector<int32_t> x(batch * seq), y(batch * seq);
    skipper.next(x.data(), y.data());
    EXPECT_EQ(x, xs[k]);
  }
}

TEST_F(Loader, SeekOutOfRange) {
  make({50});
  ASSERT_TRUE(ds);
  BatchLoader loader(*ds, 2, 7, 1);
  std::string error;
  ASSERT_TRUE(loader.init(error));
  ASSERT_EQ(loader.numSequences(), 7u);
  EXPECT_TRUE(loader.seek({3, 7}, error)); // end of epoch 3 is fine
  EXPECT_FALSE(loader.seek({0, 8}, error));
  EXPECT_EQ(error, "data cursor position 8 is past the end of the epoch (7 "
                   "sequences)");
  // A failed seek leaves the cursor alone.
  EXPECT_EQ(loader.cursor(), (BatchLoader::Cursor{3, 7}));
}

TEST_F(Loader, NarrowShardsToo) {
  std::string error;
  ASSERT_TRUE(
      writeTokenShard(dir.file("n.bin"), iota(1000, 0, 60000), false, error));
  auto narrow = openOk(dir.file("n.bin"), 60000);
  ASSERT_TRUE(narrow);
  BatchLoader loader(*narrow, 2, 16, 3);
  ASSERT_TRUE(loader.init(error));
  std::vector<int32_t> x(32), y(32);
  loader.next(x.data(), y.data());
  for (int i = 0; i < 32; ++i)
    EXPECT_EQ(y[i], x[i] + 1);
}

} // namespace
