//===- TrainOptions.h - The model executable's command line -----*- C++ -*-===//
//
//   ./model train --data GLOB --steps N [--seed S] [--metrics FILE.jsonl]
//                 [--ckpt DIR [--ckpt-every K]] [--resume DIR]
//                 [--init-from FILE] [--trace FILE] [--log-every K]
//                 [--threads N]
//   ./model gradcheck --data GLOB [--seed S] [--init-from FILE]
//                     [--threads N]
//   ./model --help | ./model train --help
//
// Options take `--opt value` or `--opt=value`.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_SUPPORT_TRAINOPTIONS_H
#define HOTSTAGE_RUNTIME_SUPPORT_TRAINOPTIONS_H

#include <cstdint>
#include <string>

namespace hotstage::rt {

struct TrainOptions {
  bool help = false;   // --help was given; nothing else is checked
  std::string command; // "train" or "gradcheck"
  std::string data;    // glob of llm.c token shards
  int64_t steps = 0;
  uint64_t seed = 1337;
  std::string metrics;       // JSON lines file; empty: none
  std::string ckptDir;       // empty: no checkpoints
  int64_t ckptEvery = 0;     // 0: only at the end
  std::string resumeDir;     // empty: start fresh
  std::string initFrom;      // safetensors weights instead of the initializers
  std::string trace;         // safetensors record of the run; empty: none
  int64_t logEvery = 1;      // progress line every K steps
  int threads = 0;           // 0: defaultThreadCount()
  int64_t commTimeout = 600; // seconds without progress that end the job
};

/// Parses argv (argv[0] is the program, argv[1] the command). On success
/// with `help` set, print trainUsage() and exit 0. Errors say which option
/// is wrong and how.
bool parseTrainOptions(int argc, char **argv, TrainOptions &options,
                       std::string &error);

/// The --help text; programName is argv[0], modelName the model's name.
std::string trainUsage(const char *programName, const char *modelName);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_SUPPORT_TRAINOPTIONS_H
