//===- HostGemm.cpp - A plan's GEMM on this CPU, through oneDNN -----------===//

#include "runtime/host/HostGemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <dnnl.h>
#include <vector>

using namespace hotstage::rt;

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

namespace {

/// The epilogue's elementwise part over rows [begin, end) of the product
/// P (which is C, or aux when a GELU keeps its input there).
struct Epilogue {
  int64_t n;
  bool gelu, geluGrad; // decided once, not per element
  float *C;
  const float *addend, *aux;
  float *P;
};

// The same formulas, in the same order, as the host kernels of nn.gelu and
// nn.activation_grad (compiler/host/HostLowering.cpp).
const float kSqrt2OverPi = static_cast<float>(0.79788456080286535588);

float geluTanh(float x) {
  float u = kSqrt2OverPi * (x + 0.044715f * (x * (x * x)));
  return 0.5f * x * (1.0f + std::tanh(u));
}

float geluTanhSlope(float x) {
  float x2 = x * x;
  float u = kSqrt2OverPi * (x + 0.044715f * (x2 * x));
  float t = std::tanh(u);
  float du = kSqrt2OverPi * (1.0f + static_cast<float>(3 * 0.044715) * x2);
  return 0.5f * (1.0f + t) + (0.5f * x) * ((1.0f - t * t) * du);
}

void applyEpilogue(void *ctx, int64_t begin, int64_t end) {
  auto &e = *static_cast<Epilogue *>(ctx);
  for (int64_t i = begin * e.n; i < end * e.n; ++i) {
    if (e.addend)
      e.P[i] = e.addend[i] + e.P[i];
    if (e.gelu)
      e.C[i] = geluTanh(e.P[i]);
    else if (e.geluGrad)
      e.C[i] = e.C[i] * geluTanhSlope(e.aux[i]);
  }
}

} // namespace

/// f32 `x` rounded to bf16, to nearest with ties to even (NaN stays NaN):
/// the bits the compiler's kernels store (bf16Bits in
/// compiler/host/KernelBuilder.h).
static uint16_t bf16Bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, 4);
  if (std::isnan(x))
    return static_cast<uint16_t>((bits | 0x00400000u) >> 16);
  return static_cast<uint16_t>((bits + ((bits >> 16) & 1u) + 0x7fffu) >> 16);
}

void hotstage::rt::hostGemm(const PlanAction &a, void *const *args,
                            ThreadPool &pool) {
  pool.claimOpenMP();
  const auto *A = static_cast<const float *>(args[0]);
  const auto *B = static_cast<const float *>(args[1]);
  auto *C = static_cast<float *>(args[2]);
  auto arg = [&](int index) {
    return index >= 0 ? static_cast<float *>(args[index]) : nullptr;
  };
  // Rows as stored: a padded buffer's pitch (the parser sets them).
  int64_t lda = a.lda ? a.lda : (a.transA ? a.m : a.k);
  int64_t ldb = a.ldb ? a.ldb : (a.transB ? a.k : a.n);
  int64_t ldc = a.ldc ? a.ldc : a.n;
  std::vector<float> wideA, wideB;
  if (a.bf16) {
    wideA = widen(A, a.strideA ? a.batch * a.strideA
                               : (a.transA ? a.k : a.m) * lda);
    wideB = widen(B, a.strideB ? a.batch * a.strideB
                               : (a.transB ? a.n : a.k) * ldb);
    A = wideA.data();
    B = wideB.data();
  }
  if (float *sums = arg(a.bgradArg)) {
    // The bias gradient: column sums of A ([K, M] as stored) as the GEMM
    // reads it, in row order (cuBLASLt's order is its own).
    std::fill(sums, sums + a.m, 0.0f);
    for (int64_t r = 0; r < a.k; ++r)
      for (int64_t j = 0; j < a.m; ++j)
        sums[j] += A[r * lda + j];
  }
  if (a.bf16Out) {
    // The f32 product (on C's widened values when accumulating, else on
    // the widened bias), rounded once into C, laid out as C.
    int64_t rows = a.strideC ? a.batch * a.strideC / a.n : a.m;
    int64_t count = rows * ldc;
    std::vector<float> P(static_cast<size_t>(count));
    bool accumulate = a.accumulate;
    if (accumulate) {
      P = widen(args[2], count);
    } else if (a.biasArg >= 0) {
      std::vector<float> bias = widen(args[a.biasArg], a.n);
      for (int64_t i = 0; i < rows; ++i)
        std::memcpy(&P[i * ldc], bias.data(), a.n * sizeof(float));
      accumulate = true;
    }
    for (int64_t b = 0; b < a.batch; ++b)
      dnnl_sgemm(a.transA ? 'T' : 'N', a.transB ? 'T' : 'N', a.m, a.n, a.k,
                 1.0f, A + b * a.strideA, lda, B + b * a.strideB, ldb,
                 accumulate ? 1.0f : 0.0f, P.data() + b * a.strideC, ldc);
    // The epilogue on the f32 sum, each result rounded once (as cuBLASLt
    // computes its epilogues in f32): an addend (the residual stream in
    // bf16) is added to it; a GELU keeps its input rounded in aux; a GELU's
    // gradient reads it from there. (Padding included: its values are
    // never read.)
    if (a.addendArg >= 0) {
      std::vector<float> addend = widen(args[a.addendArg], count);
      for (int64_t i = 0; i < count; ++i)
        P[i] = addend[i] + P[i];
    }
    auto *out = static_cast<uint16_t *>(args[2]);
    if (a.activation == "gelu_tanh") {
      auto *aux =
          a.auxArg >= 0 ? static_cast<uint16_t *>(args[a.auxArg]) : nullptr;
      for (int64_t i = 0; i < count; ++i) {
        if (aux)
          aux[i] = bf16Bits(P[i]);
        out[i] = bf16Bits(geluTanh(P[i]));
      }
    } else if (a.activation == "dgelu_tanh") {
      std::vector<float> input = widen(args[a.auxArg], count);
      for (int64_t i = 0; i < count; ++i)
        out[i] = bf16Bits(P[i] * geluTanhSlope(input[i]));
    } else {
      for (int64_t i = 0; i < count; ++i)
        out[i] = bf16Bits(P[i]);
    }
    return;
  }
  // A GELU that keeps its input computes the product into aux.
  float *P = a.activation == "gelu_tanh" && a.auxArg >= 0 ? arg(a.auxArg) : C;
  bool accumulate = a.accumulate;
  if (const float *bias = arg(a.biasArg)) {
    // P starts as the broadcast bias, as the bias kernel does without an
    // epilogue; the GEMM adds to it.
    for (int64_t i = 0; i < a.m; ++i)
      std::memcpy(P + i * ldc, bias, a.n * sizeof(float));
    accumulate = true;
  }
  for (int64_t b = 0; b < a.batch; ++b)
    dnnl_sgemm(a.transA ? 'T' : 'N', a.transB ? 'T' : 'N', a.m, a.n, a.k, 1.0f,
               A + b * a.strideA, lda, B + b * a.strideB, ldb,
               accumulate ? 1.0f : 0.0f, P + b * a.strideC, ldc);
  if (a.addendArg < 0 && a.activation.empty())
    return;
  // (No addend or aux with padded rows: the parser refuses them.)
  Epilogue e{ldc,
             a.activation == "gelu_tanh",
             a.activation == "dgelu_tanh",
             C,
             arg(a.addendArg),
             arg(a.auxArg),
             P};
  pool.parallelFor(a.m, applyEpilogue, &e);
}
