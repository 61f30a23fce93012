//===- Checkpoint.h - Training checkpoints and weight files -----*- C++ -*-===//
//
// A checkpoint is one safetensors file, DIR/step_NNNNNNNN.safetensors (or
// one per pipeline stage, DIR/step_NNNNNNNN.stage_S.safetensors),
// holding every parameter and optimizer state (not the gradients) under
// its plan name, with metadata: format, model, step, seed, data_epoch,
// data_position. Writes are atomic (SafeTensorsWriter); reads check the
// model, every tensor's dtype and shape, and the metadata before touching
// the arena, so a bad file leaves the run as it was.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_CHECKPOINT_CHECKPOINT_H
#define HOTSTAGE_RUNTIME_CHECKPOINT_CHECKPOINT_H

#include "runtime/host/Executor.h"
#include "runtime/host/Plan.h"

#include <cstdint>
#include <string>

namespace hotstage::rt {

/// Where a run stands: what a checkpoint restores besides the tensors.
struct CheckpointState {
  int64_t step = 0; // optimizer steps done
  uint64_t seed = 0;
  uint64_t dataEpoch = 0, dataPosition = 0;
};

/// "step_00000042.safetensors"; a pipeline stage's own part of the
/// checkpoint (its parameters and moments) is
/// "step_00000042.stage_1.safetensors".
std::string checkpointName(int64_t step, int stage = -1);

/// The newest checkpointName(N, stage) in `dir`; "" (with `error`) if there
/// is none or the folder cannot be read.
std::string newestCheckpoint(const std::string &dir, std::string &error,
                             int stage = -1);

/// Writes DIR/checkpointName(state.step, stage), creating DIR if needed.
bool saveCheckpoint(const Plan &plan, Executor &exec, const std::string &dir,
                    const CheckpointState &state, std::string &error,
                    int stage = -1);

/// Restores parameters and optimizer states from `path`. Nothing in the
/// arena changes unless the whole file fits the model.
bool loadCheckpoint(const Plan &plan, Executor &exec, const std::string &path,
                    CheckpointState &state, std::string &error);

/// Loads parameters only, from any safetensors file that holds all of them
/// under their plan names as F32 (another run's checkpoint, or weights
/// written by another program). Other tensors are ignored; their count
/// goes to `ignored`.
bool loadWeights(const Plan &plan, Executor &exec, const std::string &path,
                 int64_t &ignored, std::string &error);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_CHECKPOINT_CHECKPOINT_H
