//===- Pipelining.h - Partition and schedule of a pipelined build -*- C++ -*-=//
//
// What `hotstage build` and `hotstage plan` decide before the chunks are
// split: the train section's pipeline fields, the model's atoms and costs
// (from a differentiated copy of the module), the cut into chunks, the
// checked schedule, and the microbatches each chunk keeps in flight.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_DRIVER_PIPELINING_H
#define HOTSTAGE_COMPILER_DRIVER_PIPELINING_H

#include "compiler/partition/Partition.h"
#include "compiler/plan/Plan.h"
#include "compiler/schedule/Schedule.h"

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace hotstage {

struct TrainConfig {
  int64_t stages = 1, virtualStages = 1, microbatches = 1, dp = 1;
  int64_t batch = 0, seq = 0;
  std::string schedule = "1f1b", layout, optimizer = "adamw";
  double momentum = 0;

  int64_t chunks() const { return stages * virtualStages; }
};

TrainConfig readTrainConfig(mlir::ModuleOp module);

struct PipelineSetup {
  TrainConfig train;
  partition::MachineModel machine;
  partition::ModelAnalysis model;
  partition::Partition cut;
  schedule::Schedule schedule;
  /// Per chunk: the most microbatches whose F ran and whose last backward
  /// (W, or B when not split) did not.
  std::vector<int> chunkSlots;

  /// Rank `rank`'s part for the host lowering.
  plan::Pipeline rankPipeline(int rank) const;
};

/// The pipe dialect's picture of the step (`--emit=pipe`): per rank, its
/// actions in order with the transfers around them, then the step's end;
/// from the compiled plans (their sends and tied exchanges).
mlir::OwningOpRef<mlir::ModuleOp>
emitPipe(mlir::MLIRContext &context, const PipelineSetup &setup,
         const std::vector<plan::Plan> &plans);

/// Partitions and schedules `module` (the nn module before nn-autodiff).
/// Errors (a schedule that cannot run, a bad layout, too few units) are
/// emitted at the module and say what would work.
mlir::FailureOr<PipelineSetup> setUpPipeline(mlir::ModuleOp module);

} // namespace hotstage

#endif // HOTSTAGE_COMPILER_DRIVER_PIPELINING_H
