//===- Checkpoint.cpp - Training checkpoints and weight files -------------===//

#include "runtime/checkpoint/Checkpoint.h"

#include "runtime/checkpoint/SafeTensors.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <memory>
#include <sys/stat.h>

namespace hotstage::rt {

namespace {

constexpr const char *kFormat = "hotstage-checkpoint/1";

/// Parameters and optimizer states; gradients are zero between steps and
/// are not saved, nor are the bf16 copies of weights (made from them).
bool isSaved(const PlanBuffer &b) {
  // Gradients and a pipeline's per-parameter norms live within a step.
  return b.kind == "param" || (b.kind == "state" && b.role != "grad" &&
                               b.role != "norm" && b.role != "bf16");
}

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string text;
  for (int64_t d : shape)
    text += (text.empty() ? "" : ", ") + std::to_string(d);
  return "[" + text + "]";
}

/// Checks that `file` holds every buffer `wanted` selects as F32 of the
/// right shape, then copies them into the arena.
template <typename Wanted>
bool restoreTensors(const Plan &plan, Executor &exec,
                    const SafeTensorsFile &file, Wanted wanted,
                    std::string &error) {
  for (auto &[id, b] : plan.buffers) {
    if (!wanted(b))
      continue;
    const TensorEntry *t = file.find(b.name);
    if (!t) {
      error = file.path() + ": no tensor '" + b.name + "' (model " +
              plan.model + " needs it)";
      return false;
    }
    if (t->dtype != DType::F32 || t->shape != b.shape) {
      error = file.path() + ": tensor '" + b.name + "' is " +
              dtypeName(t->dtype) + shapeText(t->shape) +
              ", the model needs F32" + shapeText(b.shape);
      return false;
    }
  }
  for (auto &[id, b] : plan.buffers)
    if (wanted(b))
      std::memcpy(exec.buffer(b), file.find(b.name)->data,
                  static_cast<size_t>(b.bytes));
  return true;
}

bool parseUnsigned(const std::string &text, uint64_t &value) {
  if (text.empty() || text.size() > 20)
    return false;
  value = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      return false;
    uint64_t digit = uint64_t(c - '0');
    if (value > (UINT64_MAX - digit) / 10)
      return false;
    value = value * 10 + digit;
  }
  return true;
}

} // namespace

std::string checkpointName(int64_t step, int stage) {
  char name[64];
  if (stage >= 0)
    std::snprintf(name, sizeof name, "step_%08lld.stage_%d.safetensors",
                  static_cast<long long>(step), stage);
  else
    std::snprintf(name, sizeof name, "step_%08lld.safetensors",
                  static_cast<long long>(step));
  return name;
}

std::string newestCheckpoint(const std::string &dir, std::string &error,
                             int stage) {
  DIR *d = opendir(dir.c_str());
  if (!d) {
    error =
        dir + ": cannot open the checkpoint folder: " + std::strerror(errno);
    return "";
  }
  std::string best;
  const std::string example = checkpointName(0, stage);
  const std::string suffix = example.substr(13); // after step_NNNNNNNN
  while (dirent *e = readdir(d)) {
    std::string name = e->d_name;
    // Temporary files of an interrupted write end in .tmp.<pid>: skipped.
    if (name.size() == example.size() && name.rfind("step_", 0) == 0 &&
        name.compare(13, std::string::npos, suffix) == 0 && name > best)
      best = name;
  }
  closedir(d);
  if (best.empty()) {
    error = dir + ": no checkpoint (step_*.safetensors) to resume from";
    return "";
  }
  return dir + "/" + best;
}

bool saveCheckpoint(const Plan &plan, Executor &exec, const std::string &dir,
                    const CheckpointState &state, std::string &error,
                    int stage) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    error =
        dir + ": cannot create the checkpoint folder: " + std::strerror(errno);
    return false;
  }
  SafeTensorsWriter writer;
  for (auto &[id, b] : plan.buffers)
    if (isSaved(b))
      writer.add(b.name, DType::F32, b.shape, exec.buffer(b),
                 static_cast<size_t>(b.bytes));
  writer.setMetadata("format", kFormat);
  writer.setMetadata("model", plan.model);
  writer.setMetadata("step", std::to_string(state.step));
  writer.setMetadata("seed", std::to_string(state.seed));
  writer.setMetadata("data_epoch", std::to_string(state.dataEpoch));
  writer.setMetadata("data_position", std::to_string(state.dataPosition));
  return writer.writeAtomically(dir + "/" + checkpointName(state.step, stage),
                                error);
}

bool loadCheckpoint(const Plan &plan, Executor &exec, const std::string &path,
                    CheckpointState &state, std::string &error) {
  auto file = SafeTensorsFile::open(path, error);
  if (!file)
    return false;
  const auto &meta = file->metadata();
  auto get = [&](const char *key) -> const std::string * {
    auto it = meta.find(key);
    return it == meta.end() ? nullptr : &it->second;
  };
  const std::string *format = get("format");
  if (!format || *format != kFormat) {
    error = path + ": not a Hotstage checkpoint (metadata 'format' is " +
            (format ? "'" + *format + "'" : std::string("missing")) +
            ", expected '" + kFormat + "')";
    return false;
  }
  const std::string *model = get("model");
  if (!model || *model != plan.model) {
    error = path + ": a checkpoint of model '" + (model ? *model : "?") +
            "', not of '" + plan.model + "'";
    return false;
  }
  CheckpointState read;
  uint64_t step = 0;
  struct {
    const char *key;
    uint64_t *value;
  } fields[] = {{"step", &step},
                {"seed", &read.seed},
                {"data_epoch", &read.dataEpoch},
                {"data_position", &read.dataPosition}};
  for (auto &f : fields) {
    const std::string *text = get(f.key);
    if (!text || !parseUnsigned(*text, *f.value)) {
      error = path + ": metadata '" + f.key + "' is " +
              (text ? "'" + *text + "'" : std::string("missing")) +
              ", expected a non-negative integer";
      return false;
    }
  }
  if (step > uint64_t(INT64_MAX)) {
    error = path + ": metadata 'step' is out of range";
    return false;
  }
  read.step = int64_t(step);
  if (!restoreTensors(plan, exec, *file, isSaved, error))
    return false;
  state = read;
  return true;
}

bool loadWeights(const Plan &plan, Executor &exec, const std::string &path,
                 int64_t &ignored, std::string &error) {
  auto file = SafeTensorsFile::open(path, error);
  if (!file)
    return false;
  auto isParam = [](const PlanBuffer &b) { return b.kind == "param"; };
  if (!restoreTensors(plan, exec, *file, isParam, error))
    return false;
  ignored = 0;
  for (const TensorEntry &t : file->tensors()) {
    const PlanBuffer *b = plan.find("param", t.name);
    ignored += b == nullptr;
  }
  return true;
}

} // namespace hotstage::rt
