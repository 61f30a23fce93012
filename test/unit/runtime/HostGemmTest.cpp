//===- HostGemmTest.cpp - GEMM epilogues: the plan and the host's math ----===//

#include "runtime/host/HostGemm.h"
#include "runtime/host/Plan.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

using namespace hotstage::rt;

namespace {

// A one-function plan of model Tiny: `buffers` (its buffer lines), then
// `action` as the forward's one action.
std::string tinyPlan(int seq, int arena, int persistent,
                     const std::string &buffers, const std::string &action) {
  return "hotstage-plan 1\nmodel Tiny\nmicrobatches 1\nbatch 1\nseq " +
         std::to_string(seq) + "\nvocab 4\narena " + std::to_string(arena) +
         "\npersistent " + std::to_string(persistent) + "\n" + buffers +
         "function forward 1\n" + action + "\nend\n";
}

// x (2x3), w (4x3), bias (4), a residual r (2x4), the outputs y and pre
// (2x4), and dy (2x4), w2 (4x4) for a gradient.
std::string planWith(const std::string &gemm) {
  return tinyPlan(2, 1024, 1024, R"(buffer 0 temp x f32 2x3 offset 0 bytes 24
buffer 1 param w f32 4x3 offset 64 bytes 48 init zeros 0 0
buffer 2 param bias f32 4 offset 128 bytes 16 init zeros 0 0
buffer 3 temp r f32 2x4 offset 192 bytes 32
buffer 4 temp y f32 2x4 offset 256 bytes 32
buffer 5 temp pre f32 2x4 offset 320 bytes 32
)",
                  gemm);
}

std::string parseError(const std::string &gemm) {
  Plan plan;
  std::string error;
  if (parsePlan(planWith(gemm).c_str(), plan, error))
    return "";
  return error;
}

TEST(GemmEpilogue, Parses) {
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(
      planWith("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias 2 gelu_tanh aux 5 # fc")
          .c_str(),
      plan, error))
      << error;
  const PlanAction &a = plan.functions.at("forward").at(0);
  EXPECT_EQ(a.activation, "gelu_tanh");
  ASSERT_EQ(a.buffers.size(), 5u);
  EXPECT_EQ(a.buffers[a.biasArg], 2);
  EXPECT_EQ(a.buffers[a.auxArg], 5);
  EXPECT_EQ(a.addendArg, -1);
  EXPECT_EQ(a.note, "fc");
}

TEST(GemmEpilogue, BadEpiloguesAreRefused) {
  auto refused = [](const std::string &gemm, const std::string &why) {
    std::string error = parseError(gemm);
    EXPECT_NE(error.find(why), std::string::npos) << gemm << ": " << error;
    EXPECT_NE(error.find("plan line"), std::string::npos) << error;
  };
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 relu", "unknown gemm epilogue");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias", "bad gemm bias");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias 2 bias 2", "bad gemm bias");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias 9", "unknown buffer 9");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias 3", "bias must be 4 f32");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 addend 2", "must be 2x4 f32");
  refused("  gemm 1 2 4 3 0 1 1 0 1 4 0 0 0 bias 2", "does not accumulate");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 dgelu_tanh", "takes aux");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 aux 5", "aux without");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 addend 4", "not be its output");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 addend 3 gelu_tanh",
          "both an addend and gelu_tanh");
  refused("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bgrad 2", "A transposed");
  refused("  gemm 1 4 3 2 1 0 1 3 0 1 0 0 0 bias 2 bgrad 2", "no other");
  refused("  gemm 1 4 3 2 1 0 1 3 0 1 0 0 0 bgrad 5", "bgrad must be 4 f32");
}

double gelu(double x) {
  return 0.5 * x *
         (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/// The host GEMM of `gemm` on fixed inputs against a double-precision
/// reference of the product, bias, addend and activation.
struct GemmRun {
  std::vector<float> x{0.5f, -1.0f, 2.0f, 1.5f, 0.25f, -0.75f};
  std::vector<float> w{0.1f, 0.2f, -0.3f, 0.4f,  -0.5f, 0.6f,
                       0.7f, 0.8f, 0.9f,  -1.0f, 1.1f,  1.2f};
  std::vector<float> bias{0.05f, -0.1f, 0.15f, -0.2f};
  std::vector<float> r{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> y = std::vector<float>(8, -7), pre = y;

  void run(const std::string &gemm) {
    Plan plan;
    std::string error;
    ASSERT_TRUE(parsePlan(planWith(gemm).c_str(), plan, error)) << error;
    const PlanAction &a = plan.functions.at("forward").at(0);
    void *byId[] = {x.data(), w.data(), bias.data(),
                    r.data(), y.data(), pre.data()};
    std::vector<void *> args;
    for (int b : a.buffers)
      args.push_back(byId[b]);
    ThreadPool pool(2);
    hostGemm(a, args.data(), pool);
  }
  double product(int i, int j) const {
    double s = 0;
    for (int k = 0; k < 3; ++k)
      s += double(x[i * 3 + k]) * w[j * 3 + k];
    return s;
  }
};

TEST(GemmEpilogue, BiasGeluKeepsItsInput) {
  GemmRun t;
  t.run("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias 2 gelu_tanh aux 5");
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      double p = t.product(i, j) + t.bias[j];
      EXPECT_NEAR(t.pre[i * 4 + j], p, 1e-6);
      EXPECT_NEAR(t.y[i * 4 + j], gelu(p), 1e-6);
    }
}

TEST(GemmEpilogue, BiasAndResidual) {
  GemmRun t;
  t.run("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 bias 2 addend 3");
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j)
      EXPECT_NEAR(t.y[i * 4 + j], t.product(i, j) + t.bias[j] + t.r[i * 4 + j],
                  1e-6);
  EXPECT_EQ(t.pre[0], -7); // untouched
}

TEST(GemmEpilogue, GeluGradient) {
  GemmRun t;
  // The GELU's input in r; y = (x w^T) * gelu'(r).
  t.run("  gemm 1 2 4 3 0 1 0 0 1 4 0 0 0 dgelu_tanh aux 3");
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      double v = t.r[i * 4 + j], h = 1e-4;
      double slope = (gelu(v + h) - gelu(v - h)) / (2 * h);
      EXPECT_NEAR(t.y[i * 4 + j], t.product(i, j) * slope, 1e-4);
    }
}

TEST(GemmEpilogue, BiasGradientBesideTheWeights) {
  GemmRun t;
  // A weight's gradient as the backward accumulates it, w += r^T x (r as
  // dy: 2x4 stored, A transposed), and its bias's gradient, the column
  // sums of r, written into bias.
  std::vector<float> w = t.w;
  t.run("  gemm 1 4 3 2 1 0 1 3 0 1 0 0 0 bgrad 2");
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(t.bias[j], t.r[j] + t.r[4 + j]);
    for (int n = 0; n < 3; ++n) {
      double dw = 0;
      for (int k = 0; k < 2; ++k)
        dw += double(t.r[k * 4 + j]) * t.x[k * 3 + n];
      EXPECT_NEAR(t.w[j * 3 + n], w[j * 3 + n] + dw, 1e-6);
    }
  }
}

// A bf16 GEMM that keeps its output in bf16: x (2x3), w (4x3), bias (4)
// and y (2x4) all bf16; also an f32 x and r for the refusals, and a bf16
// pre (2x4) for a GELU's aux.
std::string bf16Plan(const std::string &gemm) {
  return tinyPlan(2, 1024, 1024, R"(buffer 0 temp x bf16 2x3 offset 0 bytes 12
buffer 1 temp w bf16 4x3 offset 64 bytes 24
buffer 2 temp bias bf16 4 offset 128 bytes 8
buffer 3 temp y bf16 2x4 offset 192 bytes 16
buffer 4 temp xf f32 2x3 offset 256 bytes 24
buffer 5 temp r f32 2x4 offset 320 bytes 32
buffer 6 temp pre bf16 2x4 offset 384 bytes 16
)",
                  gemm);
}

uint16_t bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return static_cast<uint16_t>(u >> 16);
}
float value(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// x (2x3), w (4x3) and a bias (4) of values exact in bf16 whose products'
// sums are not (1 + 2^-8 + ...).
void bf16Operands(std::vector<uint16_t> &x, std::vector<uint16_t> &w,
                  std::vector<uint16_t> &bias) {
  for (float v : {1.0f, 0.5f, -2.0f, 0.25f, 3.0f, 1.5f})
    x.push_back(bits(v));
  for (float v : {1.0f, 0.00390625f, 0.0078125f, -1.0f, 2.0f, 0.5f, 0.125f,
                  -0.25f, 1.0f, 3.0f, 1.0f, 0.00390625f})
    w.push_back(bits(v));
  for (float v : {0.001953125f, 0.0f, 1.0f, -0.5f})
    bias.push_back(bits(v));
}

TEST(Bf16Output, RoundsTheF32SumOnce) {
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(
      bf16Plan("  gemm 1 2 4 3 0 1 0 0 1 3 0 0 0 bias 2").c_str(), plan, error))
      << error;
  const PlanAction &a = plan.functions.at("forward").at(0);
  EXPECT_TRUE(a.bf16Out);
  std::vector<uint16_t> x, w, bias, y(8, 0);
  bf16Operands(x, w, bias);
  void *args[] = {x.data(), w.data(), y.data(), bias.data()};
  ThreadPool pool(2);
  hostGemm(a, args, pool);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      float sum = value(bias[j]);
      for (int k = 0; k < 3; ++k)
        sum += value(x[i * 3 + k]) * value(w[j * 3 + k]);
      // Nearest bf16 to the f32 sum, ties to even.
      uint32_t u;
      std::memcpy(&u, &sum, 4);
      uint16_t expected =
          static_cast<uint16_t>((u + ((u >> 16) & 1u) + 0x7fffu) >> 16);
      EXPECT_EQ(y[i * 4 + j], expected) << i << "," << j << " sum " << sum;
    }
}

// The residual stream in bf16 (--bf16-residual): D = round(bias + x w^T
// + r), the sum in f32 and rounded once.
TEST(Bf16Output, AddsABf16AddendBeforeRounding) {
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(
      bf16Plan("  gemm 1 2 4 3 0 1 0 0 1 3 0 0 0 bias 2 addend 6").c_str(),
      plan, error))
      << error;
  std::vector<uint16_t> x, w, bias, y(8, 0), r;
  bf16Operands(x, w, bias);
  for (float v :
       {0.00390625f, -1.0f, 0.5f, 2.0f, -0.0078125f, 1.0f, 0.25f, -3.0f})
    r.push_back(bits(v));
  void *args[] = {x.data(), w.data(), y.data(), bias.data(), r.data()};
  ThreadPool pool(2);
  hostGemm(plan.functions.at("forward").at(0), args, pool);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      float sum = value(bias[j]);
      for (int k = 0; k < 3; ++k)
        sum += value(x[i * 3 + k]) * value(w[j * 3 + k]);
      sum = value(r[i * 4 + j]) + sum;
      uint32_t u;
      std::memcpy(&u, &sum, 4);
      uint16_t expected =
          static_cast<uint16_t>((u + ((u >> 16) & 1u) + 0x7fffu) >> 16);
      EXPECT_EQ(y[i * 4 + j], expected) << i << "," << j << " sum " << sum;
    }
}

TEST(Bf16Output, RefusedWhereItCannotBe) {
  auto refusal = [](const std::string &gemm) {
    Plan plan;
    std::string error;
    EXPECT_FALSE(parsePlan(bf16Plan(gemm).c_str(), plan, error)) << gemm;
    return error;
  };
  EXPECT_NE(refusal("  gemm 1 2 4 3 0 1 0 4 1 3 0 0 0")
                .find("f32 or bf16 inputs; f32 output, or bf16 from bf16"),
            std::string::npos);
  // The addend has D's type.
  EXPECT_NE(refusal("  gemm 1 2 4 3 0 1 0 0 1 3 0 0 0 addend 5")
                .find("addend and aux must be 2x4 bf16"),
            std::string::npos);
  // aux has D's type.
  EXPECT_NE(refusal("  gemm 1 2 4 3 0 1 0 0 1 3 0 0 0 gelu_tanh aux 5")
                .find("aux must be 2x4 bf16"),
            std::string::npos);
}

// The GELU epilogues with a bf16 output, as cuBLASLt computes them: the
// GELU of the f32 sum rounded once, the sum rounded into aux; the GELU's
// gradient multiplies the f32 product by the slope at aux, rounded once.
TEST(Bf16Output, GeluEpiloguesRoundOnce) {
  Plan gelu, grad;
  std::string error;
  ASSERT_TRUE(parsePlan(
      bf16Plan("  gemm 1 2 4 3 0 1 0 0 1 3 0 0 0 bias 2 gelu_tanh aux 6")
          .c_str(),
      gelu, error))
      << error;
  ASSERT_TRUE(parsePlan(
      bf16Plan("  gemm 1 2 4 3 0 1 0 0 1 3 0 0 0 dgelu_tanh aux 6").c_str(),
      grad, error))
      << error;
  std::vector<uint16_t> x, w, bias, y(8, 0), pre(8, 0);
  bf16Operands(x, w, bias);
  auto nearest = [](float v) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    return static_cast<uint16_t>((u + ((u >> 16) & 1u) + 0x7fffu) >> 16);
  };
  auto sumAt = [&](int i, int j, bool withBias) {
    float sum = withBias ? value(bias[j]) : 0.0f;
    for (int k = 0; k < 3; ++k)
      sum += value(x[i * 3 + k]) * value(w[j * 3 + k]);
    return sum;
  };
  auto geluOf = [](float v) {
    float u = 0.79788456f * (v + 0.044715f * (v * (v * v)));
    return 0.5f * v * (1.0f + std::tanh(u));
  };
  ThreadPool pool(2);
  void *args[] = {x.data(), w.data(), y.data(), bias.data(), pre.data()};
  hostGemm(gelu.functions.at("forward").at(0), args, pool);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      float sum = sumAt(i, j, true);
      EXPECT_EQ(pre[i * 4 + j], nearest(sum)) << i << "," << j;
      // The GELU of the unrounded sum (to a bf16 unit: libm's tanh).
      EXPECT_NEAR(value(y[i * 4 + j]), geluOf(sum),
                  std::abs(geluOf(sum)) * 0x1p-8f + 1e-6f)
          << i << "," << j;
    }
  // The gradient: y = product * gelu'(pre), pre as stored above.
  std::vector<uint16_t> dy(8, 0);
  void *gradArgs[] = {x.data(), w.data(), dy.data(), pre.data()};
  hostGemm(grad.functions.at("forward").at(0), gradArgs, pool);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      float p = value(pre[i * 4 + j]), h = 1e-2f;
      float slope = (geluOf(p + h) - geluOf(p - h)) / (2 * h);
      float expected = sumAt(i, j, false) * slope;
      EXPECT_NEAR(value(dy[i * 4 + j]), expected,
                  std::abs(expected) * 0x1p-7f + 1e-3f)
          << i << "," << j;
    }
}

} // namespace

namespace {

// Attention over [1, 4, 2 * 8] bf16 (2 heads of 8, one kv head), its
// statistics f32 [1, 2, 4].
std::string attentionPlan(const std::string &action) {
  return tinyPlan(4, 4096, 0, R"(buffer 0 temp q bf16 1x4x16 offset 0 bytes 128
buffer 1 temp k bf16 1x4x8 offset 128 bytes 64
buffer 2 temp v bf16 1x4x8 offset 192 bytes 64
buffer 3 temp o bf16 1x4x16 offset 256 bytes 128
buffer 4 temp stats f32 1x2x4 offset 384 bytes 32
buffer 5 temp dk f32 1x4x8 offset 448 bytes 128
)",
                  action);
}

TEST(AttentionAction, ParsesAndChecksItsBuffers) {
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(
      attentionPlan("  attention 1 4 2 1 8 1 0.35355339 0 1 2 3 4 # attention")
          .c_str(),
      plan, error))
      << error;
  const PlanAction &a = plan.functions.at("forward").at(0);
  EXPECT_EQ(a.attention, 1);
  EXPECT_EQ(a.heads, 2);
  EXPECT_EQ(a.kvHeads, 1);
  EXPECT_TRUE(a.causal);
  EXPECT_FLOAT_EQ(a.scale, 0.35355339f);
  auto refused = [](const std::string &action, const std::string &why) {
    Plan p;
    std::string e;
    EXPECT_FALSE(parsePlan(attentionPlan(action).c_str(), p, e)) << action;
    EXPECT_NE(e.find(why), std::string::npos) << action << ": " << e;
  };
  refused("  attention 1 4 2 1 8 1 0.35 0 1 2 3", "bad attention buffer");
  refused("  attention 1 4 3 2 8 1 0.35 0 1 2 3 4", "multiple of kv heads");
  refused("  attention 1 4 2 1 8 1 0.35 0 1 2 3 3",
          "attention buffer 5 must be 8 f32");
  refused("  attention 1 4 2 2 8 1 0.35 0 1 2 3 4",
          "attention buffer 2 must be 64 bf16");
  refused("  attention_grad 1 4 2 1 8 1 0.35 0 1 2 3 4 3 0 5 2",
          "attention buffer 8 must be 32 bf16");
  refused("  attention 1 4 2 1 8 1 0.35 0 1 2 3 4 qkv",
          "qkv attention names one buffer three times");
  refused("  attention 1 4 2 1 8 1 0.35 0 1 2 3 4 dqkv",
          "dqkv on an attention");
  refused("  attention 1 4 2 1 8 1 0.35 0 1 2 3 4 kqv",
          "unknown attention layout 'kqv'");
}

// q, k and v packed in one [1, 4, (2 + 2) * 8] buffer as a QKV projection
// writes them, and their gradients packed likewise: the same bits as the
// separate tensors.
TEST(AttentionAction, PackedQkvIsTheSameAttention) {
  const int64_t T = 4, H = 2, D = 8, row = (H + 2) * D;
  std::string buffers = R"(buffer 0 temp q bf16 1x4x16 offset 0 bytes 128
buffer 1 temp k bf16 1x4x8 offset 128 bytes 64
buffer 2 temp v bf16 1x4x8 offset 192 bytes 64
buffer 3 temp o bf16 1x4x16 offset 256 bytes 128
buffer 4 temp stats f32 1x2x4 offset 384 bytes 32
buffer 5 temp do bf16 1x4x16 offset 448 bytes 128
buffer 6 temp dq bf16 1x4x16 offset 576 bytes 128
buffer 7 temp dk bf16 1x4x8 offset 704 bytes 64
buffer 8 temp dv bf16 1x4x8 offset 768 bytes 64
buffer 9 temp qkv bf16 1x4x32 offset 832 bytes 256
buffer 10 temp dqkv bf16 1x4x32 offset 1088 bytes 256
)";
  auto action = [&](const std::string &text) {
    Plan plan;
    std::string error;
    EXPECT_TRUE(
        parsePlan(tinyPlan(4, 4096, 0, buffers, text).c_str(), plan, error))
        << error;
    return plan.functions.at("forward").at(0);
  };
  std::vector<uint16_t> q(T * H * D), k(T * D), v(T * D), dO(T * H * D);
  auto fill = [](std::vector<uint16_t> &t, int seed) {
    for (size_t i = 0; i < t.size(); ++i)
      t[i] = bits(static_cast<float>((i * 7 + seed) % 13) / 8 - 0.75f);
  };
  fill(q, 1), fill(k, 2), fill(v, 3), fill(dO, 4);
  std::vector<uint16_t> qkv(T * row);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < row; ++c)
      qkv[t * row + c] = c < H * D         ? q[t * H * D + c]
                         : c < (H + 1) * D ? k[t * D + c - H * D]
                                           : v[t * D + c - (H + 1) * D];
  ThreadPool pool(2);
  std::vector<uint16_t> o(T * H * D), oPacked(T * H * D);
  std::vector<float> stats(H * T), statsPacked(H * T);
  void *separate[] = {q.data(), k.data(), v.data(), o.data(), stats.data()};
  hostAttention(action("  attention 1 4 2 1 8 1 0.35355339 0 1 2 3 4"),
                separate, pool);
  void *packed[] = {qkv.data(), qkv.data(), qkv.data(), oPacked.data(),
                    statsPacked.data()};
  hostAttention(action("  attention 1 4 2 1 8 1 0.35355339 9 9 9 3 4 qkv"),
                packed, pool);
  EXPECT_EQ(o, oPacked);
  EXPECT_EQ(stats, statsPacked);

  std::vector<uint16_t> dq(T * H * D), dk(T * D), dv(T * D), dqkv(T * row);
  void *grad[] = {q.data(),  k.data(),  v.data(),  o.data(), stats.data(),
                  dO.data(), dq.data(), dk.data(), dv.data()};
  hostAttention(action("  attention_grad 1 4 2 1 8 1 0.35355339 0 1 2 3 4 5 "
                       "6 7 8"),
                grad, pool);
  void *gradPacked[] = {qkv.data(),  qkv.data(),   qkv.data(),
                        o.data(),    stats.data(), dO.data(),
                        dqkv.data(), dqkv.data(),  dqkv.data()};
  hostAttention(action("  attention_grad 1 4 2 1 8 1 0.35355339 9 9 9 3 4 5 "
                       "10 10 10 qkv dqkv"),
                gradPacked, pool);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < row; ++c) {
      uint16_t expected = c < H * D         ? dq[t * H * D + c]
                          : c < (H + 1) * D ? dk[t * D + c - H * D]
                                            : dv[t * D + c - (H + 1) * D];
      EXPECT_EQ(dqkv[t * row + c], expected) << t << "," << c;
    }
}

} // namespace

namespace {

// x (2x3) times w^T (w 5x3) into y (2x5) stored 8 apart (`pitch 8`), then
// y (2x5, padded) times v (5x4) into z (2x4): a padded C, then a padded A;
// r (2x5) for an addend.
std::string paddedPlan(const std::string &yType, const std::string &gemms) {
  std::string yBytes = yType == "bf16" ? "32" : "64";
  return tinyPlan(
      2, 1024, 1024,
      "buffer 0 temp x " + yType + " 2x3 offset 0 bytes " +
          (yType == "bf16" ? "12" : "24") + "\nbuffer 1 temp w " + yType +
          " 5x3 offset 64 bytes " + (yType == "bf16" ? "30" : "60") +
          "\nbuffer 2 temp y " + yType + " 2x5 offset 128 bytes " + yBytes +
          " pitch 8\nbuffer 3 temp v " + yType + " 5x4 offset 256 bytes " +
          (yType == "bf16" ? "40" : "80") +
          "\nbuffer 4 temp z f32 2x4 offset 384 bytes 32\n"
          "buffer 5 temp r f32 2x5 offset 448 bytes 40\n",
      gemms);
}

TEST(PaddedRows, GemmsUseThePitchAsLeadingDimension) {
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(paddedPlan("f32", "  gemm 1 2 5 3 0 1 0 0 1 2 0 0 0\n"
                                          "  gemm 1 2 4 5 0 0 0 2 3 4 0 0 0")
                            .c_str(),
                        plan, error))
      << error;
  const auto &actions = plan.functions.at("forward");
  EXPECT_EQ(actions[0].ldc, 8);
  EXPECT_EQ(actions[0].lda, 3);
  EXPECT_EQ(actions[1].lda, 8);
  EXPECT_EQ(actions[1].ldb, 4);
  std::vector<float> x{1, 2, 3, -1, 0.5f, 2};
  std::vector<float> w{1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 2, -1, 0.5f};
  std::vector<float> v(20);
  for (int i = 0; i < 20; ++i)
    v[i] = 0.25f * (i % 7) - 0.5f;
  // The padding holds garbage that nothing may read.
  std::vector<float> y(16, 1e30f), z(8, 0);
  ThreadPool pool(2);
  void *first[] = {x.data(), w.data(), y.data()};
  hostGemm(actions[0], first, pool);
  void *second[] = {y.data(), v.data(), z.data()};
  hostGemm(actions[1], second, pool);
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 5; ++j) {
      float sum = 0;
      for (int k = 0; k < 3; ++k)
        sum += x[i * 3 + k] * w[j * 3 + k];
      EXPECT_FLOAT_EQ(y[i * 8 + j], sum) << i << "," << j;
    }
    for (int j = 5; j < 8; ++j)
      EXPECT_EQ(y[i * 8 + j], 1e30f) << "padding written at " << i << "," << j;
    for (int j = 0; j < 4; ++j) {
      float sum = 0;
      for (int k = 0; k < 5; ++k)
        sum += y[i * 8 + k] * v[k * 4 + j];
      EXPECT_FLOAT_EQ(z[i * 4 + j], sum) << i << "," << j;
    }
  }
}

TEST(PaddedRows, Refused) {
  auto refusal = [](const std::string &plan) {
    Plan p;
    std::string error;
    EXPECT_FALSE(parsePlan(plan.c_str(), p, error)) << plan;
    return error;
  };
  // Bytes that are not rows times the pitch.
  std::string plan = paddedPlan("f32", "  gemm 1 2 5 3 0 1 0 0 1 2 0 0 0");
  std::string bad = plan;
  bad.replace(bad.find("bytes 64 pitch 8"), 16, "bytes 40 pitch 8");
  EXPECT_NE(refusal(bad).find("pitch 8 does not fit"), std::string::npos);
  bad = plan;
  bad.replace(bad.find("pitch 8"), 7, "pitch 4");
  EXPECT_NE(refusal(bad).find("does not fit"), std::string::npos);
  // A padded C takes no addend.
  EXPECT_NE(
      refusal(paddedPlan("f32", "  gemm 1 2 5 3 0 1 0 0 1 2 0 0 0 addend 5"))
          .find("padded rows"),
      std::string::npos);
}

} // namespace
