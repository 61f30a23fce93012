//===- HostGemm.cpp - A plan's GEMM on this CPU, through oneDNN -----------===//

#include "runtime/host/HostGemm.h"

#include <dnnl.h>

void hotstage::rt::hostGemm(const PlanAction &a, const float *A, const float *B,
                            float *C) {
  int lda = a.transA ? a.m : a.k, ldb = a.transB ? a.k : a.n, ldc = a.n;
  for (int64_t b = 0; b < a.batch; ++b)
    dnnl_sgemm(a.transA ? 'T' : 'N', a.transB ? 'T' : 'N', a.m, a.n, a.k, 1.0f,
               A + b * a.strideA, lda, B + b * a.strideB, ldb,
               a.accumulate ? 1.0f : 0.0f, C + b * a.strideC, ldc);
}
