//===- Schedule.h - Pipeline schedules: kinds, generation, check -*- C++
//-*-===//
//
// A pipeline schedule says, per rank, in which order that rank runs the
// forward (F), backward-for-inputs (B) and backward-for-weights (W) of its
// model chunks for every microbatch. The model is cut into stages x
// virtualStages chunks in model order; chunk c of microbatch m needs
// F(c-1,m) before F(c,m), F(c,m) and B(c+1,m) before B(c,m), and B(c,m)
// before W(c,m). W exists only when the backward is split (zero-bubble
// schedules); otherwise B is the whole backward. Sends are non-blocking,
// so a rank only ever waits for its own inputs.
//
// Every schedule here accumulates weight gradients (W, or B when not
// split) of each chunk in microbatch order, so that results are bitwise
// the same whatever the schedule; check() verifies that too.
//
// Plain standard C++17 without exceptions: the runtime may share it.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_SCHEDULE_SCHEDULE_H
#define HOTSTAGE_COMPILER_SCHEDULE_SCHEDULE_H

#include <string>
#include <vector>

namespace hotstage::schedule {

enum class Kind { GPipe, OneFOneB, Interleaved1F1B, ZBH1, ZBV, DualPipeV };

/// "gpipe", "1f1b", "interleaved_1f1b", "zb_h1", "zb_v", "dualpipe_v".
bool parseKind(const std::string &name, Kind &kind);
const char *kindName(Kind kind);
/// The names parseKind accepts, comma separated, for error messages.
const char *kindNames();
/// Zero-bubble schedules run W apart from B.
bool splitsBackward(Kind kind);
/// Interleaved 1F1B: 2 (any value >= 1 works); ZB-V and DualPipeV: 2, the
/// only value they take; the others: 1.
int defaultVirtualStages(Kind kind);

enum class Phase { F, B, W };

struct Action {
  Phase phase = Phase::F;
  int chunk = 0;
  int microbatch = 0;
};

inline bool operator==(const Action &a, const Action &b) {
  return a.phase == b.phase && a.chunk == b.chunk &&
         a.microbatch == b.microbatch;
}
inline bool operator!=(const Action &a, const Action &b) { return !(a == b); }

/// "F", "B" or "W".
const char *phaseName(Phase phase);
/// "B(chunk 1, mb 3)", as errors name actions.
std::string describe(const Action &action);

struct Config {
  Kind kind = Kind::OneFOneB;
  int stages = 1, virtualStages = 1, microbatches = 1;
};

struct Schedule {
  Config config;
  std::vector<int> chunkRank;             // chunk -> rank
  std::vector<std::vector<Action>> ranks; // per rank, in execution order
  bool splitBackward = false;

  int numChunks() const { return static_cast<int>(chunkRank.size()); }
  int numRanks() const { return static_cast<int>(ranks.size()); }
};

/// Where each of the stages x virtualStages chunks lives: rank c % stages
/// (looped placement), or for ZB-V and DualPipeV the V shape, where rank r
/// holds chunks r and 2 stages - 1 - r.
std::vector<int> placeChunks(Kind kind, int stages, int virtualStages);

/// What an action waits for: at most two actions. F: F of the previous
/// chunk; B: F of its chunk and B of the next chunk; W: B of its chunk.
struct Dependencies {
  Action of[2];
  int count = 0;
};
Dependencies dependencies(const Schedule &s, const Action &action);

/// Builds the schedule of `config`, or returns false with `error` saying
/// what is wrong and what would work. Requirements on microbatches M with
/// S stages: interleaved_1f1b needs M a multiple of S, dualpipe_v needs
/// M >= 2 S; the others take any M >= 1.
bool generate(const Config &config, Schedule &schedule, std::string &error);

struct CheckResult {
  bool ok = true;
  std::string error; // the first problem, naming rank, action, microbatch
  // Per rank, the peak number of (chunk, microbatch) pairs whose forward
  // activations are held (F done, B not yet) and whose inputs of W are
  // held (B done, W not yet). With one chunk per rank these count
  // microbatches.
  std::vector<int> peakActivations, peakWeightInputs;
};

/// Validates any schedule, hand-made ones too: every (chunk, microbatch)
/// has exactly one F, one B and, when split, one W, all on the chunk's
/// rank; dependencies on one rank come in order; weight gradients of each
/// chunk accumulate in microbatch order; running it with non-blocking
/// sends finishes (otherwise the error says which rank waits for what).
/// When maxActivations[rank] > 0, a peakActivations above it is an error.
/// Of the config it reads only `microbatches`; the rest comes from
/// chunkRank, ranks and splitBackward.
CheckResult check(const Schedule &s,
                  const std::vector<int> &maxActivations = {});

} // namespace hotstage::schedule

#endif // HOTSTAGE_COMPILER_SCHEDULE_SCHEDULE_H
