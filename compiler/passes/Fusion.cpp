//===- Fusion.cpp - Elementwise groups and GEMM epilogues -----------------===//
//
// Greedy, in program order: an elementwise op joins the group of one of its
// operands when the shapes agree and moving the group's results down to it
// breaks no use. Groups of two or more ops become nn.fused.
//
//===----------------------------------------------------------------------===//

#include "compiler/passes/Passes.h"
#include "dialects/nn/NNOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"

namespace hotstage {
#define GEN_PASS_DEF_FUSION
#include "compiler/passes/Passes.h.inc"
} // namespace hotstage

using namespace mlir;
using namespace hotstage;
using namespace hotstage::nn;

namespace {

struct Group {
  SmallVector<Operation *> ops; // in program order
  SmallVector<int64_t> shape;
  // Closed once an op outside reads a member: the group's place (its last
  // member) must then stay before that reader.
  bool closed = false;
};

RankedTensorType resultType(Operation *op) {
  return dyn_cast<RankedTensorType>(op->getResult(0).getType());
}

bool isCandidate(Operation *op) {
  if (!isFusibleElementwise(op) || op->getNumResults() != 1)
    return false;
  auto type = resultType(op);
  return type && isa<FloatType>(type.getElementType());
}

/// The epilogue of a GEMM: its bias, then the activations and residual adds
/// its result flows through, one reader at a time.
SmallVector<StringRef> epilogueOf(Operation *gemm) {
  SmallVector<StringRef> stages;
  if (auto linear = dyn_cast<LinearOp>(gemm); linear && linear.getBias())
    stages.push_back("bias");
  Value v = gemm->getResult(0);
  // One reader besides the function's return: a value also saved for the
  // backward is an epilogue with an auxiliary output (cuBLASLt's *_AUX).
  auto nextReader = [](Value value) -> Operation * {
    Operation *reader = nullptr;
    for (Operation *user : value.getUsers()) {
      if (isa<func::ReturnOp>(user))
        continue;
      if (reader && reader != user)
        return nullptr;
      reader = user;
    }
    return reader;
  };
  while (Operation *user = nextReader(v)) {
    if (auto gelu = dyn_cast<GeluOp>(user))
      stages.push_back(gelu.getApproximate() == "tanh" ? "gelu_tanh" : "gelu");
    else if (auto grad = dyn_cast<ActivationGradOp>(user);
             grad && grad.getKind() == "gelu_tanh" && grad.getGrad() == v &&
             grad.getInput() != v)
      // The backward of a tanh GELU: dy * gelu'(x), x saved by the forward.
      stages.push_back("dgelu_tanh");
    else if (isa<ReluOp>(user))
      stages.push_back("relu");
    else if (isa<SiluOp>(user))
      stages.push_back("silu");
    else if (auto add = dyn_cast<AddOp>(user)) {
      Value other = add.getLhs() == v ? add.getRhs() : add.getLhs();
      auto vt = cast<RankedTensorType>(v.getType());
      auto ot = cast<RankedTensorType>(other.getType());
      if (ot.getShape() == vt.getShape())
        stages.push_back("residual");
      else if (ot.getRank() == 1 && stages.empty())
        stages.push_back("bias");
      else
        break;
    } else {
      break;
    }
    v = user->getResult(0);
  }
  return stages;
}

struct FusionPass : hotstage::impl::FusionBase<FusionPass> {
  using FusionBase::FusionBase;
  void runOnOperation() override;
};

} // namespace

void FusionPass::runOnOperation() {
  func::FuncOp func = getOperation();
  MLIRContext *ctx = &getContext();
  if (func.getBody().empty())
    return;
  Block &block = func.getBody().front();

  func.walk([&](Operation *op) {
    if (!isa<LinearOp, MatmulOp>(op))
      return;
    SmallVector<StringRef> stages = epilogueOf(op);
    if (stages.empty())
      return;
    SmallVector<Attribute> names;
    for (StringRef s : stages)
      names.push_back(StringAttr::get(ctx, s));
    op->setAttr("nn.epilogue", ArrayAttr::get(ctx, names));
  });

  // A target whose GEMMs take epilogues computes these ops in the GEMM:
  // they stay out of the groups.
  llvm::SmallPtrSet<Operation *, 16> inEpilogue;
  func.walk([&](Operation *op) {
    StringRef stage;
    if (isa<LinearOp, MatmulOp>(op))
      if (Operation *reader = epilogueReader(op, &stage);
          reader && llvm::is_contained(epilogues, stage.str()))
        inEpilogue.insert(reader);
  });

  std::vector<Group> groups;
  DenseMap<Operation *, int> groupOf;
  // Whether `op` may join the union of `ids`: no op outside the union reads
  // a member before `op` does.
  auto canJoin = [&](ArrayRef<int> ids, Operation *op) {
    for (int id : ids) {
      if (groups[id].closed)
        return false;
      for (Operation *member : groups[id].ops)
        for (Operation *user : member->getResult(0).getUsers()) {
          auto it = groupOf.find(user);
          bool inUnion =
              it != groupOf.end() && llvm::is_contained(ids, it->second);
          if (!inUnion && user != op && user->isBeforeInBlock(op))
            return false;
        }
    }
    return true;
  };

  for (Operation &opRef : block) {
    Operation *op = &opRef;
    int joined = -1;
    if (isCandidate(op) && !inEpilogue.contains(op)) {
      ArrayRef<int64_t> shape = resultType(op).getShape();
      SmallVector<int> candidates;
      for (Value operand : op->getOperands()) {
        Operation *def = operand.getDefiningOp();
        auto it = def ? groupOf.find(def) : groupOf.end();
        if (it != groupOf.end() && !groups[it->second].ops.empty() &&
            ArrayRef<int64_t>(groups[it->second].shape) == shape &&
            !llvm::is_contained(candidates, it->second))
          candidates.push_back(it->second);
      }
      if (!candidates.empty() && canJoin(candidates, op)) {
        // All of them: merge into the first, keeping program order.
        joined = candidates.front();
        Group &into = groups[joined];
        for (int other : ArrayRef<int>(candidates).drop_front()) {
          for (Operation *member : groups[other].ops) {
            into.ops.push_back(member);
            groupOf[member] = joined;
          }
          groups[other].ops.clear();
        }
        llvm::sort(into.ops, [](Operation *a, Operation *b) {
          return a->isBeforeInBlock(b);
        });
      } else {
        // Else the latest one it can join alone.
        for (int id : candidates)
          if (canJoin({id}, op) &&
              (joined < 0 || groups[joined].ops.back()->isBeforeInBlock(
                                 groups[id].ops.back())))
            joined = id;
      }
      if (joined < 0) {
        groups.push_back({{}, llvm::to_vector(shape), false});
        joined = static_cast<int>(groups.size()) - 1;
      }
      groups[joined].ops.push_back(op);
      groupOf[op] = joined;
    }
    // Whatever reads a member closes the member's group, unless it joined.
    for (Value operand : op->getOperands()) {
      Operation *def = operand.getDefiningOp();
      auto it = def ? groupOf.find(def) : groupOf.end();
      if (it != groupOf.end() && it->second != joined)
        groups[it->second].closed = true;
    }
  }

  // Inputs and results of a group made of `ops`.
  auto boundary = [](ArrayRef<Operation *> ops, llvm::SetVector<Value> &inputs,
                     SmallVector<Value> &outputs) {
    llvm::SmallPtrSet<Operation *, 16> members(ops.begin(), ops.end());
    inputs.clear();
    outputs.clear();
    for (Operation *op : ops) {
      for (Value operand : op->getOperands())
        if (!members.contains(operand.getDefiningOp()))
          inputs.insert(operand);
      Value r = op->getResult(0);
      if (llvm::any_of(r.getUsers(), [&](Operation *user) {
            return !members.contains(user);
          }))
        outputs.push_back(r);
    }
  };
  // Consecutive pieces of a group are groups too: each piece's members
  // come after the pieces it reads, and outside readers come after all.
  std::vector<SmallVector<Operation *>> pieces;
  for (Group &g : groups) {
    SmallVector<Operation *> piece;
    for (Operation *op : g.ops) {
      piece.push_back(op);
      llvm::SetVector<Value> inputs;
      SmallVector<Value> outputs;
      boundary(piece, inputs, outputs);
      // Splat constants become immediates in the kernel: they are free.
      size_t arguments = outputs.size();
      for (Value in : inputs) {
        auto constant = in.getDefiningOp<ConstantOp>();
        arguments += !(constant && constant.getValue().isSplat());
      }
      if (piece.size() > 1 && arguments > maxArguments) {
        piece.pop_back();
        pieces.push_back(piece);
        piece = {op};
      }
    }
    pieces.push_back(piece);
  }

  for (SmallVector<Operation *> &ops : pieces) {
    if (ops.size() < 2)
      continue;
    llvm::SmallPtrSet<Operation *, 16> members(ops.begin(), ops.end());
    llvm::SetVector<Value> inputs;
    SmallVector<Value> outputs;
    boundary(ops, inputs, outputs);
    if (outputs.empty())
      continue; // dead code; canonicalization removes it
    auto shape = resultType(ops.back()).getShape();

    Operation *last = ops.back();
    OpBuilder b(last);
    SmallVector<Type> resultTypes;
    for (Value v : outputs)
      resultTypes.push_back(v.getType());
    auto fused = FusedOp::create(b, last->getLoc(), resultTypes,
                                 inputs.getArrayRef(), shape);
    Block *body = new Block();
    fused.getBody().push_back(body);
    IRMapping map;
    for (Value in : inputs)
      map.map(in, body->addArgument(in.getType(), in.getLoc()));
    OpBuilder inner = OpBuilder::atBlockEnd(body);
    for (Operation *op : ops)
      inner.clone(*op, map);
    SmallVector<Value> yielded;
    for (Value v : outputs)
      yielded.push_back(map.lookup(v));
    YieldOp::create(inner, last->getLoc(), yielded);
    for (auto [v, r] : llvm::zip(outputs, fused.getResults()))
      v.replaceUsesWithIf(
          r, [&](OpOperand &use) { return !members.contains(use.getOwner()); });
    for (Operation *op : llvm::reverse(ops))
      op->erase();
  }
}
