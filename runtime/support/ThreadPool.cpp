//===- ThreadPool.cpp - Persistent workers for parallel loops -------------===//

#include "runtime/support/ThreadPool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace hotstage::rt {

namespace {
// How long a worker polls for the next job, or the caller for the workers,
// before sleeping: enough to bridge the serial gap between two kernels of
// a step, short enough not to burn a core when training pauses.
constexpr std::chrono::microseconds kSpinTime(100);
// With more threads than cores a spinning thread only delays the one it
// waits for, so such pools poll a few times, yielding, then sleep (as
// libgomp does).
constexpr int kOversubscribedPolls = 16;

// Set on the workers and on a caller while it runs its own chunk, so a
// nested parallelFor runs serially instead of waiting on itself.
thread_local bool tlsInsidePool = false;

inline void cpuPause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

/// Polls `ready` until it holds (true) or the spin budget is spent (false).
template <typename Ready> bool spinUntil(Ready &&ready, bool oversubscribed) {
  if (oversubscribed) {
    for (int i = 0; i < kOversubscribedPolls; ++i) {
      if (ready())
        return true;
      std::this_thread::yield();
    }
    return ready();
  }
  // The clock is read only every 256 polls, and first after 256, so a
  // short wait costs no clock reads at all.
  std::chrono::steady_clock::time_point deadline;
  for (unsigned i = 1;; ++i) {
    if (ready())
      return true;
    if (i % 256 == 0) {
      auto now = std::chrono::steady_clock::now();
      if (i == 256)
        deadline = now + kSpinTime;
      else if (now >= deadline)
        return false;
    }
    cpuPause();
  }
}
} // namespace

int defaultThreadCount() {
  if (const char *env = std::getenv("HOTSTAGE_NUM_THREADS")) {
    char *end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= 4096)
      return int(v);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? int(hw) : 1;
}

ThreadPool::ThreadPool(int threads) {
  if (threads < 1)
    threads = defaultThreadCount();
  unsigned cores = std::thread::hardware_concurrency();
  oversubscribed_ = cores > 0 && unsigned(threads) > cores;
  for (int w = 0; w + 1 < threads; ++w)
    workers_.emplace_back([this, w] { workerLoop(w); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(wakeMutex_);
    stop_.store(true, std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_seq_cst);
  }
  wakeCv_.notify_all();
  for (std::thread &t : workers_)
    t.join();
}

void ThreadPool::chunkRange(int64_t n, int64_t chunks, int64_t i,
                            int64_t &begin, int64_t &end) {
  int64_t base = n / chunks, rem = n % chunks;
  begin = i * base + std::min(i, rem);
  end = begin + base + (i < rem ? 1 : 0);
}

void ThreadPool::workerLoop(int worker) {
  tlsInsidePool = true;
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = seen;
    bool woke = spinUntil(
        [&] {
          g = generation_.load(std::memory_order_acquire);
          return g != seen;
        },
        oversubscribed_);
    if (!woke) {
      std::unique_lock<std::mutex> lock(wakeMutex_);
      // Paired with the caller's bump-then-check of sleepers_ (both
      // seq_cst): either it sees us here or we see its new generation.
      sleepers_.fetch_add(1, std::memory_order_seq_cst);
      wakeCv_.wait(lock, [&] {
        g = generation_.load(std::memory_order_seq_cst);
        return g != seen;
      });
      sleepers_.fetch_sub(1, std::memory_order_relaxed);
    }
    seen = g;
    if (stop_.load(std::memory_order_acquire))
      return;
    int64_t chunk = worker + 1;
    if (chunk < chunks_) {
      int64_t begin, end;
      chunkRange(n_, chunks_, chunk, begin, end);
      fn_(ctx_, begin, end);
    }
    // Every worker reports, participating or not, so none is still
    // reading this job when the caller writes the next.
    if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        callerSleeping_.load(std::memory_order_seq_cst)) {
      std::lock_guard<std::mutex> lock(doneMutex_);
      doneCv_.notify_one();
    }
  }
}

void ThreadPool::parallelFor(int64_t n, ChunkFn fn, void *ctx,
                             int64_t minChunk) {
  if (n <= 0)
    return;
  int64_t chunks =
      std::min<int64_t>(size(), n / std::max<int64_t>(1, minChunk));
  if (chunks <= 1 || tlsInsidePool) {
    fn(ctx, 0, n);
    return;
  }
  std::lock_guard<std::mutex> submit(submitMutex_);
  fn_ = fn;
  ctx_ = ctx;
  n_ = n;
  chunks_ = chunks;
  remaining_.store(int(workers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(wakeMutex_);
    wakeCv_.notify_all();
  }

  int64_t begin, end;
  chunkRange(n, chunks, 0, begin, end);
  tlsInsidePool = true;
  fn(ctx, begin, end);
  tlsInsidePool = false;

  if (spinUntil([&] { return remaining_.load(std::memory_order_acquire) == 0; },
                oversubscribed_))
    return;
  std::unique_lock<std::mutex> lock(doneMutex_);
  callerSleeping_.store(true, std::memory_order_seq_cst);
  doneCv_.wait(lock,
               [&] { return remaining_.load(std::memory_order_seq_cst) == 0; });
  callerSleeping_.store(false, std::memory_order_relaxed);
}

} // namespace hotstage::rt
