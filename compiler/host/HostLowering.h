//===- HostLowering.h - Training module to host kernels and a plan -*- C++
//-*-===//
//
// Lowers a module after nn-autodiff and nn-optimizer to the host target:
// one kernel function per op (scf loops or linalg on memrefs of static
// shape, bare-pointer calling convention, a parallel [begin, end) range as
// the last two arguments), GEMMs as BLAS actions, and the plan that says
// in which order to run them on which buffers of the arena.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_HOST_HOSTLOWERING_H
#define HOTSTAGE_COMPILER_HOST_HOSTLOWERING_H

#include "compiler/plan/Plan.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/ADT/StringMap.h"

#include <set>

namespace hotstage::host {

struct HostProgram {
  /// The kernels, in func/scf/linalg/memref/arith/math.
  mlir::OwningOpRef<mlir::ModuleOp> kernels;
  /// One plan, or one per pipeline rank; all share the kernel table.
  std::vector<plan::Plan> plans;
};

/// How kernels split their work; the plan and the kernels' results are the
/// same either way.
struct KernelOptions {
  /// Elementwise kernels (and nn.fused groups) run over every element
  /// rather than over the rows of their first dimension, and reductions
  /// that keep some dimensions over every kept element: the parallel range
  /// of a GPU grid, where one thread per row leaves most of it idle. Each
  /// element is computed exactly as before.
  bool parallelOverElements = false;
  /// Over elements, a row reduction (the norms, softmax, cross entropy)
  /// runs a row on 32 GPU threads that combine their partials with warp
  /// shuffles; without, on the host, an index runs the row's 32 lanes in
  /// turn and combines them in the same order (the GPU's results checked
  /// there bit for bit).
  bool warpShuffles = false;
  /// What GEMMs compute in their plan epilogue (cuBLASLt's): nothing;
  /// their bias and the residual add nn-fusion's epilogue mark names
  /// (nn::epilogueReader); or also a tanh GELU after them (its input kept)
  /// and a tanh GELU's gradient.
  enum class Epilogues { None, BiasResidual, Gelu };
  Epilogues gemmEpilogues = Epilogues::None;
  /// Attention and its gradient as one library call each (the plan's
  /// `attention` actions: cuDNN's fused flash attention on a GPU) on bf16
  /// copies of their inputs, rather than kernels: always, never, or when
  /// the model trains in bf16.
  enum class Attention { Kernels, Library, LibraryIfBf16 };
  Attention attention = Attention::Kernels;
  /// Fused attention reads q, k and v from the QKV projection's rows and
  /// writes dQ, dK and dV into one buffer where it can (`qkv`, `dqkv`),
  /// rather than through split and concatenation kernels.
  bool packedAttention = true;
  /// Rows that GEMMs cannot align to 16 bytes are padded in their buffers
  /// (plan::Buffer::pitch: GPT-2's logits and their gradient).
  bool padRows = true;
  /// Over elements, cross entropy writes its loss gradient over the logits
  /// as it computes the losses (llm.c's fused classifier) where only that
  /// gradient reads them after: one pass over the logits fewer.
  bool lossGradientInForward = true;
  /// precision = bf16: the residual stream and its gradient (the results
  /// of adds that only kernels, GEMMs and further such adds read) stored
  /// in bf16, as llm.c keeps them; PyTorch's autocast keeps them f32.
  bool bf16Residual = false;
};

/// Builds the kernels and the plan of `module`. Errors are emitted at the
/// op that cannot be lowered.
mlir::FailureOr<HostProgram> lowerToHost(mlir::ModuleOp module,
                                         KernelOptions options = {});

/// Which ranks read each parameter and state of a pipelined module, and
/// which rank accumulates each state (stores it from a chunk's function).
struct PipelineUse {
  llvm::StringMap<std::set<int>> readers;
  llvm::StringMap<int> storedBy;
};
PipelineUse findPipelineUse(mlir::ModuleOp module,
                            llvm::ArrayRef<int> chunkRank);

/// The same for a module split into pipeline chunks (nn-split-chunks): one
/// plan per rank, each holding its chunks' functions, its optimizer step,
/// the schedule and what it sends (`ranks[r]` has rank r's schedule).
mlir::FailureOr<HostProgram>
lowerPipelineToHost(mlir::ModuleOp module, llvm::ArrayRef<plan::Pipeline> ranks,
                    KernelOptions options = {});

} // namespace hotstage::host

#endif // HOTSTAGE_COMPILER_HOST_HOSTLOWERING_H
