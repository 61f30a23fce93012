//===- Partition.cpp - Cutting a model into pipeline chunks ---------------===//

#include "compiler/partition/Partition.h"
#include "dialects/nn/NNOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringExtras.h"

#include <algorithm>
#include <limits>

using namespace mlir;
using namespace hotstage;
using namespace hotstage::partition;
using namespace hotstage::nn;

/// The instance an op belongs to: the first component of its NameLoc, and
/// the layer index when one follows (`blocks.3.mlp.fc` -> `blocks.3`); ""
/// for the model's own ops.
static std::string atomKey(Operation *op, bool &isLayer) {
  isLayer = false;
  auto name = dyn_cast<NameLoc>(op->getLoc());
  if (!name)
    return "";
  SmallVector<StringRef> parts;
  name.getName().getValue().split(parts, '.');
  unsigned long long index;
  if (parts.size() > 1 && !parts[1].getAsInteger(10, index)) {
    isLayer = true;
    return (parts[0] + "." + parts[1]).str();
  }
  return parts[0].str();
}

int64_t ModelAnalysis::paramBytes(StringRef name) const {
  for (const ParamInfo &p : params)
    if (p.name == name)
      return p.bytes;
  return 0;
}

int ModelAnalysis::layers() const {
  return static_cast<int>(llvm::count_if(
      atoms, [](const Atom &a) { return a.role == AtomRole::Layer; }));
}

Atoms partition::findAtoms(func::FuncOp forward) {
  Atoms atoms;
  Block &body = forward.getBody().front();
  llvm::DenseSet<Value> dependent(forward.getArguments().begin(),
                                  forward.getArguments().end());
  std::vector<bool> layer;
  SmallVector<Operation *> order;
  for (Operation &op : body.without_terminator()) {
    order.push_back(&op);
    bool fromInput = llvm::any_of(
        op.getOperands(), [&](Value v) { return dependent.contains(v); });
    if (!fromInput)
      continue;
    dependent.insert(op.getResults().begin(), op.getResults().end());
    bool isLayer;
    std::string key = atomKey(&op, isLayer);
    std::string name = key.empty() ? "(model)" : key;
    if (atoms.names.empty() || atoms.names.back() != name) {
      atoms.names.push_back(name);
      atoms.ops.emplace_back();
      layer.push_back(isLayer);
    }
    atoms.atomOf[&op] = static_cast<int>(atoms.names.size()) - 1;
    atoms.ops.back().push_back(&op);
  }
  auto first = std::find(layer.begin(), layer.end(), true);
  auto last = std::find(layer.rbegin(), layer.rend(), true);
  for (size_t i = 0; i < layer.size(); ++i) {
    if (first == layer.end() || i < size_t(first - layer.begin()))
      atoms.roles.push_back(AtomRole::Before);
    else if (i > size_t(layer.rend() - last - 1))
      atoms.roles.push_back(AtomRole::After);
    else
      atoms.roles.push_back(AtomRole::Layer);
  }
  // Ops of parameters alone go with their first reader.
  for (Operation *op : llvm::reverse(order)) {
    if (atoms.atomOf.count(op))
      continue;
    int best = -1;
    for (Operation *user : op->getUsers()) {
      auto it = atoms.atomOf.find(user);
      if (it != atoms.atomOf.end() && it->second >= 0 &&
          (best < 0 || it->second < best))
        best = it->second;
    }
    atoms.atomOf[op] = best;
  }
  return atoms;
}

FailureOr<ModelAnalysis> partition::analyzeModel(ModuleOp module,
                                                 const MachineModel &machine) {
  auto forward = module.lookupSymbol<func::FuncOp>("forward");
  auto inputGrads = module.lookupSymbol<func::FuncOp>("backward_input");
  auto weightGrads = module.lookupSymbol<func::FuncOp>("backward_weight");
  if (!forward || !inputGrads || !weightGrads)
    return module.emitError("partition: expected @forward, @backward_input "
                            "and @backward_weight (nn-autodiff with "
                            "split-backward)");
  ModelAnalysis model;
  for (ParamOp p : module.getOps<ParamOp>())
    model.params.push_back(
        {p.getSymName().str(),
         static_cast<int64_t>(
             cast<RankedTensorType>(p.getType()).getNumElements() * 4)});

  Atoms found = findAtoms(forward);
  if (found.size() == 0)
    return module.emitError("partition: the loss does not depend on the "
                            "model's inputs");
  Block &body = forward.getBody().front();
  SmallVector<Operation *> order;
  for (Operation &op : body.without_terminator())
    order.push_back(&op);
  llvm::DenseMap<Operation *, int> atomOf;
  for (auto [op, atom] : found.atomOf)
    if (atom >= 0)
      atomOf[op] = atom;
  model.atoms.resize(found.size());
  for (size_t i = 0; i < found.size(); ++i) {
    model.atoms[i].name = found.names[i];
    model.atoms[i].role = found.roles[i];
    model.atoms[i].ops = found.ops[i];
  }
  llvm::DenseMap<Location, int> atomOfLoc;
  for (Operation *op : order)
    if (atomOf.count(op))
      atomOfLoc.try_emplace(op->getLoc(), atomOf[op]);

  for (Operation *op : order) {
    auto it = atomOf.find(op);
    if (it == atomOf.end())
      continue;
    Atom &a = model.atoms[it->second];
    a.forward += costOf(op);
    a.forwardSeconds += machine.seconds(costOf(op));
    if (auto ref = dyn_cast<ParamRefOp>(op))
      if (!llvm::is_contained(a.params, ref.getName()))
        a.params.push_back(ref.getName().str());
  }
  auto attribute = [&](func::FuncOp func, bool weight) {
    func.walk([&](Operation *op) {
      if (op->getParentOp() != func)
        return;
      auto it = atomOfLoc.find(op->getLoc());
      if (it == atomOfLoc.end())
        return;
      Atom &a = model.atoms[it->second];
      OpCost cost = costOf(op);
      (weight ? a.backwardWeight : a.backwardInput) += cost;
      (weight ? a.backwardWeightSeconds : a.backwardInputSeconds) +=
          machine.seconds(cost);
    });
  };
  attribute(inputGrads, /*weight=*/false);
  attribute(weightGrads, /*weight=*/true);

  // Memory the backward holds per microbatch.
  auto atomOfValue = [&](Value v) -> int {
    Operation *def = v.getDefiningOp();
    if (!def)
      return -1;
    auto it = atomOfLoc.find(def->getLoc());
    return it == atomOfLoc.end() ? -1 : it->second;
  };
  auto ret = cast<func::ReturnOp>(body.getTerminator());
  for (Value v : ret.getOperands().drop_front())
    if (int a = atomOfValue(v); a >= 0)
      model.atoms[a].savedBytes += bytesOf(v);
  for (BlockArgument arg : weightGrads.getArguments()) {
    auto source = weightGrads.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                           "nn.source");
    if (!source)
      continue;
    StringRef index = source.getValue();
    unsigned k;
    if (!index.consume_front("forward:") || index.getAsInteger(10, k) ||
        k >= ret.getNumOperands())
      continue;
    if (int a = atomOfValue(ret.getOperand(k)); a >= 0)
      model.atoms[a].weightSavedBytes += bytesOf(arg);
  }
  auto inputRet =
      cast<func::ReturnOp>(inputGrads.getBody().front().getTerminator());
  for (Value v : inputRet.getOperands())
    if (int a = atomOfValue(v); a >= 0)
      model.atoms[a].weightInputBytes += bytesOf(v);

  // Activations crossing each cut: defined at or before it, read after.
  for (auto [atom, ops] : llvm::enumerate(found.ops))
    for (Operation *op : ops)
      for (Value r : op->getResults()) {
        int last = static_cast<int>(atom);
        for (Operation *user : r.getUsers())
          if (atomOf.count(user))
            last = std::max(last, atomOf[user]);
        for (int cut = static_cast<int>(atom); cut < last; ++cut)
          model.atoms[cut].outBytes += bytesOf(r);
      }
  return model;
}

bool partition::balance(const ModelAnalysis &model, int numChunks,
                        Partition &partition, std::string &error) {
  int n = static_cast<int>(model.atoms.size());
  if (numChunks < 1 || numChunks > n) {
    error = "the model has " + std::to_string(n) + " units to cut between (" +
            std::to_string(model.layers()) +
            " layers and the ops before and after them), too few for " +
            std::to_string(numChunks) + " pipeline chunks; use at most " +
            std::to_string(n) + " stages x virtual stages";
    return false;
  }
  std::vector<double> prefix(n + 1, 0);
  for (int i = 0; i < n; ++i)
    prefix[i + 1] = prefix[i] + model.atoms[i].seconds();
  const double inf = std::numeric_limits<double>::infinity();
  // best[k][i]: the slowest chunk of the best cut of atoms [0, i) into k.
  std::vector<std::vector<double>> best(numChunks + 1,
                                        std::vector<double>(n + 1, inf));
  std::vector<std::vector<int>> from(numChunks + 1, std::vector<int>(n + 1));
  best[0][0] = 0;
  for (int k = 1; k <= numChunks; ++k)
    for (int i = k; i <= n; ++i)
      for (int j = k - 1; j < i; ++j) {
        double cost = std::max(best[k - 1][j], prefix[i] - prefix[j]);
        // Ties keep the earliest cut: deterministic, and it leaves the
        // later chunks (which hold the loss head) the lighter ones.
        if (cost < best[k][i] * (1 - 1e-12)) {
          best[k][i] = cost;
          from[k][i] = j;
        }
      }
  partition.chunks.assign(numChunks, {});
  for (int k = numChunks, i = n; k > 0; --k) {
    int j = from[k][i];
    partition.chunks[k - 1] = {j, i - 1};
    i = j;
  }
  partition.source = "balanced";
  return true;
}

bool partition::applyLayout(const ModelAnalysis &model, StringRef layout,
                            int numChunks, Partition &partition,
                            std::string &error) {
  SmallVector<StringRef> pieces;
  layout.split(pieces, '|');
  if (static_cast<int>(pieces.size()) != numChunks) {
    error = "layout '" + layout.str() + "' has " +
            std::to_string(pieces.size()) + " chunk(s); the build has " +
            std::to_string(numChunks) + " (stages x virtual stages)";
    return false;
  }
  int n = static_cast<int>(model.atoms.size());
  int next = 0; // the first atom not yet placed
  auto take = [&](AtomRole role) {
    while (next < n && model.atoms[next].role == role)
      ++next;
  };
  partition.chunks.clear();
  for (auto [index, piece] : llvm::enumerate(pieces)) {
    int first = next;
    StringRef rest = piece.trim();
    while (!rest.empty()) {
      char c = rest.front();
      rest = rest.drop_front().ltrim(" ,");
      if (c == 'E') {
        if (next != 0) {
          error = "layout '" + layout.str() +
                  "': E (the ops before the first layer) must come first";
          return false;
        }
        take(AtomRole::Before);
        continue;
      }
      if (c == 'L') {
        if (next < n && model.atoms[next].role != AtomRole::After) {
          error = "layout '" + layout.str() + "': L comes after all " +
                  std::to_string(model.layers()) + " layers";
          return false;
        }
        take(AtomRole::After);
        continue;
      }
      if (c != 't') {
        error = "layout '" + layout.str() + "': unexpected '" +
                std::string(1, c) + "'; chunks are made of E, t, t*N and L";
        return false;
      }
      unsigned long long count = 1;
      if (rest.consume_front("*")) {
        size_t digits = rest.find_first_not_of("0123456789");
        StringRef number = rest.take_front(digits);
        if (number.getAsInteger(10, count) || count == 0) {
          error = "layout '" + layout.str() + "': t* needs a positive count";
          return false;
        }
        rest = rest.drop_front(number.size()).ltrim(" ,");
      }
      for (unsigned long long i = 0; i < count; ++i) {
        if (next < n && model.atoms[next].role == AtomRole::Before) {
          error = "layout '" + layout.str() +
                  "' starts with a layer; begin the first chunk with E";
          return false;
        }
        if (next >= n || model.atoms[next].role != AtomRole::Layer) {
          error = "layout '" + layout.str() + "' places more than the " +
                  std::to_string(model.layers()) + " layers of the model";
          return false;
        }
        ++next;
      }
    }
    if (next == first) {
      error = "layout '" + layout.str() + "': chunk " + std::to_string(index) +
              " is empty";
      return false;
    }
    partition.chunks.push_back({first, next - 1});
  }
  if (next != n) {
    int placed = 0;
    for (int i = 0; i < next; ++i)
      placed += model.atoms[i].role == AtomRole::Layer;
    error = "layout '" + layout.str() + "' places " + std::to_string(placed) +
            " of the " + std::to_string(model.layers()) + " layers" +
            (placed == model.layers() ? "; end the last chunk with L" : "");
    return false;
  }
  partition.source = ("layout " + layout).str();
  return true;
}
