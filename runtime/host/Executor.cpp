//===- Executor.cpp - Runs the plan's functions on the host ---------------===//

#include "runtime/host/Executor.h"
#include "runtime/host/HostGemm.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace hotstage::rt;

namespace {
/// Calls the kernel with its buffers and [begin, end): the kernels take
/// bare pointers, so the arity is the number of buffers.
void invoke(void *ctx, int64_t begin, int64_t end) {
  auto *c = static_cast<Executor::Step *>(ctx);
  void **a = c->args;
  using I = int64_t;
  switch (c->numArgs) {
#define HS_CASE(N, ...)                                                        \
  case N:                                                                      \
    reinterpret_cast<void (*)(__VA_ARGS__, I, I)>(c->fn)(HS_ARGS_##N, begin,   \
                                                         end);                 \
    return;
#define HS_ARGS_1 a[0]
#define HS_ARGS_2 HS_ARGS_1, a[1]
#define HS_ARGS_3 HS_ARGS_2, a[2]
#define HS_ARGS_4 HS_ARGS_3, a[3]
#define HS_ARGS_5 HS_ARGS_4, a[4]
#define HS_ARGS_6 HS_ARGS_5, a[5]
#define HS_ARGS_7 HS_ARGS_6, a[6]
#define HS_ARGS_8 HS_ARGS_7, a[7]
#define HS_ARGS_9 HS_ARGS_8, a[8]
#define HS_ARGS_10 HS_ARGS_9, a[9]
#define HS_ARGS_11 HS_ARGS_10, a[10]
#define HS_ARGS_12 HS_ARGS_11, a[11]
#define HS_ARGS_13 HS_ARGS_12, a[12]
#define HS_ARGS_14 HS_ARGS_13, a[13]
#define HS_ARGS_15 HS_ARGS_14, a[14]
#define HS_ARGS_16 HS_ARGS_15, a[15]
#define P void *
    HS_CASE(1, P)
    HS_CASE(2, P, P)
    HS_CASE(3, P, P, P)
    HS_CASE(4, P, P, P, P)
    HS_CASE(5, P, P, P, P, P)
    HS_CASE(6, P, P, P, P, P, P)
    HS_CASE(7, P, P, P, P, P, P, P)
    HS_CASE(8, P, P, P, P, P, P, P, P)
    HS_CASE(9, P, P, P, P, P, P, P, P, P)
    HS_CASE(10, P, P, P, P, P, P, P, P, P, P)
    HS_CASE(11, P, P, P, P, P, P, P, P, P, P, P)
    HS_CASE(12, P, P, P, P, P, P, P, P, P, P, P, P)
    HS_CASE(13, P, P, P, P, P, P, P, P, P, P, P, P, P)
    HS_CASE(14, P, P, P, P, P, P, P, P, P, P, P, P, P, P)
    HS_CASE(15, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P)
    HS_CASE(16, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P, P)
#undef P
  default:
    std::abort(); // the constructor rejects more than kMaxKernelBuffers
  }
}
} // namespace

Executor::Executor(const Plan &plan, const KernelFn *kernels, int threads,
                   std::unique_ptr<Device> device)
    : plan_(plan), profile_(std::getenv("HOTSTAGE_PROFILE") != nullptr),
      device_(std::move(device)), persistentBytes_(plan.persistentBytes),
      pool_(device_ ? 1 : threads) {
  // With a device the host copy needs only the persistent buffers: the
  // temporaries live on the device alone.
  size_t bytes =
      (static_cast<size_t>(device_ ? plan.persistentBytes : plan.arenaBytes) +
       63) /
      64 * 64;
  arena_ = static_cast<char *>(std::aligned_alloc(64, bytes ? bytes : 64));
  if (arena_)
    std::memset(arena_, 0, bytes);
  if (!arena_)
    return;
  for (const auto &[id, b] : plan.buffers)
    if (b.kind == "input" || b.kind == "scalar")
      (b.kind == "input" ? inputs_ : scalars_)
          .push_back({b.offset, b.slotStride() * b.slots});
  for (const auto &[name, actions] : plan.functions)
    if (name == "cast_weights" ||
        (name.size() > 13 &&
         name.compare(name.size() - 13, 13, ".cast_weights") == 0))
      castWeights_ = name;
  if (device_) {
    for (const auto &[name, actions] : plan.functions)
      actions_[name] = &actions;
    return;
  }
  for (const auto &[name, actions] : plan.functions) {
    // One resolution per microbatch slot of the function's chunk.
    int slots = 1;
    for (const PlanAction &a : actions)
      for (int b : a.buffers)
        slots = std::max(slots, plan.buffers.at(b).slots);
    std::vector<std::vector<Step>> &variants = functions_[name];
    variants.resize(slots);
    for (int slot = 0; slot < slots; ++slot)
      for (const PlanAction &a : actions) {
        Step step{&a, a.kernel >= 0 ? kernels[a.kernel] : nullptr, {}, 0};
        if (a.buffers.empty() || a.buffers.size() > kMaxKernelBuffers) {
          setupError_ = "an action of '" + name + "' has " +
                        std::to_string(a.buffers.size()) + " buffers (1 to " +
                        std::to_string(kMaxKernelBuffers) + " supported)";
          return;
        }
        step.numArgs = a.buffers.size();
        for (size_t i = 0; i < step.numArgs; ++i)
          step.args[i] = buffer(plan.buffers.at(a.buffers[i]), slot);
        variants[slot].push_back(step);
      }
  }
}

Executor::~Executor() {
  if (profile_)
    profileTable_.print(stderr, "");
  for (char *set : ownedSets_)
    std::free(set);
  std::free(arena_);
}

bool Executor::prepareSteps(int64_t microbatches, int sets,
                            std::string &error) {
  if (!setupError_.empty()) {
    error = setupError_;
    return false;
  }
  microbatchFunctions_ = backwardFunctions();
  microbatchFunctions_.insert(microbatchFunctions_.begin(), "forward");
  if (!has("optimizer_step") ||
      !std::all_of(microbatchFunctions_.begin(), microbatchFunctions_.end(),
                   [&](const std::string &name) { return has(name); })) {
    error = "internal: the plan has no forward, backward and optimizer step "
            "to run as one";
    return false;
  }
  stepMicrobatches_ = microbatches;
  auto layout = [](const std::vector<std::pair<int64_t, int64_t>> &ranges,
                   std::vector<int64_t> &at) {
    int64_t block = 0;
    at.clear();
    for (auto [offset, bytes] : ranges) {
      at.push_back(block);
      block += (bytes + 63) / 64 * 64;
    }
    return block;
  };
  inputBlock_ = layout(inputs_, inputAt_);
  scalarBlock_ = layout(scalars_, scalarAt_);
  int64_t bytes = microbatches * inputBlock_ +
                  (optimizerRun() + 2) * scalarBlock_; // before, each run
  bytes = std::max<int64_t>(bytes, 64);
  for (int set = 0; set < sets; ++set) {
    char *memory = nullptr;
    if (device_) {
      memory = device_->hostMemory(bytes, error);
      if (!memory)
        return false;
    } else {
      memory = static_cast<char *>(
          std::aligned_alloc(64, static_cast<size_t>(bytes)));
      if (!memory) {
        error = "cannot allocate " + std::to_string(bytes) +
                " bytes for a step's inputs";
        return false;
      }
      std::memset(memory, 0, static_cast<size_t>(bytes));
      ownedSets_.push_back(memory);
    }
    stepSets_.push_back(memory);
  }
  return true;
}

void *Executor::stepInput(int set, int64_t microbatch, const PlanBuffer &b) {
  for (size_t i = 0; i < inputs_.size(); ++i)
    if (inputs_[i].first == b.offset)
      return stepSets_.at(set) + microbatch * inputBlock_ + inputAt_[i];
  return nullptr;
}

void *Executor::stepScalar(int set, int run, const PlanBuffer &b) {
  for (size_t i = 0; i < scalars_.size(); ++i)
    if (scalars_[i].first == b.offset)
      return stepSets_.at(set) + stepMicrobatches_ * inputBlock_ +
             (run + 1) * scalarBlock_ + scalarAt_[i];
  return nullptr;
}

// The step's every copy and run, in order: on the device (queued, so that
// the device may record them) or here.
bool Executor::queueStep(int set, std::string &error) {
  char *base = stepSets_.at(set);
  auto in = [&](const std::vector<std::pair<int64_t, int64_t>> &ranges,
                const std::vector<int64_t> &at, const char *from) {
    for (size_t i = 0; i < ranges.size(); ++i) {
      auto [offset, bytes] = ranges[i];
      if (!device_)
        std::memcpy(arena_ + offset, from + at[i], static_cast<size_t>(bytes));
      else if (!device_->upload(from + at[i], offset, bytes, error))
        return false;
    }
    return true;
  };
  int run = 0;
  auto scalarsOut = [&]() {
    char *to = base + stepMicrobatches_ * inputBlock_ + ++run * scalarBlock_;
    for (size_t i = 0; i < scalars_.size(); ++i) {
      auto [offset, bytes] = scalars_[i];
      if (!device_)
        std::memcpy(to + scalarAt_[i], arena_ + offset,
                    static_cast<size_t>(bytes));
      else if (!device_->download(to + scalarAt_[i], offset, bytes, error))
        return false;
    }
    return true;
  };
  auto call = [&](const std::string &name) {
    return (device_ ? device_->run(name, *actions_.at(name), 0, error)
                    : this->run(name, error)) &&
           scalarsOut();
  };
  if (!in(scalars_, scalarAt_, base + stepMicrobatches_ * inputBlock_))
    return false;
  for (int64_t m = 0; m < stepMicrobatches_; ++m) {
    if (!in(inputs_, inputAt_, base + m * inputBlock_))
      return false;
    for (const std::string &name : microbatchFunctions_)
      if (!call(name))
        return false;
  }
  if (beforeOptimizer_ && !beforeOptimizer_(error))
    return false;
  return call("optimizer_step");
}

bool Executor::startStep(int set, std::string &error) {
  if (!device_)
    return queueStep(set, error);
  return device_->replay(
      set, [this, set](std::string &error) { return queueStep(set, error); },
      error);
}

bool Executor::finishStep(std::string &error) {
  return !device_ || device_->wait(error);
}

bool Executor::toDevice(std::string &error) {
  return (!device_ || device_->upload(arena_, 0, persistentBytes_, error)) &&
         castWeights(error);
}

bool Executor::castWeights(std::string &error) {
  if (castWeights_.empty())
    return true;
  if (device_)
    return device_->run(castWeights_, *actions_.at(castWeights_), 0, error);
  for (Step &step : functions_.at(castWeights_).front())
    runStep(step);
  return true;
}

bool Executor::toHost(std::string &error) {
  return !device_ || device_->download(arena_, 0, persistentBytes_, error);
}

/// The host copy holds persistent buffers only (with a device).
static bool persistent(const PlanBuffer &b, std::string &error) {
  if (b.kind != "temp")
    return true;
  error = "internal: buffer " + b.name +
          " is a temporary, which lives on "
          "the device only";
  return false;
}

bool Executor::upload(const PlanBuffer &b, int slot, std::string &error) {
  return transfer(b, slot, /*toDevice=*/true, error);
}

bool Executor::download(const PlanBuffer &b, int slot, std::string &error) {
  return transfer(b, slot, /*toDevice=*/false, error);
}

bool Executor::readTemporary(const PlanBuffer &b, void *out,
                             std::string &error) {
  if (!device_) {
    std::memcpy(out, buffer(b), static_cast<size_t>(b.bytes));
    return true;
  }
  return device_->download(static_cast<char *>(out), b.offset, b.bytes, error);
}

bool Executor::copy(const PlanBuffer &from, int fromSlot, const PlanBuffer &to,
                    int toSlot, std::string &error) {
  char *source = static_cast<char *>(buffer(from, fromSlot));
  char *target = static_cast<char *>(buffer(to, toSlot));
  if (!device_) {
    std::memcpy(target, source, static_cast<size_t>(from.bytes));
    return true;
  }
  return device_->copy(source - arena_, target - arena_, from.bytes, error);
}

bool Executor::transfer(const PlanBuffer &b, int slot, bool toDevice,
                        std::string &error) {
  if (!device_)
    return true;
  if (!persistent(b, error))
    return false;
  int64_t offset = static_cast<char *>(buffer(b, slot)) - arena_;
  return toDevice ? device_->upload(arena_ + offset, offset, b.bytes, error)
                  : device_->download(arena_ + offset, offset, b.bytes, error);
}

bool Executor::run(const std::string &name, std::string &error, int slot) {
  if (!setupError_.empty()) {
    error = setupError_;
    return false;
  }
  if (device_) {
    auto it = actions_.find(name);
    if (it == actions_.end()) {
      error = "the plan has no function '" + name + "'";
      return false;
    }
    if (syncEveryRun_ && !toDevice(error))
      return false;
    for (auto [offset, bytes] : inputs_)
      if (!device_->upload(arena_ + offset, offset, bytes, error))
        return false;
    for (auto [offset, bytes] : scalars_)
      if (!device_->upload(arena_ + offset, offset, bytes, error))
        return false;
    if (!device_->run(name, *it->second, slot, error))
      return false;
    for (auto [offset, bytes] : scalars_)
      if (!device_->download(arena_ + offset, offset, bytes, error))
        return false;
    return !syncEveryRun_ || toHost(error);
  }
  auto it = functions_.find(name);
  if (it == functions_.end()) {
    error = "the plan has no function '" + name + "'";
    return false;
  }
  // The parameters may have changed here since the last run.
  if (syncEveryRun_ && name != castWeights_ && !castWeights(error))
    return false;
  std::vector<Step> &steps = it->second[slot % it->second.size()];
  for (size_t i = 0; i < steps.size(); ++i) {
    Step &step = steps[i];
    const PlanAction &a = *step.action;
    auto start = profile_ ? std::chrono::steady_clock::now()
                          : std::chrono::steady_clock::time_point();
    runStep(step);
    if (progress_)
      progress_(progressContext_, i);
    if (profile_)
      profileTable_.add(name, a, plan_,
                        std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start)
                            .count());
  }
  return true;
}

bool Executor::queueRun(const std::string &name, int slot, std::string &error) {
  if (!device_)
    return run(name, error, slot);
  auto it = actions_.find(name);
  if (it == actions_.end()) {
    error = "the plan has no function '" + name + "'";
    return false;
  }
  return device_->run(name, *it->second, slot, error);
}

std::vector<std::string> Executor::backwardFunctions() const {
  if (has("backward"))
    return {"backward"};
  return {"backward_input", "backward_weight"};
}

bool Executor::runBackward(std::string &error) {
  for (const std::string &name : backwardFunctions())
    if (!run(name, error))
      return false;
  return true;
}

void Executor::runStep(Step &step) {
  {
    const PlanAction &a = *step.action;
    if (a.gemm) {
      hostGemm(a, step.args, pool_);
      return;
    }
    if (a.attention) {
      hostAttention(a, step.args, pool_);
      return;
    }
    pool_.parallelFor(a.parallel, invoke, &step);
  }
}

std::vector<float>
hotstage::rt::sumGradients(Executor &exec,
                           const std::vector<const PlanBuffer *> &grads) {
  if (grads.empty())
    return {};
  size_t n = static_cast<size_t>(grads.back()->numElements());
  const auto *last = static_cast<const float *>(exec.buffer(*grads.back()));
  std::vector<float> sum(last, last + n);
  for (size_t k = grads.size() - 1; k-- > 0;) {
    const auto *g = static_cast<const float *>(exec.buffer(*grads[k]));
    for (size_t i = 0; i < n; ++i)
      sum[i] += g[i];
  }
  return sum;
}
