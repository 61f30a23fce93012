//===- HostGemm.h - A plan's GEMM on this CPU --------------------*- C++
//-*-===//
//
// Apart from the executor so that only the host target links oneDNN: a GPU
// build (runtime/cuda) runs its GEMMs through cuBLASLt and never calls it.
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

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_HOSTGEMM_H
