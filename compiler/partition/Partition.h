//===- Partition.h - Cutting a model into pipeline chunks -------*- C++ -*-===//
//
// A model's forward is a sequence of *atoms*: the ops of one block instance
// of the model (`embed`, each layer `blocks.3` of a `repeat` stack, `ln_f`)
// or a run of the model's own ops (the embedding sum, the loss head). Atoms
// are the units a pipeline cuts between; ops computed from parameters alone
// (`transpose(wte)`, `wpe[0:T]`) belong to no atom, since every stage that
// reads them recomputes them from its own copy of the parameter.
//
// `analyzeModel` measures each atom on the differentiated module (forward,
// B and W apart): the FLOPs and bytes of its forward, input-gradient and
// weight-gradient ops (every op autodiff builds carries the location of
// the forward op it differentiates), the activations the backward keeps,
// its parameters, and the activations that cross a cut after it.
// `balance` cuts the atoms into C contiguous chunks minimising the slowest;
// `applyLayout` takes a cut from the user instead.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_PARTITION_PARTITION_H
#define HOTSTAGE_COMPILER_PARTITION_PARTITION_H

#include "compiler/partition/CostModel.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringRef.h"

#include <string>
#include <vector>

namespace hotstage::partition {

/// Where an atom sits relative to the model's layers, for layouts: `E`
/// (before the first layer), `t` (a layer of a `repeat` stack), `L` (after
/// the last layer).
enum class AtomRole { Before, Layer, After };

struct Atom {
  std::string name;
  AtomRole role = AtomRole::Before;
  std::vector<mlir::Operation *> ops; // forward ops, in program order
  // Per microbatch.
  OpCost forward, backwardInput, backwardWeight;
  double forwardSeconds = 0, backwardInputSeconds = 0,
         backwardWeightSeconds = 0;
  int64_t savedBytes = 0;          // forward values the backward reads
  int64_t weightSavedBytes = 0;    // of those, the ones W reads (held to W)
  int64_t weightInputBytes = 0;    // values B computes for W
  int64_t outBytes = 0;            // activations crossing a cut after the atom
  std::vector<std::string> params; // read by its ops, in first-use order

  double seconds() const {
    return forwardSeconds + backwardInputSeconds + backwardWeightSeconds;
  }
};

/// The atoms of a forward function alone: what autodiff and the chunk
/// split need before any cost is known.
struct Atoms {
  std::vector<std::string> names;
  std::vector<AtomRole> roles;
  /// Every op of the function but the terminator: input-dependent ops by
  /// their run, ops of parameters alone by their first reader's atom (-1
  /// when nothing input-dependent reads them).
  llvm::DenseMap<mlir::Operation *, int> atomOf;
  /// Each atom's input-dependent ops, in program order.
  std::vector<std::vector<mlir::Operation *>> ops;
  size_t size() const { return names.size(); }
};
Atoms findAtoms(mlir::func::FuncOp forward);

struct ParamInfo {
  std::string name;
  int64_t bytes = 0;
};

struct ModelAnalysis {
  std::vector<Atom> atoms;
  std::vector<ParamInfo> params; // declaration order
  int64_t paramBytes(llvm::StringRef name) const;
  int layers() const;
};

/// Measures the atoms of `module` after nn-autodiff with `split-backward`.
/// Errors are emitted at the module.
mlir::FailureOr<ModelAnalysis> analyzeModel(mlir::ModuleOp module,
                                            const MachineModel &machine);

/// Chunk k holds atoms [first, last].
struct Chunk {
  int first = 0, last = 0;
};

struct Partition {
  std::vector<Chunk> chunks;
  std::string source; // "balanced" or "layout ..."
};

/// The contiguous cut of the atoms into `numChunks` non-empty chunks whose
/// slowest chunk (forward plus backward seconds) is the fastest possible.
/// Fails with `error` (saying what would work) when there are fewer atoms
/// than chunks.
bool balance(const ModelAnalysis &model, int numChunks, Partition &partition,
             std::string &error);

/// A manual cut in the spirit of Megatron-LM's pipeline layouts: chunks
/// separated by `|`, each a list of `E` (everything before the first
/// layer), `t` or `t*N` (layers) and `L` (everything after the last
/// layer), optionally separated by commas: `Et*3|t*4|t*4|t*3L`.
bool applyLayout(const ModelAnalysis &model, llvm::StringRef layout,
                 int numChunks, Partition &partition, std::string &error);

} // namespace hotstage::partition

#endif // HOTSTAGE_COMPILER_PARTITION_PARTITION_H
