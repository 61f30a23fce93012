//===- CheckpointTest.cpp - Checkpoints and weight files ------------------===//

#include "runtime/checkpoint/Checkpoint.h"
#include "runtime/checkpoint/SafeTensors.h"

#include "TestUtil.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace hotstage::rt;
using hotstage::rt::test::TempDir;

namespace {

// Two parameters with their AdamW moments and gradients; no kernels.
const char *kPlan = R"(hotstage-plan 1
model Tiny
microbatches 1
batch 1
seq 2
vocab 4
arena 1024
persistent 1024
buffer 0 param w f32 2x3 offset 0 bytes 24 init normal 0 0.02
buffer 1 param b f32 3 offset 64 bytes 12 init zeros 0 0
buffer 2 state w:grad f32 2x3 offset 128 bytes 24 role grad of w
buffer 3 state w:exp_avg f32 2x3 offset 192 bytes 24 role exp_avg of w
buffer 4 state b:grad f32 3 offset 256 bytes 12 role grad of b
buffer 5 state b:exp_avg f32 3 offset 320 bytes 12 role exp_avg of b
end
)";

struct Fixture {
  Plan plan;
  std::unique_ptr<Executor> exec;

  explicit Fixture(const char *text = kPlan) {
    std::string error;
    EXPECT_TRUE(parsePlan(text, plan, error)) << error;
    exec = std::make_unique<Executor>(plan, nullptr, 1);
  }
  float *data(const char *kind, const char *name) {
    return static_cast<float *>(exec->buffer(*plan.find(kind, name)));
  }
  /// Every persistent float set to a value that names its place.
  void fill(float base) {
    for (auto &[id, b] : plan.buffers) {
      auto *p = static_cast<float *>(exec->buffer(b));
      for (int64_t i = 0; i < b.numElements(); ++i)
        p[i] = base + float(id * 10 + i);
    }
  }
};

CheckpointState someState() {
  CheckpointState s;
  s.step = 42;
  s.seed = 7;
  s.dataEpoch = 1;
  s.dataPosition = 96;
  return s;
}

TEST(Checkpoint, RoundTrip) {
  TempDir dir;
  Fixture a;
  a.fill(0.5f);
  std::string error;
  ASSERT_TRUE(saveCheckpoint(a.plan, *a.exec, dir.path(), someState(), error))
      << error;
  std::string path = newestCheckpoint(dir.path(), error);
  EXPECT_EQ(path, dir.file("step_00000042.safetensors"));

  Fixture b;
  CheckpointState s;
  ASSERT_TRUE(loadCheckpoint(b.plan, *b.exec, path, s, error)) << error;
  EXPECT_EQ(s.step, 42);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(s.dataEpoch, 1u);
  EXPECT_EQ(s.dataPosition, 96u);
  EXPECT_EQ(b.data("param", "w")[5], a.data("param", "w")[5]);
  EXPECT_EQ(b.data("state", "b:exp_avg")[2], a.data("state", "b:exp_avg")[2]);
  // Gradients are zero between steps and are not saved.
  EXPECT_EQ(b.data("state", "w:grad")[0], 0.0f);
}

TEST(Checkpoint, NewestSkipsTemporaries) {
  TempDir dir;
  Fixture a;
  std::string error;
  CheckpointState s = someState();
  ASSERT_TRUE(saveCheckpoint(a.plan, *a.exec, dir.path(), s, error));
  s.step = 100;
  ASSERT_TRUE(saveCheckpoint(a.plan, *a.exec, dir.path(), s, error));
  // An interrupted write leaves a temporary that must never be resumed.
  test::writeBytes(dir.file("step_00000200.safetensors.tmp.123"), {1, 2});
  EXPECT_EQ(newestCheckpoint(dir.path(), error),
            dir.file("step_00000100.safetensors"));

  TempDir empty;
  EXPECT_EQ(newestCheckpoint(empty.path(), error), "");
  EXPECT_EQ(error, empty.path() +
                       ": no checkpoint (step_*.safetensors) to resume from");
  EXPECT_EQ(newestCheckpoint(empty.file("nope"), error), "");
  EXPECT_EQ(error, empty.file("nope") +
                       ": cannot open the checkpoint folder: No such file or "
                       "directory");
}

/// Saves a checkpoint of `writer` and returns the error of loading it into
/// the default fixture, which must be left untouched.
std::string loadError(Fixture &writer, const CheckpointState &state) {
  TempDir dir;
  std::string error;
  EXPECT_TRUE(
      saveCheckpoint(writer.plan, *writer.exec, dir.path(), state, error));
  Fixture reader;
  reader.fill(-1.0f);
  CheckpointState s;
  EXPECT_FALSE(loadCheckpoint(reader.plan, *reader.exec,
                              dir.file(checkpointName(state.step)), s, error));
  EXPECT_EQ(reader.data("param", "w")[0], -1.0f + 0.0f);
  EXPECT_EQ(reader.data("param", "b")[2], -1.0f + 12.0f);
  size_t slash = error.rfind('/');
  return slash == std::string::npos ? error : error.substr(slash + 1);
}

TEST(Checkpoint, WrongModel) {
  std::string text = kPlan;
  text.replace(text.find("Tiny"), 4, "Other");
  Fixture other(text.c_str());
  EXPECT_EQ(loadError(other, someState()),
            "step_00000042.safetensors: a checkpoint of model 'Other', not "
            "of 'Tiny'");
}

TEST(Checkpoint, WrongShape) {
  std::string text = kPlan;
  text.replace(text.find("param b f32 3 "), 14, "param b f32 4 ");
  text.replace(text.find("bytes 12 init"), 8, "bytes 16");
  Fixture other(text.c_str());
  EXPECT_EQ(loadError(other, someState()),
            "step_00000042.safetensors: tensor 'b' is F32[4], the model "
            "needs F32[3]");
}

TEST(Checkpoint, MissingTensor) {
  std::string text = kPlan;
  size_t line = text.find("buffer 5");
  text.erase(line, text.find('\n', line) + 1 - line);
  Fixture other(text.c_str());
  EXPECT_EQ(loadError(other, someState()),
            "step_00000042.safetensors: no tensor 'b:exp_avg' (model Tiny "
            "needs it)");
}

TEST(Checkpoint, TruncatedAndForeignFiles) {
  TempDir dir;
  Fixture a;
  std::string error;
  ASSERT_TRUE(saveCheckpoint(a.plan, *a.exec, dir.path(), someState(), error));
  std::string path = dir.file("step_00000042.safetensors");
  std::vector<uint8_t> bytes = test::readBytes(path);
  bytes.resize(bytes.size() - 5);
  test::writeBytes(path, bytes);
  CheckpointState s;
  EXPECT_FALSE(loadCheckpoint(a.plan, *a.exec, path, s, error));
  EXPECT_NE(error.find(path + ": "), std::string::npos) << error;

  // Weights written by another program: fine for --init-from, not a
  // checkpoint to resume.
  float w[6] = {1, 2, 3, 4, 5, 6}, b[3] = {7, 8, 9}, extra = 0;
  SafeTensorsWriter writer;
  writer.add("w", DType::F32, {2, 3}, w, sizeof w);
  writer.add("b", DType::F32, {3}, b, sizeof b);
  writer.add("lm_head.scale", DType::F32, {}, &extra, sizeof extra);
  std::string weights = dir.file("weights.safetensors");
  ASSERT_TRUE(writer.writeAtomically(weights, error)) << error;
  EXPECT_FALSE(loadCheckpoint(a.plan, *a.exec, weights, s, error));
  EXPECT_EQ(error, weights + ": not a Hotstage checkpoint (metadata 'format' "
                             "is missing, expected 'hotstage-checkpoint/1')");
  int64_t ignored = -1;
  ASSERT_TRUE(loadWeights(a.plan, *a.exec, weights, ignored, error)) << error;
  EXPECT_EQ(ignored, 1);
  EXPECT_EQ(a.data("param", "w")[5], 6.0f);
  EXPECT_EQ(a.data("param", "b")[0], 7.0f);
}

TEST(Checkpoint, BadMetadata) {
  TempDir dir;
  float w[6] = {}, b[3] = {};
  SafeTensorsWriter writer;
  writer.add("w", DType::F32, {2, 3}, w, sizeof w);
  writer.add("b", DType::F32, {3}, b, sizeof b);
  writer.setMetadata("format", "hotstage-checkpoint/1");
  writer.setMetadata("model", "Tiny");
  writer.setMetadata("step", "12x");
  std::string path = dir.file("step_00000012.safetensors");
  std::string error;
  ASSERT_TRUE(writer.writeAtomically(path, error)) << error;
  Fixture a;
  CheckpointState s;
  EXPECT_FALSE(loadCheckpoint(a.plan, *a.exec, path, s, error));
  EXPECT_EQ(error, path + ": metadata 'step' is '12x', expected a "
                          "non-negative integer");
}

} // namespace
