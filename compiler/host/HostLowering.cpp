//===- HostLowering.cpp - Training module to host kernels and a plan -----===//
//
// Walks @forward, @backward_input and @backward_weight (or the one
// @backward) and @optimizer_step in the order one training step runs them
// and, op by op:
//
//  * gives each value a buffer (views such as reshape, param_ref and
//    state_ref alias the buffer they read; function arguments alias the
//    result they come from, per `nn.source`);
//  * emits a kernel: elementwise ops and reductions as linalg.generic on
//    memrefs, row-wise ops (norms, softmax, cross entropy, attention, rope,
//    embedding) as scf loops; each kernel takes its buffers as bare
//    pointers with static shapes, then a [begin, end) range of its
//    outermost parallel dimension that the runtime splits over threads;
//  * or a GEMM action for matmul and linear, with transposes of the last
//    two dimensions folded into the GEMM's operand flags.
//
// Liveness is recorded as the action index of each buffer's first and last
// use; the memory plan (Plan.cpp) packs the temporaries.
//
//===----------------------------------------------------------------------===//

#include "compiler/host/HostLowering.h"
#include "compiler/host/KernelBuilder.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <map>
#include <set>
#include <tuple>

using namespace mlir;
using namespace hotstage;
using namespace hotstage::nn;
using namespace hotstage::host::kernels;
using plan::BufferKind;

namespace {

/// Sums over leading dimensions into fewer elements than this, of at
/// least kColumnSumsFrom each, are column sums (HostLowering::columnSums).
constexpr int64_t kColumnSumsBelow = 32768, kColumnSumsFrom = 64;
/// The most parts of at most `most` (at least 1) that divide `rows` evenly.
int64_t partsOfRows(int64_t rows, int64_t most) {
  int64_t parts = std::max<int64_t>(1, std::min(rows, most));
  while (rows % parts)
    --parts;
  return parts;
}

/// A norm's input gradient sums its weight's and bias's gradients (and the
/// bias gradient of what it writes) too where a lane's share of those sums
/// is at most this many floats (registers: 3 x 24 for 768 columns).
constexpr int64_t kNormSumsPerLane = 72;
/// Column sums split their rows into parts of this many rows (a GPU warp's
/// share of a norm gradient's rows)...
constexpr int64_t kRowsPerPart = 8;
/// ... and add up to this many parts in order before they are folded (on
/// a GPU, the warps of a norm gradient's block, in shared memory).
constexpr int64_t kPartsPerBlock = 4;

/// The parts of a column sum over `rows` rows, and how many of them go to
/// a block: the same for every kernel that sums columns (a norm
/// gradient's, HostLowering::columnSums), so that a sum has the same bits
/// whichever computes it (a pipeline's cut moves some from one to the
/// other).
std::pair<int64_t, int64_t> columnSumParts(int64_t rows) {
  int64_t parts = partsOfRows(rows, rows / kRowsPerPart);
  int64_t perBlock = kPartsPerBlock;
  while (parts % perBlock)
    perBlock /= 2;
  return {parts, perBlock};
}

/// Over elements, an embedding's gradient runs one index per column and
/// bucket of token ids (id mod this).
constexpr int64_t kEmbeddingBuckets = 64;

/// Partial sums of a whole-tensor reduction of `count` elements split over
/// elements, each folding at least 64 (a power of two, at most 32,768:
/// enough GPU threads to keep the memory busy, few enough for one warp to
/// fold them); 0 where one warp folds the elements themselves.
static int64_t partialSumsFor(int64_t count) {
  constexpr int64_t kPerThread = 64, kWarp = 32, kMost = 32768;
  if (count <= kWarp * kPerThread)
    return 0;
  int64_t parts = kWarp;
  while (parts * 2 <= kMost && parts * 2 * kPerThread <= count)
    parts *= 2;
  return parts;
}

RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

std::string dtypeName(Type t) {
  if (t.isF32())
    return "f32";
  if (t.isInteger(32))
    return "i32";
  if (t.isInteger(64))
    return "i64";
  if (t.isBF16())
    return "bf16";
  if (t.isF16())
    return "f16";
  return "?";
}

/// A buffer of `kind` holding a `shape` tensor of `element`.
plan::Buffer describeBuffer(BufferKind kind, std::string name,
                            ArrayRef<int64_t> shape, Type element) {
  plan::Buffer b;
  b.kind = kind;
  b.name = std::move(name);
  b.dtype = dtypeName(element);
  b.shape.assign(shape.begin(), shape.end());
  b.bytes = (element.getIntOrFloatBitWidth() + 7) / 8;
  for (int64_t d : shape)
    b.bytes *= d;
  return b;
}

/// A splat constant's value, if `v` is one.
std::optional<Attribute> splatOf(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  if (!c || !c.getValue().isSplat())
    return std::nullopt;
  return c.getValue().getSplatValue<Attribute>();
}

/// A logit's loss gradient: exp(x - max) * factor (scale / the row's sum
/// of exponentials), less `scale` at the target column.
static Value logitGradient(Kernel &k, Value x, Value j, Value target, Value mx,
                           Value factor, Value scale) {
  Value d = k.mul(k.exp(k.sub(x, mx)), factor);
  Value minus =
      arith::SelectOp::create(k.b, k.loc, k.equal(j, target), scale, k.f32(0));
  return k.sub(d, minus);
}

/// Over elements (the GPU), a row on 32 lanes (RowLanes): its mean and
/// reciprocal standard deviation as rowStatistics has them (mean 0 for
/// rms_norm), each sum over the lanes.
static std::pair<Value, Value> laneStatistics(RowLanes &lanes, Value x,
                                              double eps, bool rms) {
  Kernel &k = lanes.k;
  Value r = lanes.row;
  int64_t d = lanes.d;
  Value mean = k.f32(0);
  if (!rms)
    mean = k.mul(lanes.sum([&](Value j) {
      return k.load(x, {r, j});
    }),
                 k.f32(1.0 / d));
  Value sq = lanes.sum([&](Value j) {
    Value c = k.sub(k.load(x, {r, j}), mean);
    return k.mul(c, c);
  });
  Value var = k.add(k.mul(sq, k.f32(1.0 / d)), k.f32(eps));
  return {mean, math::RsqrtOp::create(k.b, k.loc, var)};
}

/// A norm's input gradient on row `lanes.row` of dy, x and weight w (a row
/// on 32 lanes): dxhat = dy * w; dx = rstd * (dxhat - mean(dxhat) - xhat *
/// mean(dxhat * xhat)), without the mean(dxhat) term for rms_norm.
struct NormGradRow {
  NormGradRow(RowLanes &lanes, Value dY, Value X, Value W, double eps, bool rms)
      : k(lanes.k), r(lanes.row), dY(dY), X(X), W(W) {
    std::tie(mean, rstd) = laneStatistics(lanes, X, eps, rms);
    Value sumG = rms ? k.f32(0) : lanes.sum([&](Value j) { return g(j); });
    Value sumGX = lanes.sum([&](Value j) { return k.mul(g(j), xhat(j)); });
    meanG = k.mul(sumG, k.f32(1.0 / lanes.d));
    meanGX = k.mul(sumGX, k.f32(1.0 / lanes.d));
  }
  Value xhat(Value j) { return k.mul(k.sub(k.load(X, {r, j}), mean), rstd); }
  Value g(Value j) { return k.mul(k.load(dY, {r, j}), k.load(W, j)); }
  Value dx(Value j) {
    Value v = k.sub(k.sub(g(j), meanG), k.mul(xhat(j), meanGX));
    return k.mul(v, rstd);
  }

  Kernel &k;
  Value r, dY, X, W;
  Value mean, rstd, meanG, meanGX;
};

MemRefType memrefOf(ArrayRef<int64_t> shape, Type element) {
  return MemRefType::get(shape, element);
}

//===----------------------------------------------------------------------===//
// Scalar semantics of the elementwise ops
//===----------------------------------------------------------------------===//

Value sigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1));
  Value e = math::ExpOp::create(b, loc, arith::NegFOp::create(b, loc, x));
  return arith::DivFOp::create(b, loc, one,
                               arith::AddFOp::create(b, loc, one, e));
}

/// f'(x) of the activations, times dy.
Value activationGrad(OpBuilder &b, Location loc, StringRef kind, Value dy,
                     Value x) {
  auto c = [&](double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v)).getResult();
  };
  auto mul = [&](Value p, Value q) {
    return arith::MulFOp::create(b, loc, p, q).getResult();
  };
  auto add = [&](Value p, Value q) {
    return arith::AddFOp::create(b, loc, p, q).getResult();
  };
  auto sub = [&](Value p, Value q) {
    return arith::SubFOp::create(b, loc, p, q).getResult();
  };
  Value d;
  if (kind == "relu") {
    Value positive =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x, c(0));
    return arith::SelectOp::create(b, loc, positive, dy, c(0));
  }
  if (kind == "sigmoid") {
    Value s = sigmoid(b, loc, x);
    d = mul(s, sub(c(1), s));
  } else if (kind == "tanh") {
    Value t = math::TanhOp::create(b, loc, x);
    d = sub(c(1), mul(t, t));
  } else if (kind == "silu") {
    Value s = sigmoid(b, loc, x);
    d = mul(s, add(c(1), mul(x, sub(c(1), s))));
  } else if (kind == "gelu_tanh") {
    double k = std::sqrt(2.0 / M_PI);
    Value x2 = mul(x, x);
    Value u = mul(c(k), add(x, mul(c(0.044715), mul(x2, x))));
    Value t = math::TanhOp::create(b, loc, u);
    Value du = mul(c(k), add(c(1), mul(c(3 * 0.044715), x2)));
    d = add(mul(c(0.5), add(c(1), t)),
            mul(mul(c(0.5), x), mul(sub(c(1), mul(t, t)), du)));
  } else { // gelu (erf)
    Value cdf = mul(
        c(0.5), add(c(1), math::ErfOp::create(b, loc, mul(x, c(M_SQRT1_2)))));
    Value pdf = mul(c(1 / std::sqrt(2 * M_PI)),
                    math::ExpOp::create(b, loc, mul(c(-0.5), mul(x, x))));
    d = add(cdf, mul(x, pdf));
  }
  return mul(dy, d);
}

/// The scalar computation of elementwise `op` on `in` (its operands' element
/// values, in order).
FailureOr<Value> scalarOf(OpBuilder &b, Location loc, Operation *op,
                          ValueRange in, Type outElement) {
  auto c = [&](double v) {
    return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v)).getResult();
  };
  bool isFloat = isa<FloatType>(outElement);
  auto binary = [&](auto floatOp, auto intOp) -> FailureOr<Value> {
    if (isFloat)
      return floatOp.getResult();
    if (!intOp)
      return op->emitError("host lowering: integer '")
             << op->getName() << "' is not supported";
    return intOp;
  };
  return llvm::TypeSwitch<Operation *, FailureOr<Value>>(op)
      .Case([&](AddOp) -> FailureOr<Value> {
        if (isFloat)
          return arith::AddFOp::create(b, loc, in[0], in[1]).getResult();
        return arith::AddIOp::create(b, loc, in[0], in[1]).getResult();
      })
      .Case([&](SubOp) -> FailureOr<Value> {
        if (isFloat)
          return arith::SubFOp::create(b, loc, in[0], in[1]).getResult();
        return arith::SubIOp::create(b, loc, in[0], in[1]).getResult();
      })
      .Case([&](MulOp) -> FailureOr<Value> {
        if (isFloat)
          return arith::MulFOp::create(b, loc, in[0], in[1]).getResult();
        return arith::MulIOp::create(b, loc, in[0], in[1]).getResult();
      })
      .Case([&](DivOp) -> FailureOr<Value> {
        return binary(arith::DivFOp::create(b, loc, in[0], in[1]), Value());
      })
      .Case([&](MaximumOp) -> FailureOr<Value> {
        return binary(arith::MaximumFOp::create(b, loc, in[0], in[1]), Value());
      })
      .Case([&](MinimumOp) -> FailureOr<Value> {
        return binary(arith::MinimumFOp::create(b, loc, in[0], in[1]), Value());
      })
      .Case([&](GreaterEqualOp) -> FailureOr<Value> {
        Value ge = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGE,
                                         in[0], in[1]);
        return arith::SelectOp::create(b, loc, ge, c(1), c(0)).getResult();
      })
      .Case([&](NegOp) -> FailureOr<Value> {
        return arith::NegFOp::create(b, loc, in[0]).getResult();
      })
      .Case([&](ExpOp) -> FailureOr<Value> {
        return math::ExpOp::create(b, loc, in[0]).getResult();
      })
      .Case([&](LogOp) -> FailureOr<Value> {
        return math::LogOp::create(b, loc, in[0]).getResult();
      })
      .Case([&](SqrtOp) -> FailureOr<Value> {
        return math::SqrtOp::create(b, loc, in[0]).getResult();
      })
      .Case([&](RsqrtOp) -> FailureOr<Value> {
        return math::RsqrtOp::create(b, loc, in[0]).getResult();
      })
      .Case([&](TanhOp) -> FailureOr<Value> {
        return math::TanhOp::create(b, loc, in[0]).getResult();
      })
      .Case(
          [&](SigmoidOp) -> FailureOr<Value> { return sigmoid(b, loc, in[0]); })
      .Case([&](ReluOp) -> FailureOr<Value> {
        Value positive = arith::CmpFOp::create(
            b, loc, arith::CmpFPredicate::OGT, in[0], c(0));
        return arith::SelectOp::create(b, loc, positive, in[0], c(0))
            .getResult();
      })
      .Case([&](SiluOp) -> FailureOr<Value> {
        return arith::MulFOp::create(b, loc, in[0], sigmoid(b, loc, in[0]))
            .getResult();
      })
      .Case([&](GeluOp gelu) -> FailureOr<Value> {
        Value x = in[0];
        auto mul = [&](Value p, Value q) {
          return arith::MulFOp::create(b, loc, p, q).getResult();
        };
        auto add = [&](Value p, Value q) {
          return arith::AddFOp::create(b, loc, p, q).getResult();
        };
        Value inner;
        if (gelu.getApproximate() == "tanh") {
          Value u = mul(c(std::sqrt(2.0 / M_PI)),
                        add(x, mul(c(0.044715), mul(x, mul(x, x)))));
          inner = math::TanhOp::create(b, loc, u);
        } else {
          inner = math::ErfOp::create(b, loc, mul(x, c(M_SQRT1_2)));
        }
        return mul(mul(c(0.5), x), add(c(1), inner));
      })
      .Case([&](ActivationGradOp grad) -> FailureOr<Value> {
        return activationGrad(b, loc, grad.getKind(), in[0], in[1]);
      })
      .Case([&](CastOp) -> FailureOr<Value> {
        Type from = in[0].getType();
        if (from == outElement)
          return in[0];
        if (isa<IntegerType>(from) && isa<FloatType>(outElement))
          return arith::SIToFPOp::create(b, loc, outElement, in[0]).getResult();
        if (isa<FloatType>(from) && isa<IntegerType>(outElement))
          return arith::FPToSIOp::create(b, loc, outElement, in[0]).getResult();
        if (isa<IntegerType>(from))
          return from.getIntOrFloatBitWidth() <
                         outElement.getIntOrFloatBitWidth()
                     ? arith::ExtSIOp::create(b, loc, outElement, in[0])
                           .getResult()
                     : arith::TruncIOp::create(b, loc, outElement, in[0])
                           .getResult();
        // Rounded to bf16 by integer ops, as a store into a bf16 buffer
        // is (bf16Bits): no libcall where the CPU lacks AVX512-BF16.
        if (outElement.isBF16() && from.isF32())
          return arith::BitcastOp::create(b, loc, outElement,
                                          bf16Bits(b, loc, in[0]))
              .getResult();
        return from.getIntOrFloatBitWidth() < outElement.getIntOrFloatBitWidth()
                   ? arith::ExtFOp::create(b, loc, outElement, in[0])
                         .getResult()
                   : arith::TruncFOp::create(b, loc, outElement, in[0])
                         .getResult();
      })
      // A linear's bias is broadcast into its output before the GEMM.
      .Case<BroadcastOp, StoreOp, LinearOp>(
          [&](Operation *) -> FailureOr<Value> { return in[0]; })
      .Default([&](Operation *other) -> FailureOr<Value> {
        return other->emitError("host lowering: '")
               << other->getName() << "' is not elementwise";
      });
}

bool isElementwise(Operation *op) {
  return isa<AddOp, SubOp, MulOp, DivOp, MaximumOp, MinimumOp, GreaterEqualOp,
             NegOp, ExpOp, LogOp, SqrtOp, RsqrtOp, TanhOp, SigmoidOp, ReluOp,
             SiluOp, GeluOp, ActivationGradOp, CastOp, BroadcastOp>(op);
}

//===----------------------------------------------------------------------===//
// The lowering
//===----------------------------------------------------------------------===//

class HostLowering {
public:
  /// Lowers into `kernels`, appending to the kernel table `table` (shared
  /// by the ranks of a pipeline).
  HostLowering(ModuleOp module, ModuleOp kernels,
               std::vector<std::string> table,
               std::map<std::string, int> &kernelByText,
               host::KernelOptions options)
      : module(module), ctx(module.getContext()), kernels(kernels),
        kernelByText(kernelByText), options(options) {
    ctx->loadDialect<arith::ArithDialect, func::FuncDialect,
                     linalg::LinalgDialect, math::MathDialect,
                     memref::MemRefDialect, scf::SCFDialect,
                     vector::VectorDialect>();
    if (options.warpShuffles)
      ctx->loadDialect<gpu::GPUDialect>();
    plan.kernels = std::move(table);
    // Kernel names stay unique in the module that the ranks' plans share
    // (calls find their kernels by name): numbers go on after the largest
    // an earlier rank used.
    for (auto func : kernels.getOps<func::FuncOp>()) {
      unsigned n = 0;
      StringRef digits = func.getSymName().drop_front(4).split('_').first;
      if (func.getSymName().starts_with("hs_k") && !digits.getAsInteger(10, n))
        kernelCounter = std::max(kernelCounter, n + 1);
    }
    firstOwnKernel = static_cast<int>(plan.kernels.size());
  }

  /// The whole step on one rank.
  FailureOr<plan::Plan> run();
  /// One rank of a pipeline: its chunks' functions and its optimizer step.
  /// `pipeline` has the schedule; sends and exchanges are filled in.
  FailureOr<plan::Plan> runRank(plan::Pipeline pipeline,
                                const host::PipelineUse &use);

private:
  // Buffers.
  int bufferFor(Value v);
  /// A temp for `v`; in bf16 when `bf16Allowed` (its producer stores
  /// through Kernel::store) and storeInBf16(v).
  int newTemp(Value v, bool bf16Allowed = false);
  /// A temp for the output of a GEMM without an epilogue; in bf16 where
  /// keepOutputInBf16(v).
  int newGemmOutput(Value v);
  int newTempOf(Value v, Type element);
  /// precision = bf16: whether `v` is read by GEMMs only (through
  /// reshapes and folded transposes, and as a result saved for functions
  /// that read it by GEMMs only), and perhaps by a bias's gradient (a sum
  /// over leading dimensions, which then sums the bf16 values). Its
  /// producer then stores it in bf16 directly, rounded as the GEMMs' cast
  /// kernel would round it: the same bits, without the f32 copy and the
  /// cast's pass.
  bool storeInBf16(Value v);
  bool readByGemmsOnly(Value v);
  /// Whether some GEMM reads `v` (through reshapes and folded transposes).
  bool readByAGemm(Value v);
  /// precision = bf16: whether `v`, the output of a GEMM without an
  /// epilogue or of fused attention (which make it in f32 registers), is
  /// kept in bf16 (as PyTorch's autocast keeps a linear layer's): where
  /// everything that reads it reads bf16 or widens it as it loads, in this
  /// function or in the functions it is saved for, and no other rank
  /// receives it.
  bool keepOutputInBf16(Value v);
  bool readInBf16(Value v);
  /// --bf16-residual: whether `v` is a stretch of the residual stream or of
  /// its gradient to store in bf16: an add's f32 activation (rank 2 or
  /// more, in a forward or backward pass) that only kernels, GEMMs and
  /// further such adds read, in this function or in those it is saved
  /// for, or the next chunk's rank (sentInBf16). A GEMM that adds it (an
  /// epilogue's addend) then writes its sum in bf16 too: cuBLASLt's C has
  /// D's type.
  bool residualInBf16(Value v);
  llvm::DenseMap<Value, bool> residualStretches;
  /// The same for the last norm's input gradient, where the stream's
  /// gradient starts: a value that such an add reads, and whose other
  /// readers read bf16 too.
  bool startsResidualInBf16(Value v);
  /// Whether every reader of `v`, or the reader of `use`, reads a stretch of
  /// the residual stream as residualInBf16 asks.
  bool residualReader(Value v);
  bool residualReader(OpOperand &use);
  /// Whether `use`, of a function's result, goes only to arguments of
  /// functions on this rank (not to another rank) that are all `ok`.
  bool readersOfResult(OpOperand &use, llvm::function_ref<bool(Value)> ok);
  /// Whether `use`, of a function's result, is what a chunk sends another
  /// rank (an activation after its forward, an input gradient after its
  /// backward).
  bool sentToAnotherRank(OpOperand &use);
  /// --bf16-residual: the values a chunk sends and its neighbour receives
  /// in bf16, by type, the same on both sides: f32 activations and their
  /// gradients (rank 2 or more), which are the residual stream where a
  /// cut falls between layers. The sender's is residualInBf16 (an error
  /// otherwise).
  bool sentInBf16(Type type);
  /// Over elements: the loss gradient that cross entropy `ce` writes over
  /// its logits as it computes the loss (llm.c's fused classifier), or
  /// null. It can where the logits go nowhere else but to that gradient, in
  /// the backward, which scales by a constant (the microbatches' share)
  /// and reads the same targets, and would store it as the logits are
  /// stored: one pass over the logits fewer.
  CrossEntropyGradOp lossGradientInForward(CrossEntropyOp ce);
  /// The loss gradients their forward wrote (lossGradientInForward): their
  /// value is the buffer of the logits they read.
  llvm::DenseSet<Operation *> gradientsInForward;
  /// The function's cross entropy losses per position (`token_losses`),
  /// kept alive to its end, or -1.
  int tokenLosses = -1;
  /// The activations chunk `chunk` receives (its forward's pipe.boundary
  /// arguments): the first results of the chunk before's forward and of
  /// its own backward, which go to another rank.
  int boundaryInputs(int chunk);
  void findResultReaders();
  /// The arguments of other functions that receive result K of function F
  /// (their `nn.source`), by "F:K".
  llvm::StringMap<SmallVector<Value>> resultReaders;
  /// The padded row length of `v`'s buffer (plan::Buffer::pitch), or 0: a
  /// GEMM's output or cross entropy's gradient whose rows (its last
  /// dimension, at least 64 elements) are no multiple of 8 elements, so
  /// that a bf16 row does not start on a 16-byte boundary (cuBLASLt's
  /// tensor-core kernels want them there; llm.c pads GPT-2's vocabulary
  /// for this), when only GEMMs and cross entropy read it (readRowWise).
  int64_t rowPitchFor(Value v);
  bool readRowWise(Value v);
  /// A [rows, cols] view of `buffer`'s `element`s, with its pitch.
  MemRefType rowsView(int buffer, int64_t rows, int64_t cols, Type element) {
    int64_t pitch = buffer >= 0 ? plan.buffers[buffer].pitch : 0;
    if (!pitch)
      return MemRefType::get({rows, cols}, element);
    return MemRefType::get({rows, cols}, element,
                           StridedLayoutAttr::get(ctx, 0, {pitch, 1}));
  }
  /// The element type a kernel stores into `buffer` with.
  Type storedType(int buffer) {
    return bufferElement(buffer, Float32Type::get(ctx));
  }
  /// bf16 for a buffer kept in bf16, else `declared`.
  Type bufferElement(int buffer, Type declared) {
    return plan.buffers[buffer].dtype == "bf16" ? BFloat16Type::get(ctx)
                                                : declared;
  }
  /// Whether `split` (along `axis`) makes q, k and v of a packed QKV
  /// buffer that only fused attention and its gradient read (here, or in
  /// the functions they are saved for), each in its place: the split then
  /// makes no copies.
  bool splitsForAttention(SplitOp split, int64_t axis);
  bool readAsAttentionInput(Value v, int piece);
  /// Which of q, k, v (0, 1, 2) a value is within its packed QKV buffer,
  /// for the values splitsForAttention left there (and the arguments that
  /// receive them), and per function the same of its results.
  llvm::DenseMap<Value, int> qkvPiece;
  std::map<std::string, SmallVector<int>> resultPieces;
  /// Attention and its gradient as library calls on bf16 copies.
  bool libraryAttention() const {
    using Attention = host::KernelOptions::Attention;
    return options.attention == Attention::Library ||
           (options.attention == Attention::LibraryIfBf16 && bf16Gemms);
  }
  /// The buffer an elementwise result is written to: the parameter or
  /// state it is stored into when that is safe (findInPlaceStores), else a
  /// new temp.
  int outputFor(Value v);
  void findInPlaceStores(func::FuncOp func);
  int newScratch(ArrayRef<int64_t> shape, Type element);
  void touch(int buffer);

  // Actions.
  /// A kernel of `args`; `buffers`, those a call will give it where the
  /// caller knows them (Kernel::narrowestBits).
  Kernel startKernel(StringRef name, Location loc, ArrayRef<Type> args,
                     ArrayRef<int> buffers = {});
  int finishKernel(Kernel &k);
  /// The kernel table's index of `func`: an earlier kernel of the same
  /// text (and `func` erased), or `func` added.
  int keepKernel(func::FuncOp func);
  /// Calls `kernel` on `buffers`. Where a buffer is kept in bf16
  /// (keepOutputInBf16) but the kernel reads f32, a copy of the
  /// kernel reads it in bf16 (retypedForBf16), or a widened copy of it.
  void call(int kernel, int64_t parallel, ArrayRef<int> buffers, Operation *op);
  /// `kernel` with its f32 memref arguments `which` read and written in
  /// bf16: each load widens (exactly), each store rounds (as Kernel::store
  /// does). -1 where the kernel uses such an argument otherwise.
  int retypedForBf16(int kernel, ArrayRef<unsigned> which);
  LogicalResult lowerFunction(func::FuncOp func);
  LogicalResult lowerOp(Operation *op);

  // Op groups.
  LogicalResult lowerElementwise(Operation *op, ArrayRef<Value> operands,
                                 int out, RankedTensorType outType);
  LogicalResult lowerFused(FusedOp fused);
  /// The scalar results (one per output) from the operands' scalars.
  using ScalarBody = llvm::function_ref<FailureOr<SmallVector<Value>>(
      OpBuilder &, Location, ArrayRef<Value>)>;
  /// One linalg.generic over `shape`, parallel over its first dimension,
  /// reading `operands` with broadcasting and writing the `outs` buffers.
  /// With `flat`, every operand but scalars is read as an array of
  /// `shape` (one dimension), element i at i. Over elements, `columnSum`
  /// (a sum of the first output over its leading dimensions: columnSumOf)
  /// is summed as that output is written (elementwiseColumnSum).
  LogicalResult emitElementwiseKernel(Operation *op, StringRef name,
                                      ArrayRef<Value> operands,
                                      ArrayRef<int> outs,
                                      ArrayRef<int64_t> shape,
                                      ArrayRef<Type> outElements,
                                      ScalarBody body, bool flat = false,
                                      ReduceSumOp columnSum = ReduceSumOp());
  /// The sum over leading dimensions of elementwise `op`'s first result
  /// that its kernel can compute as it writes it (over elements, unless a
  /// GEMM's bgrad epilogue is to): null where there is none.
  ReduceSumOp elementwiseColumnSum(Operation *op, ArrayRef<int64_t> shape);
  /// The optimizer step's updates of whole parameters (an nn.fused over
  /// the parameter, its gradient and moments and shared scalars, stored
  /// back in place) that run the same body: grouped, each group one kernel
  /// at its first member's place over the members' buffers laid back to
  /// back (plan.contiguous), which also writes the splats a member's
  /// inputs are stored with after it (the gradients zeroed for the next
  /// step). Members join a group only when nothing between the first and
  /// them reads what they write or writes what they read.
  void findUpdateGroups(func::FuncOp func);
  struct UpdateGroup {
    SmallVector<FusedOp> members;
    /// Per member, the splat stores into its inputs the kernel makes.
    SmallVector<SmallVector<StoreOp>> zeroed;
  };
  llvm::DenseMap<Operation *, UpdateGroup> updateGroups; // by first member
  LogicalResult lowerUpdateGroup(const UpdateGroup &group);
  /// The buffers of `group` that its kernel reads as one array each (per
  /// input and result of the members, when there are several).
  std::vector<std::vector<int>> updateRuns(const UpdateGroup &group);
  LogicalResult lowerReduce(Operation *op);
  /// Every operand's sum of squares in few kernels: operands that an
  /// update group lays back to back are read as one array.
  LogicalResult lowerSquaredNorms(SquaredNormsOp op);
  LogicalResult lowerGemm(Operation *op, Value a, Value b, bool transB,
                          Value bias, int out, bool accumulateIntoOut = false,
                          Operation *epilogue = nullptr);
  /// The reader of `gemm` its epilogue computes (options.gemmEpilogues),
  /// or null: one whose inputs exist when the GEMM runs and whose result
  /// the GEMM can write in its place.
  Operation *epilogueFor(Operation *gemm);
  /// The gradient accumulator a GEMM without bias can add its product into
  /// (`store(add(ref S, gemm), S)` with nothing reading S in between), or
  /// -1; the add is then skipped. `writer`, where given, is the earlier
  /// op whose kernel writes it in the GEMM's place: nothing may read S
  /// from there on.
  int accumulatorFor(Operation *gemm, Operation *writer = nullptr);
  LogicalResult lowerRowOp(Operation *op);
  LogicalResult lowerAttention(Operation *op);
  /// options.attention: the library's fused attention on bf16 copies.
  LogicalResult lowerLibraryAttention(Operation *op);
  /// f32 copy `to` of bf16 buffer `from` (exact).
  void widenBf16(int from, int to, Operation *op);
  LogicalResult lowerDataMovement(Operation *op);
  LogicalResult lowerLrSchedule(LrScheduleOp op);
  void fill(int buffer, RankedTensorType type, Attribute value, Operation *op);
  void copyInto(int from, int to, RankedTensorType type, Operation *op);

  /// `v` with a transpose of its last two dimensions folded away: the
  /// value to read and whether to read it transposed.
  std::pair<Value, bool> unwrapTranspose(Value v);

  /// Model name, microbatches, batch, sequence and vocabulary; fails on
  /// options the model cannot take.
  LogicalResult describeModel();
  /// precision = bf16: GEMMs read bf16 copies of their operands (rounded to
  /// nearest even) and accumulate in f32.
  bool bf16Gemms = false;
  /// Gradient accumulators that a GEMM writes afresh each step (one
  /// microbatch: its one contribution, beta = 0), which the optimizer step
  /// need not zero after use (as PyTorch's zero_grad(set_to_none=True)
  /// leaves the next backward to write them).
  std::set<int> overwrittenGradients;
  /// Whether the store of `value` into `target` zeroes such an accumulator.
  bool zeroesOverwritten(Value value, int target) {
    auto splat = splatOf(value);
    auto zero = splat ? dyn_cast<FloatAttr>(*splat) : FloatAttr();
    return zero && zero.getValue().isZero() &&
           overwrittenGradients.count(target);
  }
  /// A bf16 copy of f32 buffer `buffer` (a scratch the cast kernel fills;
  /// for a parameter, a state the optimizer step fills: weightCopies).
  int castToBf16(int buffer, Operation *op);
  /// The cast kernel: `copy` (bf16) gets `buffer` (f32) rounded.
  void castInto(int copy, int buffer, Operation *op);
  /// The parameters GEMMs read in bf16 and their copies (state buffers
  /// "P:bf16"): written once a step, by the optimizer step's updates as
  /// they store the new values (copiesWrittenBy) or by casts after them,
  /// and by @cast_weights (the runtime's, after it initialises, loads or
  /// changes parameters), rather than in every microbatch.
  std::map<int, int> weightCopies;
  /// The copy of parameter `param` (weightCopies), made on first use.
  int weightCopy(int param);
  /// The parameters whose copies the optimizer's update kernels write as
  /// they store the new values: the step's casts at its end skip them.
  std::set<int> copiedByUpdate;
  /// Per result of an update run over `params` (per member, the buffer the
  /// result is stored to; several: laid back to back) that is a parameter
  /// the GEMMs read in bf16: the copies the update writes, laid as the
  /// parameters are (a member no GEMM reads gets one too, so that they line
  /// up). Empty where there is none, or where they cannot line up.
  std::vector<int> copiesWrittenBy(ArrayRef<int> params);
  /// The casts of every weight copy at the end of function `optimizer`,
  /// and as function `castWeights`.
  void addWeightCasts(const std::string &optimizer,
                      const std::string &castWeights);
  /// Over elements: out[j] = sum over r < rows of term(r, j) for each
  /// j < cols, times `scale`, added to out[j]'s own value when
  /// `accumulate`. Index (p, j) of parts x cols (neighbouring indices read
  /// neighbouring columns) sums rows p, p + parts, ... in order into
  /// partial[j][p]; then a column's 32 lanes (RowLanes) fold its
  /// partials. `term` reads the kernel's arguments after the partials,
  /// `args` on `buffers`.
  using ColumnTerm =
      llvm::function_ref<Value(Kernel &, ArrayRef<Value>, Value, Value)>;
  void columnSums(Operation *op, int out, int64_t rows, int64_t cols,
                  double scale, bool accumulate, ArrayRef<Type> args,
                  ArrayRef<int> buffers, ColumnTerm term) {
    columnSums(op, {ColumnSum{out, scale, accumulate, term}}, rows, cols, args,
               buffers);
  }
  /// Several such sums over the same rows and arguments in the same two
  /// kernels (each summed as alone): a norm's weight and bias gradients
  /// read its output's gradient once.
  struct ColumnSum {
    int out;
    double scale;
    bool accumulate;
    ColumnTerm term;
  };
  void columnSums(Operation *op, ArrayRef<ColumnSum> sums, int64_t rows,
                  int64_t cols, ArrayRef<Type> args, ArrayRef<int> buffers);
  /// The second kernel of those: out[j] gets the sum over p < parts of
  /// partial[s][j][p] (f32 [sums, cols, parts]), a column on 32 lanes.
  void foldColumnPartials(Operation *op, ArrayRef<ColumnSum> sums, int64_t cols,
                          int64_t parts, int partial);
  /// The sum of `dy` over its leading dimensions into `d` columns (a layer
  /// norm's bias gradient) that follows `op` with only references between
  /// them, not lowered yet: null where there is none.
  ReduceSumOp biasGradientAfter(Operation *op, Value dy, int64_t d);
  /// The sum over K of GEMM operand `a` (A transposed: [K, M]) that a
  /// later op of its block computes (a linear's bias gradient beside its
  /// weight's), for the GEMM's `bgrad` epilogue: null where there is none
  /// or the epilogues do not include it.
  ReduceSumOp biasGradientOfGemm(Operation *gemm, Value a, bool transA,
                                 int64_t batch, int64_t m);
  /// The weight gradient (layer_norm_scale_grad, rms_norm_scale_grad) of
  /// the same x and eps as norm input gradient `op`, later in its block:
  /// null where there is none.
  Operation *scaleGradientOf(Operation *op);
  /// Over elements: norm input gradient `op` (kernel arguments `types` on
  /// `buffers`: dx, dy, x, w, then the residual stream's gradient it adds
  /// to where `residual`, then dx's bf16 copy, if any) with its weight's
  /// gradient (scaleGradientOf), the bias gradient after that and a bias
  /// gradient that sums what it writes (columnSumOf) summed in the same
  /// kernel: a warp walks rows p, p + parts, ... and each lane adds its
  /// columns' terms in registers (at most kNormSumsPerLane), then a
  /// column's partials are folded as column sums fold theirs. Fails,
  /// having lowered nothing, where there is no weight gradient to sum or
  /// the sums do not fit.
  LogicalResult lowerNormGradWithSums(Operation *op, ArrayRef<Type> types,
                                      ArrayRef<int> buffers, int64_t rows,
                                      int64_t d, bool residual);
  /// A later sum in `after`'s block of `v` (or of a reshape of it) over
  /// its leading dimensions into its `d` columns, in f32, that column sums
  /// would compute (a bias gradient): null where there is none.
  ReduceSumOp columnSumOf(Value v, Operation *after, int64_t d);
  /// A later sum in `after`'s block of one of `views` over its leading
  /// dimensions into `n` elements, in f32, not lowered yet: null where
  /// there is none.
  ReduceSumOp laterLeadingSum(ArrayRef<Value> views, Operation *after,
                              int64_t n);
  /// Row statistics (mean, 1/std per row) that an input gradient's kernel
  /// keeps for the weight gradient reading them, by that weight gradient.
  llvm::DenseMap<Operation *, int> normStatistics;
  /// The add that is the one reader of norm gradient `op`'s result, adding
  /// it to an f32 value of its shape made before `op` (the residual
  /// stream's gradient): null where there is none.
  AddOp residualGradientAdd(Operation *op);
  /// Whether parameters keep their values through the function being
  /// lowered (all but the optimizer's, which updates them).
  bool parametersFixed = true;
  /// Scratch buffers a later function of the same chunk (the backward of
  /// the forward that made them) may read rather than compute again: by
  /// chunk and what they hold, the buffer and the function that made it.
  std::map<std::pair<int, std::string>, std::pair<int, std::string>> kept;
  void keepScratch(const std::string &what, int buffer) {
    kept[{currentChunk, what}] = {buffer, current->name};
  }
  /// The scratch kept for `what` in this chunk, or -1. Read by another
  /// function of a pipeline's chunk, it becomes a stash: one copy per
  /// microbatch in flight, as the forward's saved values.
  int reuseScratch(const std::string &what) {
    auto it = kept.find({currentChunk, what});
    if (it == kept.end())
      return -1;
    auto [buffer, function] = it->second;
    plan::Buffer &b = plan.buffers[buffer];
    if (function != current->name && currentChunk >= 0 &&
        b.kind == BufferKind::Temp) {
      b.kind = BufferKind::Stash;
      b.chunk = currentChunk;
      b.slots = chunkSlots[currentChunk];
    }
    return buffer;
  }
  /// The chunk of the function being lowered (pipelines), or -1.
  int currentChunk = -1;
  /// Parameter and state buffers; with `keep`, only those it accepts.
  void addPersistentBuffers(llvm::function_ref<bool(StringRef)> keep);
  /// The chunk of a function (pipelines), or -1.
  int chunkOf(func::FuncOp func) const;
  /// A boundary buffer of `chunk` (created on first use).
  int boundaryBuffer(int chunk, bool gradient, int index, Type type);

  ModuleOp module;
  MLIRContext *ctx;
  ModuleOp kernels;
  plan::Plan plan;
  /// Pipelines: slots per chunk, and the boundary buffers made so far.
  std::vector<int> chunkSlots;
  std::map<std::tuple<int, bool, int>, int> boundaries;
  /// Finished kernels by their text, to reuse instead of repeating.
  std::map<std::string, int> &kernelByText;
  /// The kernels some action of this plan calls, and the first kernel
  /// this plan made (the ones before, other ranks' plans may call).
  std::set<int> calledKernels;
  int firstOwnKernel = 0;
  host::KernelOptions options;
  plan::Function *current = nullptr;
  llvm::DenseMap<Value, int> buffers;
  llvm::DenseMap<Value, int> storeTargets; // results written in place
  llvm::DenseSet<Operation *> skipped;     // folded into a GEMM
  /// Results of each lowered function, by index.
  llvm::StringMap<SmallVector<int>> results;
  llvm::DenseSet<Operation *> foldedTransposes;
  /// Over elements, squares x * x read only by a whole-tensor sum, which
  /// squares x as it reads it rather than reading a squared copy.
  llvm::DenseSet<Operation *> foldedSquares;
  int64_t actionIndex = 0;
  unsigned kernelCounter = 0;
};

} // namespace

int HostLowering::bufferFor(Value v) {
  auto it = buffers.find(v);
  if (it != buffers.end())
    return it->second;
  // A splat constant read where it cannot be inlined: fill a buffer.
  if (auto attr = splatOf(v)) {
    int b = newTemp(v);
    fill(b, tensorType(v), *attr, v.getDefiningOp());
    return b;
  }
  return -1;
}

int HostLowering::outputFor(Value v) {
  auto it = storeTargets.find(v);
  if (it == storeTargets.end())
    return newTemp(v, /*bf16Allowed=*/true);
  buffers[v] = it->second;
  return it->second;
}

void HostLowering::findInPlaceStores(func::FuncOp func) {
  storeTargets.clear();
  Block &block = func.getBody().front();
  for (StoreOp store : block.getOps<StoreOp>()) {
    Value v = store.getValue();
    Operation *def = v.getDefiningOp();
    if (!def || def->getBlock() != &block ||
        !(isa<FusedOp, SquaredNormsOp>(def) || isElementwise(def)))
      continue;
    StringRef name = store.getTarget();
    int target = plan.find(name, BufferKind::State);
    if (target < 0)
      target = plan.find(name, BufferKind::Param);
    // Safe when nothing reads the target after `def` (which reads it at the
    // same index as it writes) and nothing else writes it before the store.
    SmallVector<Value> aliases;
    for (Operation &op : block) {
      auto param = dyn_cast<ParamRefOp>(op);
      auto state = dyn_cast<StateRefOp>(op);
      if ((param && param.getName() == name) ||
          (state && state.getName() == name))
        aliases.push_back(op.getResult(0));
    }
    bool safe = true;
    for (size_t i = 0; i < aliases.size() && safe; ++i)
      for (Operation *user : aliases[i].getUsers()) {
        if (auto reshape = dyn_cast<ReshapeOp>(user))
          aliases.push_back(reshape.getResult());
        else if (user != def && !user->isBeforeInBlock(def))
          safe = false;
      }
    // v then lives in the target: no other store may overwrite it while v
    // is still read.
    for (StoreOp other : block.getOps<StoreOp>())
      if (other != store && other.getTarget() == name &&
          def->isBeforeInBlock(other) &&
          (other->isBeforeInBlock(store) ||
           llvm::any_of(v.getUsers(), [&](Operation *user) {
             return other->isBeforeInBlock(user);
           })))
        safe = false;
    if (safe)
      storeTargets[v] = target;
  }
}

int HostLowering::accumulatorFor(Operation *gemm, Operation *writer) {
  if (!writer)
    writer = gemm;
  Value r = gemm->getResult(0);
  if (!r.hasOneUse())
    return -1;
  auto add = dyn_cast<AddOp>(*r.getUsers().begin());
  if (!add || add->getBlock() != gemm->getBlock() ||
      add.getType() != r.getType())
    return -1;
  auto it = storeTargets.find(add.getResult());
  if (it == storeTargets.end())
    return -1;
  Value other = add.getLhs() == r ? add.getRhs() : add.getLhs();
  auto ref = other.getDefiningOp<StateRefOp>();
  if (!ref || plan.find(ref.getName(), BufferKind::State) != it->second)
    return -1;
  // The GEMM now writes S where the add did: nothing may read S between.
  for (Operation &op : *gemm->getBlock()) {
    auto state = dyn_cast<StateRefOp>(op);
    if (!state || state.getName() != ref.getName())
      continue;
    for (Operation *user : state.getResult().getUsers())
      if (user != add.getOperation() && !user->isBeforeInBlock(writer))
        return -1;
  }
  skipped.insert(add);
  buffers[add.getResult()] = it->second;
  return it->second;
}

static bool isFoldableTranspose(TransposeOp t);

/// A temp for `v` of `element`, its rows padded where rowPitchFor says.
int HostLowering::newTempOf(Value v, Type element) {
  auto type = tensorType(v);
  plan::Buffer b =
      describeBuffer(BufferKind::Temp, "", type.getShape(), element);
  if (int64_t pitch = rowPitchFor(v)) {
    b.pitch = pitch;
    b.bytes = b.bytes / type.getShape().back() * pitch;
  }
  int id = plan.addBuffer(b);
  buffers[v] = id;
  return id;
}

int HostLowering::newTemp(Value v, bool bf16Allowed) {
  Type element = tensorType(v).getElementType();
  if (bf16Allowed && (storeInBf16(v) || residualInBf16(v)))
    element = BFloat16Type::get(ctx);
  return newTempOf(v, element);
}

int HostLowering::newGemmOutput(Value v) {
  return newTempOf(v, keepOutputInBf16(v) ? BFloat16Type::get(ctx)
                                          : tensorType(v).getElementType());
}

int64_t HostLowering::rowPitchFor(Value v) {
  auto type = tensorType(v);
  if (!options.padRows || type.getRank() < 2)
    return 0;
  int64_t row = type.getShape().back();
  if (row % 8 == 0 || row < 64)
    return 0;
  Operation *def = v.getDefiningOp();
  auto linear = dyn_cast_or_null<LinearOp>(def);
  bool gemm = isa_and_nonnull<MatmulOp>(def) || (linear && !linear.getBias());
  if (gemm) {
    // One GEMM writing it afresh, with no epilogue.
    if (tensorType(def->getOperand(1)).getRank() != 2 || epilogueFor(def))
      return 0;
  } else if (!isa_and_nonnull<CrossEntropyGradOp>(def)) {
    return 0;
  }
  return readRowWise(v) ? (row + 63) / 64 * 64 : 0;
}

bool HostLowering::readRowWise(Value v) {
  if (v.use_empty())
    return false;
  int64_t row = tensorType(v).getShape().back();
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    unsigned i = use.getOperandNumber();
    // One GEMM's operand, A or B as stored (a folded transpose reads the
    // same rows).
    if ((isa<MatmulOp>(user) || (isa<LinearOp>(user) && i == 0)) &&
        tensorType(user->getOperand(1)).getRank() == 2 &&
        (i == 0 || tensorType(v).getRank() == 2))
      continue;
    if ((isa<CrossEntropyOp>(user) && i == 0) ||
        (isa<CrossEntropyGradOp>(user) && i == 1))
      continue;
    if (auto reshape = dyn_cast<ReshapeOp>(user)) {
      if (tensorType(reshape.getResult()).getShape().back() != row ||
          !readRowWise(reshape.getResult()))
        return false;
      continue;
    }
    if (auto t = dyn_cast<TransposeOp>(user); t && isFoldableTranspose(t)) {
      for (OpOperand &tu : t.getResult().getUses()) {
        Operation *gemm = tu.getOwner();
        if (!isa<MatmulOp>(gemm) ||
            tensorType(gemm->getOperand(1)).getRank() != 2 ||
            tensorType(t.getResult()).getRank() != 2)
          return false;
      }
      continue;
    }
    if (isa<func::ReturnOp>(user)) {
      if (!readersOfResult(use, [&](Value arg) { return readRowWise(arg); }))
        return false;
      continue;
    }
    return false;
  }
  return true;
}

bool HostLowering::storeInBf16(Value v) {
  return bf16Gemms && tensorType(v).getElementType().isF32() &&
         readByGemmsOnly(v);
}

void HostLowering::findResultReaders() {
  resultReaders.clear();
  for (auto func : module.getOps<func::FuncOp>())
    for (BlockArgument arg : func.getArguments())
      if (auto source = func.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                          "nn.source"))
        resultReaders[source.getValue()].push_back(arg);
}

/// Whether `sum` adds over leading dimensions only, keeping the last (a
/// bias's gradient: [B, T, C] to [C]).
static bool sumsLeadingDimensions(ReduceSumOp sum) {
  int64_t rank = tensorType(sum.getInput()).getRank();
  ArrayRef<int64_t> axes = sum.getAxes();
  if (axes.empty() || rank < 2)
    return false;
  SmallVector<bool> reduced(rank, false);
  for (int64_t a : axes)
    reduced[a < 0 ? a + rank : a] = true;
  for (int64_t i = 1; i < rank; ++i)
    if (reduced[i] && !reduced[i - 1])
      return false;
  return !reduced.back();
}

bool HostLowering::readByGemmsOnly(Value v) {
  if (v.use_empty())
    return false;
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    // A bias's gradient sums the bf16 values its weight's GEMMs read, as
    // under PyTorch's autocast.
    if (auto sum = dyn_cast<ReduceSumOp>(user);
        sum && sumsLeadingDimensions(sum))
      continue;
    if ((isa<LinearOp>(user) && use.getOperandNumber() < 2) ||
        isa<MatmulOp>(user))
      continue;
    // Fused attention reads bf16 copies of its inputs too.
    if (isa<AttentionOp, AttentionGradOp>(user) && libraryAttention())
      continue;
    // Copies keep the bits: fine when whatever they write is read so too
    // (they then write bf16; unused pieces of a split are not written).
    auto transpose = dyn_cast<TransposeOp>(user);
    if (isa<SplitOp, ConcatOp, SliceOp>(user) ||
        (transpose && !isFoldableTranspose(transpose))) {
      if (!llvm::all_of(user->getResults(), [&](Value r) {
            return r.use_empty() || readByGemmsOnly(r);
          }))
        return false;
      continue;
    }
    if (auto reshape = dyn_cast<ReshapeOp>(user)) {
      if (!readByGemmsOnly(reshape.getResult()))
        return false;
      continue;
    }
    if (auto t = dyn_cast<TransposeOp>(user); t && isFoldableTranspose(t))
      continue;
    if (isa<func::ReturnOp>(user)) {
      if (!readersOfResult(use,
                           [&](Value arg) { return readByGemmsOnly(arg); }))
        return false;
      continue;
    }
    return false;
  }
  return true;
}

bool HostLowering::readByAGemm(Value v) {
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    if ((isa<LinearOp>(user) && use.getOperandNumber() < 2) ||
        isa<MatmulOp>(user))
      return true;
    auto t = dyn_cast<TransposeOp>(user);
    if ((isa<ReshapeOp>(user) || (t && isFoldableTranspose(t))) &&
        readByAGemm(user->getResult(0)))
      return true;
  }
  return false;
}

bool HostLowering::sentToAnotherRank(OpOperand &use) {
  auto func = use.getOwner()->getParentOfType<func::FuncOp>();
  auto chunk = func->getAttrOfType<IntegerAttr>("nn.chunk");
  if (!chunk || !isa<func::ReturnOp>(use.getOwner()))
    return false;
  StringRef base = func.getName().rsplit('.').second;
  int c = static_cast<int>(chunk.getInt());
  int sent = base == "forward" ? boundaryInputs(c + 1)
             : base == "backward" || base == "backward_input"
                 ? boundaryInputs(c)
                 : 0;
  return static_cast<int>(use.getOperandNumber()) < sent;
}
bool HostLowering::sentInBf16(Type type) {
  auto t = dyn_cast<RankedTensorType>(type);
  return options.bf16Residual && bf16Gemms && t && t.getElementType().isF32() &&
         t.getRank() >= 2;
}
bool HostLowering::readersOfResult(OpOperand &use,
                                   llvm::function_ref<bool(Value)> ok) {
  auto func = use.getOwner()->getParentOfType<func::FuncOp>();
  // What a chunk sends to another rank arrives there in f32 (but the
  // residual stream with --bf16-residual: sentInBf16).
  if (sentToAnotherRank(use))
    return false;
  std::string key =
      (func.getName() + ":" + Twine(use.getOperandNumber())).str();
  auto it = resultReaders.find(key);
  return it != resultReaders.end() && !it->second.empty() &&
         llvm::all_of(it->second, ok);
}

CrossEntropyGradOp HostLowering::lossGradientInForward(CrossEntropyOp ce) {
  if (!options.parallelOverElements || !options.lossGradientInForward)
    return {};
  auto forward = ce->getParentOfType<func::FuncOp>();
  auto targets = dyn_cast<BlockArgument>(ce.getTargets());
  if (!targets || forward.getArgAttr(targets.getArgNumber(), "pipe.boundary"))
    return {};
  std::string sameTargets = ("input:" + Twine(targets.getArgNumber())).str();
  CrossEntropyGradOp found;
  auto readsAsGradient = [&](Value arg) {
    for (OpOperand &use : arg.getUses()) {
      auto grad = dyn_cast<CrossEntropyGradOp>(use.getOwner());
      if (!grad || found || use.getOperandNumber() != 1 ||
          !splatOf(grad.getGrad()))
        return false;
      auto t = dyn_cast<BlockArgument>(grad.getTargets());
      auto func = grad->getParentOfType<func::FuncOp>();
      auto source =
          t ? func.getArgAttrOfType<StringAttr>(t.getArgNumber(), "nn.source")
            : StringAttr();
      if (!source || source.getValue() != sameTargets)
        return false;
      found = grad;
    }
    return true;
  };
  for (OpOperand &use : ce.getLogits().getUses()) {
    if (use.getOwner() == ce.getOperation())
      continue;
    if (!isa<func::ReturnOp>(use.getOwner()) ||
        !readersOfResult(use, readsAsGradient))
      return {};
  }
  if (!found)
    return {};
  bool logitsInBf16 = storedType(bufferFor(ce.getLogits())).isBF16();
  if (logitsInBf16 != storeInBf16(found.getResult()))
    return {};
  return found;
}

bool HostLowering::keepOutputInBf16(Value v) {
  return bf16Gemms && tensorType(v).getElementType().isF32() && readInBf16(v);
}

/// Whether `v` is computed in a forward or backward pass (of a chunk too),
/// not in the optimizer step (whose adds sum a tied weight's gradients).
static bool inForwardOrBackward(Value v) {
  auto func = v.getParentRegion()->getParentOfType<func::FuncOp>();
  StringRef base = func.getName().rsplit('.').second;
  if (base.empty())
    base = func.getName();
  return base == "forward" || base == "backward" || base == "backward_input" ||
         base == "backward_weight";
}

bool HostLowering::residualInBf16(Value v) {
  if (!options.bf16Residual || !bf16Gemms)
    return false;
  auto type = tensorType(v);
  if (!type.getElementType().isF32() || type.getRank() < 2 || v.use_empty())
    return false;
  if (!isa_and_nonnull<AddOp>(v.getDefiningOp()) || !inForwardOrBackward(v))
    return false;
  // Each stretch asks the next: remembered, the stream is walked once.
  if (auto it = residualStretches.find(v); it != residualStretches.end())
    return it->second;
  bool stretch = residualReader(v);
  residualStretches[v] = stretch;
  return stretch;
}
bool HostLowering::startsResidualInBf16(Value v) {
  return options.bf16Residual && bf16Gemms &&
         tensorType(v).getElementType().isF32() &&
         llvm::any_of(v.getUsers(),
                      [&](Operation *user) {
                        return isa<AddOp>(user) &&
                               residualInBf16(user->getResult(0));
                      }) &&
         residualReader(v);
}
bool HostLowering::residualReader(Value v) {
  return llvm::all_of(v.getUses(),
                      [&](OpOperand &use) { return residualReader(use); });
}
bool HostLowering::residualReader(OpOperand &use) {
  Operation *user = use.getOwner();
  if (isa<ReshapeOp>(user))
    return residualReader(user->getResult(0));
  // Sent to the next chunk's rank, it arrives in bf16 (sentInBf16); saved
  // for another function (the backward, a split backward's weight half),
  // it is read there.
  if (sentToAnotherRank(use))
    return true;
  if (isa<func::ReturnOp>(user))
    return readersOfResult(use, [&](Value arg) { return residualReader(arg); });
  // Whatever is stored (an accumulator) stays f32.
  if (isa<StoreOp>(user))
    return false;
  // An add continues the stream: its sum must be bf16 too (a GEMM
  // epilogue's addend has the GEMM's output type).
  if (auto add = dyn_cast<AddOp>(user))
    return residualInBf16(add.getResult());
  if (isa<LinearOp>(user) && use.getOperandNumber() == 2)
    return false;
  // Anything else is a kernel, whose loads widen, or a GEMM or library
  // attention, which read bf16.
  return true;
}
bool HostLowering::readInBf16(Value v) {
  if (v.use_empty())
    return false;
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    if (isa<func::ReturnOp>(user)) {
      if (!readersOfResult(use, [&](Value arg) { return readInBf16(arg); }))
        return false;
      continue;
    }
    if (isa<ReshapeOp, TransposeOp>(user)) {
      if (!readInBf16(user->getResult(0)))
        return false;
      continue;
    }
    // What is added to something stays f32 too: a residual branch's output
    // (which the GEMM adds to the stream itself where it has epilogues) and
    // a weight's gradient added to its accumulator.
    if (isa<StoreOp, AddOp>(user))
      return false;
    // A bias, and a GEMM epilogue's addend and aux, are read as f32 by the
    // GEMM.
    if (isa<LinearOp>(user) && use.getOperandNumber() == 2)
      return false;
    for (Value other : user->getOperands()) {
      Operation *def = other.getDefiningOp();
      if (other != v && def && isa<LinearOp, MatmulOp>(def) &&
          epilogueFor(def) == user)
        return false;
    }
    // Anything else is a kernel, whose loads widen (retypedForBf16), or a
    // GEMM or library attention, which read bf16.
  }
  return true;
}

int HostLowering::boundaryInputs(int chunk) {
  auto forward = module.lookupSymbol<func::FuncOp>("c" + std::to_string(chunk) +
                                                   ".forward");
  int inputs = 0;
  for (unsigned i = 0; forward && i < forward.getNumArguments(); ++i)
    inputs += forward.getArgAttr(i, "pipe.boundary") != nullptr;
  return inputs;
}

int HostLowering::newScratch(ArrayRef<int64_t> shape, Type element) {
  return plan.addBuffer(describeBuffer(BufferKind::Temp, "", shape, element));
}

void HostLowering::touch(int buffer) {
  plan::Buffer &b = plan.buffers[buffer];
  if (b.kind != BufferKind::Temp)
    return;
  if (b.firstUse < 0)
    b.firstUse = actionIndex;
  b.lastUse = std::max(b.lastUse, actionIndex);
}

Kernel HostLowering::startKernel(StringRef name, Location loc,
                                 ArrayRef<Type> args, ArrayRef<int> buffers) {
  OpBuilder mb(ctx);
  mb.setInsertionPointToEnd(kernels.getBody());
  SmallVector<Type> types(args.begin(), args.end());
  types.push_back(mb.getIndexType());
  types.push_back(mb.getIndexType());
  std::string symbol = ("hs_k" + Twine(kernelCounter++) + "_" + name).str();
  auto func =
      func::FuncOp::create(mb, loc, symbol, mb.getFunctionType(types, {}));
  Block *entry = func.addEntryBlock();
  Kernel k{func, OpBuilder::atBlockEnd(entry), loc, {}, {}, {}};
  for (unsigned i = 0; i < args.size(); ++i)
    k.args.push_back(entry->getArgument(i));
  k.begin = entry->getArgument(args.size());
  k.end = entry->getArgument(args.size() + 1);
  for (Type t : args)
    if (auto m = dyn_cast<MemRefType>(t);
        m && m.getElementType().isIntOrFloat())
      k.narrowestBits =
          std::min(k.narrowestBits, m.getElementType().getIntOrFloatBitWidth());
  for (int buffer : buffers)
    if (buffer >= 0 && plan.buffers[buffer].dtype == "bf16")
      k.narrowestBits = std::min(k.narrowestBits, 16u);
  return k;
}

int HostLowering::finishKernel(Kernel &k) {
  func::ReturnOp::create(k.b, k.loc);
  return keepKernel(k.func);
}

int HostLowering::keepKernel(func::FuncOp func) {
  // The layers of a stack make the same kernels again and again: keep one
  // of each text (printed under a fixed name), which is most of LLVM's
  // time saved on a deep model.
  std::string text;
  {
    StringAttr name = func.getSymNameAttr();
    func.setSymName("kernel");
    llvm::raw_string_ostream os(text);
    func->print(os, OpPrintingFlags().elideLargeElementsAttrs(~0u));
    func.setSymNameAttr(name);
  }
  auto [it, fresh] =
      kernelByText.try_emplace(text, static_cast<int>(plan.kernels.size()));
  if (!fresh) {
    func.erase();
    return it->second;
  }
  plan.kernels.push_back(func.getSymName().str());
  return static_cast<int>(plan.kernels.size()) - 1;
}

namespace {
/// Rewrites the users of memref `m`, whose element type has just become
/// bf16, to read and write it as f32 values. Fails on any other use.
LogicalResult readAsF32(Value m) {
  Type f32 = Float32Type::get(m.getContext());
  for (OpOperand &use : llvm::make_early_inc_range(m.getUses())) {
    Operation *user = use.getOwner();
    OpBuilder b(user);
    Location loc = user->getLoc();
    auto round = [&](Value x) {
      return arith::BitcastOp::create(b, loc, b.getBF16Type(),
                                      bf16Bits(b, loc, x));
    };
    if (auto load = dyn_cast<memref::LoadOp>(user)) {
      Value narrow = memref::LoadOp::create(b, loc, m, load.getIndices());
      load.getResult().replaceAllUsesWith(
          arith::ExtFOp::create(b, loc, f32, narrow).getResult());
      load.erase();
    } else if (auto store = dyn_cast<memref::StoreOp>(user);
               store && store.getMemRef() == m) {
      memref::StoreOp::create(b, loc, round(store.getValueToStore()), m,
                              store.getIndices());
      store.erase();
    } else if (auto load = dyn_cast<vector::LoadOp>(user)) {
      auto wide = cast<VectorType>(load.getType());
      Value narrow = vector::LoadOp::create(
          b, loc, wide.clone(b.getBF16Type()), m, load.getIndices(),
          /*nontemporal=*/false,
          Kernel::chunkAlignment(b.getBF16Type(), wide.getNumElements()));
      load.getResult().replaceAllUsesWith(
          arith::ExtFOp::create(b, loc, wide, narrow).getResult());
      load.erase();
    } else if (auto store = dyn_cast<vector::StoreOp>(user);
               store && store.getBase() == m) {
      auto wide = cast<VectorType>(store.getValueToStore().getType());
      SmallVector<Value> rounded;
      for (int64_t e = 0; e < wide.getNumElements(); ++e)
        rounded.push_back(round(
            vector::ExtractOp::create(b, loc, store.getValueToStore(), e)));
      Value narrow = vector::FromElementsOp::create(
          b, loc, wide.clone(b.getBF16Type()), rounded);
      vector::StoreOp::create(
          b, loc, narrow, m, store.getIndices(),
          /*nontemporal=*/false,
          Kernel::chunkAlignment(b.getBF16Type(), wide.getNumElements()));
      store.erase();
    } else if (auto view = dyn_cast<memref::SubViewOp>(user)) {
      Value r = view.getResult();
      r.setType(cast<MemRefType>(r.getType()).clone(b.getBF16Type()));
      if (failed(readAsF32(r)))
        return failure();
    } else if (auto generic = dyn_cast<linalg::GenericOp>(user)) {
      // The payload's argument becomes bf16: widened where the payload
      // starts, and an output's yielded value rounded.
      BlockArgument arg = generic.getMatchingBlockArgument(&use);
      arg.setType(b.getBF16Type());
      Block *body = arg.getOwner();
      OpBuilder nb = OpBuilder::atBlockBegin(body);
      Value wide = arith::ExtFOp::create(nb, loc, f32, arg);
      arg.replaceAllUsesExcept(wide, wide.getDefiningOp());
      if (generic.isDpsInit(&use)) {
        auto yield = cast<linalg::YieldOp>(body->getTerminator());
        OpOperand &yielded =
            yield->getOpOperand(arg.getArgNumber() - generic.getNumDpsInputs());
        b.setInsertionPoint(yield);
        yielded.set(round(yielded.get()));
      }
    } else {
      return failure();
    }
  }
  return success();
}
} // namespace

int HostLowering::retypedForBf16(int kernel, ArrayRef<unsigned> which) {
  auto original = kernels.lookupSymbol<func::FuncOp>(plan.kernels[kernel]);
  // A kernel just made for this call and called by nothing else goes:
  // its copy takes its place.
  bool replace = kernel >= firstOwnKernel && !calledKernels.count(kernel) &&
                 kernel == static_cast<int>(plan.kernels.size()) - 1;
  OpBuilder mb(ctx);
  mb.setInsertionPointToEnd(kernels.getBody());
  auto func = cast<func::FuncOp>(mb.clone(*original.getOperation()));
  // hs_k<N>_<name>: a fresh N, the same name.
  StringRef name = original.getSymName().split('_').second.split('_').second;
  func.setSymName(("hs_k" + Twine(kernelCounter++) + "_" + name).str());
  for (unsigned i : which) {
    BlockArgument arg = func.getArgument(i);
    arg.setType(cast<MemRefType>(arg.getType()).clone(BFloat16Type::get(ctx)));
    if (failed(readAsF32(arg))) {
      func.erase();
      return -1;
    }
  }
  func.setType(
      FunctionType::get(ctx, func.getBody().front().getArgumentTypes(), {}));
  if (replace) {
    for (auto it = kernelByText.begin(); it != kernelByText.end(); ++it)
      if (it->second == kernel) {
        kernelByText.erase(it);
        break;
      }
    plan.kernels.pop_back();
    original.erase();
  }
  return keepKernel(func);
}

void HostLowering::call(int kernel, int64_t parallel, ArrayRef<int> buffers,
                        Operation *op) {
  SmallVector<int> args(buffers.begin(), buffers.end());
  auto func = kernels.lookupSymbol<func::FuncOp>(plan.kernels[kernel]);
  // A copy retyped for bf16 keeps it.
  auto block = func->getAttrOfType<IntegerAttr>(kBlockAttr);
  SmallVector<unsigned> narrow;
  for (auto [i, buffer] : llvm::enumerate(args)) {
    auto type = dyn_cast<MemRefType>(func.getArgument(i).getType());
    if (type && type.getElementType().isF32() &&
        plan.buffers[buffer].dtype == "bf16")
      narrow.push_back(i);
  }
  if (!narrow.empty()) {
    int retyped = retypedForBf16(kernel, narrow);
    if (retyped >= 0) {
      kernel = retyped;
    } else {
      // Read from a widened copy instead (nothing writes these buffers
      // through an f32 kernel: their producers are GEMMs).
      for (unsigned i : narrow) {
        int wide = newScratch({plan.buffers[args[i]].bytes / 2},
                              Float32Type::get(ctx));
        widenBf16(args[i], wide, op);
        args[i] = wide;
      }
    }
  }
  calledKernels.insert(kernel);
  plan::Action a;
  a.kind = plan::Action::Kind::Call;
  a.kernel = kernel;
  a.parallel = std::max<int64_t>(1, parallel);
  if (block)
    a.block = block.getInt();
  a.buffers.assign(args.begin(), args.end());
  a.note = op ? op->getName().stripDialect().str() : "";
  for (int b : args)
    touch(b);
  current->actions.push_back(std::move(a));
  ++actionIndex;
}

void HostLowering::fill(int buffer, RankedTensorType type, Attribute value,
                        Operation *op) {
  Type element = type.getElementType();
  int64_t n = type.getNumElements();
  Kernel k = startKernel("fill", op ? op->getLoc() : module.getLoc(),
                         {memrefOf({n}, element)});
  Value v = arith::ConstantOp::create(k.b, k.loc, cast<TypedAttr>(value));
  k.loop(k.begin, k.end, [&](Value i) { k.store(v, k.args[0], i); });
  call(finishKernel(k), n, {buffer}, op);
}

void HostLowering::copyInto(int from, int to, RankedTensorType type,
                            Operation *op) {
  Type element = type.getElementType();
  int64_t n = type.getNumElements();
  Kernel k = startKernel("copy", op->getLoc(),
                         {memrefOf({n}, element), memrefOf({n}, element)});
  k.loop(k.begin, k.end,
         [&](Value i) { k.store(k.load(k.args[1], i), k.args[0], i); });
  call(finishKernel(k), n, {to, from}, op);
}

std::pair<Value, bool> HostLowering::unwrapTranspose(Value v) {
  auto t = v.getDefiningOp<TransposeOp>();
  if (!t || !foldedTransposes.contains(t))
    return {v, false};
  return {t.getInput(), true};
}

/// Whether `t` swaps the last two dimensions and every user is a matmul
/// that can read its input with a transpose flag instead.
static bool isFoldableTranspose(TransposeOp t) {
  ArrayRef<int64_t> perm = t.getPerm();
  int64_t r = perm.size();
  if (r < 2)
    return false;
  for (int64_t i = 0; i < r - 2; ++i)
    if (perm[i] != i)
      return false;
  if (perm[r - 2] != r - 1 || perm[r - 1] != r - 2)
    return false;
  for (OpOperand &use : t->getUses()) {
    auto mm = dyn_cast<MatmulOp>(use.getOwner());
    if (!mm)
      return false;
    // A left operand whose batch is flattened into rows cannot fold.
    if (use.getOperandNumber() == 0 && r > 2 &&
        tensorType(mm.getRhs()).getRank() == 2)
      return false;
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Elementwise: one linalg.generic, parallel over the first dimension
//===----------------------------------------------------------------------===//

LogicalResult HostLowering::lowerElementwise(Operation *op,
                                             ArrayRef<Value> operands, int out,
                                             RankedTensorType outType) {
  return emitElementwiseKernel(
      op, op->getName().stripDialect(), operands, {out}, outType.getShape(),
      {outType.getElementType()},
      [&](OpBuilder &b, Location loc,
          ArrayRef<Value> scalars) -> FailureOr<SmallVector<Value>> {
        FailureOr<Value> r =
            scalarOf(b, loc, op, scalars, outType.getElementType());
        if (failed(r))
          return failure();
        return SmallVector<Value>{*r};
      },
      /*flat=*/false, elementwiseColumnSum(op, outType.getShape()));
}

ReduceSumOp HostLowering::elementwiseColumnSum(Operation *op,
                                               ArrayRef<int64_t> shape) {
  if (!options.parallelOverElements ||
      options.gemmEpilogues == host::KernelOptions::Epilogues::Gelu ||
      shape.size() < 2 || op->getNumResults() == 0 ||
      tensorType(op->getResult(0)).getShape() != shape ||
      !tensorType(op->getResult(0)).getElementType().isF32())
    return ReduceSumOp();
  return columnSumOf(op->getResult(0), op, shape.back());
}

/// The scalar results of an nn.fused body from its arguments' scalars.
static FailureOr<SmallVector<Value>>
fusedScalars(Block &body, OpBuilder &b, Location loc, ArrayRef<Value> scalars) {
  DenseMap<Value, Value> scalar;
  for (auto [arg, s] : llvm::zip(body.getArguments(), scalars))
    scalar[arg] = s;
  for (Operation &op : body.without_terminator()) {
    SmallVector<Value> in;
    for (Value v : op.getOperands())
      in.push_back(scalar.lookup(v));
    FailureOr<Value> r =
        scalarOf(b, loc, &op, in, tensorType(op.getResult(0)).getElementType());
    if (failed(r))
      return failure();
    scalar[op.getResult(0)] = *r;
  }
  SmallVector<Value> results;
  for (Value v : body.getTerminator()->getOperands())
    results.push_back(scalar.lookup(v));
  return results;
}

LogicalResult HostLowering::lowerFused(FusedOp fused) {
  if (auto group = updateGroups.find(fused); group != updateGroups.end())
    return lowerUpdateGroup(group->second);
  SmallVector<int> outs;
  SmallVector<Type> elements;
  for (Value r : fused.getResults()) {
    outs.push_back(outputFor(r));
    elements.push_back(tensorType(r).getElementType());
  }
  // A new parameter's bf16 copy, as it is stored.
  SmallVector<unsigned> copied;
  for (unsigned r = 0, e = outs.size(); r < e; ++r)
    if (outs[r] >= 0)
      for (int copy : copiesWrittenBy(outs[r])) {
        copied.push_back(r);
        outs.push_back(copy);
        elements.push_back(BFloat16Type::get(ctx));
      }
  Block &body = fused.getBody().front();
  return emitElementwiseKernel(
      fused, "fused", llvm::to_vector(fused.getInputs()), outs,
      fused.getShape(), elements,
      [&](OpBuilder &b, Location loc,
          ArrayRef<Value> scalars) -> FailureOr<SmallVector<Value>> {
        FailureOr<SmallVector<Value>> r = fusedScalars(body, b, loc, scalars);
        if (succeeded(r))
          for (unsigned c : copied)
            r->push_back((*r)[c]);
        return r;
      },
      /*flat=*/false, elementwiseColumnSum(fused, fused.getShape()));
}

//===----------------------------------------------------------------------===//
// The optimizer's updates: one kernel over many parameters
//===----------------------------------------------------------------------===//

namespace {
/// What an update reads and writes: per input, a splat, a scalar value or
/// a whole persistent buffer; its results' in-place targets.
struct UpdateShape {
  SmallVector<std::optional<Attribute>> splats;
  SmallVector<Value> scalars;     // per input, or null
  SmallVector<int> inputBuffers;  // per input, or -1
  SmallVector<int> resultBuffers; // per result
  /// Buffer slots (inputs, then results) in order, for aliasing checks.
  SmallVector<int> slots() const {
    SmallVector<int> all(inputBuffers);
    all.append(resultBuffers.begin(), resultBuffers.end());
    return all;
  }
};
} // namespace

/// The persistent buffer a value reads directly (a parameter or state
/// reference, through reshapes), or -1.
static int referencedBuffer(Value v, const plan::Plan &plan) {
  while (auto reshape = v.getDefiningOp<ReshapeOp>())
    v = reshape.getInput();
  if (auto ref = v.getDefiningOp<ParamRefOp>())
    return plan.find(ref.getName(), BufferKind::Param);
  if (auto ref = v.getDefiningOp<StateRefOp>())
    return plan.find(ref.getName(), BufferKind::State);
  return -1;
}

/// Whether two nn.fused bodies compute the same, op for op.
static bool sameBody(Block &a, Block &b) {
  if (a.getNumArguments() != b.getNumArguments() ||
      a.getOperations().size() != b.getOperations().size())
    return false;
  DenseMap<Value, Value> match;
  for (auto [x, y] : llvm::zip(a.getArguments(), b.getArguments()))
    match[x] = y;
  for (auto [x, y] : llvm::zip(a, b)) {
    if (x.getName() != y.getName() ||
        x.getAttrDictionary() != y.getAttrDictionary() ||
        x.getNumOperands() != y.getNumOperands() ||
        x.getNumResults() != y.getNumResults())
      return false;
    for (auto [u, v] : llvm::zip(x.getOperands(), y.getOperands()))
      if (match.lookup(u) != v)
        return false;
    for (auto [u, v] : llvm::zip(x.getResults(), y.getResults())) {
      if (tensorType(u).getElementType() != tensorType(v).getElementType())
        return false;
      match[u] = v;
    }
  }
  return true;
}

void HostLowering::findUpdateGroups(func::FuncOp func) {
  updateGroups.clear();
  Block &block = func.getBody().front();
  DenseMap<Operation *, int64_t> position;
  SmallVector<Operation *> ops;
  for (Operation &op : block) {
    position[&op] = ops.size();
    ops.push_back(&op);
  }
  auto targetOf = [&](StoreOp store) {
    int target = plan.find(store.getTarget(), BufferKind::State);
    return target >= 0 ? target
                       : plan.find(store.getTarget(), BufferKind::Param);
  };
  auto plain = [&](int buffer) {
    const plan::Buffer &b = plan.buffers[buffer];
    return (b.kind == BufferKind::Param || b.kind == BufferKind::State) &&
           b.dtype == "f32" && b.slots == 1;
  };
  // An update's inputs and results, if it is one.
  auto shapeOf = [&](FusedOp f) -> std::optional<UpdateShape> {
    ArrayRef<int64_t> shape = f.getShape();
    if (shape.empty())
      return std::nullopt;
    UpdateShape u;
    for (Value v : f.getInputs()) {
      u.splats.push_back(splatOf(v));
      u.scalars.push_back(Value());
      u.inputBuffers.push_back(-1);
      if (u.splats.back())
        continue;
      auto type = tensorType(v);
      if (type.getRank() == 0) {
        u.scalars.back() = v;
        continue;
      }
      int b = referencedBuffer(v, plan);
      if (b < 0 || type.getShape() != shape || !plain(b))
        return std::nullopt;
      u.inputBuffers.back() = b;
    }
    for (Value r : f.getResults()) {
      auto it = storeTargets.find(r);
      if (it == storeTargets.end() || r.use_empty() || !plain(it->second) ||
          !tensorType(r).getElementType().isF32())
        return std::nullopt;
      for (Operation *user : r.getUsers()) {
        auto store = dyn_cast<StoreOp>(user);
        if (!store || targetOf(store) != it->second)
          return std::nullopt;
      }
      u.resultBuffers.push_back(it->second);
    }
    return u;
  };
  // Whether running `member` and its zeroing stores at `first` is as
  // running them in place: nothing else between `first` and the last of
  // them writes what they read or write, or reads what they write.
  // `absorbed` are the ops that move with them.
  auto hoistable = [&](Operation *first, ArrayRef<Operation *> moved,
                       const UpdateShape &u, ArrayRef<int> zeroedBuffers,
                       const llvm::DenseSet<Operation *> &absorbed) {
    std::set<int> reads, writes(u.resultBuffers.begin(), u.resultBuffers.end());
    for (int b : u.inputBuffers)
      if (b >= 0)
        reads.insert(b);
    writes.insert(zeroedBuffers.begin(), zeroedBuffers.end());
    int64_t last = position[first];
    for (Operation *op : moved)
      last = std::max(last, position[op]);
    for (int64_t i = position[first] + 1; i < last; ++i) {
      Operation *op = ops[i];
      if (absorbed.contains(op) || llvm::is_contained(moved, op))
        continue;
      if (auto store = dyn_cast<StoreOp>(op)) {
        int t = targetOf(store);
        if (reads.count(t) || writes.count(t))
          return false;
      }
      for (Value v : op->getOperands())
        if (writes.count(referencedBuffer(v, plan)))
          return false;
    }
    return true;
  };

  struct Open {
    UpdateGroup group;
    UpdateShape shape;
    SmallVector<std::optional<Attribute>> zeroSplats; // per input
    llvm::DenseSet<Operation *> absorbed;
  };
  std::vector<Open> open;
  std::set<int> grouped; // buffers of members so far
  for (FusedOp f : block.getOps<FusedOp>()) {
    std::optional<UpdateShape> u = shapeOf(f);
    if (!u)
      continue;
    // The splat stores into its inputs after it, when they can move to it.
    SmallVector<StoreOp> zeroed;
    SmallVector<int> zeroedBuffers;
    SmallVector<std::optional<Attribute>> zeroSplats(u->inputBuffers.size());
    for (StoreOp store : block.getOps<StoreOp>()) {
      auto splat = splatOf(store.getValue());
      int t = targetOf(store);
      auto input = llvm::find(u->inputBuffers, t);
      // An accumulator the backward writes afresh is not zeroed at all
      // (overwrittenGradients): updates with it group apart.
      if (!splat || !f->isBeforeInBlock(store) ||
          zeroesOverwritten(store.getValue(), t) ||
          input == u->inputBuffers.end() ||
          llvm::is_contained(u->resultBuffers, t) ||
          llvm::is_contained(zeroedBuffers, t))
        continue;
      zeroed.push_back(store);
      zeroedBuffers.push_back(t);
      zeroSplats[input - u->inputBuffers.begin()] = splat;
    }
    SmallVector<Operation *> moved{f};
    for (StoreOp z : zeroed)
      moved.push_back(z);
    for (Value r : f.getResults())
      for (Operation *user : r.getUsers())
        moved.push_back(user);
    if (!hoistable(f, moved, *u, zeroedBuffers, {})) {
      zeroed.clear();
      zeroedBuffers.clear();
      zeroSplats.assign(u->inputBuffers.size(), std::nullopt);
    }
    SmallVector<int> slots = u->slots();
    bool fresh = true;
    for (int b : slots)
      if (b >= 0 && grouped.count(b))
        fresh = false;
    Open *joined = nullptr;
    for (Open &g : open) {
      if (!fresh)
        break;
      FusedOp head = g.group.members.front();
      const UpdateShape &h = g.shape;
      if (h.splats != u->splats || h.scalars != u->scalars ||
          g.zeroSplats != zeroSplats ||
          h.resultBuffers.size() != u->resultBuffers.size() ||
          !sameBody(head.getBody().front(), f.getBody().front()))
        continue;
      // The same inputs stand for the same buffers in both.
      SmallVector<int> hs = h.slots();
      bool aliasing = true;
      for (size_t i = 0; i < hs.size() && aliasing; ++i)
        for (size_t j = 0; j < hs.size() && aliasing; ++j)
          if ((hs[i] == hs[j]) != (slots[i] == slots[j]))
            aliasing = false;
      if (!aliasing || !hoistable(head, moved, *u, zeroedBuffers, g.absorbed))
        continue;
      joined = &g;
      break;
    }
    if (!joined) {
      open.push_back({});
      joined = &open.back();
      joined->shape = *u;
      joined->zeroSplats = zeroSplats;
    }
    joined->group.members.push_back(f);
    joined->group.zeroed.push_back(zeroed);
    for (Operation *op : moved)
      joined->absorbed.insert(op);
    for (int b : slots)
      if (b >= 0)
        grouped.insert(b);
  }
  for (Open &g : open)
    updateGroups[g.group.members.front()] = std::move(g.group);
}

std::vector<std::vector<int>>
HostLowering::updateRuns(const UpdateGroup &group) {
  std::vector<std::vector<int>> runs;
  if (group.members.size() < 2)
    return runs;
  // Per input buffer and per result, the members' buffers.
  FusedOp head = group.members.front();
  auto bufferOf = [&](FusedOp f, unsigned slot) {
    unsigned inputs = f.getInputs().size();
    return slot < inputs ? referencedBuffer(f.getInputs()[slot], plan)
                         : storeTargets.lookup(f.getResult(slot - inputs));
  };
  unsigned slots = head.getInputs().size() + head.getNumResults();
  std::set<int> laid;
  for (unsigned s = 0; s < slots; ++s) {
    std::vector<int> run;
    for (FusedOp member : group.members)
      run.push_back(bufferOf(member, s));
    if (run.front() < 0 || laid.count(run.front()))
      continue;
    laid.insert(run.front());
    runs.push_back(run);
  }
  return runs;
}

LogicalResult HostLowering::lowerUpdateGroup(const UpdateGroup &group) {
  FusedOp head = group.members.front();
  // Every member's results live in their targets; the later members and
  // the zeroing stores are done here.
  for (auto [m, op] : llvm::enumerate(group.members)) {
    FusedOp member = op;
    for (Value r : member.getResults())
      buffers[r] = storeTargets.lookup(r);
    if (m > 0)
      skipped.insert(member);
    for (StoreOp z : group.zeroed[m])
      skipped.insert(z);
  }
  int64_t elements = tensorType(head.getResult(0)).getNumElements();
  std::vector<std::vector<int>> runs = updateRuns(group);
  if (!runs.empty()) {
    plan.contiguous.insert(plan.contiguous.end(), runs.begin(), runs.end());
    elements = plan::runBytes(plan, runs.back()) / 4;
  }
  SmallVector<int> outs;
  SmallVector<Type> types;
  for (Value r : head.getResults()) {
    outs.push_back(storeTargets.lookup(r));
    types.push_back(Float32Type::get(ctx));
  }
  // The new parameters' bf16 copies, as they are stored.
  SmallVector<unsigned> copied; // by result
  for (unsigned r = 0, e = head.getNumResults(); r < e; ++r) {
    std::vector<int> params;
    for (FusedOp member : group.members)
      params.push_back(storeTargets.lookup(member.getResult(r)));
    std::vector<int> copies = copiesWrittenBy(params);
    if (copies.empty())
      continue;
    if (copies.size() > 1)
      plan.contiguous.push_back(copies);
    copied.push_back(r);
    outs.push_back(copies.front());
    types.push_back(BFloat16Type::get(ctx));
  }
  SmallVector<Attribute> zeros;
  for (StoreOp z : group.zeroed.front()) {
    int target = plan.find(z.getTarget(), BufferKind::State);
    outs.push_back(target >= 0 ? target
                               : plan.find(z.getTarget(), BufferKind::Param));
    zeros.push_back(*splatOf(z.getValue()));
    types.push_back(Float32Type::get(ctx));
  }
  Block &body = head.getBody().front();
  LogicalResult status = emitElementwiseKernel(
      head, "update", llvm::to_vector(head.getInputs()), outs, {elements},
      types,
      [&](OpBuilder &b, Location loc,
          ArrayRef<Value> scalars) -> FailureOr<SmallVector<Value>> {
        FailureOr<SmallVector<Value>> r = fusedScalars(body, b, loc, scalars);
        if (failed(r))
          return failure();
        for (unsigned c : copied)
          r->push_back((*r)[c]);
        for (Attribute zero : zeros)
          r->push_back(
              arith::ConstantOp::create(b, loc, cast<TypedAttr>(zero)));
        return r;
      },
      /*flat=*/true);
  // The note says how many elements each of its runs holds: the call
  // names a run by its first buffer (bench/plan_traffic.py counts them).
  if (succeeded(status))
    current->actions.back().note =
        ("fused update of " + Twine(group.members.size()) + " parameter" +
         (group.members.size() > 1 ? "s" : "") + ", " + Twine(elements) +
         " elements")
            .str();
  return status;
}

LogicalResult HostLowering::emitElementwiseKernel(
    Operation *op, StringRef name, ArrayRef<Value> operands, ArrayRef<int> outs,
    ArrayRef<int64_t> shape, ArrayRef<Type> outElements, ScalarBody body,
    bool flat, ReduceSumOp columnSum) {
  int64_t rank = shape.size();
  auto shapeOf = [&](Value v) {
    ArrayRef<int64_t> s = tensorType(v).getShape();
    return flat && !s.empty() ? shape : s;
  };
  SmallVector<Type> argTypes;
  SmallVector<int> argBuffers;
  // An output kept in bf16 (storeInBf16) rounds as it is stored.
  for (auto [out, element] : llvm::zip(outs, outElements)) {
    argTypes.push_back(memrefOf(shape, bufferElement(out, element)));
    argBuffers.push_back(out);
  }
  // Per operand: a kernel argument, or an inlined splat.
  SmallVector<std::optional<Attribute>> splats;
  SmallVector<int> argIndex;
  for (Value v : operands) {
    auto splat = splatOf(v);
    splats.push_back(splat);
    if (splat) {
      argIndex.push_back(-1);
      continue;
    }
    int b = bufferFor(v);
    if (b < 0)
      return op->emitError("host lowering: operand has no buffer");
    argIndex.push_back(argTypes.size());
    argTypes.push_back(memrefOf(shapeOf(v), tensorType(v).getElementType()));
    argBuffers.push_back(b);
  }

  // Over elements, the column sum's partials (below) are the last argument.
  if (!options.parallelOverElements)
    columnSum = ReduceSumOp();
  constexpr int64_t kRowsPerIndex = 16;
  int64_t parts = 1, sumRows = 1;
  int partial = -1;
  if (columnSum) {
    for (int64_t d : shape.drop_back())
      sumRows *= d;
    parts = partsOfRows(sumRows, sumRows / kRowsPerIndex);
    Type f32 = Float32Type::get(ctx);
    partial = newScratch({1, shape.back(), parts}, f32);
    argTypes.push_back(memrefOf({1, shape.back(), parts}, f32));
    argBuffers.push_back(partial);
  }
  Kernel k = startKernel(name, op->getLoc(), argTypes, argBuffers);
  OpBuilder &b = k.b;
  if (options.parallelOverElements) {
    // Index i of the range is chunk i of the output, row-major: its
    // elements vi .. vi + v - 1 where the last dimension holds whole chunks
    // of v (16 bytes of the narrowest buffer: one 128-bit load of each bf16
    // operand, two of each f32 one, likewise the stores, on a GPU; else
    // v = 4), else element i. Each operand reads an element as the
    // linalg.generic below would (dropped leading dimensions, broadcast
    // dimensions of size 1).
    int64_t total = 1;
    for (int64_t d : shape)
      total *= d;
    int64_t vector =
        rank > 0 ? chunkColumns(shape.back(), 1, k.narrowestBits) : 1;
    SmallVector<int64_t> chunks(shape);
    if (rank > 0)
      chunks.back() /= vector;
    LogicalResult status = success();
    // Chunk `chunk`'s loads, arithmetic and stores; its first output's
    // values as stored (rounded where that is bf16).
    auto emitChunk = [&](Value chunk) -> SmallVector<Value> {
      SmallVector<Value> first = k.unflatten(chunk, chunks);
      if (vector > 1)
        first.back() = k.muli(first.back(), k.idx(vector));
      // A chunk's loads, then its arithmetic, then its stores: one vector
      // load of each operand that varies along the last dimension, one
      // vector store of each result.
      SmallVector<SmallVector<Value>> scalars(vector);
      for (auto [i, v] : llvm::enumerate(operands)) {
        if (splats[i]) {
          Value c =
              arith::ConstantOp::create(b, k.loc, cast<TypedAttr>(*splats[i]));
          for (int64_t e = 0; e < vector; ++e)
            scalars[e].push_back(c);
          continue;
        }
        ArrayRef<int64_t> s = shapeOf(v);
        int64_t lead = rank - s.size();
        SmallVector<Value> index;
        for (int64_t j = 0; j < static_cast<int64_t>(s.size()); ++j)
          index.push_back(s[j] == 1 && shape[j + lead] != 1 ? k.idx(0)
                                                            : first[j + lead]);
        Value arg = k.args[argIndex[i]];
        if (vector > 1 && !s.empty() && s.back() == shape.back()) {
          for (auto [e, x] : llvm::enumerate(k.loadChunk(arg, index, vector)))
            scalars[e].push_back(x);
          continue;
        }
        Value x = k.load(arg, index); // the same for the whole chunk
        for (int64_t e = 0; e < vector; ++e)
          scalars[e].push_back(x);
      }
      SmallVector<SmallVector<Value>> results;
      for (int64_t e = 0; e < vector && succeeded(status); ++e) {
        FailureOr<SmallVector<Value>> r = body(b, k.loc, scalars[e]);
        if (failed(r))
          status = failure();
        else
          results.push_back(*r);
      }
      if (failed(status))
        return {};
      for (size_t i = 0; i < outs.size(); ++i) {
        if (vector == 1) {
          k.store(results[0][i], k.args[i], first);
          continue;
        }
        SmallVector<Value> chunk;
        for (int64_t e = 0; e < vector; ++e)
          chunk.push_back(results[e][i]);
        k.storeChunk(chunk, k.args[i], first);
      }
      if (!columnSum)
        return {};
      Type stored = cast<MemRefType>(k.args[0].getType()).getElementType();
      SmallVector<Value> written;
      for (int64_t e = 0; e < vector; ++e) {
        Value v = k.storedAs(results[e][0], stored);
        written.push_back(
            v.getType().isF32()
                ? v
                : arith::ExtFOp::create(b, k.loc, k.b.getF32Type(), v)
                      .getResult());
      }
      return written;
    };
    if (!columnSum) {
      k.loop(k.begin, k.end, [&](Value chunk) { emitChunk(chunk); });
      if (failed(status))
        return failure();
      call(finishKernel(k), total / vector, argBuffers, op);
      return success();
    }
    // The first output's column sums as it is written: index (p, c) walks
    // rows p, p + parts, ... (16 each) of chunk c of the last dimension,
    // adding each of its `vector` columns in registers, then writes them
    // as partials that a second kernel folds into the sum's result. The
    // sum's column sums kernel would read the output again (GPT-2: the
    // GELU's gradient, the MLP's bias gradient).
    int64_t d = shape.back(), rows = sumRows, perRow = d / vector;
    Value partials = k.args.back();
    k.loop(k.begin, k.end, [&](Value index) {
      Value p = k.divi(index, k.idx(perRow));
      Value c = k.remi(index, k.idx(perRow));
      SmallVector<Value> init(vector, k.f32(0));
      auto loop = scf::ForOp::create(b, k.loc, k.idx(0), k.idx(rows / parts),
                                     k.idx(1), init);
      {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(loop.getBody());
        Value r = k.addi(p, k.muli(loop.getInductionVar(), k.idx(parts)));
        SmallVector<Value> written =
            emitChunk(k.addi(k.muli(r, k.idx(perRow)), c));
        SmallVector<Value> next;
        for (int64_t e = 0; e < vector && !written.empty(); ++e)
          next.push_back(k.add(loop.getRegionIterArgs()[e], written[e]));
        if (written.empty()) // failed: keep the IR well formed
          next.assign(loop.getRegionIterArgs().begin(),
                      loop.getRegionIterArgs().end());
        scf::YieldOp::create(b, k.loc, next);
      }
      for (int64_t e = 0; e < vector; ++e)
        k.store(loop.getResult(e), partials,
                {k.idx(0), k.addi(k.muli(c, k.idx(vector)), k.idx(e)), p});
    });
    if (failed(status))
      return failure();
    call(finishKernel(k), parts * perRow, argBuffers, op);
    skipped.insert(columnSum);
    int acc = accumulatorFor(columnSum, op);
    ColumnSum sum{
        acc >= 0 ? acc : newTemp(columnSum.getResult()), 1.0, acc >= 0, {}};
    foldColumnPartials(op, sum, d, parts, partial);
    return success();
  }
  // Views of this thread's rows of the first dimension.
  auto view = [&](Value m, ArrayRef<int64_t> s, bool split) -> Value {
    if (!split || s.empty())
      return m;
    SmallVector<OpFoldResult> offsets, sizes, strides;
    Value len = arith::SubIOp::create(b, k.loc, k.end, k.begin);
    offsets.push_back(k.begin);
    sizes.push_back(len);
    strides.push_back(b.getIndexAttr(1));
    for (int64_t d : s.drop_front()) {
      offsets.push_back(b.getIndexAttr(0));
      sizes.push_back(b.getIndexAttr(d));
      strides.push_back(b.getIndexAttr(1));
    }
    return memref::SubViewOp::create(b, k.loc, m, offsets, sizes, strides);
  };
  SmallVector<Value> inputs;
  SmallVector<AffineMap> maps;
  for (auto [i, v] : llvm::enumerate(operands)) {
    if (argIndex[i] < 0)
      continue;
    ArrayRef<int64_t> s = shapeOf(v);
    int64_t lead = rank - s.size();
    bool split = rank > 0 && lead == 0 && s[0] == shape[0];
    inputs.push_back(view(k.args[argIndex[i]], s, split));
    SmallVector<AffineExpr> exprs;
    for (int64_t j = 0; j < static_cast<int64_t>(s.size()); ++j)
      exprs.push_back(s[j] == 1 && shape[j + lead] != 1
                          ? getAffineConstantExpr(0, ctx)
                          : getAffineDimExpr(j + lead, ctx));
    maps.push_back(AffineMap::get(rank, 0, exprs, ctx));
  }
  SmallVector<Value> outputs;
  for (size_t i = 0; i < outs.size(); ++i) {
    outputs.push_back(view(k.args[i], shape, true));
    maps.push_back(AffineMap::getMultiDimIdentityMap(rank, ctx));
  }
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  LogicalResult status = success();
  linalg::GenericOp::create(
      b, k.loc, TypeRange{}, inputs, outputs, maps, iterators,
      [&](OpBuilder &nb, Location nl, ValueRange blockArgs) {
        SmallVector<Value> scalars;
        unsigned next = 0;
        for (auto [i, v] : llvm::enumerate(operands)) {
          if (splats[i])
            scalars.push_back(
                arith::ConstantOp::create(nb, nl, cast<TypedAttr>(*splats[i])));
          else
            scalars.push_back(blockArgs[next++]);
        }
        FailureOr<SmallVector<Value>> r = body(nb, nl, scalars);
        if (failed(r)) {
          status = failure();
          // Keep the IR well formed until the error is reported.
          r = SmallVector<Value>(blockArgs.take_back(outs.size()));
        }
        for (auto [value, out] :
             llvm::zip(*r, blockArgs.take_back(outs.size())))
          if (out.getType().isBF16() && value.getType().isF32())
            value = arith::BitcastOp::create(nb, nl, nb.getBF16Type(),
                                             bf16Bits(nb, nl, value));
        linalg::YieldOp::create(nb, nl, *r);
      });
  if (failed(status))
    return failure();
  call(finishKernel(k), rank ? shape[0] : 1, argBuffers, op);
  return success();
}

//===----------------------------------------------------------------------===//
// Reductions: linalg.generic with reduction iterators, one thread
//===----------------------------------------------------------------------===//

/// An scf.index_switch on `which` with case i in [0, n) built by
/// body(i); the default does nothing. No switch for one case.
static void switchOver(Kernel &k, Value which, int64_t n,
                       llvm::function_ref<void(int64_t)> body) {
  if (n == 1)
    return body(0);
  auto op = scf::IndexSwitchOp::create(k.b, k.loc, TypeRange{}, which,
                                       llvm::to_vector(llvm::seq<int64_t>(n)),
                                       static_cast<unsigned>(n));
  OpBuilder::InsertionGuard guard(k.b);
  for (int64_t i = 0; i <= n; ++i) {
    Region &region = i < n ? op.getCaseRegions()[i] : op.getDefaultRegion();
    k.b.setInsertionPointToStart(&region.emplaceBlock());
    if (i < n)
      body(i);
    scf::YieldOp::create(k.b, k.loc);
  }
}

LogicalResult HostLowering::lowerSquaredNorms(SquaredNormsOp op) {
  Type f32 = Float32Type::get(ctx);
  int out = outputFor(op.getResult());
  int64_t n = op.getInputs().size();
  // Where update groups lay buffers back to back: a buffer's run (by its
  // first buffer) and its offset there, in floats.
  std::map<int, std::pair<int, int64_t>> inRun;
  std::map<int, int64_t> runFloats;
  for (auto &entry : updateGroups)
    for (const std::vector<int> &run : updateRuns(entry.second)) {
      for (size_t i = 0; i < run.size(); ++i)
        inRun[run[i]] = {
            run.front(),
            (plan::runBytes(plan, ArrayRef(run).take_front(i + 1)) -
             plan.buffers[run[i]].bytes) /
                4};
      runFloats[run.front()] = plan::runBytes(plan, run) / 4;
    }

  // Per operand: the array it is read from (-1: a zero constant), where,
  // and how many floats; batches of at most kBases arrays (a kernel takes
  // at most 12 buffers).
  struct Term {
    int64_t entry, offset, count;
    int base;
  };
  constexpr size_t kBases = 10;
  SmallVector<SmallVector<Term>> batches;
  SmallVector<SmallVector<int>> bases;
  for (auto [i, v] : llvm::enumerate(op.getInputs())) {
    Term t{static_cast<int64_t>(i), 0, tensorType(v).getNumElements(), -1};
    if (auto splat = splatOf(v)) {
      auto value = dyn_cast<FloatAttr>(*splat);
      if (!value || !value.getValue().isZero())
        return op.emitError("host lowering: the squared norm of a nonzero "
                            "constant");
    } else {
      int b = bufferFor(v);
      if (b < 0)
        return op.emitError("host lowering: operand ") << i << " has no buffer";
      auto run = inRun.find(b);
      t.base = run == inRun.end() ? b : run->second.first;
      t.offset = run == inRun.end() ? 0 : run->second.second;
    }
    bool fits = !batches.empty() &&
                (t.base < 0 || llvm::is_contained(bases.back(), t.base) ||
                 bases.back().size() < kBases);
    if (!fits) {
      batches.emplace_back();
      bases.emplace_back();
    }
    batches.back().push_back(t);
    if (t.base >= 0 && !llvm::is_contained(bases.back(), t.base))
      bases.back().push_back(t.base);
  }

  StringRef name = "squared_norms";
  for (size_t batch = 0; batch < batches.size(); ++batch) {
    ArrayRef<Term> terms = batches[batch];
    ArrayRef<int> arrays = bases[batch];
    SmallVector<Type> arrayTypes;
    for (int b : arrays) {
      auto floats = runFloats.find(b);
      arrayTypes.push_back(
          memrefOf({floats != runFloats.end() ? floats->second
                                              : plan.buffers[b].bytes / 4},
                   f32));
    }
    auto argOf = [&](Kernel &k, const Term &t, unsigned first) {
      return k.args[first + (llvm::find(arrays, t.base) - arrays.begin())];
    };
    auto square = [&](Kernel &k, Value array, const Term &t, Value at) {
      Value x = k.load(array, k.addi(at, k.idx(t.offset)));
      return k.mul(x, x);
    };
    int64_t m = terms.size();
    if (!options.parallelOverElements) {
      // A tensor per index, its elements in order.
      SmallVector<Type> types{memrefOf({n}, f32)};
      types.append(arrayTypes);
      Kernel k = startKernel(name, op.getLoc(), types);
      k.loop(k.begin, k.end, [&](Value index) {
        switchOver(k, index, m, [&](int64_t i) {
          const Term &t = terms[i];
          Value sum = k.f32(0);
          if (t.base >= 0)
            sum = k.reduce(0, t.count, sum, [&](Value j, Value acc) {
              return k.add(acc, square(k, argOf(k, t, 1), t, j));
            });
          k.store(sum, k.args[0], k.idx(t.entry));
        });
      });
      SmallVector<int> args{out};
      args.append(arrays.begin(), arrays.end());
      call(finishKernel(k), m, args, op);
      continue;
    }
    // On a GPU, as a whole-tensor nn.reduce_sum of x * x computes each:
    // the large tensors' strided partial sums in one kernel, then a warp
    // per tensor folds its partials (or a small tensor's squares).
    SmallVector<int64_t> parts, partOffset;
    int64_t totalParts = 0;
    for (const Term &t : terms) {
      parts.push_back(t.base >= 0 ? partialSumsFor(t.count) : 0);
      partOffset.push_back(totalParts);
      totalParts += parts.back();
    }
    int scratch = -1;
    if (totalParts) {
      scratch = newScratch({totalParts}, f32);
      SmallVector<int64_t> large;
      for (int64_t i = 0; i < m; ++i)
        if (parts[i])
          large.push_back(i);
      SmallVector<Type> types{memrefOf({totalParts}, f32)};
      types.append(arrayTypes);
      Kernel k = startKernel(name, op.getLoc(), types);
      k.loop(k.begin, k.end, [&](Value q) {
        // Which large tensor partial q belongs to.
        Value which = k.idx(0);
        for (size_t l = 1; l < large.size(); ++l) {
          Value past =
              arith::CmpIOp::create(k.b, k.loc, arith::CmpIPredicate::uge, q,
                                    k.idx(partOffset[large[l]]));
          which = arith::SelectOp::create(
              k.b, k.loc, past, k.idx(static_cast<int64_t>(l)), which);
        }
        switchOver(k, which, large.size(), [&](int64_t l) {
          int64_t i = large[l];
          const Term &t = terms[i];
          Value p = arith::SubIOp::create(k.b, k.loc, q, k.idx(partOffset[i]));
          Value sum = k.foldStrided(
              p, parts[i], t.count, k.f32(0), [&](Value acc, Value at) {
                return k.add(acc, square(k, argOf(k, t, 1), t, at));
              });
          k.store(sum, k.args[0], q);
        });
      });
      SmallVector<int> args{scratch};
      args.append(arrays.begin(), arrays.end());
      call(finishKernel(k), totalParts, args, op);
    }
    SmallVector<Type> types{memrefOf({n}, f32)};
    if (totalParts)
      types.push_back(memrefOf({totalParts}, f32));
    unsigned firstArray = types.size();
    types.append(arrayTypes);
    Kernel k = startKernel(name, op.getLoc(), types);
    k.loop(k.begin, k.end, [&](Value index) {
      Value row =
          options.warpShuffles ? k.divi(index, k.idx(RowLanes::kLanes)) : index;
      switchOver(k, row, m, [&](int64_t i) {
        const Term &t = terms[i];
        Value sum;
        if (t.base < 0) {
          RowLanes lanes(k, index, 1, options.warpShuffles);
          lanes.once([&] { k.store(k.f32(0), k.args[0], k.idx(t.entry)); });
          return;
        }
        RowLanes lanes(k, index, parts[i] ? parts[i] : t.count,
                       options.warpShuffles);
        if (parts[i])
          sum = lanes.sum([&](Value j) {
            return k.load(k.args[1], k.addi(j, k.idx(partOffset[i])));
          });
        else
          sum = lanes.sum([&](Value j) {
            return square(k, argOf(k, t, firstArray), t, j);
          });
        lanes.once([&] { k.store(sum, k.args[0], k.idx(t.entry)); });
      });
    });
    SmallVector<int> args{out};
    if (totalParts)
      args.push_back(scratch);
    args.append(arrays.begin(), arrays.end());
    call(finishKernel(k), RowLanes::range(m, options.warpShuffles), args, op);
  }
  return success();
}

LogicalResult HostLowering::lowerReduce(Operation *op) {
  Value x = op->getOperand(0), y = op->getResult(0);
  auto tx = tensorType(x);
  ArrayRef<int64_t> axesAttr =
      cast<DenseI64ArrayAttr>(op->getAttr("axes")).asArrayRef();
  int64_t rank = tx.getRank();
  SmallVector<bool> reduced(rank, axesAttr.empty());
  for (int64_t a : axesAttr)
    reduced[a < 0 ? a + rank : a] = true;
  SmallVector<int64_t> kept;
  SmallVector<AffineExpr> outExprs;
  SmallVector<utils::IteratorType> iterators;
  int64_t count = 1;
  for (int64_t i = 0; i < rank; ++i) {
    if (reduced[i]) {
      count *= tx.getShape()[i];
      iterators.push_back(utils::IteratorType::reduction);
    } else {
      kept.push_back(tx.getShape()[i]);
      outExprs.push_back(getAffineDimExpr(i, ctx));
      iterators.push_back(utils::IteratorType::parallel);
    }
  }
  int out = newTemp(y);
  // The gradient norm's sum of x * x reads x (foldedSquares).
  bool square = false;
  if (auto mul = x.getDefiningOp<MulOp>(); mul && foldedSquares.contains(mul)) {
    square = true;
    x = mul.getLhs();
  }
  int in = bufferFor(x);
  Type f32 = Float32Type::get(ctx);
  Kernel k = startKernel(op->getName().stripDialect(), op->getLoc(),
                         {memrefOf(kept, f32), memrefOf(tx.getShape(), f32)});
  bool isMax = isa<ReduceMaxOp>(op);
  Value init = k.f32(isMax ? -INFINITY : 0.0);
  if (options.parallelOverElements) {
    // Index i of the range is kept element i; it folds its reduced
    // elements in the order the linalg.generic below visits them.
    SmallVector<int64_t> reducedShape;
    for (int64_t i = 0; i < rank; ++i)
      if (reduced[i])
        reducedShape.push_back(tx.getShape()[i]);
    int64_t keptCount = 1;
    for (int64_t d : kept)
      keptCount *= d;
    if (kept.empty()) {
      // A whole-tensor reduction: partial p folds elements p, p + P, ...
      // (neighbouring indices read neighbouring elements), then one warp
      // folds the partials (RowLanes); small tensors on one warp alone.
      k.func.erase();
      StringRef name = op->getName().stripDialect();
      auto combine = [&](Kernel &c, Value acc, Value x) {
        return isMax ? c.max(x, acc) : c.add(acc, x);
      };
      // A folded x * x (the gradient norm's) is squared as it is read.
      auto element = [&](Kernel &c, Value at) {
        Value x = c.load(c.args[1], at);
        return square ? c.mul(x, x) : x;
      };
      int64_t parts = partialSumsFor(count);
      int source = in;
      int64_t length = count;
      if (parts) {
        source = newScratch({parts}, f32);
        length = parts;
        Kernel first = startKernel(
            name, op->getLoc(),
            {memrefOf({parts}, f32), memrefOf({count}, tx.getElementType())});
        first.loop(first.begin, first.end, [&](Value p) {
          Value sum = first.foldStrided(
              p, parts, count, first.f32(isMax ? -INFINITY : 0.0),
              [&](Value acc, Value at) {
                return combine(first, acc, element(first, at));
              });
          first.store(sum, first.args[0], p);
        });
        call(finishKernel(first), parts, {source, in}, op);
      }
      bool squareHere = square && !parts;
      Kernel last =
          startKernel(name, op->getLoc(),
                      {memrefOf({}, f32),
                       memrefOf({length}, parts ? f32 : tx.getElementType())});
      last.loop(last.begin, last.end, [&](Value index) {
        RowLanes lanes(last, index, length, options.warpShuffles);
        auto term = [&](Value j) {
          Value x = last.load(last.args[1], j);
          return squareHere ? last.mul(x, x) : x;
        };
        Value sum = isMax ? lanes.max(term) : lanes.sum(term);
        if (isa<ReduceMeanOp>(op))
          sum = last.mul(sum, last.f32(1.0 / count));
        lanes.once([&] { last.store(sum, last.args[0], {}); });
      });
      call(finishKernel(last), RowLanes::range(1, options.warpShuffles),
           {out, source}, op);
      return success();
    }
    // A sum added into a gradient accumulator adds into it itself. One
    // over leading dimensions into few elements (a bias gradient: [B, T,
    // C] to C) is a sum of columns.
    bool leading = !reduced.back();
    for (int64_t i = 1; i < rank; ++i)
      if (reduced[i] && !reduced[i - 1])
        leading = false;
    int accumulator = isMax ? -1 : accumulatorFor(op);
    if (!isMax && leading && keptCount < kColumnSumsBelow &&
        count >= kColumnSumsFrom) {
      k.func.erase();
      Type element = tx.getElementType();
      columnSums(op, accumulator >= 0 ? accumulator : out, count, keptCount,
                 isa<ReduceMeanOp>(op) ? 1.0 / count : 1.0, accumulator >= 0,
                 {memrefOf({count, keptCount}, element)}, {in},
                 [&](Kernel &c, ArrayRef<Value> args, Value r, Value j) {
                   return c.load(args[0], {r, j});
                 });
      return success();
    }
    k.loop(k.begin, k.end, [&](Value flat) {
      SmallVector<Value> keptAt = k.unflatten(flat, kept);
      Value sum = k.reduce(0, count, init, [&](Value r, Value acc) {
        SmallVector<Value> reducedAt = k.unflatten(r, reducedShape);
        SmallVector<Value> at;
        for (int64_t i = 0, nk = 0, nr = 0; i < rank; ++i)
          at.push_back(reduced[i] ? reducedAt[nr++] : keptAt[nk++]);
        Value x = k.load(k.args[1], at);
        return isMax ? k.max(x, acc) : k.add(acc, x);
      });
      if (isa<ReduceMeanOp>(op))
        sum = k.mul(sum, k.f32(1.0 / count));
      if (accumulator >= 0)
        sum = k.add(k.load(k.args[0], keptAt), sum);
      k.store(sum, k.args[0], keptAt);
    });
    call(finishKernel(k), keptCount, {accumulator >= 0 ? accumulator : out, in},
         op);
    return success();
  }
  linalg::FillOp::create(k.b, k.loc, ValueRange{init}, ValueRange{k.args[0]});
  SmallVector<AffineMap> maps{AffineMap::getMultiDimIdentityMap(rank, ctx),
                              AffineMap::get(rank, 0, outExprs, ctx)};
  linalg::GenericOp::create(
      k.b, k.loc, TypeRange{}, ValueRange{k.args[1]}, ValueRange{k.args[0]},
      maps, iterators, [&](OpBuilder &nb, Location nl, ValueRange a) {
        Value r =
            isMax ? arith::MaximumFOp::create(nb, nl, a[0], a[1]).getResult()
                  : arith::AddFOp::create(nb, nl, a[1], a[0]).getResult();
        linalg::YieldOp::create(nb, nl, r);
      });
  if (isa<ReduceMeanOp>(op)) {
    Value scale = k.f32(1.0 / count);
    int64_t rankOut = kept.size();
    linalg::GenericOp::create(
        k.b, k.loc, TypeRange{}, ValueRange{}, ValueRange{k.args[0]},
        SmallVector<AffineMap>{AffineMap::getMultiDimIdentityMap(rankOut, ctx)},
        SmallVector<utils::IteratorType>(rankOut,
                                         utils::IteratorType::parallel),
        [&](OpBuilder &nb, Location nl, ValueRange a) {
          linalg::YieldOp::create(
              nb, nl, arith::MulFOp::create(nb, nl, a[0], scale).getResult());
        });
  }
  call(finishKernel(k), 1, {out, in}, op);
  return success();
}

//===----------------------------------------------------------------------===//
// GEMMs
//===----------------------------------------------------------------------===//

LogicalResult HostLowering::lowerGemm(Operation *op, Value a, Value b,
                                      bool transB, Value bias, int out,
                                      bool accumulateIntoOut,
                                      Operation *epilogue) {
  // Shapes as the op sees them (before folding transposes).
  ArrayRef<int64_t> sa = tensorType(a).getShape();
  ArrayRef<int64_t> sb = tensorType(b).getShape();
  int64_t k = sa.back(), m = tensorType(a).getNumElements() / k;
  int64_t n = transB ? sb[sb.size() - 2] : sb.back();
  int64_t batch = 1;
  int64_t strideA = 0, strideB = 0, strideC = 0;
  if (sb.size() > 2) {
    // Batched on both sides with equal batch dimensions.
    if (sa.size() != sb.size() || sa.drop_back(2) != sb.drop_back(2))
      return op->emitError("host lowering: matmul batch dimensions must be "
                           "equal, got ")
             << a.getType() << " and " << b.getType();
    m = sa[sa.size() - 2];
    batch = tensorType(a).getNumElements() / (m * k);
    strideA = m * k;
    strideB = k * n;
    strideC = m * n;
  }
  auto [aValue, transA] = unwrapTranspose(a);
  auto [bValue, bFolded] = unwrapTranspose(b);
  bool tb = transB != bFolded;
  int bufA = bufferFor(aValue), bufB = bufferFor(bValue);
  if (bufA < 0 || bufB < 0)
    return op->emitError("host lowering: matmul operand has no buffer");
  if (bf16Gemms) {
    bufA = castToBf16(bufA, op);
    bufB = castToBf16(bufB, op);
  }

  plan::Action act;
  if (options.gemmEpilogues != host::KernelOptions::Epilogues::None && bias &&
      !accumulateIntoOut && batch == 1) {
    act.bias = bufferFor(bias);
    bias = Value();
  }
  StringRef stage;
  if (epilogue) {
    epilogueReader(op, &stage);
    Value r = op->getResult(0);
    if (stage == "gelu_tanh") {
      act.activation = "gelu_tanh";
      // A GELU that only GEMMs read is written in bf16 (keepOutputInBf16),
      // and then its input, kept for the backward, too (aux has D's type).
      out = newGemmOutput(epilogue->getResult(0));
      if (!r.hasOneUse()) {
        act.aux = buffers.lookup(r);
        plan::Buffer &aux = plan.buffers[act.aux];
        aux = describeBuffer(BufferKind::Temp, "", tensorType(r).getShape(),
                             plan.buffers[out].dtype == "bf16"
                                 ? Type(BFloat16Type::get(ctx))
                                 : tensorType(r).getElementType());
      }
    } else if (stage == "dgelu_tanh") {
      act.activation = "dgelu_tanh";
      act.aux = bufferFor(cast<ActivationGradOp>(epilogue).getInput());
      // D has aux's type: bf16 where the forward kept the GELU's input so
      // (epilogueFor checks that only GEMMs read it then).
      Value y = epilogue->getResult(0);
      out =
          plan.buffers[act.aux].dtype == "bf16" ? newGemmOutput(y) : newTemp(y);
    } else { // residual
      auto add = cast<AddOp>(epilogue);
      act.addend = bufferFor(add.getLhs() == r ? add.getRhs() : add.getLhs());
      // The sum in bf16 (--bf16-residual) takes a bf16 addend: C has D's
      // type.
      Value sum = epilogue->getResult(0);
      out = residualInBf16(sum) ? newTempOf(sum, BFloat16Type::get(ctx))
                                : newTemp(sum);
      if (plan.buffers[out].dtype == "bf16")
        act.addend = castToBf16(act.addend, op);
      else if (plan.buffers[act.addend].dtype == "bf16") {
        int wide = newScratch({plan.buffers[act.addend].bytes / 2},
                              Float32Type::get(ctx));
        widenBf16(act.addend, wide, op);
        act.addend = wide;
      }
    }
    skipped.insert(epilogue);
  }
  // A bf16 output takes a bf16 bias (cuBLASLt's bias has D's type).
  if (act.bias >= 0 && plan.buffers[out].dtype == "bf16")
    act.bias = castToBf16(act.bias, op);
  // The bias gradient beside a weight's gradient: the column sums of A as
  // the GEMM reads it (cuBLASLt's BGRADB), not a kernel reading it again.
  if (!epilogue && act.bias < 0)
    if (ReduceSumOp sum = biasGradientOfGemm(op, aValue, transA, batch, m)) {
      act.bgrad = newTemp(sum.getResult());
      skipped.insert(sum);
    }

  bool accumulate = accumulateIntoOut;
  // With one microbatch a step, a gradient accumulator is still zero when
  // the GEMM adds its only contribution (the optimizer step zeroes it after
  // use): the GEMM writes it instead, without reading it (beta = 0).
  const plan::Buffer &target = plan.buffers[out];
  if (accumulate && plan.microbatches == 1 &&
      target.kind == BufferKind::State && target.role == "grad") {
    accumulate = false;
    overwrittenGradients.insert(out);
  }
  if (bias && !accumulateIntoOut) {
    // C starts as the broadcast bias; the GEMM adds to it.
    auto outType = tensorType(op->getResult(0));
    if (failed(lowerElementwise(op, {bias}, out, outType)))
      return failure();
    current->actions.back().note = "bias";
    accumulate = true;
  }
  act.kind = plan::Action::Kind::Gemm;
  act.batch = batch;
  act.m = m;
  act.n = n;
  act.k = k;
  act.transA = transA;
  act.transB = tb;
  act.accumulate = accumulate;
  act.strideA = strideA;
  act.strideB = strideB;
  act.strideC = strideC;
  act.buffers = {bufA, bufB, out};
  act.note = op->getName().stripDialect().str();
  if (epilogue)
    act.note += " + " + stage.str();
  if (act.bgrad >= 0)
    act.note += " + bgrad";
  for (int buf : act.buffers)
    touch(buf);
  for (int buf : {act.bias, act.addend, act.aux, act.bgrad})
    if (buf >= 0)
      touch(buf);
  current->actions.push_back(std::move(act));
  ++actionIndex;
  return success();
}

Operation *HostLowering::epilogueFor(Operation *gemm) {
  StringRef stage;
  Operation *reader = epilogueReader(gemm, &stage);
  using Epilogues = host::KernelOptions::Epilogues;
  bool allowed = stage == "residual" ? options.gemmEpilogues != Epilogues::None
                                     : options.gemmEpilogues == Epilogues::Gelu;
  if (!allowed || !reader || reader->getBlock() != gemm->getBlock() ||
      storeTargets.count(reader->getResult(0)))
    return nullptr;
  // One GEMM (cuBLASLt's epilogues take no batch), f32 out.
  Value r = gemm->getResult(0);
  auto type = tensorType(r);
  if (!type.getElementType().isF32() ||
      tensorType(gemm->getOperand(1)).getRank() != 2)
    return nullptr;
  // The reader's other input must exist when the GEMM runs.
  for (Value in : reader->getOperands()) {
    Operation *def = in.getDefiningOp();
    if (in != r && def && def->getBlock() == gemm->getBlock() &&
        !def->isBeforeInBlock(gemm))
      return nullptr;
  }
  // Only a GELU keeps the GEMM's own result (as aux); cuBLASLt's aux
  // matrices want a leading dimension divisible by 8.
  if (stage != "gelu_tanh" && !r.hasOneUse())
    return nullptr;
  bool aux = stage == "dgelu_tanh" || !r.hasOneUse();
  if (aux && type.getShape().back() % 8 != 0)
    return nullptr;
  // A GELU's input kept in bf16 makes its gradient bf16 (aux has D's
  // type): only where nothing needs that in f32.
  if (stage == "dgelu_tanh") {
    int input = bufferFor(cast<ActivationGradOp>(reader).getInput());
    if (input >= 0 && plan.buffers[input].dtype == "bf16" &&
        !keepOutputInBf16(reader->getResult(0)))
      return nullptr;
  }
  return reader;
}

Operation *HostLowering::scaleGradientOf(Operation *op) {
  bool rms = isa<RMSNormGradOp>(op);
  Value x = op->getOperand(1);
  for (Operation *user : x.getUsers()) {
    bool scale =
        rms ? isa<RMSNormScaleGradOp>(user) : isa<LayerNormScaleGradOp>(user);
    if (scale && user->getBlock() == op->getBlock() &&
        op->isBeforeInBlock(user) && user->getOperand(1) == x &&
        user->getAttr("eps") == op->getAttr("eps"))
      return user;
  }
  return nullptr;
}

ReduceSumOp HostLowering::biasGradientAfter(Operation *op, Value dy,
                                            int64_t d) {
  Operation *next = op->getNextNode();
  while (next && isa<ParamRefOp, StateRefOp, ConstantOp>(next))
    next = next->getNextNode();
  auto sum = dyn_cast_or_null<ReduceSumOp>(next);
  // Only one that lowerReduce makes column sums of alone.
  int64_t rows = tensorType(dy).getNumElements() / d;
  if (!sum || sum.getInput() != dy || skipped.contains(sum) ||
      !sumsLeadingDimensions(sum) ||
      tensorType(sum.getResult()).getNumElements() != d ||
      d >= kColumnSumsBelow || rows < kColumnSumsFrom)
    return ReduceSumOp();
  return sum;
}

ReduceSumOp HostLowering::biasGradientOfGemm(Operation *gemm, Value a,
                                             bool transA, int64_t batch,
                                             int64_t m) {
  if (options.gemmEpilogues != host::KernelOptions::Epilogues::Gelu ||
      batch != 1 || !transA)
    return ReduceSumOp();
  // A is [K, M] as stored, unpadded: the sum over K of each column.
  int buffer = bufferFor(a);
  if (buffer < 0 || plan.buffers[buffer].pitch ||
      tensorType(a).getShape().back() != m)
    return ReduceSumOp();
  SmallVector<Value> views{a};
  if (auto reshape = a.getDefiningOp<ReshapeOp>())
    views.push_back(reshape.getInput());
  return laterLeadingSum(views, gemm, m);
}

ReduceSumOp HostLowering::laterLeadingSum(ArrayRef<Value> views,
                                          Operation *after, int64_t n) {
  for (Value view : views)
    for (Operation *user : view.getUsers()) {
      auto sum = dyn_cast<ReduceSumOp>(user);
      if (sum && sum.getInput() == view && !skipped.contains(sum) &&
          sum->getBlock() == after->getBlock() && after->isBeforeInBlock(sum) &&
          sumsLeadingDimensions(sum) &&
          tensorType(sum.getResult()).getNumElements() == n &&
          tensorType(sum.getResult()).getElementType().isF32())
        return sum;
    }
  return ReduceSumOp();
}

AddOp HostLowering::residualGradientAdd(Operation *op) {
  Value r = op->getResult(0);
  auto add = r.hasOneUse() ? dyn_cast<AddOp>(*r.getUsers().begin()) : AddOp();
  if (!add || add->getBlock() != op->getBlock() || add.getLhs() == add.getRhs())
    return AddOp();
  Value other = add.getLhs() == r ? add.getRhs() : add.getLhs();
  Operation *def = other.getDefiningOp();
  if (other.getType() != r.getType() || add.getType() != r.getType() ||
      (def && (def->getBlock() != op->getBlock() || !def->isBeforeInBlock(op))))
    return AddOp();
  // In f32, or both in bf16 (--bf16-residual).
  int buffer = bufferFor(other);
  if (buffer < 0 ||
      (plan.buffers[buffer].dtype != "f32" && !residualInBf16(add.getResult())))
    return AddOp();
  return add;
}

void HostLowering::columnSums(Operation *op, ArrayRef<ColumnSum> sums,
                              int64_t rows, int64_t cols, ArrayRef<Type> args,
                              ArrayRef<int> buffers) {
  // Index (b, c) sums the columns of chunk c (16 bytes of the narrowest
  // operand where the columns divide: one 128-bit load a row, as
  // Kernel::narrowestBits has it) over block b's parts (columnSumParts:
  // rows p, p + parts, ... for part p), each from zero, then adds them in
  // order: a norm gradient's fused sums, bit for bit.
  int64_t parts, perBlock;
  std::tie(parts, perBlock) = columnSumParts(rows);
  int64_t blocks = parts / perBlock;
  StringRef name = op->getName().stripDialect();
  Type f32 = Float32Type::get(ctx);
  int64_t n = sums.size();
  // partial[s][j][b] for sum s.
  int partial = newScratch({n, cols, blocks}, f32);
  SmallVector<Type> types{memrefOf({n, cols, blocks}, f32)};
  types.append(args.begin(), args.end());
  SmallVector<int> firstBuffers{partial};
  firstBuffers.append(buffers.begin(), buffers.end());
  Kernel first = startKernel(name, op->getLoc(), types, buffers);
  int64_t vector = options.parallelOverElements
                       ? chunkColumns(cols, 1, first.narrowestBits)
                       : 1;
  int64_t chunks = cols / vector;
  first.loop(first.begin, first.end, [&](Value i) {
    Value b = first.divi(i, first.idx(chunks));
    Value j0 = first.muli(first.remi(i, first.idx(chunks)), first.idx(vector));
    ArrayRef<Value> operands = ArrayRef<Value>(first.args).drop_front();
    // total[s * vector + e]: sum s of column j0 + e.
    SmallVector<Value> total;
    for (int64_t w = 0; w < perBlock; ++w) {
      Value p = first.addi(first.muli(b, first.idx(perBlock)), first.idx(w));
      SmallVector<Value> init(n * vector, first.f32(0));
      auto loop =
          scf::ForOp::create(first.b, first.loc, first.idx(0),
                             first.idx(rows / parts), first.idx(1), init);
      {
        OpBuilder::InsertionGuard guard(first.b);
        first.b.setInsertionPointToStart(loop.getBody());
        Value r =
            first.addi(p, first.muli(loop.getInductionVar(), first.idx(parts)));
        SmallVector<Value> next;
        for (int64_t s = 0; s < n; ++s)
          for (int64_t e = 0; e < vector; ++e)
            next.push_back(
                first.add(loop.getRegionIterArgs()[s * vector + e],
                          sums[s].term(first, operands, r,
                                       first.addi(j0, first.idx(e)))));
        scf::YieldOp::create(first.b, first.loc, next);
      }
      if (w == 0)
        total.assign(loop.getResults().begin(), loop.getResults().end());
      else
        for (int64_t t = 0; t < n * vector; ++t)
          total[t] = first.add(total[t], loop.getResult(t));
    }
    for (int64_t s = 0; s < n; ++s)
      for (int64_t e = 0; e < vector; ++e)
        first.store(total[s * vector + e], first.args[0],
                    {first.idx(s), first.addi(j0, first.idx(e)), b});
  });
  call(finishKernel(first), blocks * chunks, firstBuffers, op);
  foldColumnPartials(op, sums, cols, blocks, partial);
}

void HostLowering::foldColumnPartials(Operation *op, ArrayRef<ColumnSum> sums,
                                      int64_t cols, int64_t parts,
                                      int partial) {
  StringRef name = op->getName().stripDialect();
  Type f32 = Float32Type::get(ctx);
  int64_t n = sums.size();
  bool shuffles = options.warpShuffles;
  SmallVector<Type> lastTypes(n, memrefOf({cols}, f32));
  lastTypes.push_back(memrefOf({n, cols, parts}, f32));
  Kernel last = startKernel(name, op->getLoc(), lastTypes);
  last.loop(last.begin, last.end, [&](Value index) {
    RowLanes lanes(last, index, parts, shuffles);
    Value j = lanes.row;
    for (int64_t s = 0; s < n; ++s) {
      Value total = lanes.sum([&](Value p) {
        return last.load(last.args[n], {last.idx(s), j, p});
      });
      if (sums[s].scale != 1)
        total = last.mul(total, last.f32(sums[s].scale));
      Value out = last.args[s];
      bool accumulate = sums[s].accumulate;
      lanes.once([&] {
        Value v = accumulate ? last.add(last.load(out, j), total) : total;
        last.store(v, out, j);
      });
    }
  });
  SmallVector<int> lastBuffers;
  for (const ColumnSum &s : sums)
    lastBuffers.push_back(s.out);
  lastBuffers.push_back(partial);
  call(finishKernel(last), RowLanes::range(cols, shuffles), lastBuffers, op);
}

int HostLowering::castToBf16(int buffer, Operation *op) {
  if (plan.buffers[buffer].dtype == "bf16")
    return buffer; // stored in bf16 by its producer (storeInBf16)
  // One copy serves every GEMM that reads the same value: a weight keeps
  // its value through a microbatch's forward and backward, and any other
  // buffer but the optimizer's states is written once, by the op that
  // makes it, before anything reads it. The backward reads the forward's
  // copies (a chunk's per microbatch in flight, handed on like what the
  // forward saves).
  BufferKind kind = plan.buffers[buffer].kind;
  if (kind == BufferKind::Param && parametersFixed) {
    // A weight's copy is made once a step (weightCopies).
    if (auto it = weightCopies.find(buffer); it != weightCopies.end())
      return it->second;
    return weightCopy(buffer);
  }
  bool fixed = kind != BufferKind::State && kind != BufferKind::Scalar;
  std::string key = "bf16 copy of " + std::to_string(buffer);
  if (fixed)
    if (int copy = reuseScratch(key); copy >= 0)
      return copy;
  int64_t n = plan.buffers[buffer].bytes / 4;
  int copy = newScratch({n}, BFloat16Type::get(ctx));
  // Padded rows stay padded: the copy is of every float, padding too.
  if (int64_t pitch = plan.buffers[buffer].pitch) {
    plan.buffers[copy].shape = plan.buffers[buffer].shape;
    plan.buffers[copy].pitch = pitch;
  }
  if (fixed)
    keepScratch(key, copy);
  castInto(copy, buffer, op);
  return copy;
}

int HostLowering::weightCopy(int param) {
  if (auto it = weightCopies.find(param); it != weightCopies.end())
    return it->second;
  const plan::Buffer &p = plan.buffers[param];
  plan::Buffer b = describeBuffer(BufferKind::State, p.name + ":bf16", p.shape,
                                  BFloat16Type::get(ctx));
  b.pitch = p.pitch; // the padding too, as the cast writes it
  b.bytes = p.bytes / 2;
  b.role = "bf16";
  b.of = p.name;
  int copy = plan.addBuffer(b);
  weightCopies[param] = copy;
  return copy;
}

std::vector<int> HostLowering::copiesWrittenBy(ArrayRef<int> params) {
  if (!bf16Gemms || parametersFixed ||
      llvm::none_of(params, [&](int p) { return weightCopies.count(p); }))
    return {};
  for (auto [i, p] : llvm::enumerate(params)) {
    if (p < 0)
      return {};
    const plan::Buffer &b = plan.buffers[p];
    if (b.kind != BufferKind::Param || b.pitch || b.bytes % 4)
      return {};
    // Element e of the update is at 4e bytes into the parameters' run and
    // must be at 2e into the copies'.
    if (i + 1 < params.size() &&
        plan::runStride(b.bytes) != 2 * plan::runStride(b.bytes / 2))
      return {};
  }
  std::vector<int> copies;
  for (int p : params) {
    copies.push_back(weightCopy(p));
    copiedByUpdate.insert(p);
  }
  return copies;
}

void HostLowering::castInto(int copy, int buffer, Operation *op) {
  int64_t n = plan.buffers[buffer].bytes / 4;
  Type i16 = IntegerType::get(ctx, 16);
  Kernel k =
      startKernel("cast_bf16", op ? op->getLoc() : module.getLoc(),
                  {memrefOf({n}, i16), memrefOf({n}, Float32Type::get(ctx))});
  // Over elements, one index per chunk of eight floats where they divide
  // (two 128-bit loads, one 128-bit store), else of four.
  int64_t vector =
      options.parallelOverElements ? chunkColumns(n, 1, /*bits=*/16) : 1;
  k.loop(k.begin, k.end, [&](Value chunk) {
    Value first = k.muli(chunk, k.idx(vector));
    if (vector == 1)
      return k.store(bf16Bits(k.b, k.loc, k.load(k.args[1], first)), k.args[0],
                     first);
    SmallVector<Value> bits;
    for (Value x : k.loadChunk(k.args[1], first, vector))
      bits.push_back(bf16Bits(k.b, k.loc, x));
    k.storeChunk(bits, k.args[0], first);
  });
  call(finishKernel(k), n / vector, {copy, buffer}, op);
  current->actions.back().note = "cast_bf16";
}

void HostLowering::addWeightCasts(const std::string &optimizer,
                                  const std::string &castWeights) {
  if (weightCopies.empty())
    return;
  for (plan::Function &f : plan.functions)
    if (f.name == optimizer) {
      current = &f;
      for (auto [param, copy] : weightCopies)
        if (!copiedByUpdate.count(param))
          castInto(copy, param, nullptr);
    }
  plan.functions.push_back({castWeights, {}});
  current = &plan.functions.back();
  for (auto [param, copy] : weightCopies)
    castInto(copy, param, nullptr);
}

//===----------------------------------------------------------------------===//
// Row-wise ops: scf loops over rows of the last dimension
//===----------------------------------------------------------------------===//

namespace {
/// Mean and reciprocal standard deviation of row `r` of x[R, D]
/// (layer_norm), or just the reciprocal root mean square (rms_norm, mean 0).
std::pair<Value, Value> rowStatistics(Kernel &k, Value x, Value r, int64_t d,
                                      double eps, bool rms) {
  Value mean = k.f32(0);
  if (!rms) {
    Value sum = k.reduce(0, d, k.f32(0), [&](Value j, Value acc) {
      return k.add(acc, k.load(x, {r, j}));
    });
    mean = k.mul(sum, k.f32(1.0 / d));
  }
  Value sq = k.reduce(0, d, k.f32(0), [&](Value j, Value acc) {
    Value c = k.sub(k.load(x, {r, j}), mean);
    return k.add(acc, k.mul(c, c));
  });
  Value var = k.add(k.mul(sq, k.f32(1.0 / d)), k.f32(eps));
  return {mean, math::RsqrtOp::create(k.b, k.loc, var)};
}
} // namespace

ReduceSumOp HostLowering::columnSumOf(Value v, Operation *after, int64_t d) {
  int64_t rows = tensorType(v).getNumElements() / d;
  if (d >= kColumnSumsBelow || rows < kColumnSumsFrom)
    return ReduceSumOp();
  SmallVector<Value> views;
  if (tensorType(v).getShape().back() == d)
    views.push_back(v);
  for (Operation *user : v.getUsers())
    if (auto reshape = dyn_cast<ReshapeOp>(user);
        reshape && tensorType(reshape.getResult()).getShape().back() == d)
      views.push_back(reshape.getResult());
  return laterLeadingSum(views, after, d);
}

LogicalResult HostLowering::lowerNormGradWithSums(Operation *op,
                                                  ArrayRef<Type> types,
                                                  ArrayRef<int> buffers,
                                                  int64_t rows, int64_t d,
                                                  bool residual) {
  bool rms = isa<RMSNormGradOp>(op), shuffles = options.warpShuffles;
  double eps = cast<FloatAttr>(op->getAttr("eps")).getValueAsDouble();
  Value dy = op->getOperand(0);
  Type f32 = Float32Type::get(ctx);
  Operation *scale = scaleGradientOf(op);
  if (!scale || scale->getOperand(0) != dy || d % RowLanes::kLanes != 0)
    return failure();
  ReduceSumOp bias = biasGradientAfter(scale, dy, d);
  // The sum of what this kernel writes (the residual stream's gradient: the
  // bias gradient of the linear whose output it is), unless a GEMM's bgrad
  // epilogue is to compute it.
  Value written = op->getResult(0);
  if (residual)
    written = (*written.getUsers().begin())->getResult(0);
  ReduceSumOp outSum;
  if (options.gemmEpilogues != host::KernelOptions::Epilogues::Gelu)
    outSum = columnSumOf(written, op, d);
  auto perLane = [&] { return (1 + !!bias + !!outSum) * d / RowLanes::kLanes; };
  if (perLane() > kNormSumsPerLane)
    outSum = ReduceSumOp();
  if (perLane() > kNormSumsPerLane)
    return failure();

  // The sums go where those ops would have put them: into the
  // accumulators, written from here on.
  SmallVector<ColumnSum, 3> sums;
  for (Operation *sum : {scale, bias.getOperation(), outSum.getOperation()}) {
    if (!sum)
      continue;
    skipped.insert(sum);
    int acc = accumulatorFor(sum, op);
    sums.push_back(
        {acc >= 0 ? acc : newTemp(sum->getResult(0)), 1.0, acc >= 0, {}});
  }
  int64_t n = sums.size();
  // Enough warps to keep a GPU's memory busy, each walking 8 rows (a
  // part, columnSumParts). On a GPU the warps of a block add their sums in
  // shared memory, in warp order, and the first writes the block's: the
  // partials are a 32nd of dy per sum for 4 warps (the host twin adds its
  // warps' sums in the same order). At most 72 sums a lane: at most 27 KiB
  // of shared memory for the other three warps'.
  int64_t parts, warps;
  std::tie(parts, warps) = columnSumParts(rows);
  int64_t slots = d / RowLanes::kLanes;
  int64_t blocks = parts / warps;
  assert((warps - 1) * n * slots * RowLanes::kLanes * 4 <= 48 * 1024 &&
         "static shared memory of a block");
  int partial = newScratch({n, d, blocks}, f32);
  SmallVector<Type> kernelTypes(types.begin(), types.end());
  kernelTypes.push_back(memrefOf({n, d, blocks}, f32));
  SmallVector<int> kernelBuffers(buffers.begin(), buffers.end());
  kernelBuffers.push_back(partial);

  Kernel k = startKernel(op->getName().stripDialect(), op->getLoc(),
                         kernelTypes, kernelBuffers);
  if (shuffles && warps > 1)
    k.func->setAttr(kBlockAttr,
                    k.b.getI64IntegerAttr(RowLanes::kLanes * warps));
  Value partials = k.args.back();
  // dx's outputs: dx, and its bf16 copy where there is one.
  SmallVector<Value> outs{k.args[0]};
  if (types.size() > (residual ? 5u : 4u))
    outs.push_back(k.args[residual ? 5 : 4]);
  // What is written in bf16 (--bf16-residual) is summed as stored, as a
  // column sum reading it would.
  bool roundWritten = plan.buffers[buffers[0]].dtype == "bf16";
  constexpr int64_t kLanes = RowLanes::kLanes;
  // Warp p's sums over its rows p, p + parts, ...: on a GPU a lane's live
  // in registers (loop-carried, its columns unrolled), returned in slot
  // order (sum s, step, column of the chunk); without warps one index
  // runs every lane, its sums in onHost[warp] (the same additions in the
  // same order).
  auto sumRows = [&](Value p, Value lane, Value onHost, int64_t warp) {
    SmallVector<Value> init;
    if (shuffles)
      init.assign(n * slots, k.f32(0));
    auto loop = scf::ForOp::create(k.b, k.loc, k.idx(0), k.idx(rows / parts),
                                   k.idx(1), init);
    OpBuilder::InsertionGuard guard(k.b);
    k.b.setInsertionPointToStart(loop.getBody());
    Value r = k.addi(p, k.muli(loop.getInductionVar(), k.idx(parts)));
    RowLanes lanes(k, r, lane, d, shuffles);
    NormGradRow row(lanes, k.args[1], k.args[2], k.args[3], eps, rms);
    // Column j's dx and terms, then its stores: a chunk's loads all
    // before the stores (dx may be written over dy or x).
    // dy * xhat, then dy, then what is written, as `sums` lists them.
    auto terms = [&](Value j, Value written) {
      Value dyj = k.load(k.args[1], {r, j});
      SmallVector<Value> t{k.mul(dyj, row.xhat(j))};
      if (bias)
        t.push_back(dyj);
      if (outSum)
        t.push_back(roundWritten
                        ? k.storedAs(k.storedAs(written, k.b.getBF16Type()),
                                     k.b.getF32Type())
                        : written);
      return t;
    };
    auto dx = [&](Value j) {
      Value v = row.dx(j);
      return residual ? k.add(k.load(k.args[4], {r, j}), v) : v;
    };
    int64_t vector = lanes.vector, steps = d / (kLanes * vector);
    auto chunk =
        [&](Value l, Value step,
            llvm::function_ref<void(int64_t e, Value j, ArrayRef<Value> t)>
                add) {
          Value first = lanes.chunkStart(l, step);
          SmallVector<Value> columns, values;
          SmallVector<SmallVector<Value>> columnTerms;
          for (int64_t e = 0; e < vector; ++e) {
            columns.push_back(k.addi(first, k.idx(e)));
            values.push_back(dx(columns.back()));
            columnTerms.push_back(terms(columns.back(), values.back()));
          }
          for (Value out : outs)
            for (int64_t e = 0; e < vector; ++e)
              k.store(values[e], out, {r, columns[e]});
          for (int64_t e = 0; e < vector; ++e)
            add(e, columns[e], columnTerms[e]);
        };
    if (!shuffles) {
      k.loop(0, kLanes, [&](Value l) {
        k.loop(0, steps, [&](Value step) {
          chunk(l, step, [&](int64_t, Value j, ArrayRef<Value> t) {
            for (int64_t s = 0; s < n; ++s) {
              Value at[] = {k.idx(warp), k.idx(s), j};
              k.store(k.add(k.load(onHost, at), t[s]), onHost, at);
            }
          });
        });
      });
      return SmallVector<Value>();
    }
    SmallVector<Value> next(loop.getRegionIterArgs().begin(),
                            loop.getRegionIterArgs().end());
    for (int64_t step = 0; step < steps; ++step)
      chunk(lane, k.idx(step), [&](int64_t e, Value, ArrayRef<Value> t) {
        for (int64_t s = 0; s < n; ++s) {
          Value &sum = next[s * slots + step * vector + e];
          sum = k.add(sum, t[s]);
        }
      });
    scf::YieldOp::create(k.b, k.loc, next);
    return SmallVector<Value>(loop.getResults());
  };
  k.loop(k.begin, k.end, [&](Value index) {
    if (!shuffles) {
      // Index b is block b: its warps' sums, then their sum in warp order.
      OpBuilder entry = OpBuilder::atBlockBegin(&k.func.getBody().front());
      Value onHost =
          memref::AllocaOp::create(entry, k.loc, memrefOf({warps, n, d}, f32));
      for (int64_t w = 0; w < warps; ++w) {
        k.loop(0, d, [&](Value j) {
          for (int64_t s = 0; s < n; ++s)
            k.store(k.f32(0), onHost, {k.idx(w), k.idx(s), j});
        });
        sumRows(k.addi(k.muli(index, k.idx(warps)), k.idx(w)), Value(), onHost,
                w);
      }
      k.loop(0, d, [&](Value j) {
        for (int64_t s = 0; s < n; ++s) {
          Value v = k.load(onHost, {k.idx(0), k.idx(s), j});
          for (int64_t w = 1; w < warps; ++w)
            v = k.add(v, k.load(onHost, {k.idx(w), k.idx(s), j}));
          k.store(v, partials, {k.idx(s), j, index});
        }
      });
      return;
    }
    Value p = k.divi(index, k.idx(kLanes));
    Value lane = k.remi(index, k.idx(kLanes));
    SmallVector<Value> sums = sumRows(p, lane, Value(), 0);
    // Slot i of the results is sum i / slots, column chunkStart(lane,
    // step) + e for (step, e) of i % slots.
    RowLanes lanes(k, p, lane, d, shuffles);
    int64_t vector = lanes.vector;
    Value block = k.divi(p, k.idx(warps));
    auto store = [&](ArrayRef<Value> values) {
      for (int64_t i = 0; i < n * slots; ++i) {
        int64_t s = i / slots, step = i % slots / vector, e = i % vector;
        Value j = k.addi(lanes.chunkStart(lane, k.idx(step)), k.idx(e));
        k.store(values[i], partials, {k.idx(s), j, block});
      }
    };
    if (warps == 1)
      return store(sums);
    // Warps 1 .. warps - 1 leave their sums in shared memory, each lane
    // its own (a slot's 32 lanes side by side: no bank conflicts); warp 0
    // adds them in warp order and writes the block's.
    std::string name =
        ("hs_shared_norm_sums_" + Twine(warps - 1) + "x" + Twine(n * slots))
            .str();
    Value shared = sharedArray(k, name, {warps - 1, n * slots, kLanes});
    Value warp = k.remi(p, k.idx(warps));
    k.when(arith::CmpIOp::create(k.b, k.loc, arith::CmpIPredicate::ne, warp,
                                 k.idx(0)),
           [&] {
             Value at = arith::SubIOp::create(k.b, k.loc, warp, k.idx(1));
             for (int64_t i = 0; i < n * slots; ++i)
               k.store(sums[i], shared, {at, k.idx(i), lane});
           });
    gpu::BarrierOp::create(k.b, k.loc);
    k.when(k.equal(warp, k.idx(0)), [&] {
      SmallVector<Value> total(sums);
      for (int64_t w = 1; w < warps; ++w)
        for (int64_t i = 0; i < n * slots; ++i)
          total[i] =
              k.add(total[i], k.load(shared, {k.idx(w - 1), k.idx(i), lane}));
      store(total);
    });
  });
  call(finishKernel(k), shuffles ? parts * kLanes : blocks, kernelBuffers, op);
  foldColumnPartials(op, sums, d, blocks, partial);
  return success();
}

LogicalResult HostLowering::lowerRowOp(Operation *op) {
  Location loc = op->getLoc();
  Type f32 = Float32Type::get(ctx);
  auto rowsOf = [](Value v) {
    auto t = tensorType(v);
    int64_t d = t.getRank() ? t.getShape().back() : 1;
    return std::pair<int64_t, int64_t>{t.getNumElements() / d, d};
  };
  auto name = op->getName().stripDialect();

  bool shuffles = options.warpShuffles;

  if (isa<LayerNormOp, RMSNormOp>(op)) {
    bool rms = isa<RMSNormOp>(op);
    Value x = op->getOperand(0), w = op->getOperand(1);
    Value bias = rms ? Value() : cast<LayerNormOp>(op).getBias();
    double eps = rms ? cast<RMSNormOp>(op).getEps().convertToDouble()
                     : cast<LayerNormOp>(op).getEps().convertToDouble();
    int64_t rows, d;
    std::tie(rows, d) = rowsOf(x);
    int out = newTemp(op->getResult(0), /*bf16Allowed=*/true);
    SmallVector<Type> types{memrefOf({rows, d}, storedType(out)),
                            memrefOf({rows, d}, f32), memrefOf({d}, f32)};
    SmallVector<int> args{out, bufferFor(x), bufferFor(w)};
    if (bias) {
      types.push_back(memrefOf({d}, f32));
      args.push_back(bufferFor(bias));
    }
    if (options.parallelOverElements) {
      // One kernel: a row's statistics over its lanes, then each lane
      // normalises its columns.
      Kernel k = startKernel(name, loc, types, args);
      k.loop(k.begin, k.end, [&](Value index) {
        RowLanes lanes(k, index, d, shuffles);
        Value r = lanes.row;
        Value mean, rstd;
        std::tie(mean, rstd) = laneStatistics(lanes, k.args[1], eps, rms);
        lanes.writeRow(k.args[0], [&](Value j) {
          Value v = k.mul(k.mul(k.sub(k.load(k.args[1], {r, j}), mean), rstd),
                          k.load(k.args[2], j));
          return bias ? k.add(v, k.load(k.args[3], j)) : v;
        });
      });
      call(finishKernel(k), RowLanes::range(rows, shuffles), args, op);
      return success();
    }
    Kernel k = startKernel(name, loc, types);
    k.loop(k.begin, k.end, [&](Value r) {
      Value mean, rstd;
      std::tie(mean, rstd) = rowStatistics(k, k.args[1], r, d, eps, rms);
      k.loop(0, d, [&](Value j) {
        Value v = k.mul(k.mul(k.sub(k.load(k.args[1], {r, j}), mean), rstd),
                        k.load(k.args[2], j));
        if (bias)
          v = k.add(v, k.load(k.args[3], j));
        k.store(v, k.args[0], {r, j});
      });
    });
    call(finishKernel(k), rows, args, op);
    return success();
  }

  if (isa<LayerNormGradOp, RMSNormGradOp>(op)) {
    bool rms = isa<RMSNormGradOp>(op);
    Value dy = op->getOperand(0), x = op->getOperand(1), w = op->getOperand(2);
    double eps = cast<FloatAttr>(op->getAttr("eps")).getValueAsDouble();
    int64_t rows, d;
    std::tie(rows, d) = rowsOf(x);
    // A gradient added to the residual stream's (its one reader) is added
    // as it is written: the add's pass and the gradient's store go.
    Value residual;
    int out;
    if (AddOp add = residualGradientAdd(op)) {
      residual = add.getLhs() == op->getResult(0) ? add.getRhs() : add.getLhs();
      skipped.insert(add);
      out = outputFor(add.getResult());
    } else if (Value r = op->getResult(0); startsResidualInBf16(r)) {
      out = newTempOf(r, BFloat16Type::get(ctx));
    } else {
      out = newTemp(r);
    }
    SmallVector<Type> types{memrefOf({rows, d}, f32), memrefOf({rows, d}, f32),
                            memrefOf({rows, d}, f32), memrefOf({d}, f32)};
    SmallVector<int> args{out, bufferFor(dy), bufferFor(x), bufferFor(w)};
    if (residual) {
      types.push_back(memrefOf({rows, d}, f32));
      args.push_back(bufferFor(residual));
    }
    // dx, plus the residual stream's gradient where it is added here.
    auto result = [&](Kernel &k, Value r, Value j, Value dx) {
      return residual ? k.add(k.load(k.args[4], {r, j}), dx) : dx;
    };
    if (options.parallelOverElements) {
      // A gradient that GEMMs read gets its bf16 copy from this kernel too
      // (castToBf16 finds it), rather than from a cast reading it again.
      int copyArg = -1;
      Value written = op->getResult(0);
      if (residual)
        written = (*written.getUsers().begin())->getResult(0);
      if (bf16Gemms && plan.buffers[out].kind == BufferKind::Temp &&
          plan.buffers[out].dtype == "f32" && readByAGemm(written)) {
        copyArg = static_cast<int>(types.size());
        int copy = newScratch({rows * d}, BFloat16Type::get(ctx));
        keepScratch("bf16 copy of " + std::to_string(out), copy);
        types.push_back(memrefOf({rows, d}, BFloat16Type::get(ctx)));
        args.push_back(copy);
      }
      // The weight's gradient (and the bias's: the same dy summed) in this
      // kernel too where it can, as llm.c's layer norm backward does.
      if (succeeded(lowerNormGradWithSums(op, types, args, rows, d,
                                          residual != nullptr)))
        return success();
      // The weight's gradient, further on, takes the row statistics this
      // kernel computes anyway rather than reading x again for them.
      int statsArg = -1;
      if (Operation *scale = scaleGradientOf(op)) {
        statsArg = static_cast<int>(types.size());
        int stats = newScratch({rows, 2}, f32);
        normStatistics[scale] = stats;
        types.push_back(memrefOf({rows, 2}, f32));
        args.push_back(stats);
      }
      // One kernel: a row's statistics, sum(dxhat) and sum(dxhat * xhat)
      // over its lanes, then each lane its columns' gradients (the same
      // formula as below).
      Kernel k = startKernel(name, loc, types, args);
      k.loop(k.begin, k.end, [&](Value index) {
        RowLanes lanes(k, index, d, shuffles);
        Value r = lanes.row;
        NormGradRow row(lanes, k.args[1], k.args[2], k.args[3], eps, rms);
        if (statsArg >= 0)
          lanes.once([&] {
            k.store(row.mean, k.args[statsArg], {r, k.idx(0)});
            k.store(row.rstd, k.args[statsArg], {r, k.idx(1)});
          });
        SmallVector<Value> outs{k.args[0]};
        if (copyArg >= 0)
          outs.push_back(k.args[copyArg]);
        lanes.writeRow(outs,
                       [&](Value j) { return result(k, r, j, row.dx(j)); });
      });
      call(finishKernel(k), RowLanes::range(rows, shuffles), args, op);
      return success();
    }
    Kernel k = startKernel(name, loc, types);
    Value dX = k.args[0], dY = k.args[1], X = k.args[2], W = k.args[3];
    k.loop(k.begin, k.end, [&](Value r) {
      Value mean, rstd;
      std::tie(mean, rstd) = rowStatistics(k, X, r, d, eps, rms);
      // dxhat = dy * w;  dx = rstd * (dxhat - mean(dxhat) - xhat *
      // mean(dxhat * xhat)), without the mean(dxhat) term for rms_norm.
      Value sumG = k.f32(0), sumGX;
      auto xhat = [&](Value j) {
        return k.mul(k.sub(k.load(X, {r, j}), mean), rstd);
      };
      auto g = [&](Value j) { return k.mul(k.load(dY, {r, j}), k.load(W, j)); };
      if (!rms)
        sumG = k.reduce(0, d, k.f32(0),
                        [&](Value j, Value acc) { return k.add(acc, g(j)); });
      sumGX = k.reduce(0, d, k.f32(0), [&](Value j, Value acc) {
        return k.add(acc, k.mul(g(j), xhat(j)));
      });
      Value meanG = k.mul(sumG, k.f32(1.0 / d));
      Value meanGX = k.mul(sumGX, k.f32(1.0 / d));
      k.loop(0, d, [&](Value j) {
        Value v = k.sub(k.sub(g(j), meanG), k.mul(xhat(j), meanGX));
        k.store(result(k, r, j, k.mul(v, rstd)), dX, {r, j});
      });
    });
    call(finishKernel(k), rows, args, op);
    return success();
  }

  if (isa<LayerNormScaleGradOp, RMSNormScaleGradOp>(op)) {
    bool rms = isa<RMSNormScaleGradOp>(op);
    Value dy = op->getOperand(0), x = op->getOperand(1);
    double eps = cast<FloatAttr>(op->getAttr("eps")).getValueAsDouble();
    int64_t rows, d;
    std::tie(rows, d) = rowsOf(x);
    int out = newTemp(op->getResult(0));
    if (options.parallelOverElements) {
      // Each row's statistics (a row on 32 lanes; kept by the input
      // gradient's kernel where it ran first), then column sums of
      // dy * xhat, added straight into the weight's gradient accumulator
      // where the step adds them there.
      int stats = normStatistics.lookup_or(op, -1);
      if (stats < 0) {
        stats = newScratch({rows, 2}, f32);
        Kernel k = startKernel(
            name, loc, {memrefOf({rows, 2}, f32), memrefOf({rows, d}, f32)},
            {stats, bufferFor(x)});
        k.loop(k.begin, k.end, [&](Value index) {
          RowLanes lanes(k, index, d, shuffles);
          Value mean, rstd;
          std::tie(mean, rstd) = laneStatistics(lanes, k.args[1], eps, rms);
          lanes.once([&] {
            k.store(mean, k.args[0], {lanes.row, k.idx(0)});
            k.store(rstd, k.args[0], {lanes.row, k.idx(1)});
          });
        });
        call(finishKernel(k), RowLanes::range(rows, shuffles),
             {stats, bufferFor(x)}, op);
      }
      int acc = accumulatorFor(op);
      auto scaleTerm = [&](Kernel &c, ArrayRef<Value> args, Value r, Value j) {
        Value xhat = c.mul(
            c.sub(c.load(args[1], {r, j}), c.load(args[2], {r, c.idx(0)})),
            c.load(args[2], {r, c.idx(1)}));
        return c.mul(c.load(args[0], {r, j}), xhat);
      };
      auto dyTerm = [&](Kernel &c, ArrayRef<Value> args, Value r, Value j) {
        return c.load(args[0], {r, j});
      };
      SmallVector<ColumnSum, 2> sums{
          {acc >= 0 ? acc : out, 1.0, acc >= 0, scaleTerm}};
      // The norm's bias gradient, the same dy summed over the rows right
      // after this: in the same kernels, dy read once (each sum as alone).
      if (ReduceSumOp bias = biasGradientAfter(op, dy, d)) {
        int biasAcc = accumulatorFor(bias);
        int biasOut = biasAcc >= 0 ? biasAcc : newTemp(bias.getResult());
        skipped.insert(bias);
        sums.push_back({biasOut, 1.0, biasAcc >= 0, dyTerm});
      }
      columnSums(op, sums, rows, d,
                 {memrefOf({rows, d}, f32), memrefOf({rows, d}, f32),
                  memrefOf({rows, 2}, f32)},
                 {bufferFor(dy), bufferFor(x), stats});
      return success();
    }
    // One thread: the rows are summed in order, the same on any machine.
    Kernel k = startKernel(name, loc,
                           {memrefOf({d}, f32), memrefOf({rows, d}, f32),
                            memrefOf({rows, d}, f32)});
    Value dW = k.args[0], dY = k.args[1], X = k.args[2];
    k.loop(0, d, [&](Value j) { k.store(k.f32(0), dW, j); });
    k.loop(0, rows, [&](Value r) {
      Value mean, rstd;
      std::tie(mean, rstd) = rowStatistics(k, X, r, d, eps, rms);
      k.loop(0, d, [&](Value j) {
        Value xhat = k.mul(k.sub(k.load(X, {r, j}), mean), rstd);
        k.store(k.add(k.load(dW, j), k.mul(k.load(dY, {r, j}), xhat)), dW, j);
      });
    });
    call(finishKernel(k), 1, {out, bufferFor(dy), bufferFor(x)}, op);
    return success();
  }

  if (isa<SoftmaxOp, SoftmaxGradOp>(op)) {
    int64_t axis = cast<IntegerAttr>(op->getAttr("axis")).getInt();
    int64_t rank = tensorType(op->getResult(0)).getRank();
    if (axis != -1 && axis != rank - 1)
      return op->emitError("host lowering: softmax is only supported along "
                           "the last axis yet");
    int64_t rows, d;
    std::tie(rows, d) = rowsOf(op->getResult(0));
    int out = newTemp(op->getResult(0));
    bool grad = isa<SoftmaxGradOp>(op);
    SmallVector<Type> types{memrefOf({rows, d}, f32), memrefOf({rows, d}, f32)};
    SmallVector<int> args{out, bufferFor(op->getOperand(0))};
    if (grad) {
      types.push_back(memrefOf({rows, d}, f32));
      args.push_back(bufferFor(op->getOperand(1)));
    }
    if (options.parallelOverElements) {
      // A row on 32 lanes: the same formulas, each sum over the lanes.
      Kernel k = startKernel(name, loc, types, args);
      k.loop(k.begin, k.end, [&](Value index) {
        RowLanes lanes(k, index, d, shuffles);
        Value r = lanes.row;
        if (grad) {
          Value dY = k.args[1], Y = k.args[2];
          Value dot = lanes.sum([&](Value j) {
            return k.mul(k.load(dY, {r, j}), k.load(Y, {r, j}));
          });
          lanes.writeRow(k.args[0], [&](Value j) {
            return k.mul(k.load(Y, {r, j}), k.sub(k.load(dY, {r, j}), dot));
          });
          return;
        }
        Value X = k.args[1];
        Value mx = lanes.max([&](Value j) { return k.load(X, {r, j}); });
        Value sum = lanes.sum([&](Value j) {
          return k.exp(k.sub(k.load(X, {r, j}), mx));
        });
        Value inv = k.div(k.f32(1), sum);
        lanes.writeRow(k.args[0], [&](Value j) {
          return k.mul(k.exp(k.sub(k.load(X, {r, j}), mx)), inv);
        });
      });
      call(finishKernel(k), RowLanes::range(rows, shuffles), args, op);
      return success();
    }
    Kernel k = startKernel(name, loc, types);
    k.loop(k.begin, k.end, [&](Value r) {
      if (grad) {
        // dx = y * (dy - sum(dy * y))
        Value dY = k.args[1], Y = k.args[2];
        Value dot = k.reduce(0, d, k.f32(0), [&](Value j, Value acc) {
          return k.add(acc, k.mul(k.load(dY, {r, j}), k.load(Y, {r, j})));
        });
        k.loop(0, d, [&](Value j) {
          k.store(k.mul(k.load(Y, {r, j}), k.sub(k.load(dY, {r, j}), dot)),
                  k.args[0], {r, j});
        });
        return;
      }
      Value X = k.args[1];
      Value mx = k.reduce(0, d, k.f32(-INFINITY), [&](Value j, Value acc) {
        return k.max(acc, k.load(X, {r, j}));
      });
      Value sum = k.reduce(0, d, k.f32(0), [&](Value j, Value acc) {
        Value e = k.exp(k.sub(k.load(X, {r, j}), mx));
        k.store(e, k.args[0], {r, j});
        return k.add(acc, e);
      });
      Value inv = k.div(k.f32(1), sum);
      k.loop(0, d, [&](Value j) {
        k.store(k.mul(k.load(k.args[0], {r, j}), inv), k.args[0], {r, j});
      });
    });
    call(finishKernel(k), rows, args, op);
    return success();
  }

  // Over elements (the GPU), each row's maximum and sum of exponentials
  // (relative to the maximum) over its 32 lanes (RowLanes), into the
  // [rows, 2] buffer it returns; with `targets` and `losses`, also each
  // row's loss, log-sum-exp less the target's logit.
  auto computeRowMaxSum = [&](int logits, int64_t rows, int64_t v,
                              int targets = -1, int losses = -1,
                              Type idType = {}) {
    int stats = newScratch({rows, 2}, f32);
    SmallVector<Type> types{memrefOf({rows, 2}, f32),
                            rowsView(logits, rows, v, f32)};
    SmallVector<int> args{stats, logits};
    if (losses >= 0) {
      types.append({memrefOf({rows}, idType), memrefOf({rows}, f32)});
      args.append({targets, losses});
    }
    Kernel k = startKernel(losses >= 0 ? "cross_entropy_rows" : "row_max_sum",
                           loc, types);
    Value S = k.args[0], X = k.args[1];
    k.loop(k.begin, k.end, [&](Value index) {
      RowLanes lanes(k, index, v, shuffles);
      Value r = lanes.row;
      Value mx, sum;
      std::tie(mx, sum) = lanes.maxSumExp([&](Value j) {
        return k.load(X, {r, j});
      });
      lanes.once([&] {
        k.store(mx, S, {r, k.idx(0)});
        k.store(sum, S, {r, k.idx(1)});
        if (losses < 0)
          return;
        Value lse = k.add(mx, math::LogOp::create(k.b, k.loc, sum));
        Value target = k.toIndex(k.load(k.args[2], r));
        k.store(k.sub(lse, k.load(X, {r, target})), k.args[3], r);
      });
    });
    call(finishKernel(k), RowLanes::range(rows, shuffles), args, op);
    return stats;
  };
  // The loss gradient reads the statistics its forward computed on the
  // same logits.
  auto rowMaxSum = [&](int logits, int64_t rows, int64_t v) {
    std::string key = "row max and sum of " + std::to_string(logits);
    if (int kept = reuseScratch(key); kept >= 0)
      return kept;
    int stats = computeRowMaxSum(logits, rows, v);
    keepScratch(key, stats);
    return stats;
  };

  if (auto ce = dyn_cast<CrossEntropyOp>(op)) {
    int64_t rows, v;
    std::tie(rows, v) = rowsOf(ce.getLogits());
    Type idType = tensorType(ce.getTargets()).getElementType();
    // Per-row losses in parallel, then their mean in order on one thread.
    // Named, so that a trace can read each token's loss after the forward
    // (the logits' check against a reference: a row's log-sum-exp less its
    // target's logit).
    int perRow = plan.addBuffer(
        describeBuffer(BufferKind::Temp, "token_losses", {rows}, f32));
    tokenLosses = perRow;
    if (auto grad = lossGradientInForward(ce)) {
      // The losses, and the gradient over the logits as they were read:
      // dx = exp(x - max) * (g / rows) / sum, less g / rows at the target,
      // where g is the backward's constant. A row padded to whole chunks
      // is read and written a chunk at a time, its padding too (which
      // nothing reads).
      int logits = bufferFor(ce.getLogits());
      int64_t pitch = plan.buffers[logits].pitch;
      int64_t width = pitch ? pitch : v;
      double g = cast<FloatAttr>(*splatOf(grad.getGrad())).getValueAsDouble();
      // The second read of a row finds it in L2 where the rows in flight
      // fit: a row takes a block of warps, one for each 4 KiB of it (up to
      // 32: GPT-2's 100 KB rows of bf16 logits on 1,024 threads, as
      // llm.c's classifier has; one block an SM at 63 registers a thread,
      // 13 MB in flight on an H100's 132 SMs).
      bool bf16 = storedType(logits).isBF16();
      int64_t rowBytes = v * (bf16 ? 2 : 4);
      int64_t vector = bf16 ? 2 * kVector : kVector;
      int64_t warps = std::min<int64_t>(
          RowLanes::kMaxWarps,
          llvm::PowerOf2Ceil(std::max<int64_t>(1, (rowBytes + 4095) / 4096)));
      Kernel k = startKernel("cross_entropy_and_grad", loc,
                             {memrefOf({rows, width}, f32),
                              memrefOf({rows}, idType), memrefOf({rows}, f32)});
      if (shuffles && warps > 1)
        k.func->setAttr(kBlockAttr,
                        k.b.getI64IntegerAttr(RowLanes::kLanes * warps));
      Value X = k.args[0], T = k.args[1], L = k.args[2];
      k.loop(k.begin, k.end, [&](Value index) {
        // Chunks of 16 bytes as stored (4 f32 or 8 bf16 columns) whether
        // rows are padded or not (each lane the same columns: padding
        // changes no bit of the result), loaded as one where rows hold
        // whole chunks.
        RowLanes lanes(k, index, width, shuffles, warps, vector);
        lanes.columns = v;
        Value r = lanes.row;
        auto chunkAt = [&](Value first) {
          if (width % vector == 0)
            return k.loadChunk(X, {r, first}, vector);
          SmallVector<Value> xs;
          for (int64_t e = 0; e < vector; ++e)
            xs.push_back(k.load(X, {r, lanes.inRow(k.addi(first, k.idx(e)))}));
          return xs;
        };
        Value mx, sum;
        std::tie(mx, sum) = lanes.maxSumExpOfChunks(chunkAt);
        Value target = k.toIndex(k.load(T, r));
        lanes.onLaneOf(target, [&] {
          Value lse = k.add(mx, math::LogOp::create(k.b, k.loc, sum));
          k.store(k.sub(lse, k.load(X, {r, target})), L, r);
        });
        Value scale = k.mul(k.f32(g), k.f32(1.0 / rows));
        Value factor = k.div(scale, sum);
        lanes.writeChunks(X, [&](Value first) {
          SmallVector<Value> ds;
          for (auto [e, x] : llvm::enumerate(chunkAt(first)))
            ds.push_back(logitGradient(k, x, k.addi(first, k.idx(e)), target,
                                       mx, factor, scale));
          return ds;
        });
      });
      call(finishKernel(k), RowLanes::range(rows, shuffles, warps),
           {logits, bufferFor(ce.getTargets()), perRow}, op);
      // It writes the logits themselves (a kernel that reads bf16 through
      // a widened copy would not).
      if (current->actions.back().buffers.front() != logits)
        return op->emitError("cannot write the loss gradient over the "
                             "logits as stored");
      gradientsInForward.insert(grad);
    } else if (options.parallelOverElements) {
      // The statistics the gradient reads, and the losses, in one kernel.
      int logits = bufferFor(ce.getLogits());
      int stats = computeRowMaxSum(logits, rows, v, bufferFor(ce.getTargets()),
                                   perRow, idType);
      keepScratch("row max and sum of " + std::to_string(logits), stats);
    } else {
      Kernel k = startKernel("cross_entropy_rows", loc,
                             {memrefOf({rows}, f32),
                              rowsView(bufferFor(ce.getLogits()), rows, v, f32),
                              memrefOf({rows}, idType)});
      Value L = k.args[0], X = k.args[1], T = k.args[2];
      k.loop(k.begin, k.end, [&](Value r) {
        Value mx = k.reduce(0, v, k.f32(-INFINITY), [&](Value j, Value acc) {
          return k.max(acc, k.load(X, {r, j}));
        });
        Value sum = k.reduce(0, v, k.f32(0), [&](Value j, Value acc) {
          return k.add(acc, k.exp(k.sub(k.load(X, {r, j}), mx)));
        });
        Value lse = k.add(mx, math::LogOp::create(k.b, k.loc, sum));
        Value target = k.toIndex(k.load(T, r));
        k.store(k.sub(lse, k.load(X, {r, target})), L, r);
      });
      call(finishKernel(k), rows,
           {perRow, bufferFor(ce.getLogits()), bufferFor(ce.getTargets())}, op);
    }
    int out = newTemp(ce.getResult());
    Kernel m =
        startKernel("mean", loc, {memrefOf({}, f32), memrefOf({rows}, f32)});
    if (options.parallelOverElements) {
      // The losses as one row on 32 lanes.
      m.loop(m.begin, m.end, [&](Value index) {
        RowLanes lanes(m, index, rows, shuffles);
        Value total = lanes.sum([&](Value r) { return m.load(m.args[1], r); });
        lanes.once(
            [&] { m.store(m.mul(total, m.f32(1.0 / rows)), m.args[0], {}); });
      });
      call(finishKernel(m), RowLanes::range(1, shuffles), {out, perRow}, op);
      return success();
    }
    Value total = m.reduce(0, rows, m.f32(0), [&](Value r, Value acc) {
      return m.add(acc, m.load(m.args[1], r));
    });
    m.store(m.mul(total, m.f32(1.0 / rows)), m.args[0], {});
    call(finishKernel(m), 1, {out, perRow}, op);
    return success();
  }

  if (auto ceg = dyn_cast<CrossEntropyGradOp>(op)) {
    if (gradientsInForward.contains(op)) {
      buffers[ceg.getResult()] = bufferFor(ceg.getLogits());
      return success();
    }
    int64_t rows, v;
    std::tie(rows, v) = rowsOf(ceg.getLogits());
    Type idType = tensorType(ceg.getTargets()).getElementType();
    // Over elements each logit's gradient is stored once: in bf16 where
    // only GEMMs read it (the rows form reuses it as scratch).
    int out = newTemp(ceg.getResult(), options.parallelOverElements);
    // (The seed's fill kernel, if any, before this one's: a kernel retyped
    // for bf16 replaces its original only while that is the newest.)
    int grad = bufferFor(ceg.getGrad());
    if (options.parallelOverElements) {
      // Each row's maximum and sum first, then one index per logit:
      // dx = exp(x - max) * (g / rows) / sum, less g / rows at the target.
      int logits = bufferFor(ceg.getLogits());
      int stats = rowMaxSum(logits, rows, v);
      // Or per chunk of four logits of a row as stored (its padding too,
      // which nothing reads), where the rows hold whole chunks: one vector
      // load and store, and a row's statistics and target read once.
      int64_t pitch = plan.buffers[out].pitch;
      int64_t width = pitch ? pitch : v;
      if (pitch == plan.buffers[logits].pitch && width % kVector == 0) {
        Kernel k = startKernel(name, loc,
                               {memrefOf({rows, width}, storedType(out)),
                                memrefOf({}, f32), memrefOf({rows, 2}, f32),
                                memrefOf({rows, width}, f32),
                                memrefOf({rows}, idType)});
        Value D = k.args[0], G = k.args[1], S = k.args[2], X = k.args[3],
              T = k.args[4];
        k.loop(k.begin, k.end, [&](Value index) {
          SmallVector<Value> at = k.unflatten(index, {rows, width / kVector});
          Value r = at[0], first = k.muli(at[1], k.idx(kVector));
          Value scale = k.mul(k.load(G, {}), k.f32(1.0 / rows));
          Value mx = k.load(S, {r, k.idx(0)});
          Value factor = k.div(scale, k.load(S, {r, k.idx(1)}));
          Value target = k.toIndex(k.load(T, r));
          SmallVector<Value> xs = k.loadChunk(X, {r, first}, kVector), ds;
          for (int64_t e = 0; e < kVector; ++e)
            ds.push_back(logitGradient(k, xs[e], k.addi(first, k.idx(e)),
                                       target, mx, factor, scale));
          k.storeChunk(ds, D, {r, first});
        });
        call(finishKernel(k), rows * width / kVector,
             {out, grad, stats, logits, bufferFor(ceg.getTargets())}, op);
        return success();
      }
      Kernel k =
          startKernel(name, loc,
                      {rowsView(out, rows, v, storedType(out)),
                       memrefOf({}, f32), memrefOf({rows, 2}, f32),
                       rowsView(bufferFor(ceg.getLogits()), rows, v, f32),
                       memrefOf({rows}, idType)});
      Value D = k.args[0], G = k.args[1], S = k.args[2], X = k.args[3],
            T = k.args[4];
      k.loop(k.begin, k.end, [&](Value index) {
        SmallVector<Value> at = k.unflatten(index, {rows, v});
        Value r = at[0], j = at[1];
        Value scale = k.mul(k.load(G, {}), k.f32(1.0 / rows));
        Value x = k.load(X, {r, j}), mx = k.load(S, {r, k.idx(0)});
        Value factor = k.div(scale, k.load(S, {r, k.idx(1)}));
        k.store(
            logitGradient(k, x, j, k.toIndex(k.load(T, r)), mx, factor, scale),
            D, {r, j});
      });
      call(finishKernel(k), rows * v,
           {out, grad, stats, logits, bufferFor(ceg.getTargets())}, op);
      return success();
    }
    Kernel k = startKernel(name, loc,
                           {rowsView(out, rows, v, f32), memrefOf({}, f32),
                            rowsView(bufferFor(ceg.getLogits()), rows, v, f32),
                            memrefOf({rows}, idType)});
    Value D = k.args[0], G = k.args[1], X = k.args[2], T = k.args[3];
    k.loop(k.begin, k.end, [&](Value r) {
      Value scale = k.mul(k.load(G, {}), k.f32(1.0 / rows));
      Value mx = k.reduce(0, v, k.f32(-INFINITY), [&](Value j, Value acc) {
        return k.max(acc, k.load(X, {r, j}));
      });
      Value sum = k.reduce(0, v, k.f32(0), [&](Value j, Value acc) {
        Value e = k.exp(k.sub(k.load(X, {r, j}), mx));
        k.store(e, D, {r, j});
        return k.add(acc, e);
      });
      Value factor = k.div(scale, sum);
      k.loop(0, v, [&](Value j) {
        k.store(k.mul(k.load(D, {r, j}), factor), D, {r, j});
      });
      Value target = k.toIndex(k.load(T, r));
      k.store(k.sub(k.load(D, {r, target}), scale), D, {r, target});
    });
    call(finishKernel(k), rows,
         {out, grad, bufferFor(ceg.getLogits()), bufferFor(ceg.getTargets())},
         op);
    return success();
  }

  if (auto emb = dyn_cast<EmbeddingOp>(op)) {
    auto table = tensorType(emb.getTable());
    int64_t vocab = table.getShape()[0], d = table.getShape()[1];
    int64_t rows = tensorType(emb.getIds()).getNumElements();
    Type idType = tensorType(emb.getIds()).getElementType();
    int out = newTemp(emb.getResult());
    Kernel k = startKernel(name, loc,
                           {memrefOf({rows, d}, f32), memrefOf({vocab, d}, f32),
                            memrefOf({rows}, idType)});
    if (options.parallelOverElements) {
      k.loop(k.begin, k.end, [&](Value index) {
        SmallVector<Value> at = k.unflatten(index, {rows, d});
        Value id = k.toIndex(k.load(k.args[2], at[0]));
        k.store(k.load(k.args[1], {id, at[1]}), k.args[0], at);
      });
    } else {
      k.loop(k.begin, k.end, [&](Value r) {
        Value id = k.toIndex(k.load(k.args[2], r));
        k.loop(0, d, [&](Value j) {
          k.store(k.load(k.args[1], {id, j}), k.args[0], {r, j});
        });
      });
    }
    call(finishKernel(k), options.parallelOverElements ? rows * d : rows,
         {out, bufferFor(emb.getTable()), bufferFor(emb.getIds())}, op);
    return success();
  }

  if (auto eg = dyn_cast<EmbeddingGradOp>(op)) {
    auto table = tensorType(eg.getResult());
    int64_t vocab = table.getShape()[0], d = table.getShape()[1];
    int64_t rows = tensorType(eg.getIds()).getNumElements();
    Type idType = tensorType(eg.getIds()).getElementType();
    // Added into the table's gradient accumulator where the step adds it
    // there: no zeroed table of its own and no add pass over it.
    int accumulator = accumulatorFor(op);
    int out = accumulator >= 0 ? accumulator : newTemp(eg.getResult());
    // One thread, rows in order: repeated ids add up deterministically.
    Kernel k = startKernel(name, loc,
                           {memrefOf({vocab, d}, f32), memrefOf({rows, d}, f32),
                            memrefOf({rows}, idType)});
    if (options.parallelOverElements) {
      // One index per (column, bucket of ids), each adding in order the
      // rows whose id is in its bucket (id mod kBuckets): every table
      // element still gets its rows in order, by one index (the same
      // sums), d * kBuckets-way parallel, neighbouring indices on
      // neighbouring floats.
      int64_t buckets = std::min<int64_t>(kEmbeddingBuckets, vocab);
      k.loop(k.begin, k.end, [&](Value index) {
        Value j = k.remi(index, k.idx(d));
        Value bucket = k.divi(index, k.idx(d));
        if (accumulator < 0)
          k.loop(0, (vocab + buckets - 1) / buckets, [&](Value step) {
            Value i = k.addi(bucket, k.muli(step, k.idx(buckets)));
            Value inRange = arith::CmpIOp::create(
                k.b, k.loc, arith::CmpIPredicate::ult, i, k.idx(vocab));
            auto guard = scf::IfOp::create(k.b, k.loc, inRange, false);
            OpBuilder::InsertionGuard g(k.b);
            k.b.setInsertionPointToStart(&guard.getThenRegion().front());
            k.store(k.f32(0), k.args[0], {i, j});
          });
        k.loop(0, rows, [&](Value r) {
          Value id = k.toIndex(k.load(k.args[2], r));
          Value mine =
              arith::CmpIOp::create(k.b, k.loc, arith::CmpIPredicate::eq,
                                    k.remi(id, k.idx(buckets)), bucket);
          auto guard = scf::IfOp::create(k.b, k.loc, mine, false);
          OpBuilder::InsertionGuard g(k.b);
          k.b.setInsertionPointToStart(&guard.getThenRegion().front());
          k.store(k.add(k.load(k.args[0], {id, j}), k.load(k.args[1], {r, j})),
                  k.args[0], {id, j});
        });
      });
      call(finishKernel(k), d * buckets,
           {out, bufferFor(eg.getGrad()), bufferFor(eg.getIds())}, op);
      return success();
    }
    if (accumulator < 0)
      k.loop(0, vocab, [&](Value i) {
        k.loop(0, d, [&](Value j) { k.store(k.f32(0), k.args[0], {i, j}); });
      });
    k.loop(0, rows, [&](Value r) {
      Value id = k.toIndex(k.load(k.args[2], r));
      k.loop(0, d, [&](Value j) {
        k.store(k.add(k.load(k.args[0], {id, j}), k.load(k.args[1], {r, j})),
                k.args[0], {id, j});
      });
    });
    call(finishKernel(k), 1,
         {out, bufferFor(eg.getGrad()), bufferFor(eg.getIds())}, op);
    return success();
  }

  if (isa<RopeOp, RopeGradOp>(op)) {
    bool inverse = isa<RopeGradOp>(op);
    auto t = tensorType(op->getResult(0));
    int64_t bsz = t.getShape()[0], seq = t.getShape()[1], c = t.getShape()[2];
    int64_t heads = cast<IntegerAttr>(op->getAttr("heads")).getInt();
    double theta = cast<FloatAttr>(op->getAttr("theta")).getValueAsDouble();
    int64_t hd = c / heads, half = hd / 2;
    int out = newTemp(op->getResult(0));
    Kernel k = startKernel(
        name, loc,
        {memrefOf({bsz, seq, c}, f32), memrefOf({bsz, seq, c}, f32)});
    // Rows are (batch, position); each head's pairs (i, i + hd/2) turn by
    // position * theta^(-2i/hd), backwards for the gradient.
    auto toF64 = [&](Value index) {
      return arith::UIToFPOp::create(
          k.b, k.loc, k.b.getF64Type(),
          arith::IndexCastOp::create(k.b, k.loc, k.b.getI64Type(), index));
    };
    // The turn of pair i at position `pos`: (cos, sin), in f64 then f32.
    auto turn = [&](Value pos, Value i) -> std::pair<Value, Value> {
      Value freq = math::ExpOp::create(
          k.b, k.loc,
          arith::MulFOp::create(k.b, k.loc, toF64(i),
                                k.f64(-2.0 * std::log(theta) / hd)));
      Value angle = arith::MulFOp::create(k.b, k.loc, pos, freq);
      Value cs = arith::TruncFOp::create(
          k.b, k.loc, k.b.getF32Type(), math::CosOp::create(k.b, k.loc, angle));
      Value sn = arith::TruncFOp::create(
          k.b, k.loc, k.b.getF32Type(), math::SinOp::create(k.b, k.loc, angle));
      if (inverse)
        sn = arith::NegFOp::create(k.b, k.loc, sn);
      return {cs, sn};
    };
    auto rotate = [&](Value bi, Value ti, Value h, Value i, Value cs,
                      Value sn) {
      Value base = k.muli(h, k.idx(hd));
      Value i1 = k.addi(base, i), i2 = k.addi(i1, k.idx(half));
      Value x1 = k.load(k.args[1], {bi, ti, i1});
      Value x2 = k.load(k.args[1], {bi, ti, i2});
      k.store(k.sub(k.mul(x1, cs), k.mul(x2, sn)), k.args[0], {bi, ti, i1});
      k.store(k.add(k.mul(x2, cs), k.mul(x1, sn)), k.args[0], {bi, ti, i2});
    };
    if (options.parallelOverElements) {
      // One (batch, position, head, pair) per index.
      k.loop(k.begin, k.end, [&](Value index) {
        SmallVector<Value> at = k.unflatten(index, {bsz, seq, heads, half});
        auto [cs, sn] = turn(toF64(at[1]), at[3]);
        rotate(at[0], at[1], at[2], at[3], cs, sn);
      });
      call(finishKernel(k), bsz * seq * heads * half,
           {out, bufferFor(op->getOperand(0))}, op);
      return success();
    }
    k.loop(k.begin, k.end, [&](Value row) {
      Value bi = k.divi(row, k.idx(seq)), ti = k.remi(row, k.idx(seq));
      Value pos = toF64(ti);
      k.loop(0, half, [&](Value i) {
        std::pair<Value, Value> cosSin = turn(pos, i);
        k.loop(0, heads, [&](Value h) {
          rotate(bi, ti, h, i, cosSin.first, cosSin.second);
        });
      });
    });
    call(finishKernel(k), bsz * seq, {out, bufferFor(op->getOperand(0))}, op);
    return success();
  }
  return op->emitError("host lowering: no kernel for '")
         << op->getName() << "'";
}

//===----------------------------------------------------------------------===//
// Attention: one (batch, head) per parallel index, scores in a stack row
//===----------------------------------------------------------------------===//

void HostLowering::widenBf16(int from, int to, Operation *op) {
  int64_t n = plan.buffers[to].bytes / 4;
  Type i32 = IntegerType::get(ctx, 32), i16 = IntegerType::get(ctx, 16);
  Kernel k =
      startKernel("widen_bf16", op->getLoc(),
                  {memrefOf({n}, Float32Type::get(ctx)), memrefOf({n}, i16)});
  k.loop(k.begin, k.end, [&](Value i) {
    Value bits = arith::ExtUIOp::create(k.b, k.loc, i32, k.load(k.args[1], i));
    Value wide = arith::ShLIOp::create(
        k.b, k.loc, bits,
        arith::ConstantOp::create(k.b, k.loc, k.b.getI32IntegerAttr(16)));
    k.store(arith::BitcastOp::create(k.b, k.loc, Float32Type::get(ctx), wide),
            k.args[0], i);
  });
  call(finishKernel(k), n, {to, from}, op);
  current->actions.back().note = "widen_bf16";
}

bool HostLowering::splitsForAttention(SplitOp split, int64_t axis) {
  int in = bufferFor(split.getInput());
  if (!libraryAttention() || !options.packedAttention ||
      split.getNumResults() != 3 || in < 0 ||
      axis != tensorType(split.getInput()).getRank() - 1 ||
      plan.buffers[in].dtype != "bf16")
    return false;
  for (auto [piece, r] : llvm::enumerate(split.getResults()))
    if (!readAsAttentionInput(r, static_cast<int>(piece)))
      return false;
  return true;
}

bool HostLowering::readAsAttentionInput(Value v, int piece) {
  if (v.use_empty())
    return false;
  for (OpOperand &use : v.getUses()) {
    Operation *user = use.getOwner();
    int first = isa<AttentionGradOp>(user) ? 1 : 0;
    if (isa<AttentionOp, AttentionGradOp>(user) &&
        static_cast<int>(use.getOperandNumber()) == first + piece)
      continue;
    if (isa<func::ReturnOp>(user) && readersOfResult(use, [&](Value arg) {
          return readAsAttentionInput(arg, piece);
        }))
      continue;
    return false;
  }
  return true;
}

LogicalResult HostLowering::lowerLibraryAttention(Operation *op) {
  bool grad = isa<AttentionGradOp>(op);
  unsigned first = grad ? 1 : 0;
  Value q = op->getOperand(first), key = op->getOperand(first + 1),
        val = op->getOperand(first + 2);
  plan::Action act;
  act.kind = plan::Action::Kind::Attention;
  act.heads = cast<IntegerAttr>(op->getAttr("heads")).getInt();
  act.kvHeads = act.heads;
  if (auto kv = op->getAttrOfType<IntegerAttr>("kv_heads"))
    act.kvHeads = kv.getInt();
  act.causal = op->hasAttr("causal");
  ArrayRef<int64_t> shape = tensorType(q).getShape();
  act.batch = shape[0];
  act.seq = shape[1];
  act.headDim = shape[2] / act.heads;
  act.scale = 1.0 / std::sqrt(static_cast<double>(act.headDim));
  if (auto s = op->getAttrOfType<FloatAttr>("scale"))
    act.scale = s.getValueAsDouble();
  Type bf16 = BFloat16Type::get(ctx), f32 = Float32Type::get(ctx);
  // q, k and v left in their QKV buffer (splitsForAttention) come as one.
  int pieces[] = {qkvPiece.lookup_or(q, -1), qkvPiece.lookup_or(key, -1),
                  qkvPiece.lookup_or(val, -1)};
  act.packedQKV = pieces[0] == 0 && pieces[1] == 1 && pieces[2] == 2 &&
                  bufferFor(q) == bufferFor(key) &&
                  bufferFor(q) == bufferFor(val);
  if (!act.packedQKV && (pieces[0] >= 0 || pieces[1] >= 0 || pieces[2] >= 0))
    return op->emitError("host lowering: attention reads q, k and v of "
                         "different QKV projections");
  int dyb = grad ? castToBf16(bufferFor(op->getOperand(0)), op) : -1;
  int qb = castToBf16(bufferFor(q), op), kb = castToBf16(bufferFor(key), op),
      vb = castToBf16(bufferFor(val), op);
  auto push = [&](plan::Action a) {
    for (int b : a.buffers)
      touch(b);
    current->actions.push_back(std::move(a));
    ++actionIndex;
  };
  // The gradient needs the forward's output and statistics: it reads what
  // the forward kept, or runs it again (a gradient without its forward in
  // the same chunk, as with recomputation).
  std::string what = "attention of " + std::to_string(bufferFor(q)) + " " +
                     std::to_string(bufferFor(key)) + " " +
                     std::to_string(bufferFor(val));
  int ob = grad ? reuseScratch(what + " output") : -1;
  int stats = grad ? reuseScratch(what + " statistics") : -1;
  if (ob < 0 || stats < 0) {
    ob = newScratch(shape, bf16);
    stats = newScratch({act.batch, act.heads, act.seq}, f32);
    act.buffers = {qb, kb, vb, ob, stats};
    act.note = "attention";
    push(act);
    if (!grad) {
      keepScratch(what + " output", ob);
      keepScratch(what + " statistics", stats);
    }
  }
  // Outputs stay in bf16 where everything reads them so (storeInBf16,
  // keepOutputInBf16), else are widened.
  auto bind = [&](Value result, int copy) {
    if (storeInBf16(result) || keepOutputInBf16(result))
      buffers[result] = copy;
    else
      widenBf16(copy, newTemp(result), op);
  };
  if (!grad) {
    bind(op->getResult(0), ob);
    return success();
  }
  act.kind = plan::Action::Kind::AttentionGrad;
  act.note = "attention_grad";
  // Gradients that only their concatenation reads (the QKV projection's
  // gradient), in order along the last axis, go straight into it.
  auto concat = op->getResult(0).hasOneUse()
                    ? dyn_cast<ConcatOp>(*op->getResult(0).getUsers().begin())
                    : ConcatOp();
  int64_t rank = tensorType(q).getRank();
  int64_t axis = concat ? static_cast<int64_t>(concat.getAxis()) : 0;
  if (options.packedAttention && concat && concat.getNumOperands() == 3 &&
      llvm::equal(concat.getOperands(), op->getResults()) &&
      llvm::all_of(op->getResults(), [](Value r) { return r.hasOneUse(); }) &&
      (axis < 0 ? axis + rank : axis) == rank - 1 &&
      storeInBf16(concat.getResult())) {
    int out = outputFor(concat.getResult());
    act.packedDQKV = true;
    act.buffers = {qb, kb, vb, ob, stats, dyb, out, out, out};
    push(act);
    skipped.insert(concat);
    return success();
  }
  int dqb = newScratch(shape, bf16);
  int dkb = newScratch(tensorType(key).getShape(), bf16);
  int dvb = newScratch(tensorType(val).getShape(), bf16);
  act.buffers = {qb, kb, vb, ob, stats, dyb, dqb, dkb, dvb};
  push(act);
  int copies[] = {dqb, dkb, dvb};
  for (auto [result, copy] : llvm::zip(op->getResults(), copies))
    bind(result, copy);
  return success();
}

LogicalResult HostLowering::lowerAttention(Operation *op) {
  if (libraryAttention())
    return lowerLibraryAttention(op);
  Location loc = op->getLoc();
  Type f32 = Float32Type::get(ctx);
  bool grad = isa<AttentionGradOp>(op);
  unsigned first = grad ? 1 : 0;
  Value q = op->getOperand(first), key = op->getOperand(first + 1),
        val = op->getOperand(first + 2);
  int64_t heads = cast<IntegerAttr>(op->getAttr("heads")).getInt();
  int64_t kvHeads = heads;
  if (auto kv = op->getAttrOfType<IntegerAttr>("kv_heads"))
    kvHeads = kv.getInt();
  bool causal = op->hasAttr("causal");
  auto tq = tensorType(q);
  int64_t bsz = tq.getShape()[0], seq = tq.getShape()[1];
  int64_t hd = tq.getShape()[2] / heads, group = heads / kvHeads;
  double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  if (auto s = op->getAttrOfType<FloatAttr>("scale"))
    scale = s.getValueAsDouble();
  auto qType = memrefOf({bsz, seq, heads * hd}, f32);
  auto kvType = memrefOf({bsz, seq, kvHeads * hd}, f32);

  // Query i's score against key j of head h.
  auto score = [&](Kernel &k, Value Q, Value K, Value b, Value h, Value g,
                   Value i, Value j) {
    Value qBase = k.muli(h, k.idx(hd)), kBase = k.muli(g, k.idx(hd));
    Value dot = k.reduce(0, hd, k.f32(0), [&](Value d, Value a) {
      return k.add(a, k.mul(k.load(Q, {b, i, k.addi(qBase, d)}),
                            k.load(K, {b, j, k.addi(kBase, d)})));
    });
    return k.mul(dot, k.f32(scale));
  };
  // Scores of query i against keys [0, end) of head h, softmaxed into P;
  // the row's maximum and the inverse of its sum into `stats` if given.
  auto probabilities = [&](Kernel &k, Value Q, Value K, Value P, Value b,
                           Value h, Value g, Value i,
                           std::pair<Value, Value> *stats = nullptr) -> Value {
    Value end = causal ? k.addi(i, k.idx(1)) : k.idx(seq);
    Value mx =
        k.reduce(k.idx(0), end, k.f32(-INFINITY), [&](Value j, Value acc) {
          Value s = score(k, Q, K, b, h, g, i, j);
          k.store(s, P, j);
          return k.max(acc, s);
        });
    Value sum = k.reduce(k.idx(0), end, k.f32(0), [&](Value j, Value acc) {
      Value e = k.exp(k.sub(k.load(P, j), mx));
      k.store(e, P, j);
      return k.add(acc, e);
    });
    Value inv = k.div(k.f32(1), sum);
    k.loop(k.idx(0), end,
           [&](Value j) { k.store(k.mul(k.load(P, j), inv), P, j); });
    if (stats)
      *stats = {mx, inv};
    return end;
  };
  // dP_ij = dy_i . v_j, as both forms of the gradient compute it.
  auto dyDotV = [&](Kernel &k, Value DY, Value V, Value b, Value i, Value j,
                    Value qBase, Value kBase) {
    return k.reduce(0, hd, k.f32(0), [&](Value d, Value a) {
      return k.add(a, k.mul(k.load(DY, {b, i, k.addi(qBase, d)}),
                            k.load(V, {b, j, k.addi(kBase, d)})));
    });
  };
  // D = sum_j P_j dP_j over keys [0, end), each dP_j kept in DP.
  auto rowD = [&](Kernel &k, Value DY, Value V, Value P, Value DP, Value b,
                  Value i, Value qBase, Value kBase, Value end) {
    return k.reduce(k.idx(0), end, k.f32(0), [&](Value j, Value acc) {
      Value dot = dyDotV(k, DY, V, b, i, j, qBase, kBase);
      k.store(dot, DP, j);
      return k.add(acc, k.mul(k.load(P, j), dot));
    });
  };

  if (!grad) {
    int out = newTemp(op->getResult(0));
    Kernel k = startKernel("attention", loc, {qType, qType, kvType, kvType});
    Value Y = k.args[0], Q = k.args[1], K = k.args[2], V = k.args[3];
    Value P = memref::AllocaOp::create(k.b, loc, memrefOf({seq}, f32));
    // The output row accumulates on the stack, which aliases no buffer, so
    // it stays in registers across the keys.
    Value row = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
    // One (batch, head) per index; over elements, one (batch, head, query).
    bool perQuery = options.parallelOverElements;
    k.loop(k.begin, k.end, [&](Value index) {
      SmallVector<Value> at = perQuery ? k.unflatten(index, {bsz, heads, seq})
                                       : k.unflatten(index, {bsz, heads});
      Value b = at[0], h = at[1];
      Value g = k.divi(h, k.idx(group));
      Value qBase = k.muli(h, k.idx(hd)), kBase = k.muli(g, k.idx(hd));
      auto queries = [&](llvm::function_ref<void(Value)> body) {
        if (perQuery)
          body(at[2]);
        else
          k.loop(0, seq, body);
      };
      queries([&](Value i) {
        Value end = probabilities(k, Q, K, P, b, h, g, i);
        k.loop(0, hd, [&](Value d) { k.store(k.f32(0), row, d); });
        k.loop(k.idx(0), end, [&](Value j) {
          Value p = k.load(P, j);
          k.loop(0, hd, [&](Value d) {
            k.store(k.add(k.load(row, d),
                          k.mul(p, k.load(V, {b, j, k.addi(kBase, d)}))),
                    row, d);
          });
        });
        k.loop(0, hd, [&](Value d) {
          k.store(k.load(row, d), Y, {b, i, k.addi(qBase, d)});
        });
      });
    });
    call(finishKernel(k), bsz * heads * (perQuery ? seq : 1),
         {out, bufferFor(q), bufferFor(key), bufferFor(val)}, op);
    return success();
  }

  // The gradient: one (batch, kv head) per parallel index, so the key and
  // value gradients of a group are written by one thread only.
  Value dyValue = op->getOperand(0);
  int dq = newTemp(op->getResult(0)), dk = newTemp(op->getResult(1)),
      dv = newTemp(op->getResult(2));
  if (options.parallelOverElements) {
    // Two kernels, FlashAttention-2's split, each term computed as the one
    // below computes it and added in the same order, so bitwise the same:
    // one (batch, head, query) per index for the query's gradient, keeping
    // each row's maximum, inverse sum and D = sum_j P_j dP_j; then one
    // (batch, kv head, key) per index for the key's and value's, which
    // recompute P and dS from those.
    int stats = newScratch({bsz, heads, seq, 3}, f32);
    auto statsType = memrefOf({bsz, heads, seq, 3}, f32);
    Kernel kq = startKernel("attention_grad", loc,
                            {qType, statsType, qType, qType, kvType, kvType});
    {
      Kernel &k = kq;
      Value DQ = k.args[0], S = k.args[1], DY = k.args[2], Q = k.args[3],
            K = k.args[4], V = k.args[5];
      Value P = memref::AllocaOp::create(k.b, loc, memrefOf({seq}, f32));
      Value DP = memref::AllocaOp::create(k.b, loc, memrefOf({seq}, f32));
      Value dqRow = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
      Value sc = k.f32(scale);
      k.loop(k.begin, k.end, [&](Value index) {
        SmallVector<Value> at = k.unflatten(index, {bsz, heads, seq});
        Value b = at[0], h = at[1], i = at[2];
        Value g = k.divi(h, k.idx(group));
        Value qBase = k.muli(h, k.idx(hd)), kBase = k.muli(g, k.idx(hd));
        std::pair<Value, Value> rowStats;
        Value end = probabilities(k, Q, K, P, b, h, g, i, &rowStats);
        Value total = rowD(k, DY, V, P, DP, b, i, qBase, kBase, end);
        k.loop(0, hd, [&](Value d) { k.store(k.f32(0), dqRow, d); });
        k.loop(k.idx(0), end, [&](Value j) {
          Value ds =
              k.mul(k.mul(k.load(P, j), k.sub(k.load(DP, j), total)), sc);
          k.loop(0, hd, [&](Value d) {
            k.store(k.add(k.load(dqRow, d),
                          k.mul(ds, k.load(K, {b, j, k.addi(kBase, d)}))),
                    dqRow, d);
          });
        });
        k.loop(0, hd, [&](Value d) {
          k.store(k.load(dqRow, d), DQ, {b, i, k.addi(qBase, d)});
        });
        k.store(rowStats.first, S, {b, h, i, k.idx(0)});
        k.store(rowStats.second, S, {b, h, i, k.idx(1)});
        k.store(total, S, {b, h, i, k.idx(2)});
      });
    }
    call(finishKernel(kq), bsz * heads * seq,
         {dq, stats, bufferFor(dyValue), bufferFor(q), bufferFor(key),
          bufferFor(val)},
         op);

    Kernel kk =
        startKernel("attention_grad", loc,
                    {kvType, kvType, statsType, qType, qType, kvType, kvType});
    {
      Kernel &k = kk;
      Value DK = k.args[0], DV = k.args[1], S = k.args[2], DY = k.args[3],
            Q = k.args[4], K = k.args[5], V = k.args[6];
      Value dkRow = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
      Value dvRow = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
      Value sc = k.f32(scale);
      k.loop(k.begin, k.end, [&](Value index) {
        SmallVector<Value> at = k.unflatten(index, {bsz, kvHeads, seq});
        Value b = at[0], g = at[1], j = at[2];
        Value kBase = k.muli(g, k.idx(hd));
        k.loop(0, hd, [&](Value d) {
          k.store(k.f32(0), dkRow, d);
          k.store(k.f32(0), dvRow, d);
        });
        k.loop(k.muli(g, k.idx(group)),
               k.muli(k.addi(g, k.idx(1)), k.idx(group)), [&](Value h) {
                 Value qBase = k.muli(h, k.idx(hd));
                 // The queries that see key j: i >= j when causal.
                 k.loop(causal ? j : k.idx(0), k.idx(seq), [&](Value i) {
                   Value e = k.exp(k.sub(score(k, Q, K, b, h, g, i, j),
                                         k.load(S, {b, h, i, k.idx(0)})));
                   Value p = k.mul(e, k.load(S, {b, h, i, k.idx(1)}));
                   Value dot = dyDotV(k, DY, V, b, i, j, qBase, kBase);
                   Value ds = k.mul(
                       k.mul(p, k.sub(dot, k.load(S, {b, h, i, k.idx(2)}))),
                       sc);
                   k.loop(0, hd, [&](Value d) {
                     Value qi = k.addi(qBase, d);
                     k.store(k.add(k.load(dkRow, d),
                                   k.mul(ds, k.load(Q, {b, i, qi}))),
                             dkRow, d);
                     k.store(k.add(k.load(dvRow, d),
                                   k.mul(p, k.load(DY, {b, i, qi}))),
                             dvRow, d);
                   });
                 });
               });
        k.loop(0, hd, [&](Value d) {
          Value c = k.addi(kBase, d);
          k.store(k.load(dkRow, d), DK, {b, j, c});
          k.store(k.load(dvRow, d), DV, {b, j, c});
        });
      });
    }
    call(finishKernel(kk), bsz * kvHeads * seq,
         {dk, dv, stats, bufferFor(dyValue), bufferFor(q), bufferFor(key),
          bufferFor(val)},
         op);
    return success();
  }
  Kernel k = startKernel("attention_grad", loc,
                         {qType, kvType, kvType, qType, qType, kvType, kvType});
  Value DQ = k.args[0], DK = k.args[1], DV = k.args[2], DY = k.args[3],
        Q = k.args[4], K = k.args[5], V = k.args[6];
  Value P = memref::AllocaOp::create(k.b, loc, memrefOf({seq}, f32));
  Value DP = memref::AllocaOp::create(k.b, loc, memrefOf({seq}, f32));
  Value dqRow = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
  Value qRow = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
  Value dyRow = memref::AllocaOp::create(k.b, loc, memrefOf({hd}, f32));
  Value sc = k.f32(scale);
  k.loop(k.begin, k.end, [&](Value bg) {
    Value b = k.divi(bg, k.idx(kvHeads)), g = k.remi(bg, k.idx(kvHeads));
    Value kBase = k.muli(g, k.idx(hd));
    k.loop(0, seq, [&](Value j) {
      k.loop(0, hd, [&](Value d) {
        Value c = k.addi(kBase, d);
        k.store(k.f32(0), DK, {b, j, c});
        k.store(k.f32(0), DV, {b, j, c});
      });
    });
    k.loop(k.muli(g, k.idx(group)), k.muli(k.addi(g, k.idx(1)), k.idx(group)),
           [&](Value h) {
             Value qBase = k.muli(h, k.idx(hd));
             k.loop(0, seq, [&](Value i) {
               Value end = probabilities(k, Q, K, P, b, h, g, i);
               Value total = rowD(k, DY, V, P, DP, b, i, qBase, kBase, end);
               // This query's rows on the stack: no store below can touch
               // them, so they stay in registers.
               k.loop(0, hd, [&](Value d) {
                 Value qi = k.addi(qBase, d);
                 k.store(k.f32(0), dqRow, d);
                 k.store(k.load(Q, {b, i, qi}), qRow, d);
                 k.store(k.load(DY, {b, i, qi}), dyRow, d);
               });
               k.loop(k.idx(0), end, [&](Value j) {
                 Value p = k.load(P, j);
                 Value ds = k.mul(k.mul(p, k.sub(k.load(DP, j), total)), sc);
                 k.loop(0, hd, [&](Value d) {
                   Value ki = k.addi(kBase, d);
                   k.store(k.add(k.load(dqRow, d),
                                 k.mul(ds, k.load(K, {b, j, ki}))),
                           dqRow, d);
                   k.store(k.add(k.load(DK, {b, j, ki}),
                                 k.mul(ds, k.load(qRow, d))),
                           DK, {b, j, ki});
                   k.store(k.add(k.load(DV, {b, j, ki}),
                                 k.mul(p, k.load(dyRow, d))),
                           DV, {b, j, ki});
                 });
               });
               k.loop(0, hd, [&](Value d) {
                 k.store(k.load(dqRow, d), DQ, {b, i, k.addi(qBase, d)});
               });
             });
           });
  });
  call(finishKernel(k), bsz * kvHeads,
       {dq, dk, dv, bufferFor(dyValue), bufferFor(q), bufferFor(key),
        bufferFor(val)},
       op);
  return success();
}

//===----------------------------------------------------------------------===//
// Data movement: strided copies
//===----------------------------------------------------------------------===//

namespace {
/// Loops over `shape`, the first dimension over the kernel's range; or,
/// `overElements`, every element over the range (row-major).
void nest(Kernel &k, ArrayRef<int64_t> shape, bool overElements,
          llvm::function_ref<void(ArrayRef<Value>)> body) {
  if (overElements) {
    k.loop(k.begin, k.end, [&](Value flat) { body(k.unflatten(flat, shape)); });
    return;
  }
  SmallVector<Value> indices;
  std::function<void(size_t)> rec = [&](size_t dim) {
    if (dim == shape.size()) {
      body(indices);
      return;
    }
    auto inner = [&](Value i) {
      indices.push_back(i);
      rec(dim + 1);
      indices.pop_back();
    };
    if (dim == 0)
      k.loop(k.begin, k.end, inner);
    else
      k.loop(0, shape[dim], inner);
  };
  rec(0);
}
} // namespace

LogicalResult HostLowering::lowerDataMovement(Operation *op) {
  Location loc = op->getLoc();
  // out[i + outOffset] = in[i + inOffset] over `shape`, or a permutation.
  auto copy = [&](StringRef name, int from, RankedTensorType fromType, int to,
                  RankedTensorType toType, ArrayRef<int64_t> shape,
                  ArrayRef<int64_t> fromOffsets, ArrayRef<int64_t> toOffsets,
                  ArrayRef<int64_t> perm) {
    // Either side may be kept in bf16 (storeInBf16): Kernel::store converts.
    Type element = fromType.getElementType();
    Kernel k = startKernel(
        name, loc,
        {memrefOf(toType.getShape(), bufferElement(to, element)),
         memrefOf(fromType.getShape(), bufferElement(from, element))});
    bool overElements = options.parallelOverElements;
    int64_t elements = 1;
    for (int64_t d : shape)
      elements *= d;
    // Over elements, a chunk along the last dimension per index (16 bytes
    // of the narrower side, else four elements) where both sides' chunks
    // start on its boundaries (one vector load and store; a permutation
    // moves single elements).
    auto lastOf = [](ArrayRef<int64_t> offsets) {
      return offsets.empty() ? 0 : offsets.back();
    };
    auto fits = [&](int64_t vector) {
      return shape.back() % vector == 0 &&
             fromType.getShape().back() % vector == 0 &&
             toType.getShape().back() % vector == 0 &&
             lastOf(fromOffsets) % vector == 0 &&
             lastOf(toOffsets) % vector == 0;
    };
    int64_t vector = overElements && perm.empty() && !shape.empty()
                         ? chunkWhere(k.narrowestBits, fits)
                         : 1;
    if (vector > 1) {
      SmallVector<int64_t> chunks(shape);
      chunks.back() /= vector;
      k.loop(k.begin, k.end, [&](Value chunk) {
        SmallVector<Value> idx = k.unflatten(chunk, chunks);
        idx.back() = k.muli(idx.back(), k.idx(vector));
        SmallVector<Value> in(idx), out(idx);
        for (size_t i = 0; i < idx.size(); ++i) {
          if (!fromOffsets.empty())
            in[i] = k.addi(idx[i], k.idx(fromOffsets[i]));
          if (!toOffsets.empty())
            out[i] = k.addi(idx[i], k.idx(toOffsets[i]));
        }
        k.storeChunk(k.loadChunk(k.args[1], in, vector), k.args[0], out);
      });
      call(finishKernel(k), elements / vector, {to, from}, op);
      return;
    }
    nest(k, shape, overElements, [&](ArrayRef<Value> idx) {
      SmallVector<Value> in(idx.size()), out(idx.size());
      for (size_t i = 0; i < idx.size(); ++i) {
        if (!perm.empty()) {
          in[perm[i]] = idx[i];
          out[i] = idx[i];
          continue;
        }
        in[i] = fromOffsets.empty() ? idx[i]
                                    : k.addi(idx[i], k.idx(fromOffsets[i]));
        out[i] =
            toOffsets.empty() ? idx[i] : k.addi(idx[i], k.idx(toOffsets[i]));
      }
      k.store(k.load(k.args[1], in), k.args[0], out);
    });
    call(finishKernel(k),
         overElements ? elements : (shape.empty() ? 1 : shape[0]), {to, from},
         op);
  };

  if (auto t = dyn_cast<TransposeOp>(op)) {
    auto outType = tensorType(t.getResult());
    int out = newTemp(t.getResult(), /*bf16Allowed=*/true);
    copy("transpose", bufferFor(t.getInput()), tensorType(t.getInput()), out,
         outType, outType.getShape(), {}, {}, t.getPerm());
    return success();
  }
  if (auto s = dyn_cast<SliceOp>(op)) {
    auto outType = tensorType(s.getResult());
    int out = newTemp(s.getResult(), /*bf16Allowed=*/true);
    copy("slice", bufferFor(s.getInput()), tensorType(s.getInput()), out,
         outType, outType.getShape(), s.getOffsets(), {}, {});
    return success();
  }
  if (auto s = dyn_cast<SplitOp>(op)) {
    auto inType = tensorType(s.getInput());
    // I64Attr getters return uint64_t: convert before testing the sign.
    int64_t axis = static_cast<int64_t>(s.getAxis());
    axis = axis < 0 ? axis + inType.getRank() : axis;
    // q, k and v that only fused attention reads stay where the QKV
    // projection wrote them: the library reads them from its rows.
    if (splitsForAttention(s, axis)) {
      int in = bufferFor(s.getInput());
      for (auto [piece, r] : llvm::enumerate(s.getResults())) {
        buffers[r] = in;
        qkvPiece[r] = static_cast<int>(piece);
      }
      return success();
    }
    int64_t at = 0;
    for (Value r : s.getResults()) {
      auto rt = tensorType(r);
      SmallVector<int64_t> offsets(inType.getRank(), 0);
      offsets[axis] = at;
      at += rt.getShape()[axis];
      if (r.use_empty())
        continue;
      int out = newTemp(r, /*bf16Allowed=*/true);
      copy("split", bufferFor(s.getInput()), inType, out, rt, rt.getShape(),
           offsets, {}, {});
    }
    return success();
  }
  if (auto p = dyn_cast<PadOp>(op)) {
    auto outType = tensorType(p.getResult());
    int out = newTemp(p.getResult());
    fill(out, outType, FloatAttr::get(outType.getElementType(), 0.0), op);
    auto inType = tensorType(p.getInput());
    copy("pad", bufferFor(p.getInput()), inType, out, outType,
         inType.getShape(), {}, p.getOffsets(), {});
    return success();
  }
  if (auto c = dyn_cast<ConcatOp>(op)) {
    auto outType = tensorType(c.getResult());
    int64_t axis = static_cast<int64_t>(c.getAxis());
    axis = axis < 0 ? axis + outType.getRank() : axis;
    int out = newTemp(c.getResult(), /*bf16Allowed=*/true);
    int64_t at = 0;
    for (Value in : c.getInputs()) {
      auto it = tensorType(in);
      SmallVector<int64_t> offsets(outType.getRank(), 0);
      offsets[axis] = at;
      at += it.getShape()[axis];
      // bufferFor fills a buffer for a zero piece (the gradient of an
      // unused split result).
      copy("concat", bufferFor(in), it, out, outType, it.getShape(), {},
           offsets, {});
    }
    return success();
  }
  return op->emitError("host lowering: no kernel for '")
         << op->getName() << "'";
}

//===----------------------------------------------------------------------===//
// The learning-rate schedule, in f64 on one thread
//===----------------------------------------------------------------------===//

LogicalResult HostLowering::lowerLrSchedule(LrScheduleOp op) {
  Type i64 = IntegerType::get(ctx, 64), f32 = Float32Type::get(ctx);
  int out = newTemp(op.getResult());
  Kernel k =
      startKernel("lr_schedule", op.getLoc(),
                  {memrefOf({}, f32), memrefOf({}, i64), memrefOf({}, i64)});
  OpBuilder &b = k.b;
  Location loc = k.loc;
  Type f64 = b.getF64Type();
  auto toF64 = [&](Value v) {
    return arith::SIToFPOp::create(b, loc, f64, v).getResult();
  };
  Value step = toF64(k.load(k.args[1], {}));
  Value total = toF64(k.load(k.args[2], {}));
  double lr = op.getLr().convertToDouble();
  double minLr = op.getMinLr().convertToDouble();
  double warmup = static_cast<double>(op.getWarmup());
  auto f = [&](double v) { return k.f64(v); };
  auto fadd = [&](Value x, Value y) {
    return arith::AddFOp::create(b, loc, x, y).getResult();
  };
  auto fsub = [&](Value x, Value y) {
    return arith::SubFOp::create(b, loc, x, y).getResult();
  };
  auto fmul = [&](Value x, Value y) {
    return arith::MulFOp::create(b, loc, x, y).getResult();
  };
  auto fdiv = [&](Value x, Value y) {
    return arith::DivFOp::create(b, loc, x, y).getResult();
  };
  // p = clamp((step - warmup) / max(1, total - warmup), 0, 1)
  Value span = arith::MaximumFOp::create(b, loc, f(1), fsub(total, f(warmup)));
  Value p = fdiv(fsub(step, f(warmup)), span);
  p = arith::MinimumFOp::create(
      b, loc, arith::MaximumFOp::create(b, loc, p, f(0)), f(1));
  Value decayed;
  StringRef schedule = op.getSchedule();
  if (schedule == "cosine") {
    Value c = math::CosOp::create(b, loc, fmul(p, f(M_PI)));
    decayed = fadd(f(minLr), fmul(f(0.5 * (lr - minLr)), fadd(f(1), c)));
  } else if (schedule == "linear") {
    decayed = fsub(f(lr), fmul(f(lr - minLr), p));
  } else {
    decayed = f(lr);
  }
  Value result = decayed;
  if (warmup > 0) {
    Value inWarmup = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT,
                                           step, f(warmup));
    Value ramp = fdiv(fmul(f(lr), fadd(step, f(1))), f(warmup));
    result = arith::SelectOp::create(b, loc, inWarmup, ramp, decayed);
  }
  k.store(arith::TruncFOp::create(b, loc, f32, result), k.args[0], {});
  call(finishKernel(k), 1,
       {out, bufferFor(op.getStep()), bufferFor(op.getTotal())}, op);
  return success();
}

//===----------------------------------------------------------------------===//
// Driving the walk
//===----------------------------------------------------------------------===//

LogicalResult HostLowering::lowerOp(Operation *op) {
  if (skipped.contains(op))
    return success();
  if (auto ref = dyn_cast<ParamRefOp>(op)) {
    buffers[ref.getResult()] = plan.find(ref.getName(), BufferKind::Param);
    return success();
  }
  if (auto ref = dyn_cast<StateRefOp>(op)) {
    buffers[ref.getResult()] = plan.find(ref.getName(), BufferKind::State);
    return success();
  }
  if (auto reshape = dyn_cast<ReshapeOp>(op)) {
    int b = bufferFor(reshape.getInput());
    if (b < 0)
      return op->emitError("host lowering: reshape of a value without a "
                           "buffer");
    buffers[reshape.getResult()] = b;
    return success();
  }
  if (auto c = dyn_cast<ConstantOp>(op)) {
    if (!c.getValue().isSplat())
      return op->emitError("host lowering: only splat constants are "
                           "supported");
    return success(); // inlined, or filled where first needed
  }
  if (auto t = dyn_cast<TransposeOp>(op); t && foldedTransposes.contains(t))
    return success();
  if (foldedSquares.contains(op))
    return success();
  if (auto store = dyn_cast<StoreOp>(op)) {
    StringRef name = store.getTarget();
    int target = plan.find(name, BufferKind::State);
    if (target < 0)
      target = plan.find(name, BufferKind::Param);
    if (zeroesOverwritten(store.getValue(), target))
      return success();
    auto type = tensorType(store.getValue());
    if (auto splat = splatOf(store.getValue())) {
      fill(target, type, *splat, op);
      return success();
    }
    int from = bufferFor(store.getValue());
    if (from != target) // else the producer wrote in place
      copyInto(from, target, type, op);
    return success();
  }
  if (auto fused = dyn_cast<FusedOp>(op))
    return lowerFused(fused);
  if (isElementwise(op)) {
    int out = outputFor(op->getResult(0));
    return lowerElementwise(op, llvm::to_vector(op->getOperands()), out,
                            tensorType(op->getResult(0)));
  }
  if (auto mm = dyn_cast<MatmulOp>(op)) {
    if (int acc = accumulatorFor(op); acc >= 0)
      return lowerGemm(op, mm.getLhs(), mm.getRhs(), false, Value(), acc,
                       /*accumulateIntoOut=*/true);
    Operation *epilogue = epilogueFor(op);
    int out = epilogue && mm.getResult().hasOneUse() ? -1
              : epilogue                             ? newTemp(mm.getResult())
                         : newGemmOutput(mm.getResult());
    return lowerGemm(op, mm.getLhs(), mm.getRhs(), false, Value(), out,
                     /*accumulateIntoOut=*/false, epilogue);
  }
  if (auto linear = dyn_cast<LinearOp>(op)) {
    Operation *epilogue = epilogueFor(op);
    int out = epilogue && linear.getResult().hasOneUse() ? -1
              : epilogue ? newTemp(linear.getResult())
                         : newGemmOutput(linear.getResult());
    return lowerGemm(op, linear.getInput(), linear.getWeight(), true,
                     linear.getBias(), out, /*accumulateIntoOut=*/false,
                     epilogue);
  }
  if (isa<ReduceSumOp, ReduceMeanOp, ReduceMaxOp>(op))
    return lowerReduce(op);
  if (auto norms = dyn_cast<SquaredNormsOp>(op))
    return lowerSquaredNorms(norms);
  if (isa<AttentionOp, AttentionGradOp>(op))
    return lowerAttention(op);
  if (isa<TransposeOp, SliceOp, SplitOp, PadOp, ConcatOp>(op))
    return lowerDataMovement(op);
  if (auto lr = dyn_cast<LrScheduleOp>(op))
    return lowerLrSchedule(lr);
  return lowerRowOp(op);
}

int HostLowering::chunkOf(func::FuncOp func) const {
  auto chunk = func->getAttrOfType<IntegerAttr>("nn.chunk");
  return chunk ? static_cast<int>(chunk.getInt()) : -1;
}

int HostLowering::boundaryBuffer(int chunk, bool gradient, int index,
                                 Type type) {
  auto [it, inserted] = boundaries.try_emplace({chunk, gradient, index}, -1);
  if (!inserted)
    return it->second;
  auto t = cast<RankedTensorType>(type);
  plan::Buffer b = describeBuffer(
      BufferKind::Boundary, gradient ? "grad_in" : "act_in", t.getShape(),
      sentInBf16(t) ? BFloat16Type::get(ctx) : t.getElementType());
  b.role = gradient ? "gradient" : "activation";
  b.index = index;
  b.chunk = chunk;
  // A copy per microbatch of the step: the runtime posts every receive
  // when the step starts, so a send never waits for its receiver's slot.
  b.slots = static_cast<int>(plan.microbatches);
  it->second = plan.addBuffer(b);
  return it->second;
}

LogicalResult HostLowering::lowerFunction(func::FuncOp func) {
  plan.functions.push_back({func.getName().str(), {}});
  current = &plan.functions.back();
  StringRef name = func.getName();
  // "c3.backward_input" is chunk 3's B; "r1.optimizer_step" rank 1's.
  auto [prefix, base] =
      name.contains('.') ? name.rsplit('.') : std::pair(StringRef(), name);
  std::string dot = prefix.empty() ? "" : (prefix + ".").str();
  int chunk = chunkOf(func);
  currentChunk = chunk;
  parametersFixed = base != "optimizer_step" && base != "grad_norms";
  for (BlockArgument arg : func.getArguments()) {
    unsigned i = arg.getArgNumber();
    auto type = tensorType(arg);
    if (auto boundary =
            func.getArgAttrOfType<IntegerAttr>(i, "pipe.boundary")) {
      buffers[arg] =
          boundaryBuffer(chunk, false, boundary.getInt(), arg.getType());
      continue;
    }
    if (base == "forward" || base == "optimizer_step") {
      auto attr = func.getArgAttrOfType<StringAttr>(i, "nn.name");
      std::string argName =
          attr ? attr.getValue().str() : ("arg" + Twine(i)).str();
      plan::Buffer b = describeBuffer(
          base == "forward" ? BufferKind::Input : BufferKind::Scalar, argName,
          type.getShape(), type.getElementType());
      if (chunk >= 0) {
        b.chunk = chunk;
        b.slots = chunkSlots[chunk];
      }
      buffers[arg] = plan.addBuffer(b);
      continue;
    }
    auto source = func.getArgAttrOfType<StringAttr>(i, "nn.source");
    if (!source)
      return func.emitError("host lowering: argument ")
             << i << " of @" << name << " has no nn.source";
    auto [from, index] = source.getValue().split(':');
    unsigned k = 0;
    index.getAsInteger(10, k);
    int buffer = -1;
    if (from == "input") {
      auto forward = module.lookupSymbol<func::FuncOp>(dot + "forward");
      if (forward && k < forward.getNumArguments())
        buffer = buffers.lookup(forward.getArgument(k));
    } else if (from == "grad_out" && chunk >= 0) {
      buffer = boundaryBuffer(chunk, true, k, arg.getType());
    } else if (results.count(from) && k < results[from].size()) {
      buffer = results[from][k];
      if (int piece = resultPieces[from.str()][k]; piece >= 0)
        qkvPiece[arg] = piece;
    }
    if (buffer < 0)
      return func.emitError("host lowering: unknown source ") << source;
    buffers[arg] = buffer;
  }
  findInPlaceStores(func);
  if (!parametersFixed)
    findUpdateGroups(func);
  else
    updateGroups.clear();
  // Transposes that GEMMs read through their flags.
  func.walk([&](TransposeOp t) {
    if (isFoldableTranspose(t))
      foldedTransposes.insert(t);
  });
  if (options.parallelOverElements)
    func.walk([&](MulOp m) {
      auto sum = m->hasOneUse() ? dyn_cast<ReduceSumOp>(*m->user_begin())
                                : ReduceSumOp();
      if (!sum || m.getLhs() != m.getRhs() ||
          !tensorType(m.getLhs()).getElementType().isF32())
        return;
      int64_t rank = tensorType(m.getLhs()).getRank();
      std::set<int64_t> axes;
      for (int64_t a : sum.getAxes())
        axes.insert(a < 0 ? a + rank : a);
      if (axes.empty() || static_cast<int64_t>(axes.size()) == rank)
        foldedSquares.insert(m);
    });
  for (Operation &op : func.getBody().front()) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      // A trace reads the per-position losses after the function: nothing
      // after their mean may take their bytes.
      if (tokenLosses >= 0)
        touch(tokenLosses);
      tokenLosses = -1;
      SmallVector<int> out, pieces;
      for (Value v : ret.getOperands()) {
        out.push_back(bufferFor(v));
        pieces.push_back(qkvPiece.lookup_or(v, -1));
      }
      results[name] = out;
      resultPieces[name.str()] = pieces;
      continue;
    }
    if (failed(lowerOp(&op)))
      return failure();
  }
  // What a chunk's function hands on outlives the call: one copy per
  // microbatch in flight.
  if (chunk >= 0)
    for (int b : results[name]) {
      plan::Buffer &buffer = plan.buffers[b];
      if (buffer.kind != BufferKind::Temp)
        continue;
      buffer.kind = BufferKind::Stash;
      buffer.chunk = chunk;
      buffer.slots = chunkSlots[chunk];
    }
  return success();
}

LogicalResult HostLowering::describeModel() {
  if (auto model = module->getAttrOfType<StringAttr>("nn.model"))
    plan.model = model.getValue().str();
  if (auto train = module->getAttrOfType<DictionaryAttr>("nn.train")) {
    if (auto m = train.getAs<IntegerAttr>("microbatches"))
      plan.microbatches = std::max<int64_t>(1, m.getInt());
    if (auto d = train.getAs<IntegerAttr>("dp"))
      plan.replicas = std::max<int64_t>(1, d.getInt());
    if (auto p = train.getAs<StringAttr>("precision"))
      bf16Gemms = p.getValue() == "bf16";
  }
  // Batch and sequence length from the forward's first input; the
  // vocabulary bounds the token ids: the rows of the tables that inputs
  // index, and the classes of the targets. Every chunk's forward counts,
  // since every rank checks the data.
  for (auto forward : module.getOps<func::FuncOp>()) {
    StringRef name = forward.getName();
    if (name != "forward" && !name.ends_with(".forward"))
      continue;
    if (forward.getNumArguments() && !plan.batch) {
      auto t = tensorType(forward.getArgument(0));
      if (t.getRank() == 2) {
        plan.batch = t.getShape()[0];
        plan.seq = t.getShape()[1];
      }
    }
    forward.walk([&](Operation *op) {
      auto bound = [&](Value ids, int64_t limit) {
        auto arg = dyn_cast<BlockArgument>(ids);
        if (!arg || forward.getArgAttr(arg.getArgNumber(), "pipe.boundary"))
          return;
        plan.vocab = plan.vocab ? std::min(plan.vocab, limit) : limit;
      };
      if (auto e = dyn_cast<EmbeddingOp>(op))
        bound(e.getIds(), tensorType(e.getTable()).getShape()[0]);
      if (auto ce = dyn_cast<CrossEntropyOp>(op))
        bound(ce.getTargets(), tensorType(ce.getLogits()).getShape().back());
    });
  }
  if (options.bf16Residual && !bf16Gemms)
    return module.emitError("--bf16-residual needs precision = bf16 (the "
                            "model trains in f32)");
  return success();
}

void HostLowering::addPersistentBuffers(
    llvm::function_ref<bool(StringRef)> keep) {
  for (ParamOp p : module.getOps<ParamOp>()) {
    if (!keep(p.getSymName()))
      continue;
    auto type = cast<RankedTensorType>(p.getType());
    plan::Buffer b = describeBuffer(BufferKind::Param, p.getSymName().str(),
                                    type.getShape(), type.getElementType());
    InitAttr init = p.getInit();
    b.init = stringifyInitKind(init.getKind()).str();
    auto params = init.getParams();
    b.initA = params.size() > 0 ? params[0].convertToDouble() : 0;
    b.initB = params.size() > 1 ? params[1].convertToDouble() : 0;
    plan.addBuffer(b);
  }
  for (StateOp s : module.getOps<StateOp>()) {
    if (!keep(s.getSymName()))
      continue;
    auto type = cast<RankedTensorType>(s.getType());
    plan::Buffer b = describeBuffer(BufferKind::State, s.getSymName().str(),
                                    type.getShape(), type.getElementType());
    b.role = s.getRole().str();
    b.of = s.getOf().str();
    plan.addBuffer(b);
  }
}

FailureOr<plan::Plan> HostLowering::run() {
  if (failed(describeModel()))
    return failure();
  findResultReaders();
  addPersistentBuffers([](StringRef) { return true; });
  // B and W apart, or one @backward (nn-autodiff's split-backward).
  SmallVector<StringRef> names{"forward", "backward_input", "backward_weight",
                               "optimizer_step"};
  if (module.lookupSymbol("backward"))
    names = {"forward", "backward", "optimizer_step"};
  for (StringRef name : names) {
    auto func = module.lookupSymbol<func::FuncOp>(name);
    if (!func)
      return module.emitError("host lowering: the module has no @") << name;
    if (failed(lowerFunction(func)))
      return failure();
  }
  addWeightCasts("optimizer_step", "cast_weights");
  // What the runtime reads: the loss, the learning rate, the norm.
  auto markScalar = [&](StringRef func, unsigned index, StringRef name) {
    plan::Buffer &b = plan.buffers[results[func][index]];
    b.kind = BufferKind::Scalar;
    b.name = name.str();
  };
  markScalar("forward", 0, "loss");
  markScalar("optimizer_step", 0, "lr");
  markScalar("optimizer_step", 1, "grad_norm");
  plan::assignOffsets(plan);
  return std::move(plan);
}

host::PipelineUse host::findPipelineUse(ModuleOp module,
                                        ArrayRef<int> chunkRank) {
  host::PipelineUse use;
  int numChunks = static_cast<int>(chunkRank.size());
  for (auto func : module.getOps<func::FuncOp>()) {
    int r = -1;
    auto chunkAttr = func->getAttrOfType<IntegerAttr>("nn.chunk");
    int chunk = chunkAttr ? static_cast<int>(chunkAttr.getInt()) : -1;
    if (chunk >= 0 && chunk < numChunks)
      r = chunkRank[chunk];
    else if (func.getName().starts_with("r"))
      func.getName().drop_front().split('.').first.getAsInteger(10, r);
    if (r < 0)
      continue;
    func.walk([&](Operation *op) {
      if (auto ref = dyn_cast<ParamRefOp>(op))
        use.readers[ref.getName()].insert(r);
      if (auto ref = dyn_cast<StateRefOp>(op))
        use.readers[ref.getName()].insert(r);
      if (auto store = dyn_cast<StoreOp>(op)) {
        use.readers[store.getTarget()].insert(r);
        if (chunk >= 0)
          use.storedBy[store.getTarget()] = r;
      }
    });
  }
  return use;
}

FailureOr<plan::Plan> HostLowering::runRank(plan::Pipeline pipeline,
                                            const host::PipelineUse &use) {
  if (failed(describeModel()))
    return failure();
  findResultReaders();
  int rank = pipeline.rank;
  chunkSlots = pipeline.chunkSlots;
  int numChunks = static_cast<int>(pipeline.chunkRank.size());
  // This rank's functions: its chunks' F, B (and W), then its optimizer.
  SmallVector<func::FuncOp> funcs;
  auto add = [&](const std::string &name) {
    if (auto f = module.lookupSymbol<func::FuncOp>(name))
      funcs.push_back(f);
  };
  for (int c = 0; c < numChunks; ++c) {
    if (pipeline.chunkRank[c] != rank)
      continue;
    std::string prefix = "c" + std::to_string(c) + ".";
    for (const char *phase :
         {"forward", "backward", "backward_input", "backward_weight"})
      add(prefix + phase);
  }
  std::string rankPrefix = "r" + std::to_string(rank) + ".";
  add(rankPrefix + "grad_norms");
  add(rankPrefix + "optimizer_step");
  if (funcs.size() < 3)
    return module.emitError("host lowering: rank ")
           << rank << " of the pipeline has no chunk";

  const llvm::StringMap<std::set<int>> &readers = use.readers;
  const llvm::StringMap<int> &storedBy = use.storedBy;
  addPersistentBuffers([&](StringRef name) {
    auto state = module.lookupSymbol<StateOp>(name);
    auto it = readers.find(name);
    return (it != readers.end() && it->second.count(rank)) ||
           (state && state.getRole() == "norm");
  });

  for (func::FuncOp func : funcs)
    if (failed(lowerFunction(func)))
      return failure();
  addWeightCasts(rankPrefix + "optimizer_step", rankPrefix + "cast_weights");

  // Sends: a chunk's activations after F (its first results, as many as
  // the next chunk takes), its input gradients after B (its first results).
  for (func::FuncOp func : funcs) {
    int chunk = chunkOf(func);
    if (chunk < 0)
      continue;
    StringRef base = func.getName().rsplit('.').second;
    SmallVector<int> &out = results[func.getName()];
    // The receiver's buffer has the type sentInBf16 gives it: the
    // sender's must be that stretch of the residual stream.
    auto send = [&](bool gradient, int i) -> LogicalResult {
      Type type = func.getResultTypes()[i];
      bool bf16 = plan.buffers[out[i]].dtype == "bf16";
      if (sentInBf16(type) && !bf16)
        return func.emitError("--bf16-residual: ")
               << func.getName() << " sends result " << i
               << ", which is not a stretch of the residual stream in "
                  "bf16: the stages of a pipeline send each other the "
                  "stream in bf16 with --bf16-residual, and this model's "
                  "cut is not on one";
      pipeline.sends.push_back({chunk, gradient, i, out[i]});
      return success();
    };
    if (base == "forward" && chunk + 1 < numChunks)
      for (int i = 0, e = boundaryInputs(chunk + 1); i < e; ++i)
        if (failed(send(false, i)))
          return failure();
    if ((base == "backward" || base == "backward_input") && chunk > 0)
      for (int i = 0, e = boundaryInputs(chunk); i < e; ++i)
        if (failed(send(true, i)))
          return failure();
  }
  // Tied parameters: each accumulator goes from the rank that fills it to
  // every other rank that reads it; the tag is its place among them.
  int tag = 0;
  for (StateOp state : module.getOps<StateOp>()) {
    if (state.getRole() != "grad" || !state.getSymName().contains('@'))
      continue;
    int owner = storedBy.lookup(state.getSymName());
    int buffer = plan.find(state.getSymName(), BufferKind::State);
    auto it = readers.find(state.getSymName());
    if (it == readers.end())
      continue;
    for (int reader : it->second) {
      if (reader == owner)
        continue;
      if (rank == owner)
        pipeline.exchanges.push_back({true, tag, buffer, reader});
      else if (rank == reader)
        pipeline.exchanges.push_back({false, tag, buffer, owner});
    }
    ++tag;
  }

  // What the runtime reads: the loss (a slot per microbatch), the learning
  // rate and the norm.
  for (func::FuncOp func : funcs)
    if (chunkOf(func) == numChunks - 1 && func.getName().ends_with(".forward"))
      plan.buffers[results[func.getName()][0]].name = "loss";
  const char *scalars[] = {"lr", "grad_norm"};
  for (auto [i, name] : llvm::enumerate(scalars)) {
    plan::Buffer &b = plan.buffers[results[rankPrefix + "optimizer_step"][i]];
    b.kind = BufferKind::Scalar;
    b.name = name;
  }
  plan.pipeline = std::move(pipeline);
  plan::assignOffsets(plan);
  return std::move(plan);
}

FailureOr<host::HostProgram> host::lowerToHost(ModuleOp module,
                                               KernelOptions options) {
  host::HostProgram program;
  program.kernels = ModuleOp::create(UnknownLoc::get(module.getContext()));
  std::map<std::string, int> kernelByText;
  HostLowering lowering(module, *program.kernels, {}, kernelByText, options);
  FailureOr<plan::Plan> plan = lowering.run();
  if (failed(plan))
    return failure();
  program.plans.push_back(std::move(*plan));
  return program;
}

FailureOr<host::HostProgram>
host::lowerPipelineToHost(ModuleOp module, ArrayRef<plan::Pipeline> ranks,
                          KernelOptions options) {
  host::HostProgram program;
  program.kernels = ModuleOp::create(UnknownLoc::get(module.getContext()));
  std::vector<std::string> table;
  std::map<std::string, int> kernelByText; // shared: ranks reuse kernels
  host::PipelineUse use = ranks.empty()
                              ? host::PipelineUse()
                              : findPipelineUse(module, ranks[0].chunkRank);
  for (const plan::Pipeline &rank : ranks) {
    HostLowering lowering(module, *program.kernels, table, kernelByText,
                          options);
    FailureOr<plan::Plan> plan = lowering.runRank(rank, use);
    if (failed(plan))
      return failure();
    table = plan->kernels;
    program.plans.push_back(std::move(*plan));
  }
  // One kernel table for the executable: every plan lists all of it.
  for (plan::Plan &plan : program.plans)
    plan.kernels = table;
  return program;
}
