//===- PipelineStep.h - One training step of a pipeline rank ----*- C++ -*-===//
//
// Runs a rank's plan for one optimizer step: its schedule's F, B and W in
// order, each on the buffers of its microbatch, with every receive of the
// step posted up front and every send non-blocking (so compute and
// transfers overlap); then the data-parallel gradient all-reduce, the
// exchange of tied accumulators, the gradient norms of every stage and the
// optimizer. With a device, the transfers go device to device where the
// ranks agree to (RankLinks.h): one link each way between two stages that
// talk, whose transfers pair up in the order posted (the ranks check at
// start that each receives in the order the other sends), one link among
// a stage's replicas for the gradient all-reduce and one among a
// replica's stages for the gradient norms; else through the host over
// MPI. Linked, every step after the first is queued whole as one program
// of the device (Device::replay: one CUDA graph), recorded once. No graph
// logic: what runs, on which buffers, and what goes where, all come from
// the plan (docs/plan.md).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_TRAIN_PIPELINESTEP_H
#define HOTSTAGE_RUNTIME_TRAIN_PIPELINESTEP_H

#include "runtime/comm/Comm.h"
#include "runtime/host/Executor.h"
#include "runtime/host/Plan.h"

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace hotstage::rt {

/// The tokens and targets of one microbatch (batch x seq each).
struct Microbatch {
  std::vector<int32_t> tokens, targets;
};

/// When an action ran, for the measured timeline (`--trace FILE.json`).
struct ActionTime {
  char phase;
  int chunk, microbatch;
  int64_t step;
  double start, end; // seconds since the run began
};

class PipelineStep {
public:
  PipelineStep(const Plan &plan, Executor &exec, Comm &comm);

  /// Checks that the plan has what a step needs; false with `error`.
  bool init(std::string &error);

  /// One optimizer step over `batches` (this replica's microbatches).
  /// `lossSum` is the sum of the microbatch losses of every replica (the
  /// same on every rank). Errors end the job through the communicator.
  void run(int64_t step, int64_t totalSteps,
           const std::vector<Microbatch> &batches, double &lossSum);

  float lr() const;
  float gradNorm() const;

  /// Measured action times of the steps so far, when recording.
  void record(bool on, double origin) {
    recording_ = on;
    origin_ = origin;
  }
  const std::vector<ActionTime> &times() const { return times_; }

private:
  int stageOf(int chunk) const { return plan_.pipeline.chunkRank[chunk]; }
  bool local(int chunk) const { return stageOf(chunk) == plan_.pipeline.rank; }
  int tag(int chunk, int microbatch, bool gradient, int index) const;
  /// A buffer to the device or back (a GPU build stages what it sends,
  /// receives and all-reduces through the host); no-ops on the host.
  void toDevice(const PlanBuffer &b, int slot);
  void toHost(const PlanBuffer &b, int slot);
  /// What one chunk of this rank hands the next (or previous) one, on
  /// the device where there is one.
  void copyLocal(const PlanBuffer &from, const PlanBuffer &to, int m);
  /// `queued`: a program's run (Executor::queueRun: no copies around it).
  void runFunction(const std::string &name, int microbatch,
                   const std::string &what, bool queued = false);
  /// Device links: checks that every pair of ranks sends and receives in
  /// one order and opens the links; leaves links_ null where they do not.
  bool openLinks(std::string &error);
  /// A call that failed (a link's, a program's copy) ends the job, naming
  /// the context.
  void linkCheck(bool ok, const std::string &error);
  /// Action `a`'s time, when recording.
  void recordTime(const PlanPipeline::Step &a, int64_t step,
                  std::chrono::steady_clock::time_point start);
  /// One step's schedule and transfers, through the host over MPI or
  /// device to device (with links_), up to the gradient norms.
  void runStaged(int64_t step, const std::vector<Microbatch> &batches,
                 float &localLoss);
  /// With `program`, queues the step for a device program instead (the
  /// losses downloaded into pinned_, nothing read back).
  void runLinked(int64_t step, const std::vector<Microbatch> &batches,
                 float &localLoss, bool program);
  /// A linked step after the first: all of runLinked, the gradient norms
  /// (summed over the stages' link) and the optimizer as one program of
  /// the device (Device::replay: one CUDA graph on a GPU, NCCL's transfers
  /// in it), recorded once and replayed; its batches and scalars go
  /// through pinned_.
  void runProgram(int64_t step, int64_t totalSteps,
                  const std::vector<Microbatch> &batches, float &localLoss);

  const Plan &plan_;
  Executor &exec_;
  Comm &comm_;
  int numChunks_ = 0;
  // Per chunk: its input buffers (tokens, targets), the boundary buffers
  // by index, and what its F and B send.
  struct ChunkBuffers {
    std::vector<const PlanBuffer *> tokens, targets;
    std::vector<const PlanBuffer *> actIn, gradIn, actOut, gradOut;
    std::string forward, backward, weight;
  };
  /// A microbatch's tokens and targets into chunk `cb`'s input buffers.
  void stageInputs(const ChunkBuffers &cb, const Microbatch &batch, int m);
  /// A program's copies of microbatch m's tokens and targets (in pinned_)
  /// into chunk `cb`'s input buffers.
  void queueInputs(const ChunkBuffers &cb, int m);
  std::vector<ChunkBuffers> chunks_;
  const PlanBuffer *loss_ = nullptr, *lr_ = nullptr, *gradNorm_ = nullptr;
  const PlanBuffer *stepBuf_ = nullptr, *totalBuf_ = nullptr;
  std::vector<const PlanBuffer *> norms_, grads_;
  std::string gradNorms_, optimizer_;
  /// Requests in flight during a step, tested between actions.
  std::vector<Comm::Request *> inFlight_;
  static void progress(void *self, size_t action);
  /// Data parallel: per chunk, the gradient accumulators whose last write
  /// is each action of its accumulating function (W, or B unsplit); while
  /// that function runs for the step's last microbatch, each bucket's
  /// all-reduce starts as soon as its action is done.
  std::vector<std::map<size_t, std::vector<const PlanBuffer *>>> finalAt_;
  const std::map<size_t, std::vector<const PlanBuffer *>> *bucketing_ = nullptr;
  std::vector<Comm::Request> allReduces_;
  std::set<const PlanBuffer *> reduced_;
  // Device links (null: through the host). Per peer's world rank: the
  // link this rank sends to it on and the one it receives from it on, and
  // what it receives from it, in order.
  DeviceLinks *links_ = nullptr;
  std::map<int, int> sendLink_, receiveLink_;
  struct LinkMessage {
    int tag;
    const PlanBuffer *buffer;
    int slot;
    int chunk; // the receiving chunk; -1 for a tied accumulator
    bool gradient;
  };
  std::map<int, std::vector<LinkMessage>> receiveOrder_;
  int replicaLink_ = -1;
  int stageLink_ = -1; // the replica's stages (more than one)
  /// Every ticket of the step's transfers, for the program to end after.
  std::vector<int> posted_;
  // A step run whole (where linked): the device's host memory its copies
  // read and write, per microbatch its tokens, targets and loss, then the
  // step, the total steps, the learning rate and the gradient norm, 64
  // bytes apart; null where steps do not run whole.
  int64_t stepsRun_ = 0;
  char *pinned_ = nullptr;
  size_t rowBytes_ = 0;
  int64_t rowBlock() const {
    return (static_cast<int64_t>(rowBytes_) + 63) / 64 * 64;
  }
  int64_t tokensAt(int64_t m) const { return 2 * m * rowBlock(); }
  int64_t targetsAt(int64_t m) const { return (2 * m + 1) * rowBlock(); }
  int64_t lossAt(int64_t m) const {
    return 2 * plan_.microbatches * rowBlock() + 64 * m;
  }
  int64_t scalarAt(int i) const { return lossAt(plan_.microbatches) + 64 * i; }
  bool recording_ = false;
  double origin_ = 0;
  std::vector<ActionTime> times_;
};

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_TRAIN_PIPELINESTEP_H
