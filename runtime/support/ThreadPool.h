//===- ThreadPool.h - Parallel loops on the process's OpenMP team -*- C++
//-*-===//
//
// Every kernel of a training step runs through parallelFor, thousands of
// times a second, and the GEMMs between them run in oneDNN, which threads
// with libgomp. Two sets of spinning threads on the same cores slow each
// other down several-fold, so the pool is libgomp's team itself: kernels
// and GEMMs share one set of workers, which spin briefly after each region
// (GOMP_SPINCOUNT) and then sleep. The partition of [0, n) depends only on
// n, the pool size and minChunk, so results are deterministic.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_SUPPORT_THREADPOOL_H
#define HOTSTAGE_RUNTIME_SUPPORT_THREADPOOL_H

#include <cstdint>
#include <mutex>

namespace hotstage::rt {

/// HOTSTAGE_NUM_THREADS if it is a positive integer, else
/// std::thread::hardware_concurrency() (at least 1).
int defaultThreadCount();

class ThreadPool {
public:
  using ChunkFn = void (*)(void *ctx, int64_t begin, int64_t end);

  /// `threads` counts the calling thread. A value below 1 means
  /// defaultThreadCount(). Also makes `threads` the calling thread's OpenMP
  /// thread count, which oneDNN's GEMMs follow.
  explicit ThreadPool(int threads);
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  int size() const { return threads_; }

  /// Makes size() the calling thread's OpenMP thread count again (another
  /// pool may have set it since: the host stand-in device's executor runs
  /// beside the outer one). A GEMM's sums depend on oneDNN's thread count.
  void claimOpenMP();

  /// Runs fn over [0, n) split into at most size() contiguous chunks of at
  /// least minChunk elements (except when n itself is smaller), chunk 0 on
  /// the calling thread; returns when all chunks are done. A call from
  /// inside a chunk runs serially. Calls from different threads are
  /// serialized.
  void parallelFor(int64_t n, ChunkFn fn, void *ctx, int64_t minChunk = 1);

  /// Chunk i of `chunks` over [0, n): the static partition parallelFor uses.
  static void chunkRange(int64_t n, int64_t chunks, int64_t i, int64_t &begin,
                         int64_t &end);

private:
  int threads_;
  std::mutex submitMutex_; // one job at a time
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_SUPPORT_THREADPOOL_H
