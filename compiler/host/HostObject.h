//===- HostObject.h - Host kernels to a native object file ------*- C++ -*-===//
//
// Lowers the kernel module to LLVM IR, optimizes it at -O3 for the host
// CPU, and writes an object file that also holds the kernel table and the
// plan text the runtime reads (`hotstage_kernels`, `hotstage_plan`).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_HOST_HOSTOBJECT_H
#define HOTSTAGE_COMPILER_HOST_HOSTOBJECT_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace hotstage::host {

/// Lowers `kernels` (func/scf/linalg/memref/arith/math) to the LLVM
/// dialect.
mlir::LogicalResult lowerKernelsToLLVM(mlir::ModuleOp kernels);

/// Translates the LLVM-dialect `kernels` to LLVM IR with the kernel table
/// and the plan, optimized for the host. With `emitObject` false, writes
/// the LLVM IR text instead of an object file.
///
/// With a `deviceImage` (the CUDA target's fatbin), the kernels run on the
/// GPU: `kernels` is empty, the table holds null entries (the runtime
/// looks the kernels up in the image by name) and the image is embedded
/// as `hotstage_device_image` / `hotstage_device_image_size`.
mlir::LogicalResult emitHostObject(mlir::ModuleOp kernels,
                                   const std::vector<std::string> &table,
                                   const std::string &planText,
                                   llvm::raw_pwrite_stream &os, bool emitObject,
                                   std::string &error,
                                   const std::string *deviceImage = nullptr);

} // namespace hotstage::host

#endif // HOTSTAGE_COMPILER_HOST_HOSTOBJECT_H
