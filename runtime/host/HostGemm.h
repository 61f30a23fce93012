//===- HostGemm.h - A plan's GEMM on this CPU --------------------*- C++
//-*-===//
//
// Apart from the executor so that only the host target links oneDNN: a GPU
// build (runtime/cuda) runs its GEMMs through cuBLASLt and its attention
// through cuDNN, and never calls these.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_HOST_HOSTGEMM_H
#define HOTSTAGE_RUNTIME_HOST_HOSTGEMM_H

#include "runtime/host/Plan.h"
#include "runtime/support/ThreadPool.h"

namespace hotstage::rt {

/// C[b] = op(A[b]) op(B[b]) (+ C[b] when accumulating), row-major, for
/// every batch b of the action, then its epilogue (docs/plan.md), whose
/// elementwise part runs on `pool`. `args` are the action's buffers; A and
/// B hold bf16 when `a.bf16`.
void hostGemm(const PlanAction &a, void *const *args, ThreadPool &pool);

/// A plan's fused attention (a.attention 1) or its gradient (2) on this
/// CPU: what cuDNN's flash attention computes on a GPU, in f32 from the
/// bf16 inputs, each output rounded to bf16 once (HostAttention.cpp).
void hostAttention(const PlanAction &a, void *const *args, ThreadPool &pool);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_HOSTGEMM_H
