//===- ThreadPool.cpp - Parallel loops on the process's OpenMP team -------===//

#include "runtime/support/ThreadPool.h"

#include <algorithm>
#include <cstdlib>
#include <thread>

// libgomp's entry points (the ABI GCC's `#pragma omp parallel` compiles
// to), declared here because clang's -fopenmp would bring LLVM's libomp,
// a second runtime beside the libgomp that oneDNN loads.
extern "C" {
void GOMP_parallel(void (*fn)(void *), void *data, unsigned numThreads,
                   unsigned flags);
int omp_get_thread_num(void);
int omp_get_num_threads(void);
int omp_in_parallel(void);
void omp_set_num_threads(int);
}

namespace hotstage::rt {

namespace {
struct Job {
  ThreadPool::ChunkFn fn;
  void *ctx;
  int64_t n;
  int64_t chunks;
};

void runTeamMember(void *data) {
  const Job &job = *static_cast<const Job *>(data);
  // A team smaller than asked for (OMP_THREAD_LIMIT) still covers every
  // chunk; the partition itself does not depend on the team.
  int64_t step = omp_get_num_threads();
  for (int64_t i = omp_get_thread_num(); i < job.chunks; i += step) {
    int64_t begin, end;
    ThreadPool::chunkRange(job.n, job.chunks, i, begin, end);
    job.fn(job.ctx, begin, end);
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

ThreadPool::ThreadPool(int threads)
    : threads_(threads < 1 ? defaultThreadCount() : threads) {
  omp_set_num_threads(threads_);
}

void ThreadPool::claimOpenMP() { omp_set_num_threads(threads_); }

void ThreadPool::chunkRange(int64_t n, int64_t chunks, int64_t i,
                            int64_t &begin, int64_t &end) {
  int64_t base = n / chunks, rem = n % chunks;
  begin = i * base + std::min(i, rem);
  end = begin + base + (i < rem ? 1 : 0);
}

void ThreadPool::parallelFor(int64_t n, ChunkFn fn, void *ctx,
                             int64_t minChunk) {
  if (n <= 0)
    return;
  int64_t chunks =
      std::min<int64_t>(size(), n / std::max<int64_t>(1, minChunk));
  if (chunks <= 1 || omp_in_parallel()) {
    fn(ctx, 0, n);
    return;
  }
  std::lock_guard<std::mutex> submit(submitMutex_);
  Job job{fn, ctx, n, chunks};
  GOMP_parallel(runTeamMember, &job, unsigned(chunks), 0);
}

} // namespace hotstage::rt
