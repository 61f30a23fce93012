//===- CudnnAttention.h - The plan's fused attention through cuDNN -*- C++
//-*-===//
//
// cuDNN's scaled dot-product attention (flash attention, forward and
// backward: bf16 tensors, f32 statistics) built through its frontend's
// graph API, one graph per attention action of the plan at startup.
// cuDNN itself (libcudnn.so.9) is opened at run time, and only when the
// plan has attention actions: a build without them runs where cuDNN is
// not installed.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_CUDA_CUDNNATTENTION_H
#define HOTSTAGE_RUNTIME_CUDA_CUDNNATTENTION_H

#include "runtime/host/Plan.h"

#include <cuda.h>

#include <cstdint>
#include <memory>
#include <string>

namespace hotstage::rt {

class CudnnAttention {
public:
  CudnnAttention();
  ~CudnnAttention();

  /// Opens cuDNN (HOTSTAGE_CUDNN, else libcudnn.so.9 on the library path)
  /// when `plan` has attention actions: before anything of the GPU, so
  /// that a missing cuDNN is said first.
  bool load(const Plan &plan, std::string &error);
  /// Builds the graph of every attention action, to run on `stream`.
  bool init(CUstream stream, std::string &error);
  /// The largest workspace the graphs need.
  int64_t workspaceBytes() const;
  /// Enqueues attention action `a` (Q K V O STATS [dO dQ dK dV] at
  /// `pointers`, in the plan's order).
  bool enqueue(const PlanAction &a, void *const *pointers, void *workspace,
               std::string &error);

private:
  struct State;
  std::unique_ptr<State> state_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_CUDA_CUDNNATTENTION_H
