//===- PlanCommand.h - hotstage plan: the pipeline before it runs -*- C++ -*-=//
//
// `hotstage plan FILE.hot`: partitions the differentiated model into the
// build's pipeline chunks, schedules them, checks the schedule, and prints
// the stage table, each rank's peak memory, the predicted step time and
// bubble next to the textbook value, and a text timeline; `--trace`
// writes the timeline as a Chrome trace.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_DRIVER_PLANCOMMAND_H
#define HOTSTAGE_COMPILER_DRIVER_PLANCOMMAND_H

#include "compiler/plan/Plan.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <string>

namespace hotstage {

struct PipelineSetup;

struct PlanCommandOptions {
  std::string traceFile;    // Chrome trace JSON, "" for none
  int64_t memoryBudget = 0; // bytes per rank, 0 for none
  int timelineWidth = 100;
};

/// Prints the plan of `module`: its partition and schedule (`setup`) and
/// the compiled plan of each rank (`plans`, for their exact arenas).
/// Returns the exit status: 1 with an error printed for a rank over the
/// memory budget.
int runPlanCommand(mlir::ModuleOp module, const PipelineSetup &setup,
                   const std::vector<plan::Plan> &plans,
                   const PlanCommandOptions &options, llvm::raw_ostream &os);

/// Formats 124439808 as 124,439,808.
std::string withCommas(int64_t n);

/// Parses a byte count with an optional K, M, G (powers of 1024, with or
/// without "iB") suffix; false for anything else.
bool parseByteCount(llvm::StringRef text, int64_t &bytes);

} // namespace hotstage

#endif // HOTSTAGE_COMPILER_DRIVER_PLANCOMMAND_H
