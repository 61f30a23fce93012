//===- hotstage-opt.cpp - The optimizer driver of Hotstage ----------------===//
//
// mlir-opt with the nn dialect and the upstream dialects nn is lowered to.
// Only what we use is registered, to keep start-up and linking cheap.
//
//===----------------------------------------------------------------------===//

#include "compiler/passes/Passes.h"
#include "dialects/nn/NNDialect.h"
#include "dialects/pipe/PipeDialect.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  // Generic passes: canonicalize, cse, inline, symbol-dce, ...
  mlir::registerTransformsPasses();
  hotstage::registerHotstagePasses();

  mlir::DialectRegistry registry;
  registry.insert<hotstage::nn::NNDialect, hotstage::pipe::PipeDialect,
                  mlir::arith::ArithDialect, mlir::func::FuncDialect,
                  mlir::linalg::LinalgDialect, mlir::math::MathDialect,
                  mlir::memref::MemRefDialect, mlir::scf::SCFDialect,
                  mlir::tensor::TensorDialect>();

  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Hotstage optimizer driver\n", registry));
}
