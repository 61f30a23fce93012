//===- Simulate.h - Pipeline schedules on a cost model ----------*- C++ -*-===//
//
// Runs a schedule on per-chunk costs: each rank starts its next action as
// soon as it is free and the action's inputs have arrived (a cross-rank
// input `transfer` after its producer ends). Gives the predicted step time
// and each rank's idle fraction, and draws the result as text or as a
// Chrome trace (Perfetto, chrome://tracing).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_SCHEDULE_SIMULATE_H
#define HOTSTAGE_COMPILER_SCHEDULE_SIMULATE_H

#include "compiler/schedule/Schedule.h"

#include <string>
#include <vector>

namespace hotstage::schedule {

/// Per-chunk costs in any time unit; each vector has numChunks entries.
struct Costs {
  std::vector<double> forward, backwardInput, backwardWeight;
  double transfer = 0; // added latency of a cross-rank input

  static Costs uniform(int chunks, double f = 1, double b = 1, double w = 1);
  /// B alone when split; B and W together (one action) otherwise.
  double of(const Action &action, bool splitBackward) const;
};

struct Timed {
  Action action;
  int rank = 0;
  double start = 0, end = 0;
};

struct Timeline {
  std::vector<std::vector<Timed>> ranks; // per rank, in order
  double makespan = 0;
  std::vector<double> busy; // per rank

  /// The idle share of all ranks' time: 1 - sum(busy) / (ranks * makespan).
  double bubble() const;
  /// The same in time units: ranks * makespan - sum(busy).
  double bubbleTime() const;
  /// 1 - busy[rank] / makespan.
  double idle(int rank) const;
};

/// `s` must pass check(); otherwise the timeline stops where it stalls.
Timeline simulate(const Schedule &s, const Costs &costs);

/// One row per rank, columns aligned in time and scaled to fit `width`:
///   rank 0 |F0 F1 F2 F3 .  .  B0 F4 ...|
/// An action is its letter and microbatch, '.' is idle time. With two
/// chunks per rank the rank's second chunk is in lower case ("f3"); with
/// more, ".k" names the rank's k-th chunk ("F3.2"). An action too short
/// for its label repeats its letter. A header gives the scale.
std::string renderTimeline(const Timeline &t, const Schedule &s,
                           int width = 100);

/// Chrome trace event JSON: process "plan", a thread "rank N" per rank,
/// and per action an "X" event named like "F mb3 chunk1" in category
/// "F", "B" or "W", with args {microbatch, chunk}; one time unit is
/// `usPerUnit` microseconds.
std::string chromeTrace(const Timeline &t, double usPerUnit = 1000);

} // namespace hotstage::schedule

#endif // HOTSTAGE_COMPILER_SCHEDULE_SIMULATE_H
