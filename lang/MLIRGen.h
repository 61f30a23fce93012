//===- MLIRGen.h - From a checked Program to the nn dialect -----*- C++ -*-===//

#ifndef HOTSTAGE_LANG_MLIRGEN_H
#define HOTSTAGE_LANG_MLIRGEN_H

#include "lang/Program.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace llvm {
class SourceMgr;
}

namespace hotstage::lang {

/// Emits a module with one `nn.param` per parameter and `func.func
/// @forward` computing the loss. Every op carries the model-file location of
/// the expression it came from, inside a NameLoc of its instance path.
/// Returns null if the module fails to verify (a compiler bug, reported
/// through the context's diagnostics).
mlir::OwningOpRef<mlir::ModuleOp> mlirGen(mlir::MLIRContext &context,
                                          const Program &program,
                                          const llvm::SourceMgr &sourceMgr);

} // namespace hotstage::lang

#endif // HOTSTAGE_LANG_MLIRGEN_H
