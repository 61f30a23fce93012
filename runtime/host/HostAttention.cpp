//===- HostAttention.cpp - A plan's fused attention on this CPU -----------===//
//
// The reference for the plan's `attention` actions, which a GPU build runs
// through cuDNN's flash attention: plain loops, f32 math on the bf16
// inputs, every output rounded to bf16 (to nearest, ties to even) once.
// It lets the host check plans built with --sdpa; it is not fast.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/HostGemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

using namespace hotstage::rt;

namespace {

float widen(uint16_t bits) {
  uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, 4);
  return f;
}

uint16_t narrow(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f))
    return static_cast<uint16_t>((bits | 0x00400000u) >> 16);
  bits += ((bits >> 16) & 1u) + 0x7fffu;
  return static_cast<uint16_t>(bits >> 16);
}

struct Attention {
  const PlanAction &a;
  void *const *args;
  int64_t group() const { return a.heads / a.kvHeads; }
  const uint16_t *in(int i) const {
    return static_cast<const uint16_t *>(args[i]);
  }
  uint16_t *out(int i) const { return static_cast<uint16_t *>(args[i]); }
  float *stats() const { return static_cast<float *>(args[4]); }
  // Element d of head h's row t of batch b in attention tensor `i` (the
  // plan's order), which may sit in a packed QKV buffer.
  int64_t at(int i, int64_t b, int64_t t, int64_t h, int64_t d) const {
    return a.attentionOffset(i) + (b * a.seq + t) * a.attentionRow(i) +
           h * a.headDim + d;
  }
  int64_t keys(int64_t i) const { return a.causal ? i + 1 : a.seq; }
  float score(int64_t b, int64_t h, int64_t i, int64_t j) const {
    int64_t g = h / group();
    float dot = 0;
    for (int64_t d = 0; d < a.headDim; ++d)
      dot += widen(in(0)[at(0, b, i, h, d)]) * widen(in(1)[at(1, b, j, g, d)]);
    return dot * a.scale;
  }
};

// One (batch, head, query) per index: O's row and its log-sum-exp.
void forwardRows(void *ctx, int64_t begin, int64_t end) {
  const Attention &t = *static_cast<const Attention *>(ctx);
  const PlanAction &a = t.a;
  std::vector<float> s(a.seq), o(a.headDim);
  for (int64_t index = begin; index < end; ++index) {
    int64_t i = index % a.seq, h = index / a.seq % a.heads,
            b = index / (a.seq * a.heads), g = h / t.group();
    float mx = -INFINITY;
    for (int64_t j = 0; j < t.keys(i); ++j)
      mx = std::max(mx, s[j] = t.score(b, h, i, j));
    float sum = 0;
    std::fill(o.begin(), o.end(), 0.0f);
    for (int64_t j = 0; j < t.keys(i); ++j) {
      float p = std::exp(s[j] - mx);
      sum += p;
      for (int64_t d = 0; d < a.headDim; ++d)
        o[d] += p * widen(t.in(2)[t.at(2, b, j, g, d)]);
    }
    for (int64_t d = 0; d < a.headDim; ++d)
      t.out(3)[t.at(3, b, i, h, d)] = narrow(o[d] / sum);
    t.stats()[(b * a.heads + h) * a.seq + i] = mx + std::log(sum);
  }
}

// One (batch, kv head) per index: the gradients of its group's queries,
// and of its keys and values summed over the group's heads.
void gradientGroups(void *ctx, int64_t begin, int64_t end) {
  const Attention &t = *static_cast<const Attention *>(ctx);
  const PlanAction &a = t.a;
  int64_t dim = a.headDim;
  std::vector<float> dk(a.seq * dim), dv(a.seq * dim), dq(dim);
  for (int64_t index = begin; index < end; ++index) {
    int64_t g = index % a.kvHeads, b = index / a.kvHeads;
    std::fill(dk.begin(), dk.end(), 0.0f);
    std::fill(dv.begin(), dv.end(), 0.0f);
    for (int64_t h = g * t.group(); h < (g + 1) * t.group(); ++h)
      for (int64_t i = 0; i < a.seq; ++i) {
        auto dO = [&](int64_t d) {
          return widen(t.in(5)[t.at(5, b, i, h, d)]);
        };
        float rowD = 0;
        for (int64_t d = 0; d < dim; ++d)
          rowD += dO(d) * widen(t.in(3)[t.at(3, b, i, h, d)]);
        float lse = t.stats()[(b * a.heads + h) * a.seq + i];
        std::fill(dq.begin(), dq.end(), 0.0f);
        for (int64_t j = 0; j < t.keys(i); ++j) {
          float p = std::exp(t.score(b, h, i, j) - lse);
          float dp = 0;
          for (int64_t d = 0; d < dim; ++d)
            dp += dO(d) * widen(t.in(2)[t.at(2, b, j, g, d)]);
          float ds = p * (dp - rowD) * a.scale;
          for (int64_t d = 0; d < dim; ++d) {
            dq[d] += ds * widen(t.in(1)[t.at(1, b, j, g, d)]);
            dk[j * dim + d] += ds * widen(t.in(0)[t.at(0, b, i, h, d)]);
            dv[j * dim + d] += p * dO(d);
          }
        }
        for (int64_t d = 0; d < dim; ++d)
          t.out(6)[t.at(6, b, i, h, d)] = narrow(dq[d]);
      }
    for (int64_t j = 0; j < a.seq; ++j)
      for (int64_t d = 0; d < dim; ++d) {
        t.out(7)[t.at(7, b, j, g, d)] = narrow(dk[j * dim + d]);
        t.out(8)[t.at(8, b, j, g, d)] = narrow(dv[j * dim + d]);
      }
  }
}

} // namespace

void hotstage::rt::hostAttention(const PlanAction &a, void *const *args,
                                 ThreadPool &pool) {
  Attention t{a, args};
  if (a.attention == 1)
    pool.parallelFor(a.batch * a.heads * a.seq, forwardRows, &t);
  else
    pool.parallelFor(a.batch * a.kvHeads, gradientGroups, &t);
}
