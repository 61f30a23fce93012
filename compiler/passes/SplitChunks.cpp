//===- SplitChunks.cpp - @forward into pipeline chunk functions -----------===//
//
// Cuts @forward at the atom boundaries of `nn.chunks` (the first atom of
// every chunk, compiler/partition) into one function per chunk:
//
//   @"cK.forward"(inputs..., activations in...) -> (activations out...)
//
// and for the last chunk `-> loss`. Every chunk takes all of the model's
// inputs (tokens, targets; each rank loads the same batches) and, after
// them, the activations that earlier chunks define and this or a later
// chunk reads, in definition order (`pipe.boundary = i`); it returns the
// next chunk's activations, passing on what it does not read. Ops of
// parameters alone are cloned into every chunk that reads them, so a
// parameter read in two chunks (the tied token embedding) is read from
// each chunk's own copy. Parameters read in more than one atom are marked
// `nn.tied_atoms` for nn-autodiff, which keeps their gradients per atom
// exactly as it does for the whole model.
//
//===----------------------------------------------------------------------===//

#include "compiler/partition/Partition.h"
#include "compiler/passes/Passes.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"

#include <set>

namespace hotstage {
#define GEN_PASS_DEF_SPLITCHUNKS
#include "compiler/passes/Passes.h.inc"
} // namespace hotstage

using namespace mlir;
using namespace hotstage;
using namespace hotstage::nn;

namespace {
struct SplitChunksPass : hotstage::impl::SplitChunksBase<SplitChunksPass> {
  void runOnOperation() override;
};
} // namespace

void SplitChunksPass::runOnOperation() {
  ModuleOp module = getOperation();
  auto starts = module->getAttrOfType<DenseI64ArrayAttr>("nn.chunks");
  if (!starts)
    return;
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  if (!forward || !forward.getBody().hasOneBlock()) {
    module.emitError("split-chunks: the module has no one-block @forward");
    return signalPassFailure();
  }
  partition::Atoms atoms = partition::findAtoms(forward);
  ArrayRef<int64_t> first = starts.asArrayRef();
  int numChunks = static_cast<int>(first.size());
  if (numChunks == 0 || first[0] != 0 ||
      first.back() >= static_cast<int64_t>(atoms.size())) {
    module.emitError("split-chunks: nn.chunks must start at atom 0 and rise "
                     "strictly below the ")
        << atoms.size() << " atoms of @forward";
    return signalPassFailure();
  }
  for (int k = 1; k < numChunks; ++k)
    if (first[k] <= first[k - 1]) {
      module.emitError("split-chunks: chunk ") << k << " is empty";
      return signalPassFailure();
    }
  auto chunkOfAtom = [&](int atom) {
    return static_cast<int>(llvm::upper_bound(first, atom) - first.begin()) - 1;
  };

  Block &body = forward.getBody().front();
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  // Chunk of each input-dependent op; the last chunk that reads each
  // input-dependent value.
  llvm::DenseMap<Operation *, int> chunkOf;
  llvm::DenseMap<Value, int> lastReader;
  for (auto [atom, ops] : llvm::enumerate(atoms.ops))
    for (Operation *op : ops)
      chunkOf[op] = chunkOfAtom(static_cast<int>(atom));
  SmallVector<Operation *> order;
  for (Operation &op : body.without_terminator())
    order.push_back(&op);
  for (Operation *op : order) {
    auto it = chunkOf.find(op);
    if (it == chunkOf.end())
      continue;
    for (Value v : op->getOperands())
      if (v.getDefiningOp() && chunkOf.count(v.getDefiningOp()))
        lastReader[v] = std::max(lastReader.lookup(v), it->second);
  }
  Value loss = ret.getOperand(0);
  if (!loss.getDefiningOp() ||
      chunkOf.lookup(loss.getDefiningOp()) != numChunks - 1) {
    module.emitError("split-chunks: the loss is not computed in the last "
                     "chunk");
    return signalPassFailure();
  }

  // What enters chunk k: defined before it, read in it or after.
  std::vector<SmallVector<Value>> entering(numChunks + 1);
  for (Operation *op : order) {
    auto it = chunkOf.find(op);
    if (it == chunkOf.end())
      continue;
    for (Value v : op->getResults())
      for (int k = it->second + 1; k <= lastReader.lookup(v); ++k)
        entering[k].push_back(v);
  }

  // Parameters read in more than one atom (nn-autodiff keeps their
  // gradients per atom).
  llvm::StringMap<std::set<int>> atomsOf;
  for (ParamRefOp ref : forward.getOps<ParamRefOp>())
    for (Operation *user : ref->getUsers())
      if (int atom = atoms.atomOf.lookup(user); atom >= 0)
        atomsOf[ref.getName()].insert(atom);
  for (ParamOp param : module.getOps<ParamOp>()) {
    auto it = atomsOf.find(param.getSymName());
    if (it == atomsOf.end() || it->second.size() < 2)
      continue;
    SmallVector<int64_t> list(it->second.begin(), it->second.end());
    param->setAttr("nn.tied_atoms",
                   DenseI64ArrayAttr::get(&getContext(), list));
  }

  OpBuilder builder(forward);
  for (int k = 0; k < numChunks; ++k) {
    SmallVector<Type> argTypes(forward.getArgumentTypes());
    for (Value v : entering[k])
      argTypes.push_back(v.getType());
    SmallVector<Value> outputs;
    if (k == numChunks - 1)
      outputs.push_back(loss);
    else
      outputs.assign(entering[k + 1].begin(), entering[k + 1].end());
    auto func = func::FuncOp::create(
        builder, forward.getLoc(), ("c" + Twine(k) + ".forward").str(),
        builder.getFunctionType(argTypes, ValueRange(outputs).getTypes()));
    func->setAttr("nn.chunk", builder.getI64IntegerAttr(k));
    func->setAttr("nn.atom_offset", builder.getI64IntegerAttr(first[k]));
    Block *entry = func.addEntryBlock();
    IRMapping mapping;
    unsigned numInputs = forward.getNumArguments();
    for (unsigned i = 0; i < numInputs; ++i) {
      mapping.map(forward.getArgument(i), entry->getArgument(i));
      if (auto name = forward.getArgAttr(i, "nn.name"))
        func.setArgAttr(i, "nn.name", name);
    }
    for (auto [i, v] : llvm::enumerate(entering[k])) {
      mapping.map(v, entry->getArgument(numInputs + i));
      func.setArgAttr(numInputs + i, "pipe.boundary",
                      builder.getI64IntegerAttr(i));
    }
    OpBuilder inner = OpBuilder::atBlockEnd(entry);
    // Ops of parameters alone, cloned (with what they read) on first use.
    std::function<void(Value)> materialize = [&](Value v) {
      Operation *def = v.getDefiningOp();
      if (!def || mapping.contains(v) || chunkOf.count(def))
        return;
      for (Value operand : def->getOperands())
        materialize(operand);
      inner.clone(*def, mapping);
    };
    for (Operation *op : order) {
      auto it = chunkOf.find(op);
      if (it == chunkOf.end() || it->second != k)
        continue;
      for (Value operand : op->getOperands())
        materialize(operand);
      inner.clone(*op, mapping);
    }
    SmallVector<Value> mapped;
    for (Value v : outputs)
      mapped.push_back(mapping.lookupOrDefault(v));
    func::ReturnOp::create(inner, ret.getLoc(), mapped);
  }
  forward.erase();
}
