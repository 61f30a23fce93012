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
#include "runtime/comm/Comm.h"
#include "runtime/data/TokenShards.h"
#include "runtime/host/Executor.h"
#include "runtime/host/Plan.h"
#include "runtime/metrics/Metrics.h"
#include "runtime/support/FileIO.h"
#include "runtime/support/Random.h"
#include "runtime/support/TrainOptions.h"
#include "runtime/train/GradCheck.h"
#include "runtime/train/PipelineStep.h"
#include "runtime/train/RankLinks.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
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

/// A parameter's random stream: a hash of its name (FNV-1a), so that its
/// values depend on nothing but the seed and the name, not on the other
/// parameters or on which pipeline rank holds it.
uint64_t streamOf(const std::string &name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

void initParameters(const Plan &plan, Executor &exec, uint64_t seed) {
  for (auto &[id, b] : plan.buffers) {
    if (b.kind != "param")
      continue;
    uint64_t stream = streamOf(b.name);
    auto *p = static_cast<float *>(exec.buffer(b));
    int64_t n = b.numElements();
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
  /// After each forward of the first step: each token's loss (the plan's
  /// `token_losses`, where it has one), a check of the logits.
  bool afterForward(std::string &error) {
    if (!losses_.empty())
      return true;
    const PlanBuffer *b = plan_.find("temp", "token_losses");
    if (!b)
      return true;
    std::vector<float> row(static_cast<size_t>(b->bytes) / sizeof(float));
    if (!exec_.readTemporary(*b, row.data(), error))
      return false;
    tokenLosses_.insert(tokenLosses_.end(), row.begin(), row.end());
    return true;
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
    if (!tokenLosses_.empty() &&
        static_cast<int64_t>(tokenLosses_.size()) == rows * plan_.seq)
      w.add("token_losses0", DType::F32, {rows, plan_.seq}, tokenLosses_.data(),
            tokenLosses_.size() * sizeof(float));
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
  std::vector<float> losses_, gradNorms_, lrs_, tokenLosses_;
  float loss0_ = 0;
};

/// Gathers every rank's measured actions on rank 0, writes them as a Chrome
/// trace (one lane per rank, as `hotstage plan --trace` has them) and
/// prints each rank's idle share of the pipelined part of the steps.
void writeTimeline(Comm &comm, const PipelineStep &pipeline,
                   const std::string &path) {
  std::vector<double> mine;
  for (const ActionTime &t : pipeline.times())
    mine.insert(mine.end(),
                {double(t.phase), double(t.chunk), double(t.microbatch),
                 double(t.step), t.start, t.end});
  std::vector<std::vector<double>> all;
  comm.gatherToLeader(mine, all);
  if (comm.worldRank() != 0)
    return;
  std::string json = "{\"traceEvents\":[\n";
  json += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
          "\"args\":{\"name\":\"measured\"}}";
  // Per step, the window from the first action to the last of any rank.
  // The idle shares leave out the first step (first touches of the arena,
  // MPI's connections) when there are others.
  int64_t firstStep = -1, lastStep = -1;
  for (const std::vector<double> &rank : all)
    for (size_t i = 0; i + 5 < rank.size(); i += 6) {
      int64_t step = int64_t(rank[i + 3]);
      firstStep = firstStep < 0 ? step : std::min(firstStep, step);
      lastStep = std::max(lastStep, step);
    }
  auto counted = [&](double step) {
    return firstStep == lastStep || int64_t(step) != firstStep;
  };
  std::map<int64_t, std::pair<double, double>> windows;
  for (const std::vector<double> &rank : all)
    for (size_t i = 0; i + 5 < rank.size(); i += 6) {
      if (!counted(rank[i + 3]))
        continue;
      auto [it, fresh] =
          windows.try_emplace(int64_t(rank[i + 3]), rank[i + 4], rank[i + 5]);
      it->second.first = std::min(it->second.first, rank[i + 4]);
      it->second.second = std::max(it->second.second, rank[i + 5]);
    }
  double window = 0;
  for (auto &[step, w] : windows)
    window += w.second - w.first;
  std::string idle =
      "measured idle per rank (F, B and W of the steps" +
      std::string(firstStep != lastStep ? " after the first" : "") + "):";
  char buffer[256];
  for (size_t r = 0; r < all.size(); ++r) {
    std::snprintf(buffer, sizeof buffer,
                  ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,"
                  "\"tid\":%zu,\"args\":{\"name\":\"rank %zu\"}}",
                  r, r);
    json += buffer;
    double busy = 0;
    for (size_t i = 0; i + 5 < all[r].size(); i += 6) {
      const double *e = &all[r][i];
      if (counted(e[3]))
        busy += e[5] - e[4];
      char phase = static_cast<char>(e[0]);
      std::snprintf(buffer, sizeof buffer,
                    ",\n{\"name\":\"%c mb%d chunk%d\",\"cat\":\"%c\","
                    "\"ph\":\"X\",\"pid\":0,\"tid\":%zu,\"ts\":%.3f,"
                    "\"dur\":%.3f,\"args\":{\"step\":%d,\"microbatch\":%d,"
                    "\"chunk\":%d}}",
                    phase, int(e[2]), int(e[1]), phase, r, e[4] * 1e6,
                    (e[5] - e[4]) * 1e6, int(e[3]) + 1, int(e[2]), int(e[1]));
      json += buffer;
    }
    std::snprintf(buffer, sizeof buffer, "  %zu: %.1f%%", r,
                  window > 0 ? 100 * (1 - busy / window) : 0.0);
    idle += buffer;
  }
  json += "\n]}\n";
  std::string error;
  if (!writeFileAtomically(path, {{json.data(), json.size()}}, error))
    std::fprintf(stderr, "error: %s\n", error.c_str());
  else
    std::fprintf(stderr, "%s\nwrote %s (Chrome trace: open in Perfetto)\n",
                 idle.c_str(), path.c_str());
}

/// A pipelined or data-parallel run: this rank's plan, the step of
/// PipelineStep (or, for one stage, the forward and backward of each
/// microbatch and a gradient all-reduce), metrics and progress on rank 0.
int runMultiRank(const Plan &firstPlan, const TrainOptions &options, int *argc,
                 char ***argv) {
  int stages = firstPlan.pipelined ? firstPlan.pipeline.stages : 1;
  int dp = firstPlan.pipelined ? firstPlan.pipeline.dp : firstPlan.replicas;
  Comm comm;
  std::string error;
  if (!comm.init(argc, argv, stages, dp, error)) {
    // Every rank knows; one says it.
    if (comm.worldRank() == 0)
      std::fprintf(stderr, "error: %s\n", error.c_str());
    return 1;
  }
  comm.setTimeout(static_cast<double>(options.commTimeout));
  bool leader = comm.worldRank() == 0;
  auto fail = [&](const std::string &message) {
    comm.abort("rank " + std::to_string(comm.worldRank()) + ": " + message);
  };
  bool jsonTrace =
      options.trace.size() > 5 &&
      options.trace.compare(options.trace.size() - 5, 5, ".json") == 0;
  const char *unsupported = options.command == "gradcheck" ? "gradcheck"
                            : !options.initFrom.empty()    ? "--init-from"
                            : !options.trace.empty() && !jsonTrace
                                ? "--trace FILE (safetensors; FILE.json works)"
                                : nullptr;
  if (unsupported)
    fail(std::string(unsupported) +
         " is not available on a pipelined or data-parallel build yet");

  Plan plan;
  if (!parsePlan(hotstage_plan, plan, error, comm.stage()))
    fail("corrupt plan in this executable: " + error);
  // With a device, what the ranks send, receive and all-reduce goes device
  // to device or through the host (RankLinks.h).
  std::unique_ptr<Device> device =
      createDevice(plan, hotstage_kernels, options.threads, error);
  if (!device && !error.empty())
    fail(error);
  if (device && leader)
    std::fprintf(stderr, "training on %s (rank 0)\n", device->name().c_str());
  Executor exec(plan, hotstage_kernels, options.threads, std::move(device));
  if (!exec.arena())
    fail("cannot allocate the arena of " + std::to_string(plan.arenaBytes) +
         " bytes");
  auto data = TokenDataset::open(options.data, plan.vocab, error);
  if (!data)
    fail(error);
  // Checkpoints: one file per pipeline stage, written by replica 0 (a
  // one-stage data-parallel run writes the one-rank checkpoint).
  int ckptStage = stages > 1 ? comm.stage() : -1;
  CheckpointState state;
  state.seed = options.seed;
  if (!options.resumeDir.empty()) {
    std::string path = newestCheckpoint(options.resumeDir, error, ckptStage);
    int64_t newest = -1;
    if (!path.empty())
      newest = std::atoll(path.c_str() + path.rfind("step_") + 5);
    // Every stage resumes from the same step: the newest all of them have.
    int64_t agreed = comm.minimumWorld(newest, "agreeing on the checkpoint");
    if (agreed < 0)
      fail(path.empty()
               ? error
               : "another rank has no checkpoint in " + options.resumeDir);
    path = options.resumeDir + "/" + checkpointName(agreed, ckptStage);
    if (!loadCheckpoint(plan, exec, path, state, error))
      fail(error);
    if (leader)
      std::fprintf(stderr, "resumed from %s at step %lld\n", path.c_str(),
                   static_cast<long long>(state.step));
  } else {
    initParameters(plan, exec, options.seed);
  }
  if (!exec.toDevice(error))
    fail(error);
  BatchLoader loader(*data, plan.batch, plan.seq, state.seed);
  if (!loader.init(error))
    fail(error);
  if (!options.resumeDir.empty() &&
      !loader.seek({state.dataEpoch, state.dataPosition}, error))
    fail(error);
  auto checkpoint = [&] {
    BatchLoader::Cursor cursor = loader.cursor();
    state.dataEpoch = cursor.epoch;
    state.dataPosition = cursor.position;
    if (comm.replica() == 0 &&
        (!exec.toHost(error) ||
         !saveCheckpoint(plan, exec, options.ckptDir, state, error, ckptStage)))
      fail(error);
  };

  std::unique_ptr<PipelineStep> pipeline;
  if (plan.pipelined) {
    pipeline = std::make_unique<PipelineStep>(plan, exec, comm);
    if (!pipeline->init(error))
      fail(error);
  }
  // A one-stage data-parallel plan's buffers, resolved once.
  struct {
    const PlanBuffer *tokens = nullptr, *targets = nullptr, *loss = nullptr,
                     *lr = nullptr, *gradNorm = nullptr, *step = nullptr,
                     *total = nullptr;
    std::vector<const PlanBuffer *> grads;
  } one;
  if (!pipeline) {
    auto bufferOf = [&](const char *kind, const char *name) {
      const PlanBuffer *b = plan.find(kind, name);
      if (!b)
        fail(std::string("the plan has no ") + kind + " '" + name + "'");
      return b;
    };
    one.tokens = bufferOf("input", "tokens");
    one.targets = bufferOf("input", "targets");
    one.loss = bufferOf("scalar", "loss");
    one.lr = bufferOf("scalar", "lr");
    one.gradNorm = bufferOf("scalar", "grad_norm");
    one.step = bufferOf("scalar", "step");
    one.total = bufferOf("scalar", "total_steps");
    for (auto &[id, b] : plan.buffers)
      if (b.kind == "state" && b.role == "grad")
        one.grads.push_back(&b);
  }
  // One stage, several replicas: their gradient all-reduce device to device
  // where the ranks agree to (RankLinks.h), on one link of them all.
  DeviceLinks *links = nullptr;
  int replicaLink = -1;
  if (!pipeline) {
    if (!agreeOnLinks(exec, comm, links, error))
      fail(error);
    std::vector<int> members;
    for (int r = 0; r < comm.worldSize(); ++r)
      members.push_back(r);
    if (links && !links->open(comm, members, replicaLink, error))
      fail(error);
    if (links && leader)
      std::fprintf(stderr,
                   "transfers between ranks: device to device (%s); each "
                   "step after the first runs whole on the device\n",
                   links->name().c_str());
  }

  // One stage linked device to device: each step but a run's first runs
  // whole, as one program of the device (Executor::startStep: on a GPU one
  // CUDA graph, NCCL's all-reduce in it) that all-reduces the gradients
  // between the last backward and the optimizer. The first runs function
  // by function: NCCL connects its ranks on first use, which a graph's
  // capture must not see.
  bool whole = !pipeline && links && exec.device();
  if (whole) {
    if (!exec.prepareSteps(plan.microbatches, 1, error))
      fail(error);
    std::vector<std::pair<int64_t, int64_t>> ranges;
    for (const PlanBuffer *g : one.grads)
      ranges.emplace_back(arenaOffset(exec, *g, 0), g->numElements());
    exec.queueBeforeOptimizer([=](std::string &error) {
      int ticket = -1;
      if (!links->allReduce(replicaLink, ranges, ticket, error))
        return false;
      links->after(ticket); // the optimizer reads the sums
      return true;
    });
  }
  int64_t firstStep = state.step;

  MetricsWriter metrics;
  if (leader && !options.metrics.empty() &&
      !metrics.open(options.metrics, error, state.step > 0))
    fail(error);
  ProgressLine progress(options.steps, stderr, leader && isTerminal(stderr));
  int64_t M = plan.microbatches;
  int64_t tokensPerStep = plan.batch * plan.seq * M * dp;
  size_t rows = static_cast<size_t>(plan.batch * plan.seq);
  std::vector<Microbatch> batches(M);
  bool timeline = jsonTrace;
  // One origin for every rank's timeline (they share the machine's
  // monotonic clock, or nearly so after the barrier).
  comm.barrier();
  double origin = std::chrono::duration<double>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count();
  if (pipeline)
    pipeline->record(timeline, origin);
  std::vector<int32_t> skip(rows);
  for (int64_t step = state.step; step < options.steps; ++step) {
    auto start = std::chrono::steady_clock::now();
    // Every rank draws the step's M x D microbatches in the seed's order and
    // keeps its replica's.
    for (int64_t r = 0; r < dp; ++r)
      for (int64_t m = 0; m < M; ++m) {
        if (r == comm.replica()) {
          batches[m].tokens.resize(rows);
          batches[m].targets.resize(rows);
          loader.next(batches[m].tokens.data(), batches[m].targets.data());
        } else {
          loader.next(skip.data(), skip.data());
        }
      }
    double lossSum = 0;
    float lr = 0, gradNorm = 0;
    if (pipeline) {
      pipeline->run(step, options.steps, batches, lossSum);
      lr = pipeline->lr();
      gradNorm = pipeline->gradNorm();
    } else if (whole && step > firstStep) {
      for (int64_t m = 0; m < M; ++m) {
        std::memcpy(exec.stepInput(0, m, *one.tokens), batches[m].tokens.data(),
                    rows * 4);
        std::memcpy(exec.stepInput(0, m, *one.targets),
                    batches[m].targets.data(), rows * 4);
      }
      *static_cast<int64_t *>(exec.stepScalar(0, -1, *one.step)) = step;
      *static_cast<int64_t *>(exec.stepScalar(0, -1, *one.total)) =
          options.steps;
      if (!exec.startStep(0, error) || !exec.finishStep(error) ||
          !links->finish(error))
        fail("step " + std::to_string(step + 1) + ": " + error);
      float localLoss = 0;
      for (int64_t m = 0; m < M; ++m)
        localLoss += *static_cast<float *>(
            exec.stepScalar(0, exec.forwardRun(m), *one.loss));
      lossSum = localLoss;
      comm.allReduceWorld(&lossSum, 1, "the loss");
      int optimizer = exec.optimizerRun();
      lr = *static_cast<float *>(exec.stepScalar(0, optimizer, *one.lr));
      gradNorm =
          *static_cast<float *>(exec.stepScalar(0, optimizer, *one.gradNorm));
    } else {
      float localLoss = 0;
      for (int64_t m = 0; m < M; ++m) {
        std::memcpy(exec.buffer(*one.tokens), batches[m].tokens.data(),
                    rows * 4);
        std::memcpy(exec.buffer(*one.targets), batches[m].targets.data(),
                    rows * 4);
        if (!exec.run("forward", error) || !exec.runBackward(error))
          fail("step " + std::to_string(step + 1) + ": " + error);
        localLoss += *static_cast<float *>(exec.buffer(*one.loss));
      }
      lossSum = localLoss;
      if (links) {
        std::vector<std::pair<int64_t, int64_t>> ranges;
        for (const PlanBuffer *g : one.grads)
          ranges.emplace_back(arenaOffset(exec, *g, 0), g->numElements());
        int ticket = -1;
        if (!links->allReduce(replicaLink, ranges, ticket, error))
          fail("step " + std::to_string(step + 1) + ": " + error);
        links->after(ticket); // the optimizer reads the sums
      }
      // (Else through the host, with a device.)
      for (const PlanBuffer *g :
           links ? std::vector<const PlanBuffer *>() : one.grads) {
        if (!exec.download(*g, 0, error))
          fail(error);
        comm.allReduceReplicas(static_cast<float *>(exec.buffer(*g)),
                               static_cast<size_t>(g->numElements()),
                               "the gradient all-reduce of " + g->name);
        if (!exec.upload(*g, 0, error))
          fail(error);
      }
      comm.allReduceWorld(&lossSum, 1, "the loss");
      *static_cast<int64_t *>(exec.buffer(*one.step)) = step;
      *static_cast<int64_t *>(exec.buffer(*one.total)) = options.steps;
      if (!exec.run("optimizer_step", error) ||
          (links && !links->finish(error)))
        fail("step " + std::to_string(step + 1) + ": " + error);
      lr = *static_cast<float *>(exec.buffer(*one.lr));
      gradNorm = *static_cast<float *>(exec.buffer(*one.gradNorm));
    }
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();
    StepMetrics m;
    m.step = step + 1;
    // As one rank divides it: the f32 sum over the f32 count.
    m.loss = static_cast<float>(lossSum) / static_cast<float>(M * dp);
    m.lr = lr;
    m.gradNorm = gradNorm;
    m.milliseconds = ms;
    m.tokensPerSecond = tokensPerStep / (ms / 1000.0);
    // Every rank has the loss: all stop together on a bad one.
    if (!std::isfinite(m.loss)) {
      if (leader)
        std::fprintf(stderr, "error: step %lld: the loss is %s\n",
                     static_cast<long long>(m.step),
                     formatFloat(m.loss).c_str());
      return 1;
    }
    state.step = m.step;
    if (!options.ckptDir.empty() && options.ckptEvery > 0 &&
        state.step % options.ckptEvery == 0 && state.step < options.steps)
      checkpoint();
    if (!leader)
      continue;
    if (metrics.isOpen())
      metrics.write(m);
    progress.observe(ms);
    if (m.step % options.logEvery == 0 || m.step == options.steps ||
        m.step == 1)
      progress.update(m);
  }
  if (leader)
    progress.finish();
  if (!options.ckptDir.empty())
    checkpoint();
  if (timeline && pipeline)
    writeTimeline(comm, *pipeline, options.trace);
  return 0;
}

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

  // A pipeline or data-parallel build runs as a job of several ranks.
  int jobSize = 1;
  bool launched = launchedAsJob(jobSize);
  if (plan.pipelined || plan.replicas > 1)
    return runMultiRank(plan, options, &argc, &argv);
  if (launched && jobSize > 1)
    fatal("this model was compiled for one rank, but the job has " +
          std::to_string(jobSize) +
          "; build with -D stages=S and -D dp=D for S x D ranks");

  std::unique_ptr<Device> device =
      createDevice(plan, hotstage_kernels, options.threads, error);
  if (!device && !error.empty())
    fatal(error);
  if (device)
    std::fprintf(stderr, "training on %s\n", device->name().c_str());
  Executor exec(plan, hotstage_kernels, options.threads, std::move(device));
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
  // gradcheck and --trace read and write parameters and gradients between
  // runs; training moves them only to start and to save.
  exec.syncEveryRun(options.command == "gradcheck" || !options.trace.empty());
  if (!exec.toDevice(error))
    fatal(error);

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

  auto bufferNamed = [&](const char *kind,
                         const char *name) -> const PlanBuffer & {
    const PlanBuffer *b = plan.find(kind, name);
    if (!b)
      fatal(std::string("the plan has no ") + kind + " '" + name + "'");
    return *b;
  };
  const PlanBuffer &tokensBuffer = bufferNamed("input", "tokens");
  const PlanBuffer &targetsBuffer = bufferNamed("input", "targets");
  const PlanBuffer &lossBuffer = bufferNamed("scalar", "loss");
  const PlanBuffer &lrBuffer = bufferNamed("scalar", "lr");
  const PlanBuffer &gradNormBuffer = bufferNamed("scalar", "grad_norm");
  const PlanBuffer &stepBuffer = bufferNamed("scalar", "step");
  const PlanBuffer &totalBuffer = bufferNamed("scalar", "total_steps");

  MetricsWriter metrics;
  if (!options.metrics.empty() &&
      !metrics.open(options.metrics, error, state.step > 0))
    fatal(error);
  ProgressLine progress(options.steps, stderr, isTerminal(stderr));
  int64_t tokensPerStep = plan.batch * plan.seq * plan.microbatches;
  std::unique_ptr<TraceRecorder> trace;
  if (!options.trace.empty())
    trace = std::make_unique<TraceRecorder>(plan, exec);

  // A step is done (state.step counts it): its line, metrics and
  // checkpoint.
  auto report = [&](float meanLoss, float lr, float gradNorm, double ms) {
    StepMetrics m;
    m.step = state.step;
    m.loss = meanLoss;
    m.lr = lr;
    m.gradNorm = gradNorm;
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
        (!exec.toHost(error) ||
         !saveCheckpoint(plan, exec, options.ckptDir, state, error)))
      fatal(error);
  };

  if (trace) {
    // --trace reads buffers between the runs: they run one at a time.
    auto *tokens = static_cast<int32_t *>(exec.buffer(tokensBuffer));
    auto *targets = static_cast<int32_t *>(exec.buffer(targetsBuffer));
    while (state.step < options.steps) {
      auto start = std::chrono::steady_clock::now();
      float lossSum = 0;
      for (int64_t m = 0; m < plan.microbatches; ++m) {
        loader->next(tokens, targets);
        trace->addBatch(tokens, targets, size_t(plan.batch * plan.seq));
        if (!exec.run("forward", error) || !trace->afterForward(error) ||
            !exec.runBackward(error))
          fatal("step " + std::to_string(state.step + 1) + ": " + error);
        lossSum += *static_cast<float *>(exec.buffer(lossBuffer));
      }
      float meanLoss = lossSum / static_cast<float>(plan.microbatches);
      trace->beforeUpdate(meanLoss);
      *static_cast<int64_t *>(exec.buffer(stepBuffer)) = state.step;
      *static_cast<int64_t *>(exec.buffer(totalBuffer)) = options.steps;
      if (!exec.run("optimizer_step", error))
        fatal("step " + std::to_string(state.step + 1) + ": " + error);
      ++state.step;
      BatchLoader::Cursor cursor = loader->cursor();
      state.dataEpoch = cursor.epoch;
      state.dataPosition = cursor.position;
      report(meanLoss, *static_cast<float *>(exec.buffer(lrBuffer)),
             *static_cast<float *>(exec.buffer(gradNormBuffer)),
             std::chrono::duration<double, std::milli>(
                 std::chrono::steady_clock::now() - start)
                 .count());
    }
  } else {
    // Each step runs whole (Executor::startStep: on a GPU one CUDA graph
    // that copies its batches in itself), and the host loads the next
    // step's batches into the other of two sets while it runs.
    if (!exec.prepareSteps(plan.microbatches, 2, error))
      fatal(error);
    BatchLoader::Cursor cursors[2];
    auto load = [&](int set, int64_t step) {
      for (int64_t m = 0; m < plan.microbatches; ++m)
        loader->next(
            static_cast<int32_t *>(exec.stepInput(set, m, tokensBuffer)),
            static_cast<int32_t *>(exec.stepInput(set, m, targetsBuffer)));
      *static_cast<int64_t *>(exec.stepScalar(set, -1, stepBuffer)) = step;
      *static_cast<int64_t *>(exec.stepScalar(set, -1, totalBuffer)) =
          options.steps;
      cursors[set] = loader->cursor();
    };
    auto start = [&](int set) {
      if (!exec.startStep(set, error))
        fatal("step " + std::to_string(state.step + 1) + ": " + error);
    };
    auto last = std::chrono::steady_clock::now();
    int set = 0;
    if (state.step < options.steps) {
      load(set, state.step);
      start(set);
    }
    while (state.step < options.steps) {
      bool more = state.step + 1 < options.steps;
      if (more)
        load(1 - set, state.step + 1);
      if (!exec.finishStep(error))
        fatal("step " + std::to_string(state.step + 1) + ": " + error);
      // The time between two steps' ends: what a step costs when the
      // next one is already waiting.
      auto now = std::chrono::steady_clock::now();
      double ms = std::chrono::duration<double, std::milli>(now - last).count();
      last = now;
      float lossSum = 0;
      for (int64_t m = 0; m < plan.microbatches; ++m)
        lossSum += *static_cast<float *>(
            exec.stepScalar(set, exec.forwardRun(m), lossBuffer));
      int optimizer = exec.optimizerRun();
      ++state.step;
      state.dataEpoch = cursors[set].epoch;
      state.dataPosition = cursors[set].position;
      report(lossSum / static_cast<float>(plan.microbatches),
             *static_cast<float *>(exec.stepScalar(set, optimizer, lrBuffer)),
             *static_cast<float *>(
                 exec.stepScalar(set, optimizer, gradNormBuffer)),
             ms);
      if (more) {
        set = 1 - set;
        start(set);
      }
    }
  }
  progress.finish();
  if (!options.ckptDir.empty() &&
      (!exec.toHost(error) ||
       !saveCheckpoint(plan, exec, options.ckptDir, state, error)))
    fatal(error);
  if (trace && !trace->write(options.trace, error))
    fatal(error);
  return 0;
}
