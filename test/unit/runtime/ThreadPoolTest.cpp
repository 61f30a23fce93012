//===- ThreadPoolTest.cpp - The parallel-for pool -------------------------===//

#include "runtime/support/ThreadPool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <set>
#include <thread>
#include <vector>

using namespace hotstage::rt;

namespace {

struct SumCtx {
  const int64_t *data;
  std::vector<int64_t> *partial; // one slot per chunk, indexed by begin
  std::atomic<int64_t> total{0};
  std::atomic<int> calls{0};
};

void sumChunk(void *p, int64_t begin, int64_t end) {
  auto *ctx = static_cast<SumCtx *>(p);
  int64_t s = 0;
  for (int64_t i = begin; i < end; ++i)
    s += ctx->data[i];
  ctx->total.fetch_add(s);
  ctx->calls.fetch_add(1);
}

TEST(ThreadPool, ChunkRangePartitionsExactly) {
  for (int64_t n : {1, 2, 7, 100, 1001})
    for (int64_t chunks = 1; chunks <= std::min<int64_t>(n, 9); ++chunks) {
      int64_t expected = 0;
      for (int64_t i = 0; i < chunks; ++i) {
        int64_t b, e;
        ThreadPool::chunkRange(n, chunks, i, b, e);
        ASSERT_EQ(b, expected);
        ASSERT_GE(e - b, n / chunks);
        ASSERT_LE(e - b, n / chunks + 1);
        expected = e;
      }
      ASSERT_EQ(expected, n);
    }
}

TEST(ThreadPool, SumsOverManyCalls) {
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    ASSERT_EQ(pool.size(), threads);
    std::vector<int64_t> data(100003);
    std::iota(data.begin(), data.end(), 1);
    int64_t n = int64_t(data.size());
    for (int rep = 0; rep < 300; ++rep) {
      int64_t len = (rep * 7919) % n + 1;
      SumCtx ctx;
      ctx.data = data.data();
      pool.parallelFor(len, sumChunk, &ctx);
      ASSERT_EQ(ctx.total.load(), len * (len + 1) / 2)
          << threads << " threads, n=" << len;
      ASSERT_EQ(ctx.calls.load(), std::min<int64_t>(threads, len));
    }
  }
}

struct RecordCtx {
  std::mutex m;
  std::set<std::pair<int64_t, int64_t>> ranges;
  std::set<std::thread::id> threads;
};

void record(void *p, int64_t begin, int64_t end) {
  auto *ctx = static_cast<RecordCtx *>(p);
  std::lock_guard<std::mutex> lock(ctx->m);
  ctx->ranges.insert({begin, end});
  ctx->threads.insert(std::this_thread::get_id());
}

TEST(ThreadPool, StaticPartitionAndMinChunk) {
  ThreadPool pool(4);
  RecordCtx a;
  pool.parallelFor(10, record, &a);
  EXPECT_EQ(a.ranges, (std::set<std::pair<int64_t, int64_t>>{
                          {0, 3}, {3, 6}, {6, 8}, {8, 10}}));
  // Chunk 0 runs on the caller.
  EXPECT_TRUE(a.threads.count(std::this_thread::get_id()));

  RecordCtx b;
  pool.parallelFor(10, record, &b, /*minChunk=*/4);
  EXPECT_EQ(b.ranges, (std::set<std::pair<int64_t, int64_t>>{{0, 5}, {5, 10}}));

  RecordCtx c;
  pool.parallelFor(3, record, &c, 100);
  EXPECT_EQ(c.ranges, (std::set<std::pair<int64_t, int64_t>>{{0, 3}}));

  RecordCtx d;
  pool.parallelFor(0, record, &d);
  pool.parallelFor(-5, record, &d);
  EXPECT_TRUE(d.ranges.empty());
}

TEST(ThreadPool, SurvivesIdleSleepAndWakesUp) {
  ThreadPool pool(3);
  std::vector<int64_t> data(1000, 1);
  for (int i = 0; i < 3; ++i) {
    // Long enough for the workers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    SumCtx ctx;
    ctx.data = data.data();
    pool.parallelFor(1000, sumChunk, &ctx);
    EXPECT_EQ(ctx.total.load(), 1000);
  }
}

struct NestedCtx {
  ThreadPool *pool;
  std::atomic<int64_t> inner{0};
};

void innerChunk(void *p, int64_t begin, int64_t end) {
  static_cast<NestedCtx *>(p)->inner.fetch_add(end - begin);
}

void outerChunk(void *p, int64_t begin, int64_t end) {
  auto *ctx = static_cast<NestedCtx *>(p);
  for (int64_t i = begin; i < end; ++i)
    ctx->pool->parallelFor(10, innerChunk, ctx);
}

TEST(ThreadPool, NestedCallsRunSerially) {
  ThreadPool pool(4);
  NestedCtx ctx;
  ctx.pool = &pool;
  pool.parallelFor(8, outerChunk, &ctx);
  EXPECT_EQ(ctx.inner.load(), 80);
}

TEST(ThreadPool, CallsFromSeveralThreads) {
  ThreadPool pool(3);
  std::vector<int64_t> data(5000, 2);
  std::atomic<bool> ok{true};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        SumCtx ctx;
        ctx.data = data.data();
        pool.parallelFor(5000, sumChunk, &ctx);
        if (ctx.total.load() != 10000)
          ok = false;
      }
    });
  for (std::thread &t : callers)
    t.join();
  EXPECT_TRUE(ok.load());
}

TEST(ThreadPool, DefaultThreadCount) {
  const char *old = std::getenv("HOTSTAGE_NUM_THREADS");
  std::string saved = old ? old : "";
  setenv("HOTSTAGE_NUM_THREADS", "3", 1);
  EXPECT_EQ(defaultThreadCount(), 3);
  ThreadPool pool(0);
  EXPECT_EQ(pool.size(), 3);
  int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  for (const char *bad : {"0", "-2", "abc", "4x", ""}) {
    setenv("HOTSTAGE_NUM_THREADS", bad, 1);
    EXPECT_EQ(defaultThreadCount(), hw) << bad;
  }
  unsetenv("HOTSTAGE_NUM_THREADS");
  EXPECT_EQ(defaultThreadCount(), hw);
  if (old)
    setenv("HOTSTAGE_NUM_THREADS", saved.c_str(), 1);
}

void nothing(void *, int64_t, int64_t) {}

TEST(ThreadPool, PerCallOverhead) {
  // Prints the cost of an empty parallelFor; no assertion (timings on a
  // shared machine are noise).
  int hw = int(std::max(1u, std::thread::hardware_concurrency()));
  for (int threads : {2, hw, 4}) {
    ThreadPool pool(threads);
    for (int i = 0; i < 1000; ++i)
      pool.parallelFor(threads, nothing, nullptr);
    const int calls = 20000;
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i)
      pool.parallelFor(threads, nothing, nullptr);
    double ns = std::chrono::duration<double, std::nano>(
                    std::chrono::steady_clock::now() - start)
                    .count() /
                calls;
    std::printf("[ overhead ] %d threads (%d cores): %.0f ns per "
                "parallelFor\n",
                threads, hw, ns);
  }
}

} // namespace
