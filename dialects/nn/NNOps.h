//===- NNOps.h - Operations of the nn dialect -------------------*- C++ -*-===//
//
// The op classes generated from NNOps.td (`hotstage::nn::AddOp`, ...). Build
// them with `XOp::create(builder, loc, resultType, operands..., attrs...)`.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_NNOPS_H
#define HOTSTAGE_DIALECTS_NN_NNOPS_H

#include "dialects/nn/NNAttrs.h"
#include "dialects/nn/NNDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "dialects/nn/NNOps.h.inc"

namespace hotstage::nn {

/// Ops whose every result element depends only on the operand elements at
/// the same index (after broadcasting): what an nn.fused group may hold.
bool isFusibleElementwise(mlir::Operation *op);

/// The reader of `gemm`'s result (an nn.linear or nn.matmul that nn-fusion
/// marked with nn.epilogue) that the mark's first stage after the bias
/// names, when that stage is one a GEMM library's epilogue computes: a
/// tanh GELU (`gelu_tanh`), a residual add (`residual`) or a tanh GELU's
/// gradient (`dgelu_tanh`). Null otherwise. `stage` gets the stage's name.
mlir::Operation *epilogueReader(mlir::Operation *gemm,
                                llvm::StringRef *stage = nullptr);

} // namespace hotstage::nn

#endif // HOTSTAGE_DIALECTS_NN_NNOPS_H
