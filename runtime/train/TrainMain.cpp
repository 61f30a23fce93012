//===- TrainMain.cpp - main() of every compiled model ---------------------===//
//
// The generated object provides the plan text and the kernel table; this
// file is the training loop around them: options, parameter
// initialisation, data, the step (forward, backward B and W per
// microbatch, then the optimizer), metrics, progress and checkpoints.
// Errors name the file or the step and exit with status 1.
//
//===----------------------------------------------------------------------===//

#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/checkpoint/SafeTensors.h"
#include "runtime/data/TokenShards.h"
#include "runtime/host/Executor.h"
#include "runtime/host/Plan.h"
#include "runtime/metrics/Metrics.h"
#include "runtime/support/Random.h"
#include "runtime/support/TrainOptions.h"
#include "runtime/train/GradCheck.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

using namespace hotstage::rt;

extern "C" const char hotstage_plan[];
extern "C" const KernelFn hotstage_kernels[];
extern "C" const int64_t hotstage_num_kernels;

namespace {

[[noreturn]] void fatal(const std::string &message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::exit(1);
}

void initParameters(const Plan &plan, Executor &exec, uint64_t seed) {
  uint64_t stream = 0;
  for (auto &[id, b] : plan.buffers) {
    if (b.kind != "param")
      continue;
    auto *p = static_cast<float *>(exec.buffer(b));
    int64_t n = b.numElements();
    // Each parameter has its own stream: its values do not depend on the
    // others, the order of initialisation or the number of ranks.
    if (b.init == "normal")
      fillNormal(p, n, seed, stream, b.initA, b.initB);
    else if (b.init == "uniform")
      fillUniform(p, n, seed, stream, b.initA, b.initB);
    else {
      float v = b.init == "ones"       ? 1.0f
                : b.init == "constant" ? static_cast<float>(b.initA)
                                       : 0.0f;
      for (int64_t i = 0; i < n; ++i)
        p[i] = v;
    }
    ++stream;
  }
}

/// What `--trace FILE` records: enough to replay the run elsewhere and
/// compare (test/e2e/reference/gpt2_reference.py reads the same names).
class TraceRecorder {
public:
  TraceRecorder(const Plan &plan, Executor &exec) : plan_(plan), exec_(exec) {}

  void addBatch(const int32_t *tokens, const int32_t *targets, size_t count) {
    tokens_.insert(tokens_.end(), tokens, tokens + count);
    targets_.insert(targets_.end(), targets, targets + count);
  }
  /// After the backward of every microbatch, before the optimizer step.
  void beforeUpdate(float loss) {
    if (!losses_.empty())
      return;
    for (auto &[id, b] : plan_.buffers)
      if (b.kind == "param" && !plan_.gradients(b.name).empty())
        grads_.emplace_back(b.name,
                            sumGradients(exec_, plan_.gradients(b.name)));
    loss0_ = loss;
  }
  void afterUpdate(float loss, float gradNorm, float lr) {
    losses_.push_back(loss);
    gradNorms_.push_back(gradNorm);
    lrs_.push_back(lr);
  }

  bool write(const std::string &path, std::string &error) {
    SafeTensorsWriter w;
    int64_t steps = static_cast<int64_t>(losses_.size());
    int64_t rows = plan_.batch * plan_.microbatches;
    w.add("tokens", DType::I32, {steps, rows, plan_.seq}, tokens_.data(),
          tokens_.size() * sizeof(int32_t));
    w.add("targets", DType::I32, {steps, rows, plan_.seq}, targets_.data(),
          targets_.size() * sizeof(int32_t));
    w.add("loss0", DType::F32, {}, &loss0_, sizeof(float));
    w.add("losses", DType::F32, {steps}, losses_.data(), steps * sizeof(float));
    w.add("grad_norm", DType::F32, {steps}, gradNorms_.data(),
          steps * sizeof(float));
    w.add("lr", DType::F32, {steps}, lrs_.data(), steps * sizeof(float));
    for (auto &[name, values] : grads_) {
      const PlanBuffer *p = plan_.find("param", name);
      w.add("grad." + name, DType::F32, p->shape, values.data(),
            values.size() * sizeof(float));
    }
    for (auto &[id, b] : plan_.buffers)
      if (b.kind == "param")
        w.add("final." + b.name, DType::F32, b.shape, exec_.buffer(b),
              static_cast<size_t>(b.bytes));
    w.setMetadata("format", "hotstage-trace/1");
    w.setMetadata("model", plan_.model);
    return w.writeAtomically(path, error);
  }

private:
  const Plan &plan_;
  Executor &exec_;
  std::vector<int32_t> tokens_, targets_;
  std::vector<std::pair<std::string, std::vector<float>>> grads_;
  std::vector<float> losses_, gradNorms_, lrs_;
  float loss0_ = 0;
};

} // namespace

int main(int argc, char **argv) {
  Plan plan;
  std::string error;
  if (!parsePlan(hotstage_plan, plan, error))
    fatal("corrupt plan in this executable: " + error);
  if (static_cast<int64_t>(plan.kernels.size()) != hotstage_num_kernels)
    fatal("the plan names " + std::to_string(plan.kernels.size()) +
          " kernels, the executable has " +
          std::to_string(hotstage_num_kernels));

  if (plan.pipelined)
    fatal("this executable was built for a " +
          std::to_string(plan.pipeline.stages) +
          "-stage pipeline, which this runtime cannot run yet; build with "
          "-D stages=1");

  TrainOptions options;
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 ||
      std::strcmp(argv[1], "-h") == 0) {
    std::fputs(trainUsage(argv[0], plan.model.c_str()).c_str(),
               argc < 2 ? stderr : stdout);
    return argc < 2 ? 1 : 0;
  }
  if (!parseTrainOptions(argc, argv, options, error))
    fatal(error);
  if (options.help) {
    std::fputs(trainUsage(argv[0], plan.model.c_str()).c_str(), stdout);
    return 0;
  }

  Executor exec(plan, hotstage_kernels, options.threads);
  if (!exec.arena())
    fatal("cannot allocate the arena of " + std::to_string(plan.arenaBytes) +
          " bytes");

  auto data = TokenDataset::open(options.data, plan.vocab, error);
  if (!data)
    fatal(error);
  auto loader =
      std::make_unique<BatchLoader>(*data, plan.batch, plan.seq, options.seed);
  if (!loader->init(error))
    fatal(error);

  CheckpointState state;
  state.seed = options.seed;
  if (!options.resumeDir.empty()) {
    std::string path = newestCheckpoint(options.resumeDir, error);
    if (path.empty() || !loadCheckpoint(plan, exec, path, state, error))
      fatal(error);
    if (state.seed != options.seed && options.seed != TrainOptions().seed)
      std::fprintf(stderr, "note: resuming with the checkpoint's seed %llu\n",
                   static_cast<unsigned long long>(state.seed));
    loader =
        std::make_unique<BatchLoader>(*data, plan.batch, plan.seq, state.seed);
    BatchLoader::Cursor cursor{state.dataEpoch, state.dataPosition};
    if (!loader->init(error) || !loader->seek(cursor, error))
      fatal(path + ": " + error);
    std::fprintf(stderr, "resumed from %s at step %lld\n", path.c_str(),
                 static_cast<long long>(state.step));
  } else if (!options.initFrom.empty()) {
    int64_t ignored = 0;
    if (!loadWeights(plan, exec, options.initFrom, ignored, error))
      fatal(error);
    if (ignored > 0)
      std::fprintf(stderr,
                   "note: %s: ignored %lld tensor(s) that are not "
                   "parameters of %s\n",
                   options.initFrom.c_str(), static_cast<long long>(ignored),
                   plan.model.c_str());
  } else {
    initParameters(plan, exec, state.seed);
  }

  if (options.command == "gradcheck") {
    GradCheckOptions check;
    check.seed = state.seed;
    int64_t failures = runGradCheck(plan, exec, *loader, check, stdout, error);
    if (failures < 0)
      fatal("gradcheck: " + error);
    std::printf("%s: %lld check(s) failed\n", failures ? "FAIL" : "ok",
                static_cast<long long>(failures));
    return failures ? 1 : 0;
  }

  auto bufferOf = [&](const char *kind, const char *name) -> void * {
    const PlanBuffer *b = plan.find(kind, name);
    if (!b)
      fatal(std::string("the plan has no ") + kind + " '" + name + "'");
    return exec.buffer(*b);
  };
  auto *tokens = static_cast<int32_t *>(bufferOf("input", "tokens"));
  auto *targets = static_cast<int32_t *>(bufferOf("input", "targets"));
  auto *loss = static_cast<float *>(bufferOf("scalar", "loss"));
  auto *lr = static_cast<float *>(bufferOf("scalar", "lr"));
  auto *gradNorm = static_cast<float *>(bufferOf("scalar", "grad_norm"));
  auto *step = static_cast<int64_t *>(bufferOf("scalar", "step"));
  auto *total = static_cast<int64_t *>(bufferOf("scalar", "total_steps"));

  MetricsWriter metrics;
  if (!options.metrics.empty() &&
      !metrics.open(options.metrics, error, state.step > 0))
    fatal(error);
  ProgressLine progress(options.steps, stderr, isTerminal(stderr));
  int64_t tokensPerStep = plan.batch * plan.seq * plan.microbatches;
  std::unique_ptr<TraceRecorder> trace;
  if (!options.trace.empty())
    trace = std::make_unique<TraceRecorder>(plan, exec);

  while (state.step < options.steps) {
    auto start = std::chrono::steady_clock::now();
    float lossSum = 0;
    for (int64_t m = 0; m < plan.microbatches; ++m) {
      loader->next(tokens, targets);
      if (trace)
        trace->addBatch(tokens, targets, size_t(plan.batch * plan.seq));
      if (!exec.run("forward", error) || !exec.runBackward(error))
        fatal("step " + std::to_string(state.step + 1) + ": " + error);
      lossSum += *loss;
    }
    float meanLoss = lossSum / static_cast<float>(plan.microbatches);
    if (trace)
      trace->beforeUpdate(meanLoss);
    *step = state.step;
    *total = options.steps;
    if (!exec.run("optimizer_step", error))
      fatal("step " + std::to_string(state.step + 1) + ": " + error);
    ++state.step;
    BatchLoader::Cursor cursor = loader->cursor();
    state.dataEpoch = cursor.epoch;
    state.dataPosition = cursor.position;
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();

    StepMetrics m;
    m.step = state.step;
    m.loss = meanLoss;
    m.lr = *lr;
    m.gradNorm = *gradNorm;
    m.milliseconds = ms;
    m.tokensPerSecond = tokensPerStep / (ms / 1000.0);
    if (trace)
      trace->afterUpdate(m.loss, m.gradNorm, m.lr);
    if (!std::isfinite(m.loss))
      fatal("step " + std::to_string(state.step) + ": the loss is " +
            formatFloat(m.loss));
    if (metrics.isOpen())
      metrics.write(m);
    progress.observe(ms);
    // The first step too: it shows where the loss starts.
    if (state.step % options.logEvery == 0 || state.step == options.steps ||
        m.step == 1)
      progress.update(m);
    if (!options.ckptDir.empty() && options.ckptEvery > 0 &&
        state.step % options.ckptEvery == 0 && state.step < options.steps &&
        !saveCheckpoint(plan, exec, options.ckptDir, state, error))
      fatal(error);
  }
  progress.finish();
  if (!options.ckptDir.empty() &&
      !saveCheckpoint(plan, exec, options.ckptDir, state, error))
    fatal(error);
  if (trace && !trace->write(options.trace, error))
    fatal(error);
  return 0;
}
