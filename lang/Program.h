//===- Program.h - A model after type checking and elaboration --*- C++ -*-===//
//
// The front end's output: every block instantiated, every shape concrete,
// every parameter named by its path. It is a flat, typed SSA graph with
// one node per nn operation, plain C++ so `hotstage info` and the tests
// need no MLIR; MLIRGen maps it one to one onto the nn dialect.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_LANG_PROGRAM_H
#define HOTSTAGE_LANG_PROGRAM_H

#include "dialects/nn/ShapeRules.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace hotstage::lang {

enum class DType { F32, BF16, F16, I32, I64 };

/// The shortest decimal form that reads back to the same double, with a
/// `.0` where it would otherwise look like an integer: `0.02`, `1e-05`, `2.0`.
std::string formatNumber(double value);

llvm::StringRef dtypeName(DType dtype);
std::optional<DType> parseDType(llvm::StringRef name);
bool isFloat(DType dtype);
/// Bytes of one element.
int64_t dtypeSize(DType dtype);

struct TensorType {
  DType dtype = DType::F32;
  nn::shape::Shape shape;

  bool operator==(const TensorType &o) const {
    return dtype == o.dtype && shape == o.shape;
  }
  bool operator!=(const TensorType &o) const { return !(*this == o); }
  /// `f32[8, 64, 768]`, or `f32` for a scalar.
  std::string str() const;
};

enum class InitKind { Zeros, Ones, Constant, Normal, Uniform };
llvm::StringRef initKindName(InitKind kind);

/// A trainable parameter; `path` is its name everywhere (checkpoints,
/// plan, MLIR symbol): `blocks.3.attn.qkv.weight`.
struct Param {
  std::string path;
  TensorType type;
  InitKind init = InitKind::Zeros;
  double a = 0, b = 0; // constant value; normal mean/std; uniform low/high
  llvm::SMLoc loc;
  unsigned uses = 0; // references in the forward graph; >1 means tied
};

enum class OpKind {
  ParamRef, // name = param path
  Constant, // f = scalar value
  Add,
  Sub,
  Mul,
  Div,
  Maximum,
  Neg,
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Tanh,
  Sigmoid,
  Relu,
  Silu,
  Gelu, // flag = tanh approximation
  Matmul,
  Linear,     // operands x, w[, b]
  ReduceSum,  // ints = axes, flag = keepdim
  ReduceMean, // ints = axes, flag = keepdim
  ReduceMax,  // ints = axes, flag = keepdim
  Softmax,    // axis
  LayerNorm,  // operands x, scale[, bias]; f = eps
  RmsNorm,    // operands x, scale; f = eps
  Embedding,  // operands table, ids
  Attention,  // heads, kvHeads, flag = causal, f = scale (0: 1/sqrt(hd))
  Rope,       // heads, f = theta
  Reshape,
  Transpose, // ints = permutation
  Split,     // axis; several results
  Concat,    // axis
  Slice,     // ints = offsets; sizes are the result shape
  CrossEntropy,
};
llvm::StringRef opName(OpKind kind);

struct Node {
  OpKind kind;
  llvm::SMLoc loc;
  std::string scope; // instance path, "" for the model itself
  llvm::SmallVector<unsigned, 3> operands;
  unsigned firstResult = 0; // results are values firstResult, +1, ...
  unsigned numResults = 1;
  // Attributes; which ones an op uses is listed at OpKind.
  int64_t axis = 0, heads = 0, kvHeads = 0;
  llvm::SmallVector<int64_t, 4> ints;
  double f = 0;
  bool flag = false;
  std::string name;
};

/// A model input (`tokens`, `targets`).
struct Input {
  std::string name;
  TensorType type;
  llvm::SMLoc loc;
};

/// One field of the `train` section after defaults and `-D` overrides.
struct TrainField {
  enum class Kind { Int, Float, Name } kind;
  std::string name;
  int64_t i = 0;
  double f = 0;
  std::string s;
  bool isSet = false; // given in the file or by -D, not a default
};

struct Program {
  std::string modelName;
  llvm::SMLoc modelLoc;
  std::vector<Param> params;
  std::vector<Input> inputs; // values 0 .. inputs.size()-1
  std::vector<TensorType> values;
  std::vector<Node> nodes;
  unsigned output = 0;
  std::vector<TrainField> train;

  const TrainField *trainField(llvm::StringRef name) const;
  TrainField *trainField(llvm::StringRef name) {
    return const_cast<TrainField *>(std::as_const(*this).trainField(name));
  }
  int64_t trainInt(llvm::StringRef name) const;
  double trainFloat(llvm::StringRef name) const;
  llvm::StringRef trainName(llvm::StringRef name) const;
  int64_t numParameters() const;
};

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_PROGRAM_H
