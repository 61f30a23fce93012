//===- Autodiff.cpp - Reverse-mode differentiation with a B/W split ------===//
//
// Differentiates @forward in three steps:
//
//  1. Activity: which values depend on a parameter (they need gradients)
//     and which on an input (their gradients belong to B; gradients of
//     parameter-only values belong to W).
//  2. Gradient rules, applied in reverse program order after the loss, in
//     the same function. Every op a rule creates is tagged with its phase.
//     Contributions to one value are summed in that fixed order, so the
//     result does not depend on anything but the program.
//  3. Splitting the function by phase into @forward, @backward_input and
//     @backward_weight, with every value that crosses phases passed along
//     as a result and an argument.
//
// Recomputation (`recompute = NAME` in the train section): every instance
// of the block member NAME (each layer, for a `repeat` stack) is a segment.
// When the reverse sweep reaches a segment, its forward ops are cloned into
// B and the segment's rules read the clones, so the forward keeps only
// what enters the segment. The instance of an op is the name of its
// NameLoc, which the front end sets to the instance path.
//
//===----------------------------------------------------------------------===//

#include "compiler/passes/Passes.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/TypeSwitch.h"

namespace hotstage {
#define GEN_PASS_DEF_AUTODIFF
#include "compiler/passes/Passes.h.inc"
} // namespace hotstage

using namespace mlir;
using namespace hotstage;
using namespace hotstage::nn;

namespace {

enum class Phase { Forward, Input, Weight };

constexpr StringLiteral kPhaseAttr = "nn.phase";

StringRef phaseName(Phase phase) {
  switch (phase) {
  case Phase::Forward:
    return "forward";
  case Phase::Input:
    return "backward_input";
  case Phase::Weight:
    return "backward_weight";
  }
  llvm_unreachable("unknown phase");
}

/// Parameter reads and constants are rebuilt in each function that uses
/// them rather than passed from one function to the next (or recomputed).
bool isRematerialized(Operation *op) {
  return op && isa<ParamRefOp, ConstantOp>(op);
}

RankedTensorType tensorType(Value value) {
  return cast<RankedTensorType>(value.getType());
}

/// Builds the backward ops of one function and records each op's phase.
class GradientBuilder {
public:
  GradientBuilder(func::FuncOp func, Operation *insertBefore,
                  StringRef recompute)
      : builder(insertBefore), func(func), recompute(recompute) {}

  /// Marks which values need a gradient and which depend on an input.
  void analyze();

  /// Seeds the loss gradient and applies the rules in reverse order.
  LogicalResult differentiate(Value loss, double seed);

  /// The summed gradient of each parameter.
  llvm::MapVector<StringAttr, Value> &parameterGradients() {
    return paramGrads;
  }

  OpBuilder builder;

private:
  /// The forward value a recomputed value stands for; `v` otherwise.
  Value original(Value v) const { return originals.lookup(v) ?: v; }
  bool isActive(Value v) const { return active.contains(original(v)); }
  bool dependsOnInput(Value v) const {
    return dataDependent.contains(original(v));
  }

  /// The recompute segment `op` belongs to, or "" when it is stored.
  std::string segmentOf(Operation *op) const;
  /// The op whose rule to apply for `op`: its clone in B when `op` is in a
  /// recompute segment (cloning the whole segment on first use).
  Operation *recomputed(Operation *op);

  /// Runs `build` with new ops tagged as the phase of a gradient for `of`,
  /// and adds the value it returns to the gradient of `of`.
  void contribute(Value of, llvm::function_ref<Value()> build);

  LogicalResult applyRule(Operation *op, ArrayRef<Value> resultGrads);

  // Builders of common pieces; `loc` is the forward op's location.
  Value sumToShape(Location loc, Value grad, RankedTensorType target);
  Value scalar(Location loc, Type elementType, double value);
  Value reshape(Location loc, Value v, ArrayRef<int64_t> shape);
  Value transposeLast2(Location loc, Value v);
  Value matmul(Location loc, Value a, Value b);

  func::FuncOp func;
  std::string recompute; // block member name, "" for none
  llvm::StringMap<SmallVector<Operation *>> segments; // forward order
  llvm::DenseMap<Operation *, Operation *> clones;
  llvm::DenseMap<Value, Value> originals; // clone result -> forward value
  llvm::DenseSet<Value> active, dataDependent;
  llvm::DenseMap<Value, Value> grads;
  llvm::MapVector<StringAttr, Value> paramGrads;
};

} // namespace

void GradientBuilder::analyze() {
  for (BlockArgument arg : func.getArguments())
    dataDependent.insert(arg);
  func.walk([&](Operation *op) {
    if (isa<ParamRefOp>(op)) {
      active.insert(op->getResult(0));
      return;
    }
    bool anyActive = false, anyData = false;
    for (Value operand : op->getOperands()) {
      anyActive |= isActive(operand);
      anyData |= dependsOnInput(operand);
    }
    // Masks and integer values carry no gradient.
    if (isa<GreaterEqualOp>(op))
      anyActive = false;
    for (Value result : op->getResults()) {
      if (anyActive && isa<FloatType>(tensorType(result).getElementType()))
        active.insert(result);
      if (anyData)
        dataDependent.insert(result);
    }
  });
}

void GradientBuilder::contribute(Value of, llvm::function_ref<Value()> build) {
  of = original(of);
  Phase phase = dependsOnInput(of) ? Phase::Input : Phase::Weight;
  Block *block = builder.getInsertionBlock();
  Operation *last = builder.getInsertionPoint() == block->begin()
                        ? nullptr
                        : &*std::prev(builder.getInsertionPoint());
  Value grad = build();
  if (Value &sum = grads[of]) {
    sum = AddOp::create(builder, of.getLoc(), grad.getType(), sum, grad);
  } else {
    sum = grad;
  }
  // Tag everything built since `last`.
  auto begin = last ? std::next(Block::iterator(last)) : block->begin();
  for (Operation &op : llvm::make_range(begin, builder.getInsertionPoint()))
    op.setAttr(kPhaseAttr, builder.getStringAttr(phaseName(phase)));
}

Value GradientBuilder::scalar(Location loc, Type elementType, double value) {
  auto type = RankedTensorType::get({}, elementType);
  return ConstantOp::create(
      builder, loc,
      DenseElementsAttr::get(type, builder.getFloatAttr(elementType, value)));
}

Value GradientBuilder::reshape(Location loc, Value v, ArrayRef<int64_t> shape) {
  auto type = tensorType(v).clone(shape);
  if (type == v.getType())
    return v;
  return ReshapeOp::create(builder, loc, type, v);
}

Value GradientBuilder::transposeLast2(Location loc, Value v) {
  auto type = tensorType(v);
  int64_t rank = type.getRank();
  SmallVector<int64_t> perm, shape(type.getShape());
  for (int64_t i = 0; i < rank; ++i)
    perm.push_back(i);
  std::swap(perm[rank - 1], perm[rank - 2]);
  std::swap(shape[rank - 1], shape[rank - 2]);
  return TransposeOp::create(builder, loc, type.clone(shape), v, perm);
}

Value GradientBuilder::matmul(Location loc, Value a, Value b) {
  ArrayRef<int64_t> sa = tensorType(a).getShape(),
                    sb = tensorType(b).getShape();
  SmallVector<int64_t> shape(sa.drop_back());
  shape.push_back(sb.back());
  return MatmulOp::create(builder, loc, tensorType(a).clone(shape), a, b);
}

/// Sums `grad` over the dimensions that broadcasting added or stretched, so
/// it gets the shape of the operand it is the gradient of.
Value GradientBuilder::sumToShape(Location loc, Value grad,
                                  RankedTensorType target) {
  auto type = tensorType(grad);
  if (type.getShape() == target.getShape())
    return grad;
  ArrayRef<int64_t> from = type.getShape(), to = target.getShape();
  int64_t extra = from.size() - to.size();
  SmallVector<int64_t> axes, kept;
  for (int64_t i = 0; i < static_cast<int64_t>(from.size()); ++i) {
    if (i < extra || (to[i - extra] == 1 && from[i] != 1))
      axes.push_back(i);
    else
      kept.push_back(from[i]);
  }
  Value sum = ReduceSumOp::create(builder, loc, type.clone(kept), grad,
                                  builder.getDenseI64ArrayAttr(axes),
                                  /*keepdim=*/false);
  return reshape(loc, sum, to);
}

LogicalResult GradientBuilder::differentiate(Value loss, double seed) {
  contribute(loss, [&] {
    return scalar(loss.getLoc(), tensorType(loss).getElementType(), seed);
  });
  // The loss seed is the start of B, whatever the loss depends on.
  grads[loss].getDefiningOp()->setAttr(
      kPhaseAttr, builder.getStringAttr(phaseName(Phase::Input)));

  SmallVector<Operation *> order;
  for (Operation &op : func.getBody().front().without_terminator()) {
    order.push_back(&op);
    std::string segment = segmentOf(&op);
    if (!segment.empty())
      segments[segment].push_back(&op);
  }
  for (Operation *op : llvm::reverse(order)) {
    if (op->hasAttr(kPhaseAttr))
      continue; // built by this pass
    SmallVector<Value> resultGrads;
    bool any = false;
    for (Value result : op->getResults()) {
      resultGrads.push_back(grads.lookup(result));
      any |= static_cast<bool>(resultGrads.back());
    }
    if (!any)
      continue;
    if (auto ref = dyn_cast<ParamRefOp>(op)) {
      Value &sum = paramGrads[ref.getNameAttr().getAttr()];
      if (sum) {
        sum = AddOp::create(builder, op->getLoc(), sum.getType(), sum,
                            resultGrads[0]);
        sum.getDefiningOp()->setAttr(
            kPhaseAttr, builder.getStringAttr(phaseName(Phase::Weight)));
      } else {
        sum = resultGrads[0];
      }
      continue;
    }
    if (failed(applyRule(recomputed(op), resultGrads)))
      return failure();
  }
  return success();
}

std::string GradientBuilder::segmentOf(Operation *op) const {
  if (recompute.empty() || isRematerialized(op))
    return "";
  auto name = dyn_cast<NameLoc>(op->getLoc());
  if (!name)
    return "";
  // The first component equal to the member, plus the layer index that
  // follows it in a `repeat` stack: "blocks.3.mlp.fc" -> "blocks.3".
  SmallVector<StringRef> parts;
  name.getName().getValue().split(parts, '.');
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i] != recompute)
      continue;
    size_t end = i + 1;
    unsigned long long layer;
    if (end < parts.size() && !parts[end].getAsInteger(10, layer))
      ++end;
    return llvm::join(ArrayRef(parts).take_front(end), ".");
  }
  return "";
}

Operation *GradientBuilder::recomputed(Operation *op) {
  std::string segment = segmentOf(op);
  if (segment.empty())
    return op;
  if (Operation *clone = clones.lookup(op))
    return clone;
  // First use: the whole segment, in forward order, at the end of B so
  // far. Its inputs from outside (and params, constants) stay the forward
  // values; ops nothing reads are removed after the split.
  IRMapping mapping;
  for (Operation *member : segments[segment]) {
    Operation *clone = builder.clone(*member, mapping);
    clone->setAttr(kPhaseAttr, builder.getStringAttr(phaseName(Phase::Input)));
    clones[member] = clone;
    for (auto [from, to] : llvm::zip(member->getResults(), clone->getResults()))
      originals[to] = from;
  }
  return clones.lookup(op);
}

LogicalResult GradientBuilder::applyRule(Operation *op,
                                         ArrayRef<Value> resultGrads) {
  Location loc = op->getLoc();
  Value g = resultGrads.empty() ? Value() : resultGrads[0];
  Value y = op->getNumResults() ? op->getResult(0) : Value();
  auto need = [&](Value operand) { return isActive(operand); };
  // Gradient of a broadcasting binary op's operand from a full-size value.
  auto toOperand = [&](Value operand, llvm::function_ref<Value()> full) {
    if (need(operand))
      contribute(operand,
                 [&] { return sumToShape(loc, full(), tensorType(operand)); });
  };
  auto resultType = [&](Value v) { return tensorType(v); };

  return llvm::TypeSwitch<Operation *, LogicalResult>(op)
      .Case<ConstantOp, GreaterEqualOp>([](auto) { return success(); })
      .Case([&](AddOp add) {
        toOperand(add.getLhs(), [&] { return g; });
        toOperand(add.getRhs(), [&] { return g; });
        return success();
      })
      .Case([&](SubOp sub) {
        toOperand(sub.getLhs(), [&] { return g; });
        toOperand(sub.getRhs(),
                  [&] { return NegOp::create(builder, loc, g.getType(), g); });
        return success();
      })
      .Case([&](MulOp mul) {
        Value a = mul.getLhs(), b = mul.getRhs();
        toOperand(
            a, [&] { return MulOp::create(builder, loc, g.getType(), g, b); });
        toOperand(
            b, [&] { return MulOp::create(builder, loc, g.getType(), g, a); });
        return success();
      })
      .Case([&](DivOp div) {
        Value a = div.getLhs(), b = div.getRhs();
        toOperand(
            a, [&] { return DivOp::create(builder, loc, g.getType(), g, b); });
        // d(a/b)/db = -(a/b)/b
        toOperand(b, [&] {
          Value gy = MulOp::create(builder, loc, g.getType(), g, y);
          Value q = DivOp::create(builder, loc, g.getType(), gy, b);
          return NegOp::create(builder, loc, g.getType(), q);
        });
        return success();
      })
      .Case<MaximumOp, MinimumOp>([&](auto minmax) {
        // The first operand wins ties, as in the forward.
        bool isMax = isa<MaximumOp>(op);
        Value a = minmax.getLhs(), b = minmax.getRhs();
        Value mask;
        auto getMask = [&] {
          if (!mask)
            mask = GreaterEqualOp::create(builder, loc, g.getType(),
                                          isMax ? a : b, isMax ? b : a);
          return mask;
        };
        toOperand(a, [&] {
          return MulOp::create(builder, loc, g.getType(), g, getMask());
        });
        toOperand(b, [&] {
          Value m = MulOp::create(builder, loc, g.getType(), g, getMask());
          return SubOp::create(builder, loc, g.getType(), g, m);
        });
        return success();
      })
      .Case([&](BroadcastOp bc) {
        toOperand(bc.getInput(), [&] { return g; });
        return success();
      })
      .Case([&](NegOp neg) {
        contribute(neg.getInput(),
                   [&] { return NegOp::create(builder, loc, g.getType(), g); });
        return success();
      })
      .Case([&](ExpOp) {
        contribute(op->getOperand(0), [&] {
          return MulOp::create(builder, loc, g.getType(), g, y);
        });
        return success();
      })
      .Case([&](LogOp log) {
        contribute(log.getInput(), [&] {
          return DivOp::create(builder, loc, g.getType(), g, log.getInput());
        });
        return success();
      })
      .Case([&](SqrtOp) {
        // d sqrt(x) = 0.5 / sqrt(x)
        contribute(op->getOperand(0), [&] {
          Value half = scalar(loc, resultType(y).getElementType(), 0.5);
          Value gh = MulOp::create(builder, loc, g.getType(), g, half);
          return DivOp::create(builder, loc, g.getType(), gh, y);
        });
        return success();
      })
      .Case([&](RsqrtOp) {
        // d x^-1/2 = -0.5 x^-3/2 = -0.5 y^3
        contribute(op->getOperand(0), [&] {
          Type t = g.getType();
          Value c = scalar(loc, resultType(y).getElementType(), -0.5);
          Value y2 = MulOp::create(builder, loc, t, y, y);
          Value y3 = MulOp::create(builder, loc, t, y2, y);
          Value gy3 = MulOp::create(builder, loc, t, g, y3);
          return MulOp::create(builder, loc, t, gy3, c);
        });
        return success();
      })
      .Case<TanhOp, SigmoidOp, ReluOp, SiluOp, GeluOp>([&](auto) {
        StringRef kind = op->getName().stripDialect();
        if (auto gelu = dyn_cast<GeluOp>(op))
          kind = gelu.getApproximate() == "tanh" ? "gelu_tanh" : "gelu";
        contribute(op->getOperand(0), [&] {
          return ActivationGradOp::create(builder, loc, g.getType(),
                                          builder.getStringAttr(kind), g,
                                          op->getOperand(0));
        });
        return success();
      })
      .Case([&](CastOp cast) {
        contribute(cast.getInput(), [&] {
          return CastOp::create(builder, loc, cast.getInput().getType(), g);
        });
        return success();
      })
      .Case([&](MatmulOp mm) -> LogicalResult {
        Value a = mm.getLhs(), b = mm.getRhs();
        auto ta = tensorType(a), tb = tensorType(b);
        if (ta.getRank() < 2 || tb.getRank() < 2 ||
            (tb.getRank() != 2 &&
             ta.getShape().drop_back(2) != tb.getShape().drop_back(2)))
          return op->emitError()
                 << "autodiff: the gradient of a matmul of " << a.getType()
                 << " and " << b.getType()
                 << " is not supported yet (vectors, or broadcast batch "
                    "dimensions other than a 2-D right operand)";
        if (need(a))
          contribute(a, [&] { return matmul(loc, g, transposeLast2(loc, b)); });
        if (need(b))
          contribute(b, [&]() -> Value {
            if (tb.getRank() == 2 && ta.getRank() > 2) {
              // A shared right operand: flatten the batch into the rows.
              int64_t k = ta.getShape().back(), n = tb.getShape().back();
              Value a2 = reshape(loc, a, {ta.getNumElements() / k, k});
              Value g2 = reshape(loc, g, {ta.getNumElements() / k, n});
              return matmul(loc, transposeLast2(loc, a2), g2);
            }
            return matmul(loc, transposeLast2(loc, a), g);
          });
        return success();
      })
      .Case([&](LinearOp linear) {
        Value x = linear.getInput(), w = linear.getWeight();
        auto tw = tensorType(w), tx = tensorType(x);
        int64_t out = tw.getShape()[0], in = tw.getShape()[1];
        int64_t rows = tx.getNumElements() / in;
        if (need(x))
          contribute(x, [&] { return matmul(loc, g, w); });
        if (need(w))
          contribute(w, [&] {
            Value g2 = reshape(loc, g, {rows, out});
            Value x2 = reshape(loc, x, {rows, in});
            return matmul(loc, transposeLast2(loc, g2), x2);
          });
        if (Value bias = linear.getBias(); bias && need(bias))
          contribute(bias,
                     [&] { return sumToShape(loc, g, tensorType(bias)); });
        return success();
      })
      .Case<ReduceSumOp, ReduceMeanOp, ReduceMaxOp>([&](auto reduce) {
        Value x = reduce.getInput();
        auto tx = tensorType(x);
        // The result with the reduced dimensions kept as 1.
        SmallVector<int64_t> kept(tx.getShape());
        ArrayRef<int64_t> axes = reduce.getAxes();
        int64_t count = 1;
        for (int64_t i = 0; i < tx.getRank(); ++i) {
          bool reduced = axes.empty() || llvm::is_contained(axes, i) ||
                         llvm::is_contained(axes, i - tx.getRank());
          if (reduced) {
            count *= kept[i];
            kept[i] = 1;
          }
        }
        contribute(x, [&]() -> Value {
          Value gk = reshape(loc, g, kept);
          Value full = BroadcastOp::create(builder, loc, tx, gk);
          if (isa<ReduceMeanOp>(op))
            return MulOp::create(builder, loc, tx, full,
                                 scalar(loc, tx.getElementType(), 1.0 / count));
          if (isa<ReduceMaxOp>(op)) {
            Value yk = reshape(loc, y, kept);
            Value mask = GreaterEqualOp::create(builder, loc, tx, x, yk);
            return MulOp::create(builder, loc, tx, full, mask);
          }
          return full;
        });
        return success();
      })
      .Case([&](SoftmaxOp softmax) {
        contribute(softmax.getInput(), [&] {
          return SoftmaxGradOp::create(builder, loc, g.getType(), g, y,
                                       softmax.getAxisAttr());
        });
        return success();
      })
      .Case([&](LayerNormOp norm) {
        Value x = norm.getInput(), w = norm.getScale();
        if (need(x))
          contribute(x, [&] {
            return LayerNormGradOp::create(builder, loc, x.getType(), g, x, w,
                                           norm.getEpsAttr());
          });
        if (need(w))
          contribute(w, [&] {
            return LayerNormScaleGradOp::create(builder, loc, w.getType(), g, x,
                                                norm.getEpsAttr());
          });
        if (Value bias = norm.getBias(); bias && need(bias))
          contribute(bias,
                     [&] { return sumToShape(loc, g, tensorType(bias)); });
        return success();
      })
      .Case([&](RMSNormOp norm) {
        Value x = norm.getInput(), w = norm.getScale();
        if (need(x))
          contribute(x, [&] {
            return RMSNormGradOp::create(builder, loc, x.getType(), g, x, w,
                                         norm.getEpsAttr());
          });
        if (need(w))
          contribute(w, [&] {
            return RMSNormScaleGradOp::create(builder, loc, w.getType(), g, x,
                                              norm.getEpsAttr());
          });
        return success();
      })
      .Case([&](EmbeddingOp embedding) {
        Value table = embedding.getTable();
        contribute(table, [&] {
          return EmbeddingGradOp::create(builder, loc, table.getType(), g,
                                         embedding.getIds());
        });
        return success();
      })
      .Case([&](AttentionOp attention) {
        Value q = attention.getQuery(), k = attention.getKey(),
              v = attention.getValue();
        // One op computes all three; each contribution takes its result.
        AttentionGradOp gradOp;
        auto get = [&](unsigned i) {
          if (!gradOp)
            gradOp = AttentionGradOp::create(
                builder, loc, TypeRange{q.getType(), k.getType(), v.getType()},
                g, q, k, v, attention.getHeadsAttr(),
                attention.getKvHeadsAttr(), attention.getCausalAttr(),
                attention.getScaleAttr());
          return gradOp->getResult(i);
        };
        Value inputs[] = {q, k, v};
        for (unsigned i = 0; i < 3; ++i)
          if (need(inputs[i]))
            contribute(inputs[i], [&] { return get(i); });
        return success();
      })
      .Case([&](RopeOp rope) {
        contribute(rope.getInput(), [&] {
          return RopeGradOp::create(builder, loc, g.getType(), g,
                                    rope.getHeadsAttr(), rope.getThetaAttr());
        });
        return success();
      })
      .Case([&](CrossEntropyOp ce) {
        contribute(ce.getLogits(), [&] {
          return CrossEntropyGradOp::create(builder, loc,
                                            ce.getLogits().getType(), g,
                                            ce.getLogits(), ce.getTargets());
        });
        return success();
      })
      .Case([&](ReshapeOp reshapeOp) {
        contribute(reshapeOp.getInput(), [&] {
          return ReshapeOp::create(builder, loc, reshapeOp.getInput().getType(),
                                   g);
        });
        return success();
      })
      .Case([&](TransposeOp transpose) {
        ArrayRef<int64_t> perm = transpose.getPerm();
        SmallVector<int64_t> inverse(perm.size());
        for (auto [i, p] : llvm::enumerate(perm))
          inverse[p] = i;
        contribute(transpose.getInput(), [&] {
          return TransposeOp::create(
              builder, loc, transpose.getInput().getType(), g, inverse);
        });
        return success();
      })
      .Case([&](SplitOp split) {
        contribute(split.getInput(), [&] {
          SmallVector<Value> pieces;
          for (auto [result, grad] :
               llvm::zip(split.getResults(), resultGrads)) {
            if (grad) {
              pieces.push_back(grad);
              continue;
            }
            auto type = tensorType(result);
            pieces.push_back(ConstantOp::create(
                builder, loc,
                DenseElementsAttr::get(
                    type, builder.getZeroAttr(type.getElementType()))));
          }
          return ConcatOp::create(builder, loc, split.getInput().getType(),
                                  pieces, split.getAxisAttr());
        });
        return success();
      })
      .Case([&](ConcatOp concat) {
        SplitOp pieces;
        for (auto [index, input] : llvm::enumerate(concat.getInputs())) {
          if (!need(input))
            continue;
          unsigned i = index;
          contribute(input, [&] {
            if (!pieces)
              pieces =
                  SplitOp::create(builder, loc, concat.getInputs().getTypes(),
                                  g, concat.getAxisAttr());
            return pieces->getResult(i);
          });
        }
        return success();
      })
      .Case([&](SliceOp slice) {
        contribute(slice.getInput(), [&] {
          return PadOp::create(builder, loc, slice.getInput().getType(), g,
                               slice.getOffsetsAttr());
        });
        return success();
      })
      .Case([&](PadOp pad) {
        contribute(pad.getInput(), [&] {
          return SliceOp::create(builder, loc, pad.getInput().getType(), g,
                                 pad.getOffsetsAttr());
        });
        return success();
      })
      .Default([&](Operation *other) {
        return other->emitError()
               << "autodiff: no gradient rule for '" << other->getName() << "'";
      });
}

//===----------------------------------------------------------------------===//
// Splitting by phase
//===----------------------------------------------------------------------===//

namespace {

struct PhaseFunctions {
  /// Values each phase reads from an earlier phase (or the inputs), in
  /// first-use order.
  llvm::SetVector<Value> imports[3];
  /// Values each phase hands on to a later one, in first-definition order.
  llvm::SetVector<Value> exports[3];
};

Phase phaseOf(Operation *op) {
  auto attr = op->getAttrOfType<StringAttr>(kPhaseAttr);
  if (!attr)
    return Phase::Forward;
  return attr.getValue() == phaseName(Phase::Weight) ? Phase::Weight
                                                     : Phase::Input;
}

} // namespace

/// Replaces `combined` (forward and tagged backward ops in one function,
/// returning the loss) with one function per phase. Without `splitBackward`
/// the W ops join B in their program order as one @backward.
static LogicalResult splitByPhase(func::FuncOp combined, ModuleOp module,
                                  bool splitBackward) {
  if (!splitBackward)
    combined.walk([](Operation *op) {
      if (phaseOf(op) == Phase::Weight)
        op->setAttr(kPhaseAttr,
                    StringAttr::get(op->getContext(), phaseName(Phase::Input)));
    });
  Block &body = combined.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  Value loss = ret.getOperand(0);

  PhaseFunctions plan;
  for (Operation &op : body.without_terminator()) {
    Phase phase = phaseOf(&op);
    for (Value operand : op.getOperands()) {
      Operation *def = operand.getDefiningOp();
      if ((def && phaseOf(def) == phase) || isRematerialized(def))
        continue;
      if (def && phaseOf(def) > phase)
        return op.emitError("autodiff: a ")
               << phaseName(phase) << " op reads a value of the later phase "
               << phaseName(phaseOf(def));
      if (!def && phase == Phase::Forward)
        continue; // the forward's own arguments
      plan.imports[static_cast<int>(phase)].insert(operand);
      if (def)
        plan.exports[static_cast<int>(phaseOf(def))].insert(operand);
    }
  }

  // Where each exported value lands: "forward:K" or "backward_input:K"; the
  // loss is result 0 of the forward.
  llvm::DenseMap<Value, std::string> source;
  for (BlockArgument arg : combined.getArguments())
    source[arg] = ("input:" + Twine(arg.getArgNumber())).str();
  SmallVector<Value> forwardResults{loss};
  for (Value v : plan.exports[0])
    if (v != loss)
      forwardResults.push_back(v);
  for (auto [i, v] : llvm::enumerate(forwardResults))
    source[v] = ("forward:" + Twine(i)).str();
  for (auto [i, v] : llvm::enumerate(plan.exports[1]))
    source[v] = ("backward_input:" + Twine(i)).str();

  OpBuilder builder(combined);
  MLIRContext *ctx = module.getContext();
  for (Phase phase : {Phase::Forward, Phase::Input, Phase::Weight}) {
    if (phase == Phase::Weight && !splitBackward)
      continue;
    int index = static_cast<int>(phase);
    SmallVector<Value> inputs, outputs;
    if (phase == Phase::Forward) {
      inputs.assign(combined.getArguments().begin(),
                    combined.getArguments().end());
      outputs = forwardResults;
    } else {
      inputs.assign(plan.imports[index].begin(), plan.imports[index].end());
      if (phase == Phase::Input)
        outputs.assign(plan.exports[1].begin(), plan.exports[1].end());
    }
    auto type = builder.getFunctionType(ValueRange(inputs).getTypes(),
                                        ValueRange(outputs).getTypes());
    StringRef name = phase == Phase::Input && !splitBackward
                         ? StringRef("backward")
                         : phaseName(phase);
    auto func = func::FuncOp::create(builder, combined.getLoc(), name, type);
    Block *entry = func.addEntryBlock();
    IRMapping mapping;
    for (auto [i, v] : llvm::enumerate(inputs)) {
      mapping.map(v, entry->getArgument(i));
      if (phase == Phase::Forward) {
        if (auto name = combined.getArgAttr(i, "nn.name"))
          func.setArgAttr(i, "nn.name", name);
      } else {
        func.setArgAttr(i, "nn.source", StringAttr::get(ctx, source[v]));
      }
    }
    OpBuilder inner = OpBuilder::atBlockEnd(entry);
    for (Operation &op : body.without_terminator()) {
      if (phaseOf(&op) != phase)
        continue;
      for (Value operand : op.getOperands()) {
        Operation *def = operand.getDefiningOp();
        if (isRematerialized(def) && phaseOf(def) != phase &&
            !mapping.contains(operand))
          inner.clone(*def, mapping)->removeAttr(kPhaseAttr);
      }
      Operation *clone = inner.clone(op, mapping);
      clone->removeAttr(kPhaseAttr);
    }
    SmallVector<Value> mapped;
    for (Value v : outputs)
      mapped.push_back(mapping.lookup(v));
    func::ReturnOp::create(inner, ret.getLoc(), mapped);
  }
  combined.erase();
  return success();
}

//===----------------------------------------------------------------------===//
// The pass
//===----------------------------------------------------------------------===//

namespace {
struct AutodiffPass : hotstage::impl::AutodiffBase<AutodiffPass> {
  using AutodiffBase::AutodiffBase;
  void runOnOperation() override;
};
} // namespace

void AutodiffPass::runOnOperation() {
  ModuleOp module = getOperation();
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward) {
    module.emitError("autodiff: the module has no @forward function");
    return signalPassFailure();
  }
  for (StringRef taken : {"backward", "backward_input", "backward_weight"})
    if (module.lookupSymbol(taken)) {
      module.emitError("autodiff: the module already has @") << taken;
      return signalPassFailure();
    }
  if (!forward.getBody().hasOneBlock() ||
      forward.getFunctionType().getNumResults() != 1 ||
      forward.getFunctionType().getResult(0) !=
          RankedTensorType::get({}, Float32Type::get(&getContext()))) {
    forward.emitError("autodiff: @forward must be one block returning the "
                      "loss as tensor<f32>");
    return signalPassFailure();
  }

  // Every microbatch's loss gradient is 1/M: the accumulated gradient is
  // that of the mean loss over the batch.
  int64_t microbatches = 1;
  if (auto train = module->getAttrOfType<DictionaryAttr>("nn.train"))
    if (auto m = train.getAs<IntegerAttr>("microbatches"))
      microbatches = std::max<int64_t>(1, m.getInt());

  Block &body = forward.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  std::string recompute;
  if (auto train = module->getAttrOfType<DictionaryAttr>("nn.train"))
    if (auto policy = train.getAs<StringAttr>("recompute"))
      if (policy.getValue() != "none")
        recompute = policy.getValue().str();
  GradientBuilder grads(forward, ret, recompute);
  grads.analyze();
  if (failed(grads.differentiate(ret.getOperand(0), 1.0 / microbatches)))
    return signalPassFailure();

  // Accumulate each parameter's gradient into its state.
  OpBuilder &builder = grads.builder;
  // The states go after the parameters, in their order.
  OpBuilder moduleBuilder(forward);
  auto &paramGrads = grads.parameterGradients();
  for (ParamOp param : module.getOps<ParamOp>()) {
    StringAttr name = param.getSymNameAttr();
    Value grad = paramGrads.lookup(name);
    if (!grad)
      continue; // not used by the loss
    std::string stateName = (name.getValue() + ":grad").str();
    if (module.lookupSymbol(stateName)) {
      module.emitError("autodiff: the module already has @") << stateName;
      return signalPassFailure();
    }
    StateOp::create(
        moduleBuilder, param.getLoc(), moduleBuilder.getStringAttr(stateName),
        TypeAttr::get(param.getType()), moduleBuilder.getStringAttr("grad"),
        FlatSymbolRefAttr::get(name));
    Location loc = grad.getLoc();
    auto ref = FlatSymbolRefAttr::get(&getContext(), stateName);
    Value old = StateRefOp::create(builder, loc, grad.getType(), ref);
    Value sum = AddOp::create(builder, loc, grad.getType(), old, grad);
    auto store = StoreOp::create(builder, loc, sum, ref);
    for (Operation *op :
         {old.getDefiningOp(), sum.getDefiningOp(), store.getOperation()})
      op->setAttr(kPhaseAttr, builder.getStringAttr(phaseName(Phase::Weight)));
  }

  if (failed(splitByPhase(forward, module, splitBackward)))
    return signalPassFailure();
}
