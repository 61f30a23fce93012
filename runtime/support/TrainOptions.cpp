//===- TrainOptions.cpp - The model executable's command line -------------===//

#include "runtime/support/TrainOptions.h"

#include <cstring>
#include <string_view>

namespace hotstage::rt {

namespace {
constexpr int kMaxThreads = 4096;

bool isHelp(std::string_view arg) { return arg == "--help" || arg == "-h"; }

/// A non-negative decimal integer no larger than `max`.
bool parseNumber(std::string_view option, std::string_view text, uint64_t max,
                 uint64_t &value, std::string &error) {
  std::string shown = "--" + std::string(option);
  if (!text.empty() && text[0] == '-' && text.size() > 1 && text[1] >= '0' &&
      text[1] <= '9') {
    error = shown + " must not be negative (got '" + std::string(text) + "')";
    return false;
  }
  if (text.empty()) {
    error = "missing value for " + shown;
    return false;
  }
  value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') {
      error = shown + " expects a non-negative integer, not '" +
              std::string(text) + "'";
      return false;
    }
    uint64_t digit = uint64_t(c - '0');
    if (value > (max - digit) / 10) {
      error = shown + " value '" + std::string(text) + "' is too large (at " +
              "most " + std::to_string(max) + ")";
      return false;
    }
    value = value * 10 + digit;
  }
  return true;
}
} // namespace

bool parseTrainOptions(int argc, char **argv, TrainOptions &options,
                       std::string &error) {
  options = TrainOptions();
  const char *program = argc > 0 && argv[0] ? argv[0] : "model";
  if (argc < 2) {
    error = std::string("missing command; try '") + program + " --help'";
    return false;
  }
  std::string_view command = argv[1];
  if (isHelp(command)) {
    options.help = true;
    return true;
  }
  if (command != "train" && command != "gradcheck") {
    error = "unknown command '" + std::string(command) +
            "' (expected 'train' or 'gradcheck'); try '" + program + " --help'";
    return false;
  }
  options.command = command;
  bool train = command == "train";
  for (int i = 2; i < argc; ++i)
    if (isHelp(argv[i])) {
      options.help = true;
      return true;
    }

  bool haveSteps = false, haveCkptEvery = false;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg.size() < 3 || arg.substr(0, 2) != "--") {
      error = "unexpected argument '" + std::string(arg) + "'";
      return false;
    }
    std::string_view name = arg.substr(2), value;
    bool inlineValue = false;
    if (size_t eq = name.find('='); eq != std::string_view::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      inlineValue = true;
    }
    std::string shown = "--" + std::string(name);
    static const char *const trainOnly[] = {
        "steps",  "metrics",   "ckpt",  "ckpt-every",
        "resume", "log-every", "trace", "comm-timeout"};
    static const char *const shared[] = {"data", "seed", "init-from",
                                         "threads"};
    bool isShared = false, isTrainOnly = false;
    for (const char *k : shared)
      isShared |= name == k;
    for (const char *k : trainOnly)
      isTrainOnly |= name == k;
    if (!isShared && !(train && isTrainOnly)) {
      error = "unknown option '" + shown + "' for " + std::string(command) +
              "; try '" + program + " " + std::string(command) + " --help'";
      return false;
    }
    if (!inlineValue) {
      // A following option is not a value: `--data --steps 5` forgot one.
      if (i + 1 >= argc || std::string_view(argv[i + 1]).substr(0, 2) == "--") {
        error = "missing value for " + shown;
        return false;
      }
      value = argv[++i];
    }
    if (value.empty()) {
      error = "missing value for " + shown;
      return false;
    }
    uint64_t n = 0;
    auto number = [&](uint64_t max) {
      return parseNumber(name, value, max, n, error);
    };
    if (name == "data") {
      options.data = value;
    } else if (name == "metrics") {
      options.metrics = value;
    } else if (name == "ckpt") {
      options.ckptDir = value;
    } else if (name == "resume") {
      options.resumeDir = value;
    } else if (name == "init-from") {
      options.initFrom = value;
    } else if (name == "trace") {
      options.trace = value;
    } else if (name == "seed") {
      if (!number(UINT64_MAX))
        return false;
      options.seed = n;
    } else if (name == "steps") {
      if (!number(INT64_MAX))
        return false;
      if (n == 0) {
        error = "--steps must be at least 1";
        return false;
      }
      options.steps = int64_t(n);
      haveSteps = true;
    } else if (name == "ckpt-every") {
      if (!number(INT64_MAX))
        return false;
      options.ckptEvery = int64_t(n);
      haveCkptEvery = true;
    } else if (name == "log-every") {
      if (!number(INT64_MAX))
        return false;
      if (n == 0) {
        error = "--log-every must be at least 1";
        return false;
      }
      options.logEvery = int64_t(n);
    } else if (name == "comm-timeout") {
      if (!number(INT64_MAX))
        return false;
      if (n == 0) {
        error = "--comm-timeout must be at least 1 (seconds)";
        return false;
      }
      options.commTimeout = int64_t(n);
    } else if (name == "threads") {
      if (!number(kMaxThreads))
        return false;
      options.threads = int(n);
    }
  }
  if (options.data.empty()) {
    error = "missing --data GLOB (the token shards to train on)";
    return false;
  }
  if (!train)
    return true;
  if (!haveSteps) {
    error = "missing --steps N (how many steps to train)";
    return false;
  }
  if (haveCkptEvery && options.ckptDir.empty()) {
    error = "--ckpt-every needs --ckpt DIR";
    return false;
  }
  if (!options.initFrom.empty() && !options.resumeDir.empty()) {
    error = "--init-from and --resume exclude each other (a resumed run "
            "takes its weights from the checkpoint)";
    return false;
  }
  return true;
}

std::string trainUsage(const char *programName, const char *modelName) {
  std::string p = programName ? programName : "model";
  std::string m = modelName ? modelName : "the model";
  return "Usage: " + p + " train --data GLOB --steps N [options]\n" +
         "       " + p +
         " gradcheck --data GLOB [--seed S] [--init-from "
         "FILE] [--threads N]\n" +
         "       " + p + " --help\n" + "\n" + "Trains " + m +
         " on llm.c token shards.\n"
         "\n"
         "Options for train:\n"
         "  --data GLOB        token shards (.bin, uint16 or uint32), e.g. "
         "'data/train_*.bin'; quote the glob\n"
         "  --steps N          number of optimizer steps to run (required)\n"
         "  --seed S           seed for parameter init and data order "
         "(default 1337)\n"
         "  --metrics FILE     write one JSON line of metrics per step to FILE "
         "(.jsonl)\n"
         "  --ckpt DIR         write a safetensors checkpoint to DIR at the "
         "end of training\n"
         "  --ckpt-every K     also checkpoint every K steps (default 0: only "
         "at the end; needs --ckpt)\n"
         "  --resume DIR       continue from the checkpoint in DIR (weights, "
         "optimizer, step, data position)\n"
         "  --init-from FILE   start from the weights in FILE (safetensors, "
         "F32, named as\n"
         "                     the model's parameters; a checkpoint works "
         "too)\n"
         "  --trace FILE       record the run in FILE (safetensors): the "
         "batches, step 1's\n"
         "                     loss and gradients, every step's loss, "
         "grad_norm and lr,\n"
         "                     and the final weights; FILE.json: the "
         "measured timeline of\n"
         "                     every rank's actions (Chrome trace, opens in "
         "Perfetto)\n"
         "  --comm-timeout S   multi-rank runs: a peer that makes no progress "
         "for S seconds\n"
         "                     ends the job, naming the rank, action and "
         "step (default 600)\n"
         "  --log-every K      print a progress line every K steps and after "
         "the first (default 1)\n"
         "  --threads N        CPU threads (default 0: $HOTSTAGE_NUM_THREADS, "
         "else all cores)\n"
         "  -h, --help         show this help and exit\n"
         "\n"
         "\n"
         "gradcheck compares the gradients of one batch (the first of the "
         "seed's\n"
         "order) with central finite differences of the loss along a random "
         "direction,\n"
         "one parameter at a time, prints a line per parameter, and exits "
         "1 if any\n"
         "relative error exceeds its tolerance.\n"
         "\n"
         "Options take '--opt value' or '--opt=value'. Environment: "
         "HOTSTAGE_PROFILE=1 prints\n"
         "the time of every action at exit; docs/training.md lists the "
         "others.\n";
}

} // namespace hotstage::rt
