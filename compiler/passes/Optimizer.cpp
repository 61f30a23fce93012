//===- Optimizer.cpp - The optimizer step as nn ops -----------------------===//
//
// Builds @optimizer_step from the train section: the learning-rate
// schedule, global-norm clipping and the AdamW or SGD update, written with
// the same elementwise nn ops as the model so that fusion turns each
// parameter's update into one kernel on every target. The formulas follow
// torch.optim (AdamW, SGD) and torch.nn.utils.clip_grad_norm_ operation by
// operation, so a reference run in PyTorch agrees to rounding.
//
//===----------------------------------------------------------------------===//

#include "compiler/passes/Passes.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <cmath>
#include <set>

namespace hotstage {
#define GEN_PASS_DEF_OPTIMIZER
#include "compiler/passes/Passes.h.inc"
} // namespace hotstage

using namespace mlir;
using namespace hotstage;
using namespace hotstage::nn;

namespace {

/// The train-section fields the optimizer reads, with the front end's
/// defaults for modules written by hand.
struct Settings {
  std::string optimizer = "adamw", schedule = "constant";
  double lr = 3e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weightDecay = 0, momentum = 0, minLr = 0, clip = 0;
  int64_t warmup = 0;
};

Settings readSettings(ModuleOp module) {
  Settings s;
  auto train = module->getAttrOfType<DictionaryAttr>("nn.train");
  if (!train)
    return s;
  auto real = [&](StringRef key, double &out) {
    if (auto a = train.getAs<FloatAttr>(key))
      out = a.getValueAsDouble();
  };
  auto text = [&](StringRef key, std::string &out) {
    if (auto a = train.getAs<StringAttr>(key))
      out = a.getValue().str();
  };
  text("optimizer", s.optimizer);
  text("lr_schedule", s.schedule);
  real("lr", s.lr);
  real("beta1", s.beta1);
  real("beta2", s.beta2);
  real("eps", s.eps);
  real("weight_decay", s.weightDecay);
  real("momentum", s.momentum);
  real("min_lr", s.minLr);
  real("clip_grad_norm", s.clip);
  if (auto a = train.getAs<IntegerAttr>("warmup"))
    s.warmup = a.getInt();
  return s;
}

/// Builds nn ops on f32 tensors; 0-d operands broadcast.
struct Emitter {
  OpBuilder &b;
  Location loc;

  Type f32() { return b.getF32Type(); }
  RankedTensorType scalarType() { return RankedTensorType::get({}, f32()); }
  /// The broadcast result type of two operands (one of them may be 0-d).
  Type joined(Value x, Value y) {
    auto tx = cast<RankedTensorType>(x.getType());
    return tx.getRank() ? tx : y.getType();
  }
  Value c(double v) {
    return ConstantOp::create(
        b, loc, DenseElementsAttr::get(scalarType(), b.getF32FloatAttr(v)));
  }
  Value add(Value x, Value y) {
    return AddOp::create(b, loc, joined(x, y), x, y);
  }
  Value sub(Value x, Value y) {
    return SubOp::create(b, loc, joined(x, y), x, y);
  }
  Value mul(Value x, Value y) {
    return MulOp::create(b, loc, joined(x, y), x, y);
  }
  Value div(Value x, Value y) {
    return DivOp::create(b, loc, joined(x, y), x, y);
  }
  Value sqrt(Value x) { return SqrtOp::create(b, loc, x.getType(), x); }
  Value exp(Value x) { return ExpOp::create(b, loc, x.getType(), x); }
};

struct ParamState {
  ParamOp param;
  /// Its gradient accumulators: one, or one per atom that reads a tied
  /// parameter (nn-autodiff), in atom order.
  SmallVector<StateOp, 1> grads;
  /// The last state declared for this parameter; the next goes after it.
  Operation *lastState = nullptr;
};

struct OptimizerPass : hotstage::impl::OptimizerBase<OptimizerPass> {
  void runOnOperation() override;
};

} // namespace

void OptimizerPass::runOnOperation() {
  ModuleOp module = getOperation();
  MLIRContext *ctx = &getContext();
  if (module.lookupSymbol("optimizer_step")) {
    module.emitError("optimizer: the module already has @optimizer_step");
    return signalPassFailure();
  }
  Settings s = readSettings(module);
  if (s.optimizer != "adamw" && s.optimizer != "sgd") {
    module.emitError("optimizer: unknown optimizer '") << s.optimizer << "'";
    return signalPassFailure();
  }

  // Parameters with a gradient accumulator, in declaration order.
  SmallVector<ParamState> params;
  for (auto state : module.getOps<StateOp>()) {
    if (state.getRole() != "grad")
      continue;
    auto param = module.lookupSymbol<ParamOp>(state.getOfAttr());
    auto it = llvm::find_if(
        params, [&](const ParamState &p) { return p.param == param; });
    if (it != params.end())
      it->grads.push_back(state);
    else
      params.push_back({param, {state}});
  }
  if (params.empty()) {
    module.emitError("optimizer: no parameter has a gradient; run "
                     "nn-autodiff first");
    return signalPassFailure();
  }
  llvm::sort(params, [](const ParamState &a, const ParamState &b) {
    return a.param->isBeforeInBlock(b.param);
  });

  OpBuilder builder(ctx);
  builder.setInsertionPointToEnd(module.getBody());
  Location loc =
      NameLoc::get(builder.getStringAttr("optimizer"), module.getLoc());
  auto i64Scalar = RankedTensorType::get({}, builder.getI64Type());
  auto f32Scalar = RankedTensorType::get({}, builder.getF32Type());

  // The moments, declared after the last parameter state.
  auto declareState = [&](ParamState &p, StringRef role, Type type) {
    OpBuilder declare(ctx);
    declare.setInsertionPointAfter(p.lastState ? p.lastState
                                               : p.grads.back().getOperation());
    std::string name = (p.param.getSymName() + ":" + role).str();
    auto state =
        StateOp::create(declare, p.param.getLoc(), declare.getStringAttr(name),
                        TypeAttr::get(type), declare.getStringAttr(role),
                        FlatSymbolRefAttr::get(p.param.getSymNameAttr()));
    p.lastState = state;
    return state;
  };
  // A tied parameter's accumulators are summed last atom first, the order
  // in which reverse mode meets them.
  auto gradientOf = [&](ParamState &p) {
    Type type = p.param.getType();
    Value g;
    for (StateOp acc : llvm::reverse(p.grads)) {
      Value part =
          StateRefOp::create(builder, p.param.getLoc(), type,
                             FlatSymbolRefAttr::get(acc.getSymNameAttr()));
      g = g ? AddOp::create(builder, p.param.getLoc(), type, g, part) : part;
    }
    return g;
  };
  // Every gradient's squared norm in one op, in parameter order (a zero
  // scalar for a parameter another rank owns).
  auto squaredNorms = [&](ArrayRef<Value> grads) {
    auto type = RankedTensorType::get({static_cast<int64_t>(grads.size())},
                                      builder.getF32Type());
    return SquaredNormsOp::create(builder, loc, type, grads).getResult();
  };
  auto sumAll = [&](Value v) {
    return ReduceSumOp::create(builder, loc, f32Scalar, v,
                               builder.getDenseI64ArrayAttr({}),
                               /*keepdim=*/false)
        .getResult();
  };
  // Which rank updates each parameter: all ranks of one pipeline
  // (nn.chunk_ranks) or the only one.
  auto chunkRanks = module->getAttrOfType<DenseI64ArrayAttr>("nn.chunk_ranks");
  int numRanks = 1;
  llvm::StringMap<std::set<int>> ranksOf; // parameter -> ranks reading it
  if (chunkRanks) {
    for (int64_t r : chunkRanks.asArrayRef())
      numRanks = std::max<int>(numRanks, r + 1);
    for (auto func : module.getOps<func::FuncOp>()) {
      auto chunk = func->getAttrOfType<IntegerAttr>("nn.chunk");
      if (!chunk || chunk.getInt() >= int64_t(chunkRanks.size()))
        continue;
      int rank = static_cast<int>(chunkRanks[chunk.getInt()]);
      func.walk([&](Operation *op) {
        if (auto ref = dyn_cast<ParamRefOp>(op))
          ranksOf[ref.getName()].insert(rank);
        if (auto ref = dyn_cast<StateRefOp>(op))
          if (auto state = module.lookupSymbol<StateOp>(ref.getName()))
            ranksOf[state.getOf()].insert(rank);
      });
    }
  }
  auto onRank = [&](ParamState &p, int rank) {
    return !chunkRanks || ranksOf[p.param.getSymName()].count(rank);
  };
  auto ownedBy = [&](ParamState &p, int rank) {
    if (!chunkRanks)
      return true;
    auto &ranks = ranksOf[p.param.getSymName()];
    return !ranks.empty() && *ranks.begin() == rank;
  };

  // With a pipeline, the parameters' squared norms are a state
  // (`grad_norms`, role `norm`) that each rank's @grad_norms writes whole,
  // its own parameters' entries and zeros for the others; the runtime sums
  // it over the ranks (x + 0 is exact), so every rank adds the same values
  // in one order, as one rank does.
  StateOp normState;
  if (chunkRanks) {
    OpBuilder declare(ctx);
    declare.setInsertionPointAfter(params.back().grads.back());
    normState = StateOp::create(
        declare, loc, declare.getStringAttr("grad_norms"),
        TypeAttr::get(RankedTensorType::get(
            {static_cast<int64_t>(params.size())}, builder.getF32Type())),
        declare.getStringAttr("norm"),
        FlatSymbolRefAttr::get(params.front().param.getSymNameAttr()));
  }

  for (int rank = 0; rank < numRanks; ++rank) {
    std::string prefix = chunkRanks ? "r" + std::to_string(rank) + "." : "";
    if (chunkRanks) {
      auto norms = func::FuncOp::create(builder, loc, prefix + "grad_norms",
                                        builder.getFunctionType({}, {}));
      Block *entry = norms.addEntryBlock();
      OpBuilder::InsertionGuard guard(builder);
      builder.setInsertionPointToStart(entry);
      SmallVector<Value> owned;
      Value zero = Emitter{builder, loc}.c(0.0);
      for (ParamState &p : params)
        owned.push_back(ownedBy(p, rank) ? gradientOf(p) : zero);
      StoreOp::create(builder, loc, squaredNorms(owned),
                      FlatSymbolRefAttr::get(normState.getSymNameAttr()));
      func::ReturnOp::create(builder, loc);
    }

    auto func =
        func::FuncOp::create(builder, loc, prefix + "optimizer_step",
                             builder.getFunctionType({i64Scalar, i64Scalar},
                                                     {f32Scalar, f32Scalar}));
    func.setArgAttr(0, "nn.name", builder.getStringAttr("step"));
    func.setArgAttr(1, "nn.name", builder.getStringAttr("total_steps"));
    Block *entry = func.addEntryBlock();
    OpBuilder::InsertionGuard guard(builder);
    builder.setInsertionPointToStart(entry);
    Emitter e{builder, loc};
    Value step = entry->getArgument(0), total = entry->getArgument(1);

    Value lr = LrScheduleOp::create(
        builder, loc, f32Scalar, step, total, builder.getStringAttr(s.schedule),
        builder.getF64FloatAttr(s.lr), builder.getF64FloatAttr(s.minLr),
        builder.getI64IntegerAttr(s.warmup));

    // The global gradient norm: the squared norms summed in parameter
    // order.
    SmallVector<Value> grads;
    Value norms;
    if (chunkRanks) {
      for (ParamState &p : params)
        grads.push_back(onRank(p, rank) ? gradientOf(p) : Value());
      norms = StateRefOp::create(
          builder, loc, normState.getType(),
          FlatSymbolRefAttr::get(normState.getSymNameAttr()));
    } else {
      for (ParamState &p : params)
        grads.push_back(gradientOf(p));
      norms = squaredNorms(grads);
    }
    Value sumSq = sumAll(norms);
    Value gradNorm = e.sqrt(sumSq);

    // clip_grad_norm_: scale by min(1, max_norm / (norm + 1e-6)).
    if (s.clip > 0) {
      Value coef = e.div(e.c(s.clip), e.add(gradNorm, e.c(1e-6)));
      coef = MinimumOp::create(builder, loc, f32Scalar, coef, e.c(1.0));
      for (Value &g : grads)
        if (g)
          g = e.mul(g, coef);
    }

    // AdamW's bias corrections 1 - beta^t for t = step + 1.
    Value bc1, bc2;
    if (s.optimizer == "adamw") {
      Value t = e.add(CastOp::create(builder, loc, f32Scalar, step), e.c(1.0));
      bc1 = e.sub(e.c(1.0), e.exp(e.mul(t, e.c(std::log(s.beta1)))));
      bc2 = e.sub(e.c(1.0), e.exp(e.mul(t, e.c(std::log(s.beta2)))));
    }

    for (auto [param, grad] : llvm::zip(params, grads)) {
      // Named references: lambdas cannot capture structured bindings.
      ParamState &p = param;
      Value g = grad;
      if (!g)
        continue; // another rank's
      Location ploc = p.param.getLoc();
      Type type = p.param.getType();
      auto paramRef = FlatSymbolRefAttr::get(p.param.getSymNameAttr());
      Value w = ParamRefOp::create(builder, ploc, type, paramRef);
      // Norm scales, biases and other vectors are not decayed.
      bool decay =
          s.weightDecay != 0 && cast<RankedTensorType>(type).getRank() >= 2;
      auto store = [&](Value v, StringRef state) {
        StoreOp::create(builder, ploc, v,
                        FlatSymbolRefAttr::get(builder.getContext(), state));
      };
      // Each moment is declared once, by the first rank that updates it.
      auto moment = [&](StringRef role) {
        std::string name = (p.param.getSymName() + ":" + role).str();
        if (!module.lookupSymbol(name))
          declareState(p, role, type);
        return name;
      };
      if (s.optimizer == "adamw") {
        std::string m = moment("exp_avg"), v = moment("exp_avg_sq");
        Value mOld = StateRefOp::create(builder, ploc, type,
                                        FlatSymbolRefAttr::get(ctx, m));
        Value vOld = StateRefOp::create(builder, ploc, type,
                                        FlatSymbolRefAttr::get(ctx, v));
        if (decay)
          w = e.mul(w, e.sub(e.c(1.0), e.mul(lr, e.c(s.weightDecay))));
        // exp_avg.lerp_(g, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(g, g,
        // 1 - beta2)
        Value mNew = e.add(mOld, e.mul(e.sub(g, mOld), e.c(1.0 - s.beta1)));
        Value vNew = e.add(e.mul(vOld, e.c(s.beta2)),
                           e.mul(e.mul(g, g), e.c(1.0 - s.beta2)));
        Value denom = e.add(e.div(e.sqrt(vNew), e.sqrt(bc2)), e.c(s.eps));
        Value stepSize = e.div(lr, bc1);
        Value wNew = e.sub(w, e.mul(e.div(mNew, denom), stepSize));
        StoreOp::create(builder, ploc, wNew, paramRef);
        store(mNew, m);
        store(vNew, v);
      } else {
        // SGD: d = g + wd * w; buf = momentum * buf + d; w -= lr * buf.
        Value d = g;
        if (decay)
          d = e.add(d, e.mul(w, e.c(s.weightDecay)));
        if (s.momentum != 0) {
          std::string buf = moment("momentum");
          Value bOld = StateRefOp::create(builder, ploc, type,
                                          FlatSymbolRefAttr::get(ctx, buf));
          d = e.add(e.mul(bOld, e.c(s.momentum)), d);
          store(d, buf);
        }
        StoreOp::create(builder, ploc, e.sub(w, e.mul(d, lr)), paramRef);
      }
      // The accumulators start the next step at zero.
      auto zeros = DenseElementsAttr::get(cast<ShapedType>(type),
                                          builder.getF32FloatAttr(0));
      for (StateOp acc : p.grads)
        store(ConstantOp::create(builder, ploc, zeros), acc.getSymName());
    }
    func::ReturnOp::create(builder, loc, ValueRange{lr, gradNorm});
  }
}
