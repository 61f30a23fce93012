//===- NNOps.cpp - Operations of the nn dialect ---------------------------===//
//
// Verifiers and folders. Every shape check goes through ShapeRules so that
// the verifier and the front end's type checker report the same message;
// element types are left to the ODS constraints of NNOps.td.
//
//===----------------------------------------------------------------------===//

#include "dialects/nn/NNOps.h"
#include "dialects/nn/ShapeRules.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/TypeUtilities.h"

#include <cmath>

using namespace mlir;
using namespace hotstage::nn;
using llvm::ArrayRef;

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static ArrayRef<int64_t> shapeOf(Type type) {
  return cast<RankedTensorType>(type).getShape();
}

static ArrayRef<int64_t> shapeOf(Value value) {
  return shapeOf(value.getType());
}

/// Name of `op` without the dialect prefix, as the shape rules spell it.
static StringRef ruleName(Operation *op) {
  return op->getName().stripDialect();
}

/// Reports the rule's `error`, or checks that `resultType` has the shape the
/// rule computed.
static LogicalResult checkShape(Operation *op,
                                const std::optional<shape::Shape> &expected,
                                const std::string &error, Type resultType,
                                StringRef what = "result") {
  if (!expected)
    return op->emitOpError(error);
  if (shapeOf(resultType) != ArrayRef<int64_t>(*expected))
    return op->emitOpError()
           << what << " type " << resultType
           << " does not match the inferred shape " << shape::str(*expected);
  return success();
}

static LogicalResult checkShape(Operation *op,
                                const std::optional<shape::Shape> &expected,
                                const std::string &error) {
  return checkShape(op, expected, error, op->getResult(0).getType());
}

/// `value` must be a finite number above zero (or at least zero).
static LogicalResult checkPositive(Operation *op, StringRef name,
                                   const APFloat &value,
                                   bool allowZero = false) {
  double v = value.convertToDouble();
  if (std::isfinite(v) && (v > 0 || (allowZero && v == 0)))
    return success();
  return op->emitOpError() << name << " must be "
                           << (allowZero ? "non-negative" : "positive")
                           << " and finite, got " << v;
}

//===----------------------------------------------------------------------===//
// Parameters and constants
//===----------------------------------------------------------------------===//

LogicalResult ParamRefOp::verifySymbolUses(SymbolTableCollection &symbolTable) {
  Operation *symbol = symbolTable.lookupNearestSymbolFrom(*this, getNameAttr());
  if (!symbol)
    return emitOpError() << "refers to an unknown parameter " << getNameAttr();
  auto param = dyn_cast<ParamOp>(symbol);
  if (!param) {
    InFlightDiagnostic diag = emitOpError()
                              << getNameAttr() << " is not an nn.param";
    diag.attachNote(symbol->getLoc()) << "symbol defined here";
    return diag;
  }
  if (param.getType() != getType()) {
    InFlightDiagnostic diag =
        emitOpError() << "type " << getType() << " does not match the type "
                      << param.getType() << " of parameter " << getNameAttr();
    diag.attachNote(param.getLoc()) << "parameter defined here";
    return diag;
  }
  return success();
}

OpFoldResult ConstantOp::fold(FoldAdaptor) { return getValue(); }

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

static LogicalResult verifyBroadcast(Operation *op) {
  std::string error;
  auto expected = shape::broadcast(ruleName(op), shapeOf(op->getOperand(0)),
                                   shapeOf(op->getOperand(1)), error);
  return checkShape(op, expected, error);
}

LogicalResult AddOp::verify() { return verifyBroadcast(*this); }
LogicalResult SubOp::verify() { return verifyBroadcast(*this); }
LogicalResult MulOp::verify() { return verifyBroadcast(*this); }
LogicalResult DivOp::verify() { return verifyBroadcast(*this); }
LogicalResult MaximumOp::verify() { return verifyBroadcast(*this); }
LogicalResult MinimumOp::verify() { return verifyBroadcast(*this); }
LogicalResult GreaterEqualOp::verify() { return verifyBroadcast(*this); }

LogicalResult BroadcastOp::verify() {
  // Broadcasting the input against the result must give the result: the
  // input can only grow.
  std::string error;
  auto expected = shape::broadcast("broadcast", shapeOf(getInput()),
                                   shapeOf(getType()), error);
  return checkShape(*this, expected, error);
}

OpFoldResult BroadcastOp::fold(FoldAdaptor adaptor) {
  if (getInput().getType() == getType())
    return getInput();
  if (auto elements = dyn_cast_or_null<DenseElementsAttr>(adaptor.getInput()))
    if (elements.isSplat())
      return DenseElementsAttr::get(getType(),
                                    elements.getSplatValue<Attribute>());
  return {};
}

LogicalResult GeluOp::verify() {
  StringRef approximate = getApproximate();
  if (approximate != "none" && approximate != "tanh")
    return emitOpError() << "approximate must be \"none\" or \"tanh\", got \""
                         << approximate << "\"";
  return success();
}

LogicalResult CastOp::verify() {
  if (shapeOf(getInput()) != shapeOf(getType()))
    return emitOpError() << "cannot change the shape: "
                         << shape::str(shapeOf(getInput())) << " to "
                         << shape::str(shapeOf(getType()));
  return success();
}

OpFoldResult CastOp::fold(FoldAdaptor) {
  if (getInput().getType() == getType())
    return getInput();
  return {};
}

//===----------------------------------------------------------------------===//
// Contractions
//===----------------------------------------------------------------------===//

LogicalResult MatmulOp::verify() {
  std::string error;
  auto expected = shape::matmul(shapeOf(getLhs()), shapeOf(getRhs()), error);
  return checkShape(*this, expected, error);
}

LogicalResult LinearOp::verify() {
  std::optional<ArrayRef<int64_t>> bias;
  if (getBias())
    bias = shapeOf(getBias());
  std::string error;
  auto expected =
      shape::linear(shapeOf(getInput()), shapeOf(getWeight()), bias, error);
  return checkShape(*this, expected, error);
}

//===----------------------------------------------------------------------===//
// Reductions and normalization
//===----------------------------------------------------------------------===//

static LogicalResult verifyReduce(Operation *op, Value input,
                                  ArrayRef<int64_t> axes, bool keepDim) {
  std::string error;
  auto expected =
      shape::reduce(ruleName(op), shapeOf(input), axes, keepDim, error);
  return checkShape(op, expected, error);
}

LogicalResult ReduceSumOp::verify() {
  return verifyReduce(*this, getInput(), getAxes(), getKeepdim());
}
LogicalResult ReduceMeanOp::verify() {
  return verifyReduce(*this, getInput(), getAxes(), getKeepdim());
}
LogicalResult ReduceMaxOp::verify() {
  return verifyReduce(*this, getInput(), getAxes(), getKeepdim());
}

LogicalResult SquaredNormsOp::verify() {
  if (getInputs().empty())
    return emitOpError() << "needs at least one operand";
  for (auto [i, v] : llvm::enumerate(getInputs()))
    if (!cast<RankedTensorType>(v.getType()).getElementType().isF32())
      return emitOpError() << "operand #" << i << " is " << v.getType()
                           << "; squared norms are taken of f32 tensors";
  auto type = cast<RankedTensorType>(getType());
  int64_t n = getInputs().size();
  if (type.getShape() != ArrayRef<int64_t>{n} || !type.getElementType().isF32())
    return emitOpError() << "result type " << getType() << " should be tensor<"
                         << n << "xf32>, one element per operand";
  return success();
}

LogicalResult SoftmaxOp::verify() {
  std::string error;
  auto expected = shape::softmax(shapeOf(getInput()), getAxis(), error);
  return checkShape(*this, expected, error);
}

LogicalResult LayerNormOp::verify() {
  std::optional<ArrayRef<int64_t>> bias;
  if (getBias())
    bias = shapeOf(getBias());
  std::string error;
  auto expected = shape::norm(ruleName(*this), shapeOf(getInput()),
                              shapeOf(getScale()), bias, error);
  if (failed(checkShape(*this, expected, error)))
    return failure();
  return checkPositive(*this, "eps", getEps(), /*allowZero=*/true);
}

LogicalResult RMSNormOp::verify() {
  std::string error;
  auto expected = shape::norm(ruleName(*this), shapeOf(getInput()),
                              shapeOf(getScale()), std::nullopt, error);
  if (failed(checkShape(*this, expected, error)))
    return failure();
  return checkPositive(*this, "eps", getEps(), /*allowZero=*/true);
}

//===----------------------------------------------------------------------===//
// Model building blocks
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::verify() {
  std::string error;
  auto expected =
      shape::embedding(shapeOf(getTable()), shapeOf(getIds()), error);
  return checkShape(*this, expected, error);
}

LogicalResult AttentionOp::verify() {
  std::string error;
  auto expected =
      shape::attention(shapeOf(getQuery()), shapeOf(getKey()),
                       shapeOf(getValue()), getHeads(), getNumKvHeads(), error);
  if (failed(checkShape(*this, expected, error)))
    return failure();
  if (std::optional<APFloat> scale = getScale())
    return checkPositive(*this, "scale", *scale);
  return success();
}

int64_t AttentionOp::getHeadDim() {
  return shapeOf(getQuery())[2] / static_cast<int64_t>(getHeads());
}

double AttentionOp::getScaleOrDefault() {
  if (std::optional<APFloat> scale = getScale())
    return scale->convertToDouble();
  return 1.0 / std::sqrt(static_cast<double>(getHeadDim()));
}

LogicalResult RopeOp::verify() {
  std::string error;
  auto expected = shape::rope(shapeOf(getInput()), getHeads(), error);
  if (failed(checkShape(*this, expected, error)))
    return failure();
  return checkPositive(*this, "theta", getTheta());
}

LogicalResult CrossEntropyOp::verify() {
  std::string error;
  auto expected =
      shape::crossEntropy(shapeOf(getLogits()), shapeOf(getTargets()), error);
  return checkShape(*this, expected, error);
}

//===----------------------------------------------------------------------===//
// Data movement
//===----------------------------------------------------------------------===//

LogicalResult ReshapeOp::verify() {
  std::string error;
  auto expected =
      shape::reshape(shapeOf(getInput()), shapeOf(getType()), error);
  return checkShape(*this, expected, error);
}

OpFoldResult ReshapeOp::fold(FoldAdaptor adaptor) {
  if (getInput().getType() == getType())
    return getInput();
  // reshape(reshape(x)) is one reshape of x.
  if (auto producer = getInput().getDefiningOp<ReshapeOp>()) {
    getInputMutable().assign(producer.getInput());
    return getResult();
  }
  if (auto elements = dyn_cast_or_null<DenseElementsAttr>(adaptor.getInput()))
    return elements.reshape(getType());
  return {};
}

LogicalResult TransposeOp::verify() {
  std::string error;
  auto expected = shape::transpose(shapeOf(getInput()), getPerm(), error);
  return checkShape(*this, expected, error);
}

OpFoldResult TransposeOp::fold(FoldAdaptor) {
  // transpose(transpose(x)) is one transpose of x: result dimension i is
  // the inner input's dimension inner[outer[i]].
  if (auto inner = getInput().getDefiningOp<TransposeOp>()) {
    SmallVector<int64_t> perm;
    for (int64_t p : getPerm())
      perm.push_back(inner.getPerm()[p]);
    getInputMutable().assign(inner.getInput());
    setPerm(perm);
    if (!llvm::equal(perm, llvm::seq<int64_t>(0, perm.size())))
      return getResult();
  }
  for (auto [i, p] : llvm::enumerate(getPerm()))
    if (p != static_cast<int64_t>(i))
      return {};
  return getInput();
}

namespace {
/// transpose(a @ b) = transpose(b) @ transpose(a) for 2-D operands, where
/// the product has no other reader: the GEMM then writes the transposed
/// result itself (the transposes of its operands fold into it), with no
/// transpose pass over the product. A tied embedding's gradient from the
/// LM head (x^T dlogits, transposed back to the table's [V, C]) becomes
/// one GEMM that can add into the gradient's accumulator.
struct TransposeOfMatmul : OpRewritePattern<TransposeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TransposeOp transpose,
                                PatternRewriter &rewriter) const override {
    auto mm = transpose.getInput().getDefiningOp<MatmulOp>();
    if (!mm || !mm->hasOneUse() || transpose.getPerm().size() != 2 ||
        transpose.getPerm()[0] != 1)
      return failure();
    auto ta = cast<RankedTensorType>(mm.getLhs().getType());
    auto tb = cast<RankedTensorType>(mm.getRhs().getType());
    if (ta.getRank() != 2 || tb.getRank() != 2)
      return failure();
    Location loc = transpose.getLoc();
    auto swapped = [&](Value v, RankedTensorType t) {
      return TransposeOp::create(rewriter, loc,
                                 t.clone({t.getShape()[1], t.getShape()[0]}), v,
                                 ArrayRef<int64_t>{1, 0});
    };
    Value bt = swapped(mm.getRhs(), tb), at = swapped(mm.getLhs(), ta);
    rewriter.replaceOpWithNewOp<MatmulOp>(transpose, transpose.getType(), bt,
                                          at);
    return success();
  }
};
} // namespace

void TransposeOp::getCanonicalizationPatterns(RewritePatternSet &patterns,
                                              MLIRContext *context) {
  patterns.add<TransposeOfMatmul>(context);
}

LogicalResult SplitOp::verify() {
  ArrayRef<int64_t> input = shapeOf(getInput());
  std::optional<int64_t> axis = shape::normalizeAxis(getAxis(), input.size());
  // The sizes come from the results along the axis; with a bad axis the
  // rule reports it before looking at them.
  SmallVector<int64_t> sizes;
  if (axis) {
    for (auto [i, result] : llvm::enumerate(getResults())) {
      ArrayRef<int64_t> piece = shapeOf(result);
      if (piece.size() != input.size())
        return emitOpError()
               << "result #" << i << " type " << result.getType()
               << " must have rank " << input.size() << " like the input";
      sizes.push_back(piece[*axis]);
    }
  }
  std::string error;
  auto expected = shape::split(input, getAxis(), sizes, error);
  if (!expected)
    return emitOpError(error);
  for (auto [i, result] : llvm::enumerate(getResults()))
    if (failed(checkShape(*this, (*expected)[i], error, result.getType(),
                          ("result #" + Twine(i)).str())))
      return failure();
  return success();
}

LogicalResult ConcatOp::verify() {
  SmallVector<shape::Shape> inputs;
  for (Value input : getInputs())
    inputs.emplace_back(shapeOf(input));
  std::string error;
  auto expected = shape::concat(inputs, getAxis(), error);
  return checkShape(*this, expected, error);
}

LogicalResult SliceOp::verify() {
  std::string error;
  auto expected = shape::slice(shapeOf(getInput()), getOffsets(),
                               shapeOf(getType()), error);
  return checkShape(*this, expected, error);
}

//===----------------------------------------------------------------------===//
// Gradients
//===----------------------------------------------------------------------===//

LogicalResult ActivationGradOp::verify() {
  StringRef kind = getKind();
  if (!llvm::is_contained(
          {"gelu", "gelu_tanh", "relu", "silu", "sigmoid", "tanh"}, kind))
    return emitOpError() << "unknown activation \"" << kind
                         << "\"; expected gelu, gelu_tanh, relu, silu, "
                            "sigmoid or tanh";
  return success();
}

LogicalResult SoftmaxGradOp::verify() {
  std::string error;
  auto expected = shape::softmax(shapeOf(getOutput()), getAxis(), error);
  return checkShape(*this, expected, error);
}

static LogicalResult verifyNormGrad(Operation *op, Value grad, Value input,
                                    Value scale, const APFloat &eps) {
  if (shapeOf(grad) != shapeOf(input))
    return op->emitOpError()
           << "gradient shape " << shape::str(shapeOf(grad))
           << " does not match the input shape " << shape::str(shapeOf(input));
  std::string error;
  std::optional<shape::Shape> expected;
  if (scale)
    expected = shape::norm(ruleName(op), shapeOf(input), shapeOf(scale),
                           std::nullopt, error);
  else if (shapeOf(input).empty())
    error = (ruleName(op) + " needs an input of rank >= 1").str();
  else
    expected = shape::Shape{shapeOf(input).back()};
  if (failed(checkShape(op, expected, error)))
    return failure();
  return checkPositive(op, "eps", eps, /*allowZero=*/true);
}

LogicalResult LayerNormGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), getScale(), getEps());
}
LogicalResult RMSNormGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), getScale(), getEps());
}
LogicalResult LayerNormScaleGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), Value(), getEps());
}
LogicalResult RMSNormScaleGradOp::verify() {
  return verifyNormGrad(*this, getGrad(), getInput(), Value(), getEps());
}

LogicalResult EmbeddingGradOp::verify() {
  ArrayRef<int64_t> table = shapeOf(getType());
  std::string error;
  auto expected = shape::embedding(table, shapeOf(getIds()), error);
  return checkShape(*this, expected, error, getGrad().getType(), "gradient");
}

LogicalResult AttentionGradOp::verify() {
  std::string error;
  auto expected =
      shape::attention(shapeOf(getQuery()), shapeOf(getKey()),
                       shapeOf(getValue()), getHeads(), getNumKvHeads(), error);
  if (failed(
          checkShape(*this, expected, error, getGrad().getType(), "gradient")))
    return failure();
  Value inputs[] = {getQuery(), getKey(), getValue()};
  for (auto [input, result] : llvm::zip(inputs, getResults()))
    if (input.getType() != result.getType())
      return emitOpError() << "result type " << result.getType()
                           << " must match the input type " << input.getType();
  if (std::optional<APFloat> scale = getScale())
    return checkPositive(*this, "scale", *scale);
  return success();
}

int64_t AttentionGradOp::getHeadDim() {
  return shapeOf(getQuery())[2] / static_cast<int64_t>(getHeads());
}

double AttentionGradOp::getScaleOrDefault() {
  if (std::optional<APFloat> scale = getScale())
    return scale->convertToDouble();
  return 1.0 / std::sqrt(static_cast<double>(getHeadDim()));
}

LogicalResult RopeGradOp::verify() {
  std::string error;
  auto expected = shape::rope(shapeOf(getGrad()), getHeads(), error);
  if (failed(checkShape(*this, expected, error)))
    return failure();
  return checkPositive(*this, "theta", getTheta());
}

LogicalResult CrossEntropyGradOp::verify() {
  std::string error;
  auto expected =
      shape::crossEntropy(shapeOf(getLogits()), shapeOf(getTargets()), error);
  if (!expected)
    return emitOpError(error);
  return success();
}

LogicalResult PadOp::verify() {
  // A pad is the slice's adjoint: slicing the result at `offsets` must give
  // the input.
  std::string error;
  auto expected = shape::slice(shapeOf(getType()), getOffsets(),
                               shapeOf(getInput()), error);
  if (!expected)
    return emitOpError(error);
  return success();
}

//===----------------------------------------------------------------------===//
// Training state
//===----------------------------------------------------------------------===//

LogicalResult StateOp::verify() {
  StringRef role = getRole();
  if (!llvm::is_contained({"grad", "exp_avg", "exp_avg_sq", "momentum", "norm"},
                          role))
    return emitOpError() << "unknown role \"" << role
                         << "\"; expected grad, exp_avg, exp_avg_sq, "
                            "momentum or norm";
  auto module = (*this)->getParentOfType<ModuleOp>();
  auto param = module.lookupSymbol<ParamOp>(getOfAttr());
  if (!param)
    return emitOpError() << "refers to an unknown parameter " << getOfAttr();
  // A pipeline's squared gradient norms: one f32 per parameter.
  if (role == "norm") {
    auto type = dyn_cast<RankedTensorType>(getType());
    if (!type || type.getRank() != 1 || !type.getElementType().isF32())
      return emitOpError() << "a norm state is tensor<Nxf32>, got "
                           << getType();
    return success();
  }
  if (param.getType() != getType())
    return emitOpError() << "type " << getType()
                         << " does not match the parameter type "
                         << param.getType();
  return success();
}

/// `ref` reads or writes the symbol `name`, which must be an nn.state (or,
/// with `allowParam`, an nn.param) of type `type`.
static LogicalResult verifyStateUse(Operation *ref, FlatSymbolRefAttr name,
                                    Type type, bool allowParam,
                                    SymbolTableCollection &symbolTable) {
  Operation *symbol = symbolTable.lookupNearestSymbolFrom(ref, name);
  if (!symbol)
    return ref->emitOpError() << "refers to an unknown symbol " << name;
  Type declared;
  if (auto state = dyn_cast<StateOp>(symbol))
    declared = state.getType();
  else if (auto param = dyn_cast<ParamOp>(symbol); param && allowParam)
    declared = param.getType();
  if (!declared) {
    InFlightDiagnostic diag = ref->emitOpError()
                              << name << " is not an nn.state"
                              << (allowParam ? " or nn.param" : "");
    diag.attachNote(symbol->getLoc()) << "symbol defined here";
    return diag;
  }
  if (declared != type)
    return ref->emitOpError() << "type " << type << " does not match the type "
                              << declared << " of " << name;
  return success();
}

LogicalResult StateRefOp::verifySymbolUses(SymbolTableCollection &table) {
  return verifyStateUse(*this, getNameAttr(), getType(), false, table);
}

LogicalResult StoreOp::verifySymbolUses(SymbolTableCollection &table) {
  return verifyStateUse(*this, getTargetAttr(), getValue().getType(), true,
                        table);
}

LogicalResult LrScheduleOp::verify() {
  StringRef schedule = getSchedule();
  if (!llvm::is_contained({"constant", "cosine", "linear"}, schedule))
    return emitOpError() << "unknown schedule \"" << schedule
                         << "\"; expected constant, cosine or linear";
  if (getWarmup() < 0)
    return emitOpError() << "warmup must be non-negative, got " << getWarmup();
  if (failed(checkPositive(*this, "lr", getLr(), /*allowZero=*/true)))
    return failure();
  return checkPositive(*this, "min_lr", getMinLr(), /*allowZero=*/true);
}

//===----------------------------------------------------------------------===//
// Fusion groups
//===----------------------------------------------------------------------===//

bool hotstage::nn::isFusibleElementwise(Operation *op) {
  return isa<AddOp, SubOp, MulOp, DivOp, MaximumOp, MinimumOp, GreaterEqualOp,
             NegOp, ExpOp, LogOp, SqrtOp, RsqrtOp, TanhOp, SigmoidOp, ReluOp,
             SiluOp, GeluOp, ActivationGradOp, BroadcastOp>(op);
}

Operation *hotstage::nn::epilogueReader(Operation *gemm, StringRef *stage) {
  auto stages = gemm->getAttrOfType<ArrayAttr>("nn.epilogue");
  if (!stages)
    return nullptr;
  StringRef first;
  for (Attribute a : stages) {
    StringRef s = cast<StringAttr>(a).getValue();
    if (s != "bias") {
      first = s;
      break;
    }
  }
  if (!llvm::is_contained({"gelu_tanh", "residual", "dgelu_tanh"}, first))
    return nullptr;
  Value r = gemm->getResult(0);
  Operation *reader = nullptr;
  // The function's return saves a value for the backward: not a reader.
  for (Operation *user : r.getUsers()) {
    if (user->hasTrait<OpTrait::IsTerminator>())
      continue;
    if (reader && reader != user)
      return nullptr;
    reader = user;
  }
  bool matches = false;
  if (auto gelu = dyn_cast_or_null<GeluOp>(reader))
    matches = first == "gelu_tanh" && gelu.getApproximate() == "tanh";
  else if (auto grad = dyn_cast_or_null<ActivationGradOp>(reader))
    matches = first == "dgelu_tanh" && grad.getKind() == "gelu_tanh" &&
              grad.getGrad() == r && grad.getInput() != r;
  else if (auto add = dyn_cast_or_null<AddOp>(reader))
    matches = first == "residual" && add.getLhs() != add.getRhs() &&
              add.getLhs().getType() == add.getRhs().getType();
  if (!matches)
    return nullptr;
  if (stage)
    *stage = first;
  return reader;
}

LogicalResult FusedOp::verify() {
  ArrayRef<int64_t> shape = getShape();
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError() << "has " << getInputs().size()
                         << " inputs but its body takes "
                         << body.getNumArguments() << " arguments";
  for (auto [i, input, arg] :
       llvm::enumerate(getInputs(), body.getArguments())) {
    if (input.getType() != arg.getType())
      return emitOpError() << "input " << i << " is " << input.getType()
                           << " but body argument " << i << " is "
                           << arg.getType();
    ArrayRef<int64_t> s = shapeOf(input);
    bool fits = s.size() <= shape.size();
    for (size_t j = 0; fits && j < s.size(); ++j) {
      int64_t d = shape[shape.size() - s.size() + j];
      fits = s[j] == d || s[j] == 1;
    }
    if (!fits)
      return emitOpError() << "input " << i << " of shape " << shape::str(s)
                           << " does not broadcast to " << shape::str(shape);
  }
  for (Operation &op : body.without_terminator()) {
    if (!isFusibleElementwise(&op))
      return op.emitOpError() << "is not elementwise and cannot be in "
                                 "an nn.fused group";
    if (shapeOf(op.getResult(0)) != shape)
      return op.emitOpError()
             << "has shape " << shape::str(shapeOf(op.getResult(0)))
             << ", not the group's " << shape::str(shape);
  }
  auto yield = dyn_cast<YieldOp>(body.getTerminator());
  if (!yield)
    return emitOpError() << "body must end in nn.yield";
  if (yield.getValues().getTypes() != getResultTypes())
    return emitOpError() << "yields " << yield.getValues().size()
                         << " values whose types differ from its results";
  return success();
}
