//===- GradCheck.cpp - Gradients against finite differences ---------------===//

#include "runtime/train/GradCheck.h"

#include "runtime/support/Random.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace hotstage::rt {

namespace {

/// Stream numbers of the random directions, apart from the initializers'.
constexpr uint64_t kDirectionStream = uint64_t(1) << 40;

struct Batches {
  std::vector<std::vector<int32_t>> tokens, targets;
};

} // namespace

int64_t runGradCheck(const Plan &plan, Executor &exec, BatchLoader &loader,
                     const GradCheckOptions &options, std::FILE *out,
                     std::string &error) {
  const PlanBuffer *tokensBuf = plan.find("input", "tokens");
  const PlanBuffer *targetsBuf = plan.find("input", "targets");
  const PlanBuffer *lossBuf = plan.find("scalar", "loss");
  if (!tokensBuf || !targetsBuf || !lossBuf) {
    error = "the plan lacks the tokens, targets or loss buffer";
    return -1;
  }
  auto *tokens = static_cast<int32_t *>(exec.buffer(*tokensBuf));
  auto *targets = static_cast<int32_t *>(exec.buffer(*targetsBuf));
  auto *loss = static_cast<float *>(exec.buffer(*lossBuf));
  size_t count = size_t(plan.batch * plan.seq);

  // One optimizer step's worth of microbatches, kept to replay.
  Batches batches;
  for (int64_t m = 0; m < plan.microbatches; ++m) {
    batches.tokens.emplace_back(count);
    batches.targets.emplace_back(count);
    loader.next(batches.tokens.back().data(), batches.targets.back().data());
  }
  auto load = [&](int64_t m) {
    std::memcpy(tokens, batches.tokens[m].data(), count * sizeof(int32_t));
    std::memcpy(targets, batches.targets[m].data(), count * sizeof(int32_t));
  };
  // The step's loss: the mean over microbatches, as the training loop has it.
  bool ok = true;
  auto lossNow = [&]() {
    double sum = 0;
    for (int64_t m = 0; m < plan.microbatches && ok; ++m) {
      load(m);
      ok = exec.run("forward", error);
      sum += *loss;
    }
    return sum / double(plan.microbatches);
  };

  for (auto &[id, b] : plan.buffers)
    if (b.kind == "state" && b.role == "grad")
      std::memset(exec.buffer(b), 0, size_t(b.bytes));
  for (int64_t m = 0; m < plan.microbatches; ++m) {
    load(m);
    if (!exec.run("forward", error) || !exec.runBackward(error))
      return -1;
  }
  double base = lossNow();
  if (!ok)
    return -1;
  std::fprintf(out, "loss %.9g on %lld microbatch(es) of %lldx%lld tokens\n",
               base, static_cast<long long>(plan.microbatches),
               static_cast<long long>(plan.batch),
               static_cast<long long>(plan.seq));

  int64_t failures = 0, stream = 0;
  for (auto &[id, b] : plan.buffers) {
    if (b.kind != "param")
      continue;
    std::vector<const PlanBuffer *> gradBufs = plan.gradients(b.name);
    if (gradBufs.empty()) {
      error = "parameter '" + b.name + "' has no gradient buffer";
      return -1;
    }
    size_t n = size_t(b.numElements());
    auto *param = static_cast<float *>(exec.buffer(b));
    std::vector<float> summed = sumGradients(exec, gradBufs);
    const float *grad = summed.data();
    std::vector<float> saved(param, param + n);

    double gradNorm = 0;
    for (size_t i = 0; i < n; ++i)
      gradNorm += double(grad[i]) * grad[i];
    gradNorm = std::sqrt(gradNorm);

    for (int kind = 0; kind < 2; ++kind) {
      // kind 0: along the gradient; kind 1: the gradient's direction plus
      // a random unit vector, so the signal stays about |g| / sqrt(2) while
      // an error orthogonal to g still moves the two sides apart.
      std::vector<double> dir(n, 0.0);
      if (gradNorm > 0)
        for (size_t i = 0; i < n; ++i)
          dir[i] = grad[i] / gradNorm;
      if (kind == 1 || gradNorm == 0) {
        std::vector<double> r(n);
        double rn = 0;
        for (size_t i = 0; i < n; ++i) {
          r[i] = normalAt(options.seed, kDirectionStream + stream, i, 0, 1);
          rn += r[i] * r[i];
        }
        double norm = 0;
        for (size_t i = 0; i < n; ++i) {
          dir[i] += r[i] / std::sqrt(rn);
          norm += dir[i] * dir[i];
        }
        for (double &d : dir)
          d /= std::sqrt(norm);
      }
      double analytic = 0;
      for (size_t i = 0; i < n; ++i)
        analytic += grad[i] * dir[i];

      auto lossAlong = [&](double h) {
        for (size_t i = 0; i < n; ++i)
          param[i] = float(saved[i] + h * dir[i]);
        return lossNow();
      };
      auto central = [&](double h) {
        return (lossAlong(h) - lossAlong(-h)) / (2 * h);
      };
      double h = options.step;
      double numeric = (4 * central(h / 2) - central(h)) / 3;
      std::memcpy(param, saved.data(), n * sizeof(float));
      if (!ok)
        return -1;

      double diff = std::fabs(analytic - numeric);
      double scale = std::max(std::fabs(analytic), std::fabs(numeric));
      bool pass = diff <= options.relTol * scale + options.absTol;
      failures += !pass;
      std::fprintf(out,
                   "%-4s %-40s %-8s analytic %+.6e numeric %+.6e "
                   "rel %.2e\n",
                   pass ? "ok" : "FAIL", b.name.c_str(),
                   kind == 0 ? "gradient" : "mixed", analytic, numeric,
                   scale > 0 ? diff / scale : 0.0);
    }
    ++stream;
  }
  return failures;
}

} // namespace hotstage::rt
