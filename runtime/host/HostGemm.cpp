//===- HostGemm.cpp - A plan's GEMM on this CPU, through oneDNN -----------===//

#include "runtime/host/HostGemm.h"

#include <cstdint>
#include <cstring>
#include <dnnl.h>
#include <vector>

/// bf16 values widened to f32: exact, so the f32 GEMM of the widened
/// operands is the bf16 GEMM with f32 accumulation.
static std::vector<float> widen(const void *data, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  const auto *bits = static_cast<const uint16_t *>(data);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t wide = static_cast<uint32_t>(bits[i]) << 16;
    std::memcpy(&out[i], &wide, 4);
  }
  return out;
}

void hotstage::rt::hostGemm(const PlanAction &a, const float *A, const float *B,
                            float *C) {
  std::vector<float> wideA, wideB;
  if (a.bf16) {
    wideA = widen(A, a.strideA ? a.batch * a.strideA : a.m * a.k);
    wideB = widen(B, a.strideB ? a.batch * a.strideB : a.k * a.n);
    A = wideA.data();
    B = wideB.data();
  }
  int lda = a.transA ? a.m : a.k, ldb = a.transB ? a.k : a.n, ldc = a.n;
  for (int64_t b = 0; b < a.batch; ++b)
    dnnl_sgemm(a.transA ? 'T' : 'N', a.transB ? 'T' : 'N', a.m, a.n, a.k, 1.0f,
               A + b * a.strideA, lda, B + b * a.strideB, ldb,
               a.accumulate ? 1.0f : 0.0f, C + b * a.strideC, ldc);
}
