//===- TrainMain.cpp - main() of every compiled model ---------------------===//
//
// The generated object provides the plan text and the kernel table; this
// file is the training loop around them: options, parameter
// initialisation, data, the step (forward, backward B and W per
// microbatch, then the optimizer), metrics, progress and checkpoints.
// Errors name the file or the step and exit with status 1.
//
//===----------------------------------------------------------------------===//

#include "runtime/checkpoint/SafeTensors.h"
#include "runtime/data/TokenShards.h"
#include "runtime/host/Executor.h"
#include "runtime/host/Plan.h"
#include "runtime/metrics/Metrics.h"
#include "runtime/support/Random.h"
#include "runtime/support/TrainOptions.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <memory>
#include <string>
#include <sys/stat.h>

using namespace hotstage::rt;

extern "C" const char hotstage_plan[];
extern "C" const KernelFn hotstage_kernels[];
extern "C" const int64_t hotstage_num_kernels;

namespace {

[[noreturn]] void fatal(const std::string &message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::exit(1);
}

std::string checkpointName(int64_t step) {
  char name[64];
  std::snprintf(name, sizeof name, "step_%08lld.safetensors",
                static_cast<long long>(step));
  return name;
}

/// The newest `step_N.safetensors` in `dir`, or "" if there is none.
std::string newestCheckpoint(const std::string &dir, std::string &error) {
  DIR *d = opendir(dir.c_str());
  if (!d) {
    error =
        dir + ": cannot open the checkpoint folder: " + std::strerror(errno);
    return "";
  }
  std::string best;
  while (dirent *e = readdir(d)) {
    std::string name = e->d_name;
    if (name.size() == checkpointName(0).size() &&
        name.rfind("step_", 0) == 0 &&
        name.compare(name.size() - 12, 12, ".safetensors") == 0 && name > best)
      best = name;
  }
  closedir(d);
  if (best.empty())
    error = dir + ": no checkpoint (step_*.safetensors) to resume from";
  return best.empty() ? "" : dir + "/" + best;
}

struct TrainState {
  int64_t step = 0; // steps done
  BatchLoader::Cursor cursor;
};

bool saveCheckpoint(const Plan &plan, Executor &exec, const std::string &dir,
                    const TrainState &state, uint64_t seed,
                    std::string &error) {
  mkdir(dir.c_str(), 0755);
  SafeTensorsWriter writer;
  for (auto &[id, b] : plan.buffers) {
    if (b.kind != "param" && !(b.kind == "state" && b.role != "grad"))
      continue;
    writer.add(b.name, DType::F32, b.shape, exec.buffer(b),
               static_cast<size_t>(b.bytes));
  }
  writer.setMetadata("format", "hotstage-checkpoint/1");
  writer.setMetadata("model", plan.model);
  writer.setMetadata("step", std::to_string(state.step));
  writer.setMetadata("seed", std::to_string(seed));
  writer.setMetadata("data_epoch", std::to_string(state.cursor.epoch));
  writer.setMetadata("data_position", std::to_string(state.cursor.position));
  return writer.writeAtomically(dir + "/" + checkpointName(state.step), error);
}

bool loadCheckpoint(const Plan &plan, Executor &exec, const std::string &path,
                    TrainState &state, uint64_t &seed, std::string &error) {
  auto file = SafeTensorsFile::open(path, error);
  if (!file)
    return false;
  const auto &meta = file->metadata();
  auto get = [&](const char *key) -> const std::string * {
    auto it = meta.find(key);
    return it == meta.end() ? nullptr : &it->second;
  };
  const std::string *model = get("model"), *step = get("step"),
                    *seedText = get("seed"), *epoch = get("data_epoch"),
                    *position = get("data_position");
  if (!model || !step || !seedText || !epoch || !position) {
    error = path + ": not a Hotstage checkpoint (missing metadata)";
    return false;
  }
  if (*model != plan.model) {
    error = path + ": checkpoint of model '" + *model + "', not '" +
            plan.model + "'";
    return false;
  }
  for (auto &[id, b] : plan.buffers) {
    if (b.kind != "param" && !(b.kind == "state" && b.role != "grad"))
      continue;
    const TensorEntry *t = file->find(b.name);
    if (!t) {
      error = path + ": no tensor '" + b.name + "'";
      return false;
    }
    if (t->dtype != DType::F32 || t->shape != b.shape) {
      std::string want, got;
      for (int64_t d : b.shape)
        want += (want.empty() ? "" : ", ") + std::to_string(d);
      for (int64_t d : t->shape)
        got += (got.empty() ? "" : ", ") + std::to_string(d);
      error = path + ": tensor '" + b.name + "' is " + dtypeName(t->dtype) +
              "[" + got + "], the model needs F32[" + want + "]";
      return false;
    }
    std::memcpy(exec.buffer(b), t->data, static_cast<size_t>(b.bytes));
  }
  state.step = std::stoll(*step);
  seed = std::stoull(*seedText);
  state.cursor.epoch = std::stoull(*epoch);
  state.cursor.position = std::stoull(*position);
  return true;
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

  TrainState state;
  uint64_t seed = options.seed;
  if (!options.resumeDir.empty()) {
    std::string path = newestCheckpoint(options.resumeDir, error);
    if (path.empty() || !loadCheckpoint(plan, exec, path, state, seed, error))
      fatal(error);
    if (seed != options.seed && options.seed != TrainOptions().seed)
      std::fprintf(stderr, "note: resuming with the checkpoint's seed %llu\n",
                   static_cast<unsigned long long>(seed));
    loader = std::make_unique<BatchLoader>(*data, plan.batch, plan.seq, seed);
    if (!loader->init(error) || !loader->seek(state.cursor, error))
      fatal(options.resumeDir + ": " + error);
    std::fprintf(stderr, "resumed from %s at step %lld\n", path.c_str(),
                 static_cast<long long>(state.step));
  } else {
    initParameters(plan, exec, seed);
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

  while (state.step < options.steps) {
    auto start = std::chrono::steady_clock::now();
    float lossSum = 0;
    for (int64_t m = 0; m < plan.microbatches; ++m) {
      loader->next(tokens, targets);
      if (!exec.run("forward", error) || !exec.run("backward_input", error) ||
          !exec.run("backward_weight", error))
        fatal("step " + std::to_string(state.step + 1) + ": " + error);
      lossSum += *loss;
    }
    *step = state.step;
    *total = options.steps;
    if (!exec.run("optimizer_step", error))
      fatal("step " + std::to_string(state.step + 1) + ": " + error);
    ++state.step;
    state.cursor = loader->cursor();
    double ms = std::chrono::duration<double, std::milli>(
                    std::chrono::steady_clock::now() - start)
                    .count();

    StepMetrics m;
    m.step = state.step;
    m.loss = lossSum / static_cast<float>(plan.microbatches);
    m.lr = *lr;
    m.gradNorm = *gradNorm;
    m.milliseconds = ms;
    m.tokensPerSecond = tokensPerStep / (ms / 1000.0);
    if (!std::isfinite(m.loss))
      fatal("step " + std::to_string(state.step) + ": the loss is " +
            formatFloat(m.loss));
    if (metrics.isOpen())
      metrics.write(m);
    if (state.step % options.logEvery == 0 || state.step == options.steps)
      progress.update(m);
    if (!options.ckptDir.empty() && options.ckptEvery > 0 &&
        state.step % options.ckptEvery == 0 && state.step < options.steps &&
        !saveCheckpoint(plan, exec, options.ckptDir, state, seed, error))
      fatal(error);
  }
  progress.finish();
  if (!options.ckptDir.empty() &&
      !saveCheckpoint(plan, exec, options.ckptDir, state, seed, error))
    fatal(error);
  return 0;
}
