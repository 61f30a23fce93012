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
// Tied parameters: a parameter read in more than one atom of the model
// (compiler/partition: a layer, the embedding, the loss head) gets one
// gradient accumulator per atom, `@"wte:grad@0"`, `@"wte:grad@57"`, which
// the optimizer sums. A pipeline that puts those atoms on different ranks
// then accumulates exactly what one rank does, and the ranks only exchange
// the accumulators once per step.
//
// Recomputation (`recompute = NAME` in the train section): every instance
// of the block member NAME (each layer, for a `repeat` stack) is a segment.
// When the reverse sweep reaches a segment, its forward ops are cloned into
// B and the segment's rules read the clones, so the forward keeps only
// what enters the segment. The instance of an op is the name of its
// NameLoc, which the front end sets to the instance path.
//
//===----------------------------------------------------------------------===//

#include "compiler/partition/Partition.h"
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

#include <functional>
#include <map>
#include <set>

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

/// Parameter reads and constants, and transposes and reshapes of them, are
/// rebuilt in each function that uses them rather than passed from one
/// function to the next (or recomputed): a tied LM head's transposed table
/// is read where it is, by the GEMMs of each function, not copied and
/// saved per microbatch.
bool isRematerialized(Operation *op) {
  if (op && isa<TransposeOp, ReshapeOp>(op))
    return isRematerialized(op->getOperand(0).getDefiningOp());
  return op && isa<ParamRefOp, ConstantOp>(op);
}

RankedTensorType tensorType(Value value) {
  return cast<RankedTensorType>(value.getType());
}

/// Builds the backward ops of one function and records each op's phase.
class GradientBuilder {
public:
  GradientBuilder(func::FuncOp func, Operation *insertBefore,
                  StringRef recompute,
                  llvm::DenseMap<Operation *, int> tiedRefAtom)
      : builder(insertBefore), func(func), recompute(recompute),
        tiedRefAtom(std::move(tiedRefAtom)) {}

  /// A parameter's gradient for one use: the atom of the use for a tied
  /// parameter, -1 for the others.
  using ParamUse = std::pair<StringAttr, int>;

  /// Marks which values need a gradient and which depend on an input.
  void analyze();

  /// Seeds the output gradients (`seeds[i]`, or the constant `lossSeed`
  /// where it is null) and applies the rules in reverse order.
  LogicalResult differentiate(ArrayRef<Value> outputs, ArrayRef<Value> seeds,
                              double lossSeed);

  /// The gradient of `v` so far (null when none reached it).
  Value gradientOf(Value v) const { return grads.lookup(v); }

  /// The summed gradient of each parameter (of each atom, when tied).
  llvm::MapVector<ParamUse, Value> &parameterGradients() { return paramGrads; }

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
  llvm::DenseMap<Operation *, int> tiedRefAtom; // param_ref -> its atom
  llvm::MapVector<ParamUse, Value> paramGrads;
};

} // namespace

void GradientBuilder::analyze() {
  for (BlockArgument arg : func.getArguments()) {
    dataDependent.insert(arg);
    // Activations from the previous pipeline chunk carry gradients.
    if (func.getArgAttr(arg.getArgNumber(), "pipe.boundary") &&
        isa<FloatType>(tensorType(arg).getElementType()))
      active.insert(arg);
  }
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

LogicalResult GradientBuilder::differentiate(ArrayRef<Value> outputs,
                                             ArrayRef<Value> seeds,
                                             double lossSeed) {
  for (auto [out, given] : llvm::zip(outputs, seeds)) {
    // Named copies: lambdas cannot capture structured bindings in C++17.
    Value output = out, seed = given;
    if (seed) {
      contribute(output, [&] { return seed; });
      continue;
    }
    contribute(output, [&] {
      return scalar(output.getLoc(), tensorType(output).getElementType(),
                    lossSeed);
    });
    // The loss seed is the start of B, whatever the loss depends on.
    grads[output].getDefiningOp()->setAttr(
        kPhaseAttr, builder.getStringAttr(phaseName(Phase::Input)));
  }

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
      auto tied = tiedRefAtom.find(op);
      Value &sum = paramGrads[{ref.getNameAttr().getAttr(),
                               tied == tiedRefAtom.end() ? -1 : tied->second}];
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
/// returning the forward's outputs: the loss, or a chunk's activations)
/// with one function per phase, named `prefix` + phase. Without
/// `splitBackward` the W ops join B in their program order as one
/// @backward. `boundaryGrads` (the gradients of a chunk's incoming
/// activations) are B's first results; seed arguments (`nn.seed`, the
/// gradients of a chunk's outputs) are B's, not the forward's.
static LogicalResult splitByPhase(func::FuncOp combined, ModuleOp module,
                                  bool splitBackward, StringRef prefix,
                                  ArrayRef<Value> boundaryGrads) {
  if (!splitBackward)
    combined.walk([](Operation *op) {
      if (phaseOf(op) == Phase::Weight)
        op->setAttr(kPhaseAttr,
                    StringAttr::get(op->getContext(), phaseName(Phase::Input)));
    });
  Block &body = combined.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  auto isSeed = [&](Value v) {
    auto arg = dyn_cast<BlockArgument>(v);
    return arg && combined.getArgAttr(arg.getArgNumber(), "nn.seed");
  };

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
  // B hands on the gradients of the chunk's inputs, whichever phase
  // computed them (or the seed itself, for an activation passed through).
  for (Value g : boundaryGrads)
    if (!g.getDefiningOp())
      plan.imports[static_cast<int>(Phase::Input)].insert(g);

  // Where each exported value lands: "forward:K", "backward_input:K" (with
  // the prefix), "input:K" or "grad_out:K" (the gradient of the forward's
  // output K).
  llvm::DenseMap<Value, std::string> source;
  SmallVector<BlockArgument> inputs, seeds;
  for (BlockArgument arg : combined.getArguments())
    (isSeed(arg) ? seeds : inputs).push_back(arg);
  for (auto [i, arg] : llvm::enumerate(inputs))
    source[arg] = ("input:" + Twine(i)).str();
  for (auto [i, arg] : llvm::enumerate(seeds))
    source[arg] = ("grad_out:" + Twine(i)).str();
  SmallVector<Value> forwardResults(ret.getOperands());
  for (Value v : plan.exports[0])
    if (!llvm::is_contained(ret.getOperands(), v))
      forwardResults.push_back(v);
  std::string forwardName = (prefix + phaseName(Phase::Forward)).str();
  std::string inputName = (prefix + phaseName(Phase::Input)).str();
  for (auto [i, v] : llvm::enumerate(forwardResults))
    source.try_emplace(v, (forwardName + ":" + Twine(i)).str());
  SmallVector<Value> inputResults(boundaryGrads);
  inputResults.append(plan.exports[1].begin(), plan.exports[1].end());
  for (auto [i, v] : llvm::enumerate(inputResults))
    source.try_emplace(v, (inputName + ":" + Twine(i)).str());

  OpBuilder builder(combined);
  MLIRContext *ctx = module.getContext();
  for (Phase phase : {Phase::Forward, Phase::Input, Phase::Weight}) {
    if (phase == Phase::Weight && !splitBackward)
      continue;
    int index = static_cast<int>(phase);
    SmallVector<Value> args, outputs;
    if (phase == Phase::Forward) {
      args.assign(inputs.begin(), inputs.end());
      outputs = forwardResults;
    } else {
      args.assign(plan.imports[index].begin(), plan.imports[index].end());
      if (phase == Phase::Input)
        outputs = inputResults;
    }
    auto type = builder.getFunctionType(ValueRange(args).getTypes(),
                                        ValueRange(outputs).getTypes());
    std::string name = (prefix + (phase == Phase::Input && !splitBackward
                                      ? StringRef("backward")
                                      : phaseName(phase)))
                           .str();
    auto func = func::FuncOp::create(builder, combined.getLoc(), name, type);
    for (StringRef attr : {"nn.chunk", "nn.atom_offset"})
      if (Attribute a = combined->getAttr(attr))
        func->setAttr(attr, a);
    Block *entry = func.addEntryBlock();
    IRMapping mapping;
    for (auto [i, v] : llvm::enumerate(args)) {
      mapping.map(v, entry->getArgument(i));
      if (phase == Phase::Forward) {
        unsigned from = cast<BlockArgument>(v).getArgNumber();
        for (StringRef attr : {"nn.name", "pipe.boundary"})
          if (auto a = combined.getArgAttr(from, attr))
            func.setArgAttr(i, attr, a);
      } else {
        func.setArgAttr(i, "nn.source", StringAttr::get(ctx, source[v]));
      }
    }
    OpBuilder inner = OpBuilder::atBlockEnd(entry);
    // A rematerialized value of another phase, with what it reads.
    std::function<void(Value)> rebuild = [&](Value v) {
      Operation *def = v.getDefiningOp();
      if (!isRematerialized(def) || mapping.contains(v))
        return;
      for (Value operand : def->getOperands())
        rebuild(operand);
      inner.clone(*def, mapping)->removeAttr(kPhaseAttr);
    };
    for (Operation &op : body.without_terminator()) {
      if (phaseOf(&op) != phase)
        continue;
      for (Value operand : op.getOperands())
        if (Operation *def = operand.getDefiningOp();
            def && phaseOf(def) != phase)
          rebuild(operand);
      Operation *clone = inner.clone(op, mapping);
      clone->removeAttr(kPhaseAttr);
    }
    SmallVector<Value> mapped;
    for (Value v : outputs) {
      rebuild(v);
      mapped.push_back(mapping.lookup(v));
    }
    func::ReturnOp::create(inner, ret.getLoc(), mapped);
  }
  combined.erase();
  return success();
}

//===----------------------------------------------------------------------===//
// Tied parameters
//===----------------------------------------------------------------------===//

/// Gives every atom that reads a tied parameter its own param_ref (CSE
/// shares one), and returns the atom of each param_ref of a tied parameter.
/// Atoms are numbered in the whole model: a chunk's own atoms start at its
/// `nn.atom_offset`, and which parameters are tied comes from the chunk
/// split (`nn.tied_atoms`), since one chunk may see only one of the atoms.
static llvm::DenseMap<Operation *, int> untieParameters(func::FuncOp forward,
                                                        ModuleOp module) {
  partition::Atoms atoms = partition::findAtoms(forward);
  int offset = 0;
  if (auto a = forward->getAttrOfType<IntegerAttr>("nn.atom_offset"))
    offset = static_cast<int>(a.getInt());
  bool chunked = forward->hasAttr("nn.chunk");
  llvm::DenseMap<Operation *, int> refAtom;
  llvm::StringMap<std::set<int>> atomsOfParam;
  SmallVector<ParamRefOp> refs(forward.getOps<ParamRefOp>());
  for (ParamRefOp ref : refs) {
    // The readers of this ref, by atom.
    std::map<int, SmallVector<OpOperand *>> byAtom;
    for (OpOperand &use : ref->getUses()) {
      auto it = atoms.atomOf.find(use.getOwner());
      if (it != atoms.atomOf.end() && it->second >= 0)
        byAtom[offset + it->second].push_back(&use);
    }
    if (byAtom.empty())
      continue;
    refAtom[ref] = byAtom.begin()->first;
    for (auto &[atom, uses] : llvm::drop_begin(byAtom)) {
      Operation *first = uses.front()->getOwner();
      for (OpOperand *use : uses)
        if (use->getOwner()->isBeforeInBlock(first))
          first = use->getOwner();
      OpBuilder builder(first);
      Operation *clone = builder.clone(*ref);
      for (OpOperand *use : uses)
        use->set(clone->getResult(0));
      refAtom[clone] = atom;
    }
    for (auto &entry : byAtom)
      atomsOfParam[ref.getName()].insert(entry.first);
  }
  // Only parameters read in several atoms keep their atom.
  llvm::DenseMap<Operation *, int> tied;
  for (auto [op, atom] : refAtom) {
    StringRef name = cast<ParamRefOp>(op).getName();
    bool isTied = atomsOfParam[name].size() > 1;
    if (chunked)
      if (auto param = module.lookupSymbol<ParamOp>(name))
        isTied = param->hasAttr("nn.tied_atoms");
    if (isTied)
      tied[op] = atom;
  }
  return tied;
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
  // @forward, or each pipeline chunk's forward (nn-split-chunks).
  SmallVector<func::FuncOp> forwards;
  if (auto forward = module.lookupSymbol<func::FuncOp>("forward"))
    forwards.push_back(forward);
  else
    for (auto func : module.getOps<func::FuncOp>())
      if (func->hasAttr("nn.chunk"))
        forwards.push_back(func);
  if (forwards.empty()) {
    module.emitError("autodiff: the module has no @forward function");
    return signalPassFailure();
  }

  // Every microbatch's loss gradient is 1/(M D) for M microbatches on each
  // of D data-parallel replicas: the accumulated gradient, summed over the
  // replicas, is that of the mean loss over the batch.
  int64_t microbatches = 1, replicas = 1;
  std::string recompute;
  if (auto train = module->getAttrOfType<DictionaryAttr>("nn.train")) {
    if (auto m = train.getAs<IntegerAttr>("microbatches"))
      microbatches = std::max<int64_t>(1, m.getInt());
    if (auto d = train.getAs<IntegerAttr>("dp"))
      replicas = std::max<int64_t>(1, d.getInt());
    if (auto policy = train.getAs<StringAttr>("recompute"))
      if (policy.getValue() != "none")
        recompute = policy.getValue().str();
  }
  int64_t lastChunk = 0;
  for (func::FuncOp f : forwards)
    if (auto k = f->getAttrOfType<IntegerAttr>("nn.chunk"))
      lastChunk = std::max(lastChunk, k.getInt());

  for (func::FuncOp forward : forwards) {
    StringRef name = forward.getName();
    std::string prefix = name.drop_back(StringRef("forward").size()).str();
    if (!name.ends_with("forward"))
      prefix.clear();
    for (StringRef phase : {"backward", "backward_input", "backward_weight"})
      if (module.lookupSymbol(prefix + phase.str())) {
        module.emitError("autodiff: the module already has @")
            << prefix << phase;
        return signalPassFailure();
      }
    auto chunk = forward->getAttrOfType<IntegerAttr>("nn.chunk");
    bool returnsLoss = !chunk || chunk.getInt() == lastChunk;
    auto lossType = RankedTensorType::get({}, Float32Type::get(&getContext()));
    if (!forward.getBody().hasOneBlock() ||
        (returnsLoss && (forward.getFunctionType().getNumResults() != 1 ||
                         forward.getFunctionType().getResult(0) != lossType))) {
      forward.emitError("autodiff: @")
          << name << " must be one block returning the loss as tensor<f32>";
      return signalPassFailure();
    }
    Block &body = forward.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    // A chunk before the last gets its outputs' gradients as arguments.
    SmallVector<Value> seeds(ret.getNumOperands());
    if (!returnsLoss)
      for (auto [i, output] : llvm::enumerate(ret.getOperands())) {
        unsigned index = forward.getNumArguments();
        if (failed(forward.insertArgument(
                index, output.getType(),
                DictionaryAttr::get(
                    &getContext(),
                    {NamedAttribute(
                        StringAttr::get(&getContext(), "nn.seed"),
                        IntegerAttr::get(IntegerType::get(&getContext(), 64),
                                         static_cast<int64_t>(i)))}),
                forward.getLoc())))
          return signalPassFailure();
        seeds[i] = forward.getArgument(index);
      }

    GradientBuilder grads(forward, ret, recompute,
                          untieParameters(forward, module));
    grads.analyze();
    if (failed(grads.differentiate(SmallVector<Value>(ret.getOperands()), seeds,
                                   1.0 / double(microbatches * replicas))))
      return signalPassFailure();

    // Accumulate each parameter's gradient into its state.
    OpBuilder &builder = grads.builder;
    // The states go after the parameters, in their order.
    OpBuilder moduleBuilder(forward);
    auto &paramGrads = grads.parameterGradients();
    for (ParamOp param : module.getOps<ParamOp>()) {
      StringAttr pname = param.getSymNameAttr();
      // One accumulator, or one per atom (in atom order) when tied.
      SmallVector<std::pair<int, Value>> uses;
      for (auto &[use, grad] : paramGrads)
        if (use.first == pname)
          uses.push_back({use.second, grad});
      llvm::sort(uses, [](auto &a, auto &b) { return a.first < b.first; });
      for (auto [atom, grad] : uses) {
        std::string stateName = (pname.getValue() + ":grad").str();
        if (atom >= 0)
          stateName += "@" + std::to_string(atom);
        if (module.lookupSymbol(stateName)) {
          module.emitError("autodiff: the module already has @") << stateName;
          return signalPassFailure();
        }
        StateOp::create(moduleBuilder, param.getLoc(),
                        moduleBuilder.getStringAttr(stateName),
                        TypeAttr::get(param.getType()),
                        moduleBuilder.getStringAttr("grad"),
                        FlatSymbolRefAttr::get(pname));
        Location loc = grad.getLoc();
        auto ref = FlatSymbolRefAttr::get(&getContext(), stateName);
        Value old = StateRefOp::create(builder, loc, grad.getType(), ref);
        Value sum = AddOp::create(builder, loc, grad.getType(), old, grad);
        auto store = StoreOp::create(builder, loc, sum, ref);
        for (Operation *op :
             {old.getDefiningOp(), sum.getDefiningOp(), store.getOperation()})
          op->setAttr(kPhaseAttr,
                      builder.getStringAttr(phaseName(Phase::Weight)));
      }
    }

    // The gradients of the activations that entered the chunk, for the
    // previous chunk's B.
    SmallVector<Value> boundaryGrads;
    for (BlockArgument arg : forward.getArguments()) {
      if (!forward.getArgAttr(arg.getArgNumber(), "pipe.boundary"))
        continue;
      Value g = grads.gradientOf(arg);
      if (!g) {
        // Nothing this chunk computes from it reaches the loss.
        auto type = tensorType(arg);
        g = ConstantOp::create(
            builder, arg.getLoc(),
            DenseElementsAttr::get(type,
                                   builder.getZeroAttr(type.getElementType())));
        g.getDefiningOp()->setAttr(
            kPhaseAttr, builder.getStringAttr(phaseName(Phase::Input)));
      }
      boundaryGrads.push_back(g);
    }
    if (failed(splitByPhase(forward, module, splitBackward, prefix,
                            boundaryGrads)))
      return signalPassFailure();
  }
}
