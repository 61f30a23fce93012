//===- ShapeRules.h - Shape rules of the nn operations ---------*- C++ -*-===//
//
// The shape rules of every nn operation, written once over plain integer
// shapes so the front end's type checker and the dialect's verifiers agree
// on what is legal and say it in the same words. No MLIR types here: the
// front end links this without the MLIR libraries.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_SHAPERULES_H
#define HOTSTAGE_DIALECTS_NN_SHAPERULES_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#include <cstdint>
#include <optional>
#include <string>

namespace hotstage::nn::shape {

using Shape = llvm::SmallVector<int64_t, 4>;

/// Formats a shape as `[8, 64, 768]`.
std::string str(llvm::ArrayRef<int64_t> shape);

/// Number of elements of a shape, or nullopt on overflow.
std::optional<int64_t> numElements(llvm::ArrayRef<int64_t> shape);

/// Resolves a possibly negative axis against `rank`; nullopt if out of range.
std::optional<int64_t> normalizeAxis(int64_t axis, int64_t rank);

// Every rule below returns the result shape, or nullopt with `error` set to
// a lower-case message (no trailing period) that names the operation and
// the offending shapes.

/// NumPy broadcasting of two operand shapes of `op`.
std::optional<Shape> broadcast(llvm::StringRef op, llvm::ArrayRef<int64_t> a,
                               llvm::ArrayRef<int64_t> b, std::string &error);

/// Batched matrix product: a[..., M, K] x b[..., K, N] -> [..., M, N], the
/// batch dimensions broadcast. Both operands need rank >= 2 after a rank-1
/// operand is treated as a row (a) or a column (b) vector, as NumPy does.
std::optional<Shape> matmul(llvm::ArrayRef<int64_t> a,
                            llvm::ArrayRef<int64_t> b, std::string &error);

/// y = x W^T + b: x[..., in], weight[out, in], bias[out] (optional).
std::optional<Shape> linear(llvm::ArrayRef<int64_t> x,
                            llvm::ArrayRef<int64_t> weight,
                            std::optional<llvm::ArrayRef<int64_t>> bias,
                            std::string &error);

/// Reduction of `op` over `axes` (may be negative; empty means all).
std::optional<Shape> reduce(llvm::StringRef op, llvm::ArrayRef<int64_t> x,
                            llvm::ArrayRef<int64_t> axes, bool keepDim,
                            std::string &error);

/// Softmax along `axis`; the shape is unchanged.
std::optional<Shape> softmax(llvm::ArrayRef<int64_t> x, int64_t axis,
                             std::string &error);

/// layer_norm / rms_norm over the last dimension: scale and bias [D].
std::optional<Shape> norm(llvm::StringRef op, llvm::ArrayRef<int64_t> x,
                          llvm::ArrayRef<int64_t> scale,
                          std::optional<llvm::ArrayRef<int64_t>> bias,
                          std::string &error);

/// Gather rows of table[V, D] by ids[...] -> [..., D].
std::optional<Shape> embedding(llvm::ArrayRef<int64_t> table,
                               llvm::ArrayRef<int64_t> ids, std::string &error);

/// Causal multi-head attention on q[B, T, H*hd], k and v [B, T, Hkv*hd];
/// H must be a multiple of Hkv (grouped-query attention).
std::optional<Shape> attention(llvm::ArrayRef<int64_t> q,
                               llvm::ArrayRef<int64_t> k,
                               llvm::ArrayRef<int64_t> v, int64_t heads,
                               int64_t kvHeads, std::string &error);

/// Rotary position embedding of x[B, T, H*hd] with an even head size.
std::optional<Shape> rope(llvm::ArrayRef<int64_t> x, int64_t heads,
                          std::string &error);

/// Reshape to `to`; one entry may be -1 and is inferred.
std::optional<Shape> reshape(llvm::ArrayRef<int64_t> x,
                             llvm::ArrayRef<int64_t> to, std::string &error);

/// Permutation of the dimensions.
std::optional<Shape> transpose(llvm::ArrayRef<int64_t> x,
                               llvm::ArrayRef<int64_t> perm,
                               std::string &error);

/// Split along `axis` into pieces of `sizes`, which must add up.
std::optional<llvm::SmallVector<Shape>> split(llvm::ArrayRef<int64_t> x,
                                              int64_t axis,
                                              llvm::ArrayRef<int64_t> sizes,
                                              std::string &error);

/// Concatenation along `axis`; the other dimensions must agree.
std::optional<Shape> concat(llvm::ArrayRef<Shape> xs, int64_t axis,
                            std::string &error);

/// Static slice: `sizes` elements from `offsets`, stride 1, on every axis.
std::optional<Shape> slice(llvm::ArrayRef<int64_t> x,
                           llvm::ArrayRef<int64_t> offsets,
                           llvm::ArrayRef<int64_t> sizes, std::string &error);

/// Mean cross entropy of logits[..., V] against integer targets[...]:
/// a scalar.
std::optional<Shape> crossEntropy(llvm::ArrayRef<int64_t> logits,
                                  llvm::ArrayRef<int64_t> targets,
                                  std::string &error);

} // namespace hotstage::nn::shape

#endif // HOTSTAGE_DIALECTS_NN_SHAPERULES_H
