//===- Schedule.cpp - Pipeline schedule generation and checking ----------===//

#include "compiler/schedule/Schedule.h"

#include <algorithm>
#include <deque>

using namespace hotstage;
using namespace hotstage::schedule;

namespace {
struct KindInfo {
  Kind kind;
  const char *name;
};
} // namespace

static const KindInfo kKinds[] = {
    {Kind::GPipe, "gpipe"},
    {Kind::OneFOneB, "1f1b"},
    {Kind::Interleaved1F1B, "interleaved_1f1b"},
    {Kind::ZBH1, "zb_h1"},
    {Kind::ZBV, "zb_v"},
    {Kind::DualPipeV, "dualpipe_v"},
};

bool schedule::parseKind(const std::string &name, Kind &kind) {
  for (const KindInfo &info : kKinds)
    if (name == info.name) {
      kind = info.kind;
      return true;
    }
  return false;
}

const char *schedule::kindName(Kind kind) {
  for (const KindInfo &info : kKinds)
    if (info.kind == kind)
      return info.name;
  return "?";
}

const char *schedule::kindNames() {
  return "gpipe, 1f1b, interleaved_1f1b, zb_h1, zb_v, dualpipe_v";
}

bool schedule::splitsBackward(Kind kind) {
  return kind == Kind::ZBH1 || kind == Kind::ZBV || kind == Kind::DualPipeV;
}

static bool isVShaped(Kind kind) {
  return kind == Kind::ZBV || kind == Kind::DualPipeV;
}

int schedule::defaultVirtualStages(Kind kind) {
  return kind == Kind::Interleaved1F1B || isVShaped(kind) ? 2 : 1;
}

const char *schedule::phaseName(Phase phase) {
  switch (phase) {
  case Phase::F:
    return "F";
  case Phase::B:
    return "B";
  case Phase::W:
    return "W";
  }
  return "?";
}

std::string schedule::describe(const Action &action) {
  return std::string(phaseName(action.phase)) + "(chunk " +
         std::to_string(action.chunk) + ", mb " +
         std::to_string(action.microbatch) + ")";
}

static Action makeAction(Phase phase, int chunk, int microbatch) {
  Action a;
  a.phase = phase;
  a.chunk = chunk;
  a.microbatch = microbatch;
  return a;
}

std::vector<int> schedule::placeChunks(Kind kind, int stages,
                                       int virtualStages) {
  std::vector<int> rank(std::max(0, stages * virtualStages));
  for (int c = 0, e = static_cast<int>(rank.size()); c < e; ++c)
    rank[c] = isVShaped(kind) && c >= stages ? 2 * stages - 1 - c : c % stages;
  return rank;
}

Dependencies schedule::dependencies(const Schedule &s, const Action &action) {
  Dependencies deps;
  int c = action.chunk, m = action.microbatch;
  switch (action.phase) {
  case Phase::F:
    if (c > 0)
      deps.of[deps.count++] = makeAction(Phase::F, c - 1, m);
    break;
  case Phase::B:
    deps.of[deps.count++] = makeAction(Phase::F, c, m);
    if (c + 1 < s.numChunks())
      deps.of[deps.count++] = makeAction(Phase::B, c + 1, m);
    break;
  case Phase::W:
    deps.of[deps.count++] = makeAction(Phase::B, c, m);
    break;
  }
  return deps;
}

//===----------------------------------------------------------------------===//
// Generators. Each fills `s.ranks` for a validated config; every chunk's
// B (and W) come in microbatch order by construction.
//===----------------------------------------------------------------------===//

static void buildGPipe(Schedule &s) {
  int m = s.config.microbatches;
  for (int r = 0; r < s.numRanks(); ++r) {
    for (int i = 0; i < m; ++i)
      s.ranks[r].push_back(makeAction(Phase::F, r, i));
    for (int i = 0; i < m; ++i)
      s.ranks[r].push_back(makeAction(Phase::B, r, i));
  }
}

// Rank r runs S-r-1 forwards ahead (warmup), then alternates one forward
// and one backward, then drains the backwards.
static void build1F1B(Schedule &s) {
  int stages = s.config.stages, m = s.config.microbatches;
  for (int r = 0; r < stages; ++r) {
    std::vector<Action> &order = s.ranks[r];
    int warmup = std::min(stages - r - 1, m);
    for (int i = 0; i < warmup; ++i)
      order.push_back(makeAction(Phase::F, r, i));
    for (int i = 0; i < m - warmup; ++i) {
      order.push_back(makeAction(Phase::F, r, warmup + i));
      order.push_back(makeAction(Phase::B, r, i));
    }
    for (int i = m - warmup; i < m; ++i)
      order.push_back(makeAction(Phase::B, r, i));
  }
}

// Megatron-LM's interleaved schedule: rank r holds chunks j*S + r. Its
// k-th forward runs local chunk (k mod S*v) / S on microbatch
// (k / S*v) * S + k mod S, so groups of S microbatches go through each
// chunk in turn; backwards visit the chunks in reverse.
static void buildInterleaved(Schedule &s) {
  int stages = s.config.stages, v = s.config.virtualStages;
  int m = s.config.microbatches, total = m * v, group = stages * v;
  auto at = [&](int r, int k, bool forward) {
    int local = (k % group) / stages;
    if (!forward)
      local = v - 1 - local;
    int mb = (k / group) * stages + k % stages;
    return makeAction(forward ? Phase::F : Phase::B, local * stages + r, mb);
  };
  for (int r = 0; r < stages; ++r) {
    std::vector<Action> &order = s.ranks[r];
    int warmup = std::min((stages - r - 1) * 2 + (v - 1) * stages, total);
    for (int k = 0; k < warmup; ++k)
      order.push_back(at(r, k, true));
    for (int k = 0; k < total - warmup; ++k) {
      order.push_back(at(r, warmup + k, true));
      order.push_back(at(r, k, false));
    }
    for (int k = std::max(0, total - warmup); k < total; ++k)
      order.push_back(at(r, k, false));
  }
}

// ZB-H1 by list scheduling in simulated time with F = B = W = 1. A free
// rank r runs, in this order of preference: its next B once the gradient
// is there, unless r+1 Ws are pending; its next F while fewer than S-r
// microbatches hold activations (F done, B not yet: 1F1B's memory); its
// oldest pending W; else it waits. Deferred Ws fill what would be 1F1B's
// bubbles, so the bubble shrinks from (S-1)(F+B+W) to (S-1)(F+B-W), and
// as in the paper later ranks end with more Ws (r+1 on rank r).
static void buildZBH1(Schedule &s) {
  int stages = s.config.stages, m = s.config.microbatches;
  std::vector<std::vector<int>> fEnd(stages, std::vector<int>(m, -1));
  std::vector<std::vector<int>> bEnd = fEnd;
  std::vector<int> nextF(stages, 0), nextB(stages, 0), nextW(stages, 0);
  std::vector<int> freeAt(stages, 0);
  auto doneBy = [](int end, int t) { return end >= 0 && end <= t; };
  // Something runs at every step until all is done, so this bounds the
  // loop; if the rules ever stalled, check() would report what is missing.
  int remaining = 3 * stages * m, steps = remaining;
  for (int t = 0; remaining > 0 && t < steps; ++t) {
    for (int r = 0; r < stages; ++r) {
      if (freeAt[r] > t)
        continue;
      int b = nextB[r], f = nextF[r];
      if (b < m && b - nextW[r] <= r && doneBy(fEnd[r][b], t) &&
          (r + 1 == stages || doneBy(bEnd[r + 1][b], t))) {
        s.ranks[r].push_back(makeAction(Phase::B, r, b));
        bEnd[r][b] = t + 1;
        ++nextB[r];
      } else if (f < m && f - nextB[r] < stages - r &&
                 (r == 0 || doneBy(fEnd[r - 1][f], t))) {
        s.ranks[r].push_back(makeAction(Phase::F, r, f));
        fEnd[r][f] = t + 1;
        ++nextF[r];
      } else if (nextW[r] < nextB[r]) {
        s.ranks[r].push_back(makeAction(Phase::W, r, nextW[r]++));
      } else {
        continue;
      }
      freeAt[r] = t + 1;
      --remaining;
    }
  }
}

// ZB-V as in torch.distributed.pipelining (ScheduleZBVZeroBubble): rank r
// holds chunk r (down the V) and chunk 2S-1-r (back up). It is laid out
// for max(M, 2S-1) microbatches, those beyond M dropped, which keeps the
// order valid because an action only waits for its own microbatch.
static void buildZBV(Schedule &s) {
  int stages = s.config.stages, m = s.config.microbatches;
  int n = std::max(m, 2 * stages - 1);
  for (int r = 0; r < stages; ++r) {
    int c0 = r, c1 = 2 * stages - 1 - r;
    int f0 = 0, f1 = 0, b0 = 0, b1 = 0;
    std::vector<Action> order;
    auto add = [&](Phase phase, int chunk, int mb) {
      order.push_back(makeAction(phase, chunk, mb));
    };
    for (int i = 0; i < 2 * (stages - r) - 1; ++i)
      add(Phase::F, c0, f0++);
    for (int i = 0; i < r; ++i) {
      add(Phase::F, c1, f1++);
      add(Phase::F, c0, f0++);
    }
    for (int i = 0; i < stages - r; ++i) {
      add(Phase::F, c1, f1++);
      add(Phase::B, c1, b1);
      add(Phase::W, c1, b1++);
    }
    while (f1 < f0 || f0 < n) {
      if (f0 < n)
        add(Phase::F, c0, f0++);
      add(Phase::B, c0, b0);
      add(Phase::W, c0, b0++);
      add(Phase::F, c1, f1++);
      add(Phase::B, c1, b1);
      add(Phase::W, c1, b1++);
    }
    int w0 = b0, w1 = b1;
    for (int i = 0; i < r; ++i) {
      add(Phase::B, c0, b0++);
      add(Phase::B, c1, b1++);
    }
    for (int i = 0; i < stages - r; ++i) {
      add(Phase::B, c0, b0++);
      add(Phase::W, c0, w0++);
    }
    while (w1 < b1)
      add(Phase::W, c1, w1++);
    while (w0 < b0)
      add(Phase::W, c0, w0++);
    for (const Action &a : order)
      if (a.microbatch < m)
        s.ranks[r].push_back(a);
  }
}

// DualPipeV as in deepseek-ai/DualPipe (dualpipev.py), its eight steps per
// rank. Phase 0 is chunk r, phase 1 chunk 2S-1-r. Where DualPipeV overlaps
// a forward with a backward of the other phase, this runs F then B; a B
// "with zero bubble" queues its W, which runs at the next weight step
// (FIFO), and any other B is followed by its W at once.
static void buildDualPipeV(Schedule &s) {
  int stages = s.config.stages, m = s.config.microbatches;
  for (int r = 0; r < stages; ++r) {
    std::vector<Action> &order = s.ranks[r];
    int chunk[2] = {r, 2 * stages - 1 - r};
    int f[2] = {0, 0}, b[2] = {0, 0};
    std::deque<Action> weights;
    auto forward = [&](int phase) {
      order.push_back(makeAction(Phase::F, chunk[phase], f[phase]++));
    };
    auto backward = [&](int phase, bool zeroBubble) {
      int mb = b[phase]++;
      order.push_back(makeAction(Phase::B, chunk[phase], mb));
      Action w = makeAction(Phase::W, chunk[phase], mb);
      if (zeroBubble)
        weights.push_back(w);
      else
        order.push_back(w);
    };
    auto weight = [&] {
      order.push_back(weights.front());
      weights.pop_front();
    };
    for (int i = 0; i < (stages - r - 1) * 2; ++i) // nF0
      forward(0);
    for (int i = 0; i < r + 1; ++i) { // nF0F1
      forward(0);
      forward(1);
    }
    for (int i = 0; i < stages - r - 1; ++i) { // nB1W1F1
      backward(1, true);
      weight();
      forward(1);
    }
    for (int i = 0; i < m - 2 * stages + r + 1; ++i) { // nF0B1F1B0
      forward(0);
      backward(1, false);
      forward(1);
      backward(0, false);
    }
    for (int i = 0; i < stages - r - 1; ++i) { // nB1F1B0
      backward(1, false);
      forward(1);
      backward(0, false);
    }
    bool zeroBubble = false;
    for (int i = 0; i < r + 1; ++i) { // nB1B0, the second half zero bubble
      if (i == (r + 1) / 2 && r % 2 == 1)
        zeroBubble = true;
      backward(1, zeroBubble);
      if (i == (r + 1) / 2 && r % 2 == 0)
        zeroBubble = true;
      backward(0, zeroBubble);
    }
    for (int i = 0; i < stages - r - 1; ++i) { // nWB0
      weight();
      backward(0, true);
    }
    while (!weights.empty()) // nW
      weight();
  }
}

//===----------------------------------------------------------------------===//
// Generation
//===----------------------------------------------------------------------===//

// Validates the config; the error says what would work.
static bool validate(const Config &config, std::string &error) {
  const char *name = kindName(config.kind);
  int stages = config.stages, v = config.virtualStages;
  int m = config.microbatches;
  auto quoted = [&] { return std::string("schedule '") + name + "'"; };
  if (stages < 1) {
    error = "pipeline stages must be at least 1, got " +
            std::to_string(stages) + ": try -D stages=1";
    return false;
  }
  if (v < 1) {
    error = "virtual_stages must be at least 1, got " + std::to_string(v) +
            ": try -D virtual_stages=" +
            std::to_string(defaultVirtualStages(config.kind));
    return false;
  }
  if (isVShaped(config.kind) && v != 2) {
    error = quoted() + " needs virtual_stages = 2 (its V puts two chunks " +
            "on each rank), got " + std::to_string(v) +
            ": try -D virtual_stages=2";
    return false;
  }
  if (config.kind != Kind::Interleaved1F1B && !isVShaped(config.kind) &&
      v != 1) {
    error = quoted() + " takes virtual_stages = 1, got " + std::to_string(v) +
            ": try -D virtual_stages=1, or a schedule with virtual " +
            "stages (interleaved_1f1b, zb_v, dualpipe_v)";
    return false;
  }
  int least = config.kind == Kind::DualPipeV ? 2 * stages : stages;
  if (m < 1) {
    error = "microbatches must be at least 1, got " + std::to_string(m) +
            ": try -D microbatches=" + std::to_string(least);
    return false;
  }
  if (config.kind == Kind::Interleaved1F1B && m % stages != 0) {
    error = quoted() + " needs microbatches (" + std::to_string(m) +
            ") to be a multiple of stages (" + std::to_string(stages) +
            "): try -D microbatches=" +
            std::to_string((m + stages - 1) / stages * stages);
    return false;
  }
  if (config.kind == Kind::DualPipeV && m < 2 * stages) {
    error = quoted() + " needs microbatches (" + std::to_string(m) +
            ") to be at least twice the stages (" + std::to_string(stages) +
            "): try -D microbatches=" + std::to_string(2 * stages);
    return false;
  }
  return true;
}

bool schedule::generate(const Config &config, Schedule &schedule,
                        std::string &error) {
  schedule = Schedule();
  error.clear();
  if (!validate(config, error))
    return false;
  schedule.config = config;
  schedule.chunkRank =
      placeChunks(config.kind, config.stages, config.virtualStages);
  schedule.ranks.resize(config.stages);
  schedule.splitBackward = splitsBackward(config.kind);
  switch (config.kind) {
  case Kind::GPipe:
    buildGPipe(schedule);
    break;
  case Kind::OneFOneB:
    build1F1B(schedule);
    break;
  case Kind::Interleaved1F1B:
    buildInterleaved(schedule);
    break;
  case Kind::ZBH1:
    buildZBH1(schedule);
    break;
  case Kind::ZBV:
    buildZBV(schedule);
    break;
  case Kind::DualPipeV:
    buildDualPipeV(schedule);
    break;
  }
  // Cheap next to what runs it; a generator bug must not reach a run.
  CheckResult result = check(schedule);
  if (!result.ok) {
    error = "internal error: schedule '" + std::string(kindName(config.kind)) +
            "' for " + std::to_string(config.stages) + " stages, " +
            std::to_string(config.microbatches) +
            " microbatches fails its check: " + result.error;
    schedule = Schedule();
    return false;
  }
  return true;
}

//===----------------------------------------------------------------------===//
// Checking
//===----------------------------------------------------------------------===//

CheckResult schedule::check(const Schedule &s,
                            const std::vector<int> &maxActivations) {
  CheckResult result;
  auto fail = [&](std::string message) {
    result.ok = false;
    result.error = std::move(message);
    return result;
  };
  int chunks = s.numChunks(), numRanks = s.numRanks();
  int m = s.config.microbatches;
  if (numRanks < 1 || chunks < 1 || m < 1)
    return fail("the schedule needs at least one rank, chunk and microbatch "
                "(has " +
                std::to_string(numRanks) + ", " + std::to_string(chunks) +
                ", " + std::to_string(m) + ")");
  for (int c = 0; c < chunks; ++c)
    if (s.chunkRank[c] < 0 || s.chunkRank[c] >= numRanks)
      return fail("chunk " + std::to_string(c) + " is placed on rank " +
                  std::to_string(s.chunkRank[c]) + ", but there are " +
                  std::to_string(numRanks) + " ranks");

  // Every action's index in `ranks[rank][...]`, or -1.
  auto id = [&](const Action &a) {
    return (static_cast<int>(a.phase) * chunks + a.chunk) * m + a.microbatch;
  };
  std::vector<int> position(3 * chunks * m, -1);
  for (int r = 0; r < numRanks; ++r) {
    const std::vector<Action> &order = s.ranks[r];
    for (int i = 0, e = static_cast<int>(order.size()); i < e; ++i) {
      const Action &a = order[i];
      std::string where = "rank " + std::to_string(r) + ": ";
      if (a.chunk < 0 || a.chunk >= chunks)
        return fail(where + "action " + std::to_string(i) + " names chunk " +
                    std::to_string(a.chunk) + ", but there are " +
                    std::to_string(chunks) + " chunks");
      if (a.microbatch < 0 || a.microbatch >= m)
        return fail(where + "action " + std::to_string(i) +
                    " names microbatch " + std::to_string(a.microbatch) +
                    ", but there are " + std::to_string(m) + " microbatches");
      if (a.phase == Phase::W && !s.splitBackward)
        return fail(where + describe(a) +
                    ", but the backward is not split: B computes the "
                    "weight gradients");
      if (s.chunkRank[a.chunk] != r)
        return fail(where + describe(a) + " is on the wrong rank: chunk " +
                    std::to_string(a.chunk) + " lives on rank " +
                    std::to_string(s.chunkRank[a.chunk]));
      if (position[id(a)] >= 0)
        return fail(where + describe(a) + " appears twice (actions " +
                    std::to_string(position[id(a)]) + " and " +
                    std::to_string(i) + ")");
      position[id(a)] = i;
    }
  }
  for (Phase phase : {Phase::F, Phase::B, Phase::W}) {
    if (phase == Phase::W && !s.splitBackward)
      continue;
    for (int c = 0; c < chunks; ++c)
      for (int i = 0; i < m; ++i) {
        Action a = makeAction(phase, c, i);
        if (position[id(a)] < 0)
          return fail(describe(a) + " is missing from rank " +
                      std::to_string(s.chunkRank[c]));
      }
  }

  // Dependencies within a rank must come first in its order.
  Phase accumulates = s.splitBackward ? Phase::W : Phase::B;
  for (int r = 0; r < numRanks; ++r) {
    std::vector<int> expected(chunks, 0);
    for (const Action &a : s.ranks[r]) {
      std::string where = "rank " + std::to_string(r) + ": ";
      Dependencies deps = dependencies(s, a);
      for (int d = 0; d < deps.count; ++d) {
        const Action &dep = deps.of[d];
        if (s.chunkRank[dep.chunk] != r || position[id(dep)] < position[id(a)])
          continue;
        if (a.phase == Phase::W)
          return fail(where + describe(a) + " runs before its B");
        return fail(where + describe(a) + " runs before " + describe(dep) +
                    ", which it needs");
      }
      if (a.phase != accumulates)
        continue;
      if (a.microbatch != expected[a.chunk])
        return fail(where + describe(a) + " runs where microbatch " +
                    std::to_string(expected[a.chunk]) +
                    " is due: " + phaseName(accumulates) + " of chunk " +
                    std::to_string(a.chunk) +
                    " must accumulate weight gradients in microbatch order");
      ++expected[a.chunk];
    }
  }

  // What each rank holds at its peak, in its own order.
  result.peakActivations.assign(numRanks, 0);
  result.peakWeightInputs.assign(numRanks, 0);
  for (int r = 0; r < numRanks; ++r) {
    int activations = 0, weightInputs = 0;
    for (const Action &a : s.ranks[r]) {
      if (a.phase == Phase::F)
        ++activations;
      if (a.phase == Phase::B) {
        --activations;
        if (s.splitBackward)
          ++weightInputs;
      }
      if (a.phase == Phase::W)
        --weightInputs;
      result.peakActivations[r] =
          std::max(result.peakActivations[r], activations);
      result.peakWeightInputs[r] =
          std::max(result.peakWeightInputs[r], weightInputs);
    }
  }

  // Run it: each rank goes down its list while its next action's inputs
  // are there. Sends never block, so this finishes unless some ranks wait
  // on each other.
  std::vector<char> done(position.size(), 0);
  std::vector<size_t> next(numRanks, 0);
  auto ready = [&](const Action &a) {
    Dependencies deps = dependencies(s, a);
    for (int d = 0; d < deps.count; ++d)
      if (!done[id(deps.of[d])])
        return false;
    return true;
  };
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < numRanks; ++r)
      for (; next[r] < s.ranks[r].size() && ready(s.ranks[r][next[r]]);
           ++next[r]) {
        done[id(s.ranks[r][next[r]])] = 1;
        progress = true;
      }
  }
  std::string stalls;
  for (int r = 0; r < numRanks; ++r) {
    if (next[r] == s.ranks[r].size())
      continue;
    const Action &a = s.ranks[r][next[r]];
    Dependencies deps = dependencies(s, a);
    for (int d = 0; d < deps.count; ++d) {
      const Action &dep = deps.of[d];
      if (done[id(dep)])
        continue;
      stalls += stalls.empty() ? "" : "; ";
      stalls += "rank " + std::to_string(r) + " waits at " + describe(a) +
                " for " + describe(dep) + " from rank " +
                std::to_string(s.chunkRank[dep.chunk]);
      break;
    }
  }
  if (!stalls.empty())
    return fail("deadlock: " + stalls);

  for (int r = 0; r < numRanks && r < static_cast<int>(maxActivations.size());
       ++r)
    if (maxActivations[r] > 0 && result.peakActivations[r] > maxActivations[r])
      return fail("rank " + std::to_string(r) + " holds the activations of " +
                  std::to_string(result.peakActivations[r]) +
                  " microbatches at its peak, above its bound of " +
                  std::to_string(maxActivations[r]));
  return result;
}
