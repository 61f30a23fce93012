//===- ShapeRulesTest.cpp - The shared shape rules ------------------------===//

#include "dialects/nn/ShapeRules.h"

#include <gtest/gtest.h>

using namespace hotstage::nn::shape;

namespace {
Shape S(std::initializer_list<int64_t> dims) { return Shape(dims); }
} // namespace

TEST(ShapeRules, Broadcast) {
  std::string error;
  EXPECT_EQ(*broadcast("+", S({8, 64, 768}), S({768}), error), S({8, 64, 768}));
  EXPECT_EQ(*broadcast("+", S({8, 1, 4}), S({3, 1}), error), S({8, 3, 4}));
  EXPECT_EQ(*broadcast("+", S({}), S({2, 2}), error), S({2, 2}));
  EXPECT_FALSE(broadcast("+", S({8, 64, 768}), S({512}), error));
  EXPECT_EQ(error, "shapes [8, 64, 768] and [512] of '+' cannot be broadcast "
                   "together");
}

TEST(ShapeRules, Matmul) {
  std::string error;
  EXPECT_EQ(*matmul(S({8, 64, 768}), S({768, 50257}), error),
            S({8, 64, 50257}));
  EXPECT_EQ(*matmul(S({2, 3, 4}), S({2, 4, 5}), error), S({2, 3, 5}));
  EXPECT_EQ(*matmul(S({4}), S({4, 5}), error), S({5}));
  EXPECT_EQ(*matmul(S({3, 4}), S({4}), error), S({3}));
  EXPECT_FALSE(matmul(S({3, 4}), S({5, 6}), error));
  EXPECT_EQ(error, "inner dimensions of 'matmul' differ: [3, 4] @ [5, 6] "
                   "(4 vs 5)");
  EXPECT_FALSE(matmul(S({2, 3, 4}), S({3, 4, 5}), error));
  EXPECT_FALSE(matmul(S({}), S({3}), error));
}

TEST(ShapeRules, LinearAndNorms) {
  std::string error;
  EXPECT_EQ(*linear(S({8, 64, 768}), S({2304, 768}), S({2304}), error),
            S({8, 64, 2304}));
  EXPECT_FALSE(linear(S({8, 64, 768}), S({2304, 512}), std::nullopt, error));
  EXPECT_FALSE(linear(S({8, 768}), S({32, 768}), S({16}), error));
  EXPECT_EQ(*norm("layer_norm", S({8, 64}), S({64}), S({64}), error),
            S({8, 64}));
  EXPECT_FALSE(norm("rms_norm", S({8, 64}), S({32}), std::nullopt, error));
  EXPECT_EQ(error, "'rms_norm' scale [32] must be [64] for input [8, 64]");
}

TEST(ShapeRules, Reductions) {
  std::string error;
  EXPECT_EQ(*reduce("sum", S({2, 3, 4}), {-1}, false, error), S({2, 3}));
  EXPECT_EQ(*reduce("sum", S({2, 3, 4}), {0, 2}, true, error), S({1, 3, 1}));
  EXPECT_EQ(*reduce("mean", S({2, 3}), {}, false, error), S({}));
  EXPECT_FALSE(reduce("max", S({2, 3}), {2}, false, error));
  EXPECT_FALSE(reduce("max", S({2, 3}), {1, -1}, false, error));
  EXPECT_EQ(error, "axis -1 of 'max' is repeated");
}

TEST(ShapeRules, Attention) {
  std::string error;
  EXPECT_EQ(*attention(S({8, 64, 768}), S({8, 64, 768}), S({8, 64, 768}), 12,
                       12, error),
            S({8, 64, 768}));
  // Grouped-query attention: 8 query heads share 2 key/value heads.
  EXPECT_TRUE(attention(S({2, 16, 512}), S({2, 16, 128}), S({2, 16, 128}), 8, 2,
                        error));
  EXPECT_FALSE(attention(S({2, 16, 512}), S({2, 16, 128}), S({2, 16, 128}), 8,
                         3, error));
  EXPECT_FALSE(
      attention(S({2, 16, 64}), S({2, 16, 64}), S({2, 16, 64}), 5, 5, error));
  EXPECT_FALSE(rope(S({2, 16, 12}), 4, error)); // head size 3 is odd
  EXPECT_TRUE(rope(S({2, 16, 16}), 4, error));
}

TEST(ShapeRules, Layout) {
  std::string error;
  EXPECT_EQ(*reshape(S({8, 64, 768}), {8, 64, 12, -1}, error),
            S({8, 64, 12, 64}));
  EXPECT_FALSE(reshape(S({8, 64}), {3, -1}, error));
  EXPECT_FALSE(reshape(S({8, 64}), {-1, -1}, error));
  EXPECT_EQ(*transpose(S({2, 3, 4}), {0, 2, 1}, error), S({2, 4, 3}));
  EXPECT_FALSE(transpose(S({2, 3, 4}), {0, 0, 1}, error));
  auto pieces = split(S({8, 2304}), -1, {768, 768, 768}, error);
  ASSERT_TRUE(pieces);
  EXPECT_EQ(pieces->size(), 3u);
  EXPECT_EQ((*pieces)[1], S({8, 768}));
  EXPECT_FALSE(split(S({8, 2304}), -1, {768, 768}, error));
  EXPECT_EQ(*concat({S({2, 3}), S({2, 5})}, 1, error), S({2, 8}));
  EXPECT_FALSE(concat({S({2, 3}), S({3, 5})}, 1, error));
  EXPECT_EQ(*slice(S({1024, 768}), {0, 0}, {64, 768}, error), S({64, 768}));
  EXPECT_FALSE(slice(S({1024, 768}), {1000, 0}, {64, 768}, error));
}

TEST(ShapeRules, EmbeddingAndLoss) {
  std::string error;
  EXPECT_EQ(*embedding(S({50257, 768}), S({8, 64}), error), S({8, 64, 768}));
  EXPECT_FALSE(embedding(S({50257}), S({8, 64}), error));
  EXPECT_EQ(*crossEntropy(S({8, 64, 50257}), S({8, 64}), error), S({}));
  EXPECT_FALSE(crossEntropy(S({8, 64, 50257}), S({8, 32}), error));
}

TEST(ShapeRules, Overflow) {
  EXPECT_FALSE(numElements(S({1ll << 40, 1ll << 40})));
  EXPECT_EQ(*numElements(S({})), 1);
  std::string error;
  EXPECT_FALSE(reshape(S({4}), {1ll << 62, 1ll << 62}, error));
}
