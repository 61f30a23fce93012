//===- ThreadPool.h - Persistent workers for parallel loops -----*- C++ -*-===//
//
// Every kernel of a training step runs through parallelFor, thousands of
// times a second, so a call must cost well under a microsecond: the workers
// stay alive, poll an atomic generation counter for up to 100 us after each
// job, and only then sleep on a condition variable. The partition of [0, n)
// depends only on n, the pool size and minChunk, so results are deterministic.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_SUPPORT_THREADPOOL_H
#define HOTSTAGE_RUNTIME_SUPPORT_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace hotstage::rt {

/// HOTSTAGE_NUM_THREADS if it is a positive integer, else
/// std::thread::hardware_concurrency() (at least 1).
int defaultThreadCount();

class ThreadPool {
public:
  using ChunkFn = void (*)(void *ctx, int64_t begin, int64_t end);

  /// `threads` counts the calling thread; threads - 1 workers are started.
  /// A value below 1 means defaultThreadCount().
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return int(workers_.size()) + 1; }

  /// Runs fn over [0, n) split into at most size() contiguous chunks of at
  /// least minChunk elements (except when n itself is smaller), chunk 0 on
  /// the calling thread; returns when all chunks are done. A call from
  /// inside a chunk runs serially instead of deadlocking. Calls from
  /// different threads are serialized.
  void parallelFor(int64_t n, ChunkFn fn, void *ctx, int64_t minChunk = 1);

  /// Chunk i of `chunks` over [0, n): the static partition parallelFor uses.
  static void chunkRange(int64_t n, int64_t chunks, int64_t i, int64_t &begin,
                         int64_t &end);

private:
  void workerLoop(int worker);

  std::vector<std::thread> workers_;
  bool oversubscribed_ = false; // more threads than cores: barely spin
  std::mutex submitMutex_;      // one job at a time

  // The job shares a cache line with its generation: a worker that sees a
  // new generation finds the job in the same transfer. Written before the
  // bump, read after it.
  alignas(64) std::atomic<uint64_t> generation_{0};
  ChunkFn fn_ = nullptr;
  void *ctx_ = nullptr;
  int64_t n_ = 0;
  int64_t chunks_ = 0;

  alignas(64) std::atomic<int> remaining_{0}; // workers yet to report
  std::atomic<bool> callerSleeping_{false};

  alignas(64) std::atomic<int> sleepers_{0}; // workers on wakeCv_
  std::atomic<bool> stop_{false};

  std::mutex wakeMutex_;
  std::condition_variable wakeCv_;
  std::mutex doneMutex_;
  std::condition_variable doneCv_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_SUPPORT_THREADPOOL_H
