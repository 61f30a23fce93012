//===- WholeStepTest.cpp - A training step run whole ----------------------===//
//
// Executor::startStep runs a step's microbatches and optimizer as one
// program of the device. These tests use a plan of three small kernels
// and the host's stand-in device (HOTSTAGE_DEVICE=copy), which records a
// program once, replays it at the wait and refuses copies from memory
// that is not its own: what a CUDA graph requires of the loop.
//
//===----------------------------------------------------------------------===//

#include "runtime/host/Device.h"
#include "runtime/host/Executor.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <vector>

using namespace hotstage::rt;

namespace {

// forward: loss = w * (tokens[0] + targets[1]); backward: w:grad +=
// tokens[0]; optimizer: lr = step / 2, grad_norm = w:grad, w -= w:grad / 100,
// w:grad = 0.
const char *kPlan = R"(hotstage-plan 1
model Tiny
microbatches 3
batch 1
seq 2
vocab 100
arena 1024
persistent 1024
buffer 0 param w f32 1 offset 0 bytes 4 init zeros 0 0
buffer 1 state w:grad f32 1 offset 64 bytes 4 role grad of w
buffer 2 input tokens i32 1x2 offset 128 bytes 8
buffer 3 input targets i32 1x2 offset 192 bytes 8
buffer 4 scalar loss f32 scalar offset 256 bytes 4
buffer 5 scalar step i64 scalar offset 320 bytes 8
buffer 6 scalar total_steps i64 scalar offset 384 bytes 8
buffer 7 scalar lr f32 scalar offset 448 bytes 4
buffer 8 scalar grad_norm f32 scalar offset 512 bytes 4
kernel 0 forward
kernel 1 backward
kernel 2 optimizer
function forward 1
  call 0 1 4 2 3 0 4
function backward 1
  call 1 1 2 2 1
function optimizer_step 1
  call 2 1 5 5 0 1 7 8
end
)";

void forwardKernel(int32_t *tokens, int32_t *targets, float *w, float *loss,
                   int64_t, int64_t) {
  *loss = *w * static_cast<float>(tokens[0] + targets[1]);
}
void backwardKernel(int32_t *tokens, float *grad, int64_t, int64_t) {
  *grad += static_cast<float>(tokens[0]);
}
void optimizerKernel(int64_t *step, float *w, float *grad, float *lr,
                     float *gradNorm, int64_t, int64_t) {
  *lr = static_cast<float>(*step) / 2;
  *gradNorm = *grad;
  *w -= *grad / 100;
  *grad = 0;
}
const KernelFn kKernels[] = {reinterpret_cast<KernelFn>(&forwardKernel),
                             reinterpret_cast<KernelFn>(&backwardKernel),
                             reinterpret_cast<KernelFn>(&optimizerKernel)};

struct Fixture {
  Plan plan;
  std::unique_ptr<Executor> exec;
  std::string error;

  /// `device`: the stand-in (HOTSTAGE_DEVICE=copy), else none.
  explicit Fixture(bool device) {
    EXPECT_TRUE(parsePlan(kPlan, plan, error)) << error;
    std::unique_ptr<Device> d;
    if (device) {
      setenv("HOTSTAGE_DEVICE", "copy", 1);
      d = createDevice(plan, kKernels, 1, error);
      unsetenv("HOTSTAGE_DEVICE");
      EXPECT_NE(d, nullptr) << error;
    }
    exec = std::make_unique<Executor>(plan, kKernels, 1, std::move(d));
    *static_cast<float *>(exec->buffer(buffer("w"))) = 1;
    EXPECT_TRUE(exec->toDevice(error)) << error;
    EXPECT_TRUE(exec->prepareSteps(3, 2, error)) << error;
  }
  const PlanBuffer &buffer(const char *name) {
    for (auto &[id, b] : plan.buffers)
      if (b.name == name)
        return b;
    ADD_FAILURE() << "no buffer " << name;
    return plan.buffers.begin()->second;
  }
  /// Microbatch m of step `step` in set `set`: tokens {base + m, 0},
  /// targets {0, 10}.
  void load(int set, int64_t step, int32_t base) {
    for (int m = 0; m < 3; ++m) {
      auto *tokens =
          static_cast<int32_t *>(exec->stepInput(set, m, buffer("tokens")));
      auto *targets =
          static_cast<int32_t *>(exec->stepInput(set, m, buffer("targets")));
      tokens[0] = base + m;
      tokens[1] = 0;
      targets[0] = 0;
      targets[1] = 10;
    }
    *static_cast<int64_t *>(exec->stepScalar(set, -1, buffer("step"))) = step;
  }
  float scalar(int set, int run, const char *name) {
    return *static_cast<float *>(exec->stepScalar(set, run, buffer(name)));
  }
};

/// The losses of each microbatch and the optimizer's scalars, step after
/// step, as the loop reads them.
std::vector<float> train(Fixture &f) {
  std::vector<float> seen;
  int32_t bases[] = {1, 5, 2, 7};
  for (int step = 0; step < 4; ++step) {
    int set = step % 2;
    f.load(set, step, bases[step]);
    EXPECT_TRUE(f.exec->startStep(set, f.error)) << f.error;
    EXPECT_TRUE(f.exec->finishStep(f.error)) << f.error;
    for (int m = 0; m < 3; ++m)
      seen.push_back(f.scalar(set, f.exec->forwardRun(m), "loss"));
    seen.push_back(f.scalar(set, f.exec->optimizerRun(), "lr"));
    seen.push_back(f.scalar(set, f.exec->optimizerRun(), "grad_norm"));
  }
  return seen;
}

TEST(WholeStep, HostRunsTheMicrobatchesThenTheOptimizer) {
  Fixture f(/*device=*/false);
  std::vector<float> seen = train(f);
  // Step 0: w = 1, tokens 1, 2, 3: losses 11, 12, 13, gradient 6.
  EXPECT_EQ(seen[0], 11);
  EXPECT_EQ(seen[1], 12);
  EXPECT_EQ(seen[2], 13);
  EXPECT_EQ(seen[3], 0);
  EXPECT_EQ(seen[4], 6);
  // Step 1: w = 0.94, tokens 5, 6, 7; lr = 1 / 2, gradient 18.
  EXPECT_FLOAT_EQ(seen[5], 0.94f * 15);
  EXPECT_EQ(seen[8], 0.5f);
  EXPECT_EQ(seen[9], 18);
  EXPECT_EQ(f.exec->forwardRun(1), 2);
  EXPECT_EQ(f.exec->optimizerRun(), 6);
}

TEST(WholeStep, DeviceProgramsEqualTheHost) {
  Fixture host(/*device=*/false), device(/*device=*/true);
  EXPECT_EQ(train(host), train(device));
}

TEST(WholeStep, DeviceProgramRunsAtTheWaitOnTheMemoryThen) {
  Fixture f(/*device=*/true);
  f.load(0, 0, 1);
  ASSERT_TRUE(f.exec->startStep(0, f.error)) << f.error;
  // Nothing has run yet, and what the host writes before the wait is what
  // the program reads: a loop must not touch a set while it is queued.
  EXPECT_EQ(f.scalar(0, 0, "loss"), 0);
  f.load(0, 0, 2);
  ASSERT_TRUE(f.exec->finishStep(f.error)) << f.error;
  EXPECT_EQ(f.scalar(0, 0, "loss"), 12);
  // Replayed without recording again: new inputs, new results.
  f.load(0, 1, 3);
  ASSERT_TRUE(f.exec->startStep(0, f.error)) << f.error;
  ASSERT_TRUE(f.exec->finishStep(f.error)) << f.error;
  EXPECT_FLOAT_EQ(f.scalar(0, 0, "loss"), (1 - 0.09f) * 13);
}

TEST(WholeStep, QueuedBeforeOptimizerRunsBetweenBackwardAndOptimizer) {
  // As a data-parallel step queues its all-reduce: here a copy into the
  // gradient from the device's memory, which the optimizer must read (its
  // grad_norm) and the backward must not add to.
  for (bool device : {false, true}) {
    Fixture f(device);
    float sum = 40;
    char *own = device ? f.exec->device()->hostMemory(4, f.error)
                       : reinterpret_cast<char *>(&sum);
    ASSERT_NE(own, nullptr) << f.error;
    std::memcpy(own, &sum, 4);
    const PlanBuffer &grad = f.buffer("w:grad");
    int calls = 0;
    f.exec->queueBeforeOptimizer([&](std::string &error) {
      ++calls;
      if (!device) {
        std::memcpy(f.exec->buffer(grad), own, 4);
        return true;
      }
      return f.exec->device()->upload(own, grad.offset, 4, error);
    });
    for (int step = 0; step < 2; ++step) {
      f.load(0, step, 1);
      ASSERT_TRUE(f.exec->startStep(0, f.error)) << f.error;
      ASSERT_TRUE(f.exec->finishStep(f.error)) << f.error;
      EXPECT_EQ(f.scalar(0, f.exec->optimizerRun(), "grad_norm"), 40);
    }
    // The device records it once, with the step's program.
    EXPECT_EQ(calls, device ? 1 : 2);
  }
}

TEST(WholeStep, DeviceRefusesAProgramCopyingOtherMemory) {
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(kPlan, plan, error)) << error;
  setenv("HOTSTAGE_DEVICE", "copy", 1);
  std::unique_ptr<Device> device = createDevice(plan, kKernels, 1, error);
  unsetenv("HOTSTAGE_DEVICE");
  ASSERT_NE(device, nullptr) << error;
  int32_t tokens[2] = {1, 2};
  EXPECT_FALSE(device->replay(
      0,
      [&](std::string &error) {
        return device->upload(reinterpret_cast<const char *>(tokens), 128, 8,
                              error);
      },
      error));
  EXPECT_NE(error.find("host memory that is not the device's"),
            std::string::npos)
      << error;
  // From the device's own memory it is recorded.
  char *own = device->hostMemory(8, error);
  ASSERT_NE(own, nullptr) << error;
  EXPECT_TRUE(device->replay(
      1, [&](std::string &error) { return device->upload(own, 128, 8, error); },
      error))
      << error;
  EXPECT_TRUE(device->wait(error)) << error;
}

} // namespace

// A call may ask for its GPU blocks' size (`block B`: its threads share
// memory); the host runs it as any other. Sizes that are no whole number
// of warps, or more than a block holds, are refused.
TEST(PlanCalls, BlockSizes) {
  auto withCall = [](const std::string &call) {
    std::string text = kPlan;
    size_t at = text.find("  call 0 1 4 2 3 0 4\n");
    return text.replace(at, 21, "  " + call + "\n");
  };
  Plan plan;
  std::string error;
  ASSERT_TRUE(parsePlan(withCall("call 0 1 4 2 3 0 4 block 256 # loss").c_str(),
                        plan, error))
      << error;
  EXPECT_EQ(plan.functions["forward"].at(0).block, 256);
  EXPECT_EQ(plan.functions["backward"].at(0).block, 0);
  for (const char *bad :
       {"call 0 1 4 2 3 0 4 block 48", "call 0 1 4 2 3 0 4 block 2048",
        "call 0 1 4 2 3 0 4 block", "call 0 1 4 2 3 0 4 threads 64"}) {
    Plan p;
    std::string e;
    EXPECT_FALSE(parsePlan(withCall(bad).c_str(), p, e)) << bad;
    EXPECT_NE(e.find("bad call block"), std::string::npos) << e;
  }
}
