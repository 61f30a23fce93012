//===- CudaKernels.h - Kernels for NVIDIA GPUs: PTX and cubins --*- C++ -*-===//
//
// The CUDA target's kernels: the kernel module that host lowering builds
// (func/scf/linalg/memref on bare buffers, a [begin, end) range of the
// outermost parallel dimension) wrapped into a gpu.module, one gpu.func
// per kernel with one thread per parallel index, lowered through MLIR's
// gpu and nvvm dialects to PTX; then ptxas assembles a cubin per GPU
// architecture and fatbinary packs them with the PTX (the JIT fallback
// for newer GPUs) into the image the runtime loads.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_CUDA_CUDAKERNELS_H
#define HOTSTAGE_COMPILER_CUDA_CUDAKERNELS_H

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace hotstage::cuda {

/// A `--target` value: `cuda` or `cuda:sm_XY[a]`.
struct Target {
  std::string arch = "sm_90a"; // the GPU the cubin is for
  /// Every architecture with a cubin in the image: `arch`, and sm_80 (A100)
  /// as well when `arch` is newer.
  std::vector<std::string> cubinArchs() const;
};
/// Parses `--target`; false with `error` for an unknown one.
bool parseTarget(llvm::StringRef text, Target &target, std::string &error);

/// Where the CUDA toolkit's tools and libdevice are: $CUDA_HOME, else
/// $CUDA_PATH, else /usr/local/cuda, else the folder above ptxas on PATH.
std::string toolkitPath();

/// The suffix of a kernel's GPU entry point: kernel `hs_k3_add` launches
/// as `hs_k3_add_gpu(buffers..., parallel)`.
inline constexpr const char *kEntrySuffix = "_gpu";

/// Lowers `kernels` (as host lowering made them) to PTX for `target`,
/// with an entry point per name in `table`.
mlir::FailureOr<std::string>
lowerKernelsToPTX(mlir::ModuleOp kernels, const std::vector<std::string> &table,
                  const Target &target, std::string &error);

/// Assembles `ptx` with ptxas for every architecture of `target` and packs
/// the cubins and the PTX into one fatbin (the bytes cuModuleLoadData
/// takes). Every kernel must pass ptxas: its errors are returned.
mlir::FailureOr<std::string>
buildImage(const std::string &ptx, const Target &target, std::string &error);

} // namespace hotstage::cuda

#endif // HOTSTAGE_COMPILER_CUDA_CUDAKERNELS_H
