//===- Executor.h - Runs the plan's functions on the host -------*- C++ -*-===//
//
// Owns the arena (allocated once, never again) and runs a function's
// actions in order: kernel calls split over the thread pool, GEMMs through
// the BLAS library.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_HOST_EXECUTOR_H
#define HOTSTAGE_RUNTIME_HOST_EXECUTOR_H

#include "runtime/host/Plan.h"
#include "runtime/support/ThreadPool.h"

#include <memory>

namespace hotstage::rt {

/// A kernel: `buffers...`, then the [begin, end) range of its parallel
/// dimension.
using KernelFn = void (*)();

class Executor {
public:
  Executor(const Plan &plan, const KernelFn *kernels, int threads);
  ~Executor();

  char *arena() { return arena_; }
  /// The start of buffer `b` in the arena.
  void *buffer(const PlanBuffer &b) { return arena_ + b.offset; }

  /// Runs function `name`; false (with `error`) if the plan lacks it.
  bool run(const std::string &name, std::string &error);

  int threads() const { return pool_.size(); }

private:
  const Plan &plan_;
  const KernelFn *kernels_;
  char *arena_ = nullptr;
  ThreadPool pool_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_EXECUTOR_H
