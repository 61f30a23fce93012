//===- Passes.h - The passes of the Hotstage compiler -----------*- C++ -*-===//
//
// Declarations generated from Passes.td: `hotstage::createAutodiff()`, ...,
// and `hotstage::registerHotstagePasses()` for the tools.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_PASSES_PASSES_H
#define HOTSTAGE_COMPILER_PASSES_PASSES_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace hotstage {

#define GEN_PASS_DECL
#include "compiler/passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "compiler/passes/Passes.h.inc"

} // namespace hotstage

#endif // HOTSTAGE_COMPILER_PASSES_PASSES_H
