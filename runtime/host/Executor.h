//===- Executor.h - Runs the plan's functions on the host -------*- C++ -*-===//
//
// Owns the arena (allocated once, never again) and runs a function's
// actions in order: kernel calls split over the thread pool, GEMMs through
// oneDNN (the same threads: see ThreadPool.h).
//
// With a device (a GPU build, Device.h) the actions run there, on the
// device's arena; `buffer()` is then the host copy, which holds the
// persistent buffers only (temporaries live on the device alone). Each run
// uploads the inputs and scalars and downloads the scalars (the loss, the
// learning rate, the gradient norm); parameters and optimizer state move only
// on `toDevice()` (after initialising or loading them) and `toHost()` (before
// saving them), or around every run with `syncEveryRun`.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_HOST_EXECUTOR_H
#define HOTSTAGE_RUNTIME_HOST_EXECUTOR_H

#include "runtime/host/ActionProfile.h"
#include "runtime/host/Device.h"
#include "runtime/host/Plan.h"
#include "runtime/support/ThreadPool.h"

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace hotstage::rt {

class Executor {
public:
  Executor(const Plan &plan, const KernelFn *kernels, int threads,
           std::unique_ptr<Device> device = nullptr);
  ~Executor();

  /// The device the actions run on, or nullptr for this CPU.
  Device *device() { return device_.get(); }
  /// The host copy's persistent buffers (parameters, state, inputs,
  /// scalars) to the device, or back; no-ops without a device. toDevice
  /// then makes the bf16 copies of the weights from the parameters
  /// (castWeights), here too.
  bool toDevice(std::string &error);
  bool toHost(std::string &error);
  /// Runs the plan's @cast_weights, if it has one: the bf16 copies of the
  /// weights that GEMMs read, which the optimizer step makes after each
  /// update, made from the parameters as they are.
  bool castWeights(std::string &error);
  /// Buffer `b` (its copy for slot `slot`) to the device, or back; no-ops
  /// without a device. Multi-rank runs move what they send, receive and
  /// all-reduce through the host this way.
  bool upload(const PlanBuffer &b, int slot, std::string &error);
  bool download(const PlanBuffer &b, int slot, std::string &error);
  /// A copy of temporary `b` as the last run left it, into `out` (b.bytes):
  /// a trace's look at an intermediate (on a device it lives there only).
  bool readTemporary(const PlanBuffer &b, void *out, std::string &error);
  /// Buffer `from`'s copy for slot `fromSlot` into `to`'s for `toSlot`
  /// (the same size): on the device where there is one, else here.
  bool copy(const PlanBuffer &from, int fromSlot, const PlanBuffer &to,
            int toSlot, std::string &error);
  /// Moves every persistent buffer to the device before each run and back
  /// after it (gradcheck and --trace, which read and write them between
  /// runs; small models only).
  void syncEveryRun(bool on) { syncEveryRun_ = on; }

  char *arena() { return arena_; }
  /// The start of buffer `b` in the arena (of its copy for microbatch slot
  /// `slot`, for the slotted buffers of a pipeline chunk).
  void *buffer(const PlanBuffer &b, int slot = 0) {
    return arena_ + b.offset + (slot % b.slots) * b.slotStride();
  }
  const void *buffer(const PlanBuffer &b, int slot = 0) const {
    return arena_ + b.offset + (slot % b.slots) * b.slotStride();
  }

  /// Runs function `name` (on the buffers of `slot`); false (with
  /// `error`) if the plan lacks it.
  bool run(const std::string &name, std::string &error, int slot = 0);
  /// Function `name` on the device, without the copies of inputs and
  /// scalars run() makes around it: a run of a program (Device::replay)
  /// whose copies are its own. Without a device, run().
  bool queueRun(const std::string &name, int slot, std::string &error);
  bool has(const std::string &name) const {
    return functions_.count(name) || actions_.count(name);
  }
  /// The backward of one microbatch: @backward, or @backward_input then
  /// @backward_weight where the compiler kept them apart.
  bool runBackward(std::string &error);

  int threads() const { return pool_.size(); }

  /// A whole training step of this rank at once (the one-rank loop): for
  /// each of `microbatches`, its inputs, @forward and the backward; then
  /// @optimizer_step. The host side of `sets` steps is kept apart, so the
  /// host fills one while the device runs another: stepInput(set, m, b) is
  /// microbatch m's copy of input buffer b, stepScalar(set, -1, b) scalar
  /// b as the step starts and stepScalar(set, r, b) as run r leaves it
  /// (runs in order: each microbatch's forward and backward, then the
  /// optimizer). With a device a set's step is one program
  /// (Device::replay: a CUDA graph), recorded the first time it starts.
  bool prepareSteps(int64_t microbatches, int sets, std::string &error);
  void *stepInput(int set, int64_t microbatch, const PlanBuffer &b);
  void *stepScalar(int set, int run, const PlanBuffer &b);
  int forwardRun(int64_t microbatch) const {
    return static_cast<int>(microbatch) *
           static_cast<int>(microbatchFunctions_.size());
  }
  int optimizerRun() const { return forwardRun(stepMicrobatches_); }
  /// What each whole step queues between its last backward and its
  /// optimizer step, recorded with the rest (a data-parallel step: the
  /// replicas' gradient all-reduce over the device's links).
  void queueBeforeOptimizer(std::function<bool(std::string &)> queue) {
    beforeOptimizer_ = std::move(queue);
  }
  /// Starts set `set`'s step (without a device, runs it); finishStep
  /// waits for it.
  bool startStep(int set, std::string &error);
  bool finishStep(std::string &error);

  /// Called after each action of a function with the action's index
  /// (multi-rank runs: MPI moves the messages in flight only when the
  /// process calls into it, and a gradient is final after its last write).
  void setProgress(void (*hook)(void *, size_t), void *context) {
    progress_ = hook;
    progressContext_ = context;
  }

  /// The most buffers a kernel takes (the CUDA target's too).
  static constexpr size_t kMaxKernelBuffers = 16;
  /// One action with its buffers resolved to arena pointers.
  struct Step {
    const PlanAction *action;
    KernelFn fn;
    void *args[kMaxKernelBuffers];
    size_t numArgs;
  };

private:
  /// upload() or download() of one persistent buffer's slot.
  bool transfer(const PlanBuffer &b, int slot, bool toDevice,
                std::string &error);
  void runStep(Step &step);

  const Plan &plan_;
  // HOTSTAGE_PROFILE=1: time per function and action, printed at exit.
  bool profile_ = false;
  ActionProfile profileTable_;

  std::unique_ptr<Device> device_;
  bool syncEveryRun_ = false;
  int64_t persistentBytes_ = 0;
  // The [offset, bytes) of the inputs and of the scalars.
  std::vector<std::pair<int64_t, int64_t>> inputs_, scalars_;
  std::map<std::string, const std::vector<PlanAction> *> actions_;
  std::string castWeights_; // the plan's @cast_weights, or ""
  // Whole steps: each set's host memory holds the inputs of every
  // microbatch, then the scalars before the step and after each run.
  std::vector<char *> stepSets_;
  std::vector<char *> ownedSets_; // without a device
  std::vector<std::string> microbatchFunctions_;
  /// @backward, or @backward_input then @backward_weight where the
  /// compiler kept them apart.
  std::vector<std::string> backwardFunctions() const;
  int64_t stepMicrobatches_ = 0, inputBlock_ = 0, scalarBlock_ = 0;
  std::function<bool(std::string &)> beforeOptimizer_;
  /// Where each of inputs_ and scalars_ lies in its block.
  std::vector<int64_t> inputAt_, scalarAt_;
  bool queueStep(int set, std::string &error);

  void (*progress_)(void *, size_t) = nullptr;
  void *progressContext_ = nullptr;
  char *arena_ = nullptr;
  ThreadPool pool_;
  // Resolved once at start, per slot: a step does no lookups.
  std::map<std::string, std::vector<std::vector<Step>>> functions_;
  std::string setupError_;
};

/// A parameter's gradient from its accumulators (Plan::gradients): their
/// sum, last first, as the compiled optimizer forms it.
std::vector<float> sumGradients(Executor &exec,
                                const std::vector<const PlanBuffer *> &grads);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_EXECUTOR_H
