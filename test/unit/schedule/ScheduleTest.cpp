//===- ScheduleTest.cpp - Pipeline schedules and their simulation --------===//

#include "compiler/schedule/Schedule.h"
#include "compiler/schedule/Simulate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>

using namespace hotstage::schedule;

namespace {

const Kind kAllKinds[] = {Kind::GPipe, Kind::OneFOneB, Kind::Interleaved1F1B,
                          Kind::ZBH1,  Kind::ZBV,      Kind::DualPipeV};

Config makeConfig(Kind kind, int stages, int microbatches,
                  int virtualStages = 0) {
  Config config;
  config.kind = kind;
  config.stages = stages;
  config.microbatches = microbatches;
  config.virtualStages =
      virtualStages > 0 ? virtualStages : defaultVirtualStages(kind);
  return config;
}

Schedule generateOrDie(const Config &config) {
  Schedule s;
  std::string error;
  EXPECT_TRUE(generate(config, s, error)) << error;
  return s;
}

std::string generateError(const Config &config) {
  Schedule s;
  std::string error;
  EXPECT_FALSE(generate(config, s, error));
  return error;
}

Action act(Phase phase, int chunk, int microbatch) {
  Action a;
  a.phase = phase;
  a.chunk = chunk;
  a.microbatch = microbatch;
  return a;
}

// A schedule for hand-made orders: one chunk per rank.
Schedule handMade(int stages, int microbatches, bool split,
                  std::vector<std::vector<Action>> ranks) {
  Schedule s;
  s.config =
      makeConfig(split ? Kind::ZBH1 : Kind::OneFOneB, stages, microbatches);
  s.chunkRank = placeChunks(s.config.kind, stages, 1);
  s.splitBackward = split;
  s.ranks = std::move(ranks);
  return s;
}

bool allowed(Kind kind, int stages, int microbatches) {
  if (kind == Kind::Interleaved1F1B)
    return microbatches % stages == 0;
  if (kind == Kind::DualPipeV)
    return microbatches >= 2 * stages;
  return true;
}

double bubbleOf(Kind kind, int stages, int microbatches) {
  Schedule s = generateOrDie(makeConfig(kind, stages, microbatches));
  return simulate(s, Costs::uniform(s.numChunks())).bubble();
}

// Idle time per rank, in units of one chunk's F.
double bubbleTimeOf(Kind kind, int stages, int microbatches) {
  Schedule s = generateOrDie(makeConfig(kind, stages, microbatches));
  return simulate(s, Costs::uniform(s.numChunks())).bubbleTime() / stages;
}

std::string::size_type countOf(const std::string &text,
                               const std::string &what) {
  std::string::size_type n = 0;
  for (auto at = text.find(what); at != std::string::npos;
       at = text.find(what, at + what.size()))
    ++n;
  return n;
}

} // namespace

TEST(Schedule, KindNames) {
  for (Kind kind : kAllKinds) {
    Kind parsed = Kind::GPipe;
    EXPECT_TRUE(parseKind(kindName(kind), parsed)) << kindName(kind);
    EXPECT_EQ(parsed, kind);
    EXPECT_NE(std::string(kindNames()).find(kindName(kind)), std::string::npos);
  }
  Kind kind = Kind::GPipe;
  EXPECT_FALSE(parseKind("zb_h2", kind));
  EXPECT_STREQ(kindName(Kind::OneFOneB), "1f1b");
  EXPECT_STREQ(kindName(Kind::Interleaved1F1B), "interleaved_1f1b");
  EXPECT_TRUE(splitsBackward(Kind::ZBH1));
  EXPECT_TRUE(splitsBackward(Kind::ZBV));
  EXPECT_TRUE(splitsBackward(Kind::DualPipeV));
  EXPECT_FALSE(splitsBackward(Kind::OneFOneB));
  EXPECT_EQ(defaultVirtualStages(Kind::Interleaved1F1B), 2);
  EXPECT_EQ(defaultVirtualStages(Kind::ZBV), 2);
  EXPECT_EQ(defaultVirtualStages(Kind::GPipe), 1);
}

TEST(Schedule, Placement) {
  EXPECT_EQ(placeChunks(Kind::Interleaved1F1B, 4, 2),
            (std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(placeChunks(Kind::ZBV, 4, 2),
            (std::vector<int>{0, 1, 2, 3, 3, 2, 1, 0}));
  EXPECT_EQ(placeChunks(Kind::OneFOneB, 3, 1), (std::vector<int>{0, 1, 2}));
}

// Every kind, stage count and microbatch count that the kind allows
// generates a schedule that passes the checker, with every action once.
TEST(Schedule, EveryKindGeneratesCheckedSchedules) {
  for (Kind kind : kAllKinds)
    for (int stages : {1, 2, 3, 4})
      for (int m : {1, 2, 3, 4, 6, 8, 12}) {
        Config config = makeConfig(kind, stages, m);
        SCOPED_TRACE(std::string(kindName(kind)) + " stages " +
                     std::to_string(stages) + " microbatches " +
                     std::to_string(m));
        if (!allowed(kind, stages, m)) {
          EXPECT_NE(generateError(config).find("microbatches"),
                    std::string::npos);
          continue;
        }
        Schedule s = generateOrDie(config);
        ASSERT_EQ(s.numRanks(), stages);
        ASSERT_EQ(s.numChunks(), stages * config.virtualStages);
        EXPECT_EQ(s.splitBackward, splitsBackward(kind));
        CheckResult result = check(s);
        EXPECT_TRUE(result.ok) << result.error;
        size_t actions = 0;
        for (const std::vector<Action> &order : s.ranks)
          actions += order.size();
        EXPECT_EQ(actions, static_cast<size_t>((s.splitBackward ? 3 : 2) *
                                               s.numChunks() * m));
      }
}

TEST(Schedule, InterleavedTakesAnyVirtualStages) {
  for (int v : {1, 2, 3, 4})
    for (int stages : {1, 2, 4}) {
      Schedule s =
          generateOrDie(makeConfig(Kind::Interleaved1F1B, stages, 8, v));
      CheckResult result = check(s);
      EXPECT_TRUE(result.ok) << result.error;
      EXPECT_EQ(s.numChunks(), stages * v);
    }
}

// The determinism rule, verified without the checker: weight gradients of
// every chunk accumulate in microbatch order.
TEST(Schedule, WeightGradientsAccumulateInMicrobatchOrder) {
  for (Kind kind : kAllKinds)
    for (int stages : {1, 2, 4}) {
      int m = 8;
      Schedule s = generateOrDie(makeConfig(kind, stages, m));
      Phase accumulates = s.splitBackward ? Phase::W : Phase::B;
      std::vector<std::vector<int>> seen(s.numChunks());
      for (const std::vector<Action> &order : s.ranks)
        for (const Action &a : order)
          if (a.phase == accumulates)
            seen[a.chunk].push_back(a.microbatch);
      for (const std::vector<int> &mbs : seen) {
        ASSERT_EQ(static_cast<int>(mbs.size()), m) << kindName(kind);
        for (int i = 0; i < m; ++i)
          EXPECT_EQ(mbs[i], i) << kindName(kind);
      }
    }
}

//===----------------------------------------------------------------------===//
// The checker on hand-made schedules
//===----------------------------------------------------------------------===//

TEST(Check, AcceptsHandMade1F1B) {
  Schedule s = handMade(2, 2, false,
                        {{act(Phase::F, 0, 0), act(Phase::F, 0, 1),
                          act(Phase::B, 0, 0), act(Phase::B, 0, 1)},
                         {act(Phase::F, 1, 0), act(Phase::B, 1, 0),
                          act(Phase::F, 1, 1), act(Phase::B, 1, 1)}});
  CheckResult result = check(s);
  EXPECT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.peakActivations, (std::vector<int>{2, 1}));
}

TEST(Check, RejectsMissingAction) {
  Schedule s = handMade(
      1, 2, false,
      {{act(Phase::F, 0, 0), act(Phase::B, 0, 0), act(Phase::F, 0, 1)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("B(chunk 0, mb 1) is missing from rank 0"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsDuplicate) {
  Schedule s = handMade(
      1, 1, false,
      {{act(Phase::F, 0, 0), act(Phase::F, 0, 0), act(Phase::B, 0, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("rank 0: F(chunk 0, mb 0) appears twice"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsDependencyOnOneRank) {
  Schedule s = handMade(1, 2, false,
                        {{act(Phase::F, 0, 0), act(Phase::B, 0, 0),
                          act(Phase::B, 0, 1), act(Phase::F, 0, 1)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("rank 0: B(chunk 0, mb 1) runs before "
                              "F(chunk 0, mb 1), which it needs"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsWBeforeItsB) {
  Schedule s = handMade(
      1, 1, true,
      {{act(Phase::F, 0, 0), act(Phase::W, 0, 0), act(Phase::B, 0, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("rank 0: W(chunk 0, mb 0) runs before its B"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsBackwardOutOfMicrobatchOrder) {
  Schedule s = handMade(1, 2, false,
                        {{act(Phase::F, 0, 0), act(Phase::F, 0, 1),
                          act(Phase::B, 0, 1), act(Phase::B, 0, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("rank 0: B(chunk 0, mb 1) runs where "
                              "microbatch 0 is due"),
            std::string::npos)
      << result.error;
  EXPECT_NE(result.error.find("microbatch order"), std::string::npos);
}

TEST(Check, RejectsWeightOutOfMicrobatchOrder) {
  // Split: B may come in any order, W may not.
  Schedule s = handMade(
      1, 2, true,
      {{act(Phase::F, 0, 0), act(Phase::F, 0, 1), act(Phase::B, 0, 1),
        act(Phase::B, 0, 0), act(Phase::W, 0, 1), act(Phase::W, 0, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("W(chunk 0, mb 1) runs where microbatch 0 is "
                              "due: W of chunk 0 must accumulate"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsCrossRankDeadlock) {
  // Rank 0 waits for the gradient of mb 0, which rank 1 sends only after
  // its F of mb 1, which needs rank 0's next forward.
  Schedule s = handMade(2, 2, false,
                        {{act(Phase::F, 0, 0), act(Phase::B, 0, 0),
                          act(Phase::F, 0, 1), act(Phase::B, 0, 1)},
                         {act(Phase::F, 1, 0), act(Phase::F, 1, 1),
                          act(Phase::B, 1, 0), act(Phase::B, 1, 1)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("deadlock: rank 0 waits at B(chunk 0, mb 0) "
                              "for B(chunk 1, mb 0) from rank 1; rank 1 "
                              "waits at F(chunk 1, mb 1) for F(chunk 0, mb "
                              "1) from rank 0"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsWrongRank) {
  Schedule s =
      handMade(2, 1, false,
               {{act(Phase::F, 0, 0), act(Phase::F, 1, 0), act(Phase::B, 0, 0)},
                {act(Phase::B, 1, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("rank 0: F(chunk 1, mb 0) is on the wrong "
                              "rank: chunk 1 lives on rank 1"),
            std::string::npos)
      << result.error;
}

TEST(Check, RejectsWWithoutSplit) {
  Schedule s = handMade(
      1, 1, false,
      {{act(Phase::F, 0, 0), act(Phase::B, 0, 0), act(Phase::W, 0, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("the backward is not split"), std::string::npos)
      << result.error;
}

TEST(Check, RejectsMissingWWhenSplit) {
  Schedule s =
      handMade(1, 1, true, {{act(Phase::F, 0, 0), act(Phase::B, 0, 0)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("W(chunk 0, mb 0) is missing"), std::string::npos)
      << result.error;
}

TEST(Check, RejectsOutOfRange) {
  Schedule s = handMade(
      1, 1, false,
      {{act(Phase::F, 0, 0), act(Phase::B, 0, 0), act(Phase::F, 0, 5)}});
  CheckResult result = check(s);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("names microbatch 5, but there are 1"),
            std::string::npos)
      << result.error;
  s.ranks[0][2] = act(Phase::F, 3, 0);
  result = check(s);
  EXPECT_NE(result.error.find("names chunk 3, but there are 1 chunks"),
            std::string::npos)
      << result.error;
}

TEST(Check, ActivationBound) {
  Schedule gpipe = generateOrDie(makeConfig(Kind::GPipe, 2, 4));
  CheckResult result = check(gpipe, {2, 0});
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("rank 0 holds the activations of 4 "
                              "microbatches at its peak, above its bound "
                              "of 2"),
            std::string::npos)
      << result.error;
  // 0 means unbounded; 1F1B fits in S - r.
  EXPECT_TRUE(check(gpipe, {0, 0}).ok);
  Schedule oneFOneB = generateOrDie(makeConfig(Kind::OneFOneB, 4, 8));
  result = check(oneFOneB, {4, 3, 2, 1});
  EXPECT_TRUE(result.ok) << result.error;
}

//===----------------------------------------------------------------------===//
// Peak memory
//===----------------------------------------------------------------------===//

TEST(Memory, PeakActivations) {
  for (int stages : {1, 2, 4})
    for (int m : {1, 2, 8}) {
      CheckResult gpipe =
          check(generateOrDie(makeConfig(Kind::GPipe, stages, m)));
      CheckResult oneFOneB =
          check(generateOrDie(makeConfig(Kind::OneFOneB, stages, m)));
      CheckResult zbh1 =
          check(generateOrDie(makeConfig(Kind::ZBH1, stages, m)));
      for (int r = 0; r < stages; ++r) {
        EXPECT_EQ(gpipe.peakActivations[r], m);
        EXPECT_EQ(oneFOneB.peakActivations[r], std::min(stages - r, m));
        EXPECT_LE(zbh1.peakActivations[r], stages - r);
        // ZB-H1 holds at most r + 1 inputs of deferred Ws.
        EXPECT_LE(zbh1.peakWeightInputs[r], r + 1);
        EXPECT_EQ(oneFOneB.peakWeightInputs[r], 0);
      }
    }
  // ZB-V: 2S half-size chunk activations on every rank, 1F1B's first rank.
  CheckResult zbv = check(generateOrDie(makeConfig(Kind::ZBV, 4, 8)));
  for (int r = 0; r < 4; ++r)
    EXPECT_LE(zbv.peakActivations[r], 8);
}

//===----------------------------------------------------------------------===//
// Simulation
//===----------------------------------------------------------------------===//

// The textbook bubble (p-1)/(m+p-1), exactly, for GPipe and 1F1B.
TEST(Simulate, GPipeAnd1F1BBubble) {
  for (Kind kind : {Kind::GPipe, Kind::OneFOneB})
    for (int p : {1, 2, 4})
      for (int m : {1, 2, 8, 16}) {
        double expected = double(p - 1) / (m + p - 1);
        EXPECT_NEAR(bubbleOf(kind, p, m), expected, 1e-12)
            << kindName(kind) << " p=" << p << " m=" << m;
      }
  EXPECT_NEAR(bubbleOf(Kind::OneFOneB, 4, 8), 3.0 / 11, 1e-12);
}

TEST(Simulate, InterleavedBubble) {
  for (int p : {2, 4})
    for (int m : {8, 16}) {
      int v = 2;
      double bubble = bubbleOf(Kind::Interleaved1F1B, p, m);
      EXPECT_LT(bubble, bubbleOf(Kind::OneFOneB, p, m));
      EXPECT_NEAR(bubble, double(p - 1) / (v * m + p - 1), 0.02)
          << "p=" << p << " m=" << m;
    }
}

TEST(Simulate, ZBH1BubbleIsAThirdOf1F1B) {
  for (int p : {2, 4})
    for (int m : {8, 16}) {
      double ratio =
          bubbleTimeOf(Kind::ZBH1, p, m) / bubbleTimeOf(Kind::OneFOneB, p, m);
      EXPECT_GE(ratio, 0.25) << "p=" << p << " m=" << m;
      EXPECT_LE(ratio, 0.45) << "p=" << p << " m=" << m;
    }
}

TEST(Simulate, VShapesNearZeroBubble) {
  EXPECT_LT(bubbleOf(Kind::ZBV, 4, 8), 0.1);
  EXPECT_LT(bubbleOf(Kind::ZBV, 4, 16), 0.05);
  EXPECT_LT(bubbleOf(Kind::DualPipeV, 4, 8), 0.1);
  EXPECT_LT(bubbleOf(Kind::ZBV, 2, 8), bubbleOf(Kind::ZBH1, 2, 8));
}

// Independently of the checker: no rank runs two actions at once, and no
// action starts before its inputs (plus the transfer) are there.
TEST(Simulate, TimelineRespectsDependencies) {
  for (Kind kind : kAllKinds) {
    Schedule s = generateOrDie(makeConfig(kind, 4, 8));
    Costs costs = Costs::uniform(s.numChunks(), 1, 2, 0.5);
    costs.transfer = 0.25;
    Timeline t = simulate(s, costs);
    std::vector<std::vector<std::vector<double>>> end(
        3, std::vector<std::vector<double>>(s.numChunks(),
                                            std::vector<double>(8, -1)));
    for (const std::vector<Timed> &row : t.ranks)
      for (const Timed &timed : row)
        end[int(timed.action.phase)][timed.action.chunk]
           [timed.action.microbatch] = timed.end;
    for (int r = 0; r < s.numRanks(); ++r) {
      ASSERT_EQ(t.ranks[r].size(), s.ranks[r].size()) << kindName(kind);
      double busy = 0;
      for (size_t i = 0; i < t.ranks[r].size(); ++i) {
        const Timed &timed = t.ranks[r][i];
        EXPECT_EQ(timed.action, s.ranks[r][i]);
        if (i > 0)
          EXPECT_GE(timed.start, t.ranks[r][i - 1].end);
        EXPECT_NEAR(timed.end - timed.start,
                    costs.of(timed.action, s.splitBackward), 1e-12);
        busy += timed.end - timed.start;
        Dependencies deps = dependencies(s, timed.action);
        for (int d = 0; d < deps.count; ++d) {
          const Action &dep = deps.of[d];
          double ready = end[int(dep.phase)][dep.chunk][dep.microbatch];
          if (s.chunkRank[dep.chunk] != r)
            ready += costs.transfer;
          EXPECT_GE(timed.start, ready - 1e-12);
        }
      }
      EXPECT_NEAR(t.busy[r], busy, 1e-9);
      EXPECT_NEAR(t.idle(r), 1 - busy / t.makespan, 1e-12);
    }
  }
}

TEST(Simulate, TransferLengthensTheStep) {
  Schedule s = generateOrDie(makeConfig(Kind::OneFOneB, 4, 8));
  Costs costs = Costs::uniform(s.numChunks());
  double before = simulate(s, costs).makespan;
  costs.transfer = 0.5;
  double after = simulate(s, costs).makespan;
  EXPECT_DOUBLE_EQ(before, 33);
  EXPECT_GT(after, before);
  // Unsplit B costs B + W.
  EXPECT_DOUBLE_EQ(costs.of(act(Phase::B, 0, 0), false), 2);
  EXPECT_DOUBLE_EQ(costs.of(act(Phase::B, 0, 0), true), 1);
}

//===----------------------------------------------------------------------===//
// Configuration errors
//===----------------------------------------------------------------------===//

TEST(Generate, ConfigErrors) {
  EXPECT_EQ(generateError(makeConfig(Kind::Interleaved1F1B, 4, 6)),
            "schedule 'interleaved_1f1b' needs microbatches (6) to be a "
            "multiple of stages (4): try -D microbatches=8");
  EXPECT_EQ(generateError(makeConfig(Kind::OneFOneB, 4, 8, 2)),
            "schedule '1f1b' takes virtual_stages = 1, got 2: try -D "
            "virtual_stages=1, or a schedule with virtual stages "
            "(interleaved_1f1b, zb_v, dualpipe_v)");
  EXPECT_NE(generateError(makeConfig(Kind::ZBV, 4, 8, 3))
                .find("schedule 'zb_v' needs virtual_stages = 2"),
            std::string::npos);
  EXPECT_NE(generateError(makeConfig(Kind::DualPipeV, 4, 8, 1))
                .find("try -D virtual_stages=2"),
            std::string::npos);
  EXPECT_EQ(generateError(makeConfig(Kind::OneFOneB, 0, 8)),
            "pipeline stages must be at least 1, got 0: try -D stages=1");
  EXPECT_EQ(generateError(makeConfig(Kind::OneFOneB, 4, 0)),
            "microbatches must be at least 1, got 0: try -D microbatches=4");
  Config negative = makeConfig(Kind::Interleaved1F1B, 2, 4);
  negative.virtualStages = -1;
  EXPECT_NE(generateError(negative).find("virtual_stages must be at least 1"),
            std::string::npos);
  EXPECT_EQ(generateError(makeConfig(Kind::DualPipeV, 4, 6)),
            "schedule 'dualpipe_v' needs microbatches (6) to be at least "
            "twice the stages (4): try -D microbatches=8");
}

//===----------------------------------------------------------------------===//
// Output
//===----------------------------------------------------------------------===//

TEST(Output, RenderTimeline) {
  Schedule s = generateOrDie(makeConfig(Kind::OneFOneB, 4, 8));
  Timeline t = simulate(s, Costs::uniform(s.numChunks()));
  std::string text = renderTimeline(t, s, 80);
  std::vector<std::string> lines;
  for (size_t at = 0, next; at < text.size(); at = next + 1) {
    next = text.find('\n', at);
    ASSERT_NE(next, std::string::npos);
    lines.push_back(text.substr(at, next - at));
  }
  ASSERT_EQ(lines.size(), 2u + 4);
  EXPECT_NE(lines[0].find("bubble 27.3%"), std::string::npos) << lines[0];
  for (int r = 0; r < 4; ++r) {
    const std::string &row = lines[2 + r];
    EXPECT_EQ(row.rfind("rank " + std::to_string(r) + " |", 0), 0u) << row;
    EXPECT_EQ(row.back(), '|');
    EXPECT_LE(row.size(), 80u);
  }
  // Two columns per time unit: rank 0 runs F0..F3, then waits for B0.
  EXPECT_EQ(lines[2].substr(0, 28), "rank 0 |F0F1F2F3............");
  EXPECT_EQ(lines[5].substr(0, 16), "rank 3 |......F0");

  Schedule v = generateOrDie(makeConfig(Kind::ZBV, 2, 4));
  std::string vText =
      renderTimeline(simulate(v, Costs::uniform(v.numChunks())), v, 200);
  EXPECT_NE(vText.find("f0"), std::string::npos) << vText;
  EXPECT_NE(vText.find("lower case"), std::string::npos);

  // Narrow: still fits.
  std::string narrow = renderTimeline(t, s, 30);
  for (size_t at = 0, next; at < narrow.size(); at = next + 1) {
    next = narrow.find('\n', at);
    if (narrow.compare(at, 4, "rank") == 0)
      EXPECT_LE(next - at, 30u);
  }
}

TEST(Output, ChromeTrace) {
  Schedule s = generateOrDie(makeConfig(Kind::ZBH1, 4, 8));
  Timeline t = simulate(s, Costs::uniform(s.numChunks()));
  std::string json = chromeTrace(t, 1000);
  EXPECT_NE(json.find("\"traceEvents\""), std::string::npos);
  EXPECT_EQ(countOf(json, "\"thread_name\""), 4u);
  EXPECT_EQ(countOf(json, "\"name\":\"rank 3\""), 1u);
  EXPECT_EQ(countOf(json, "\"name\":\"plan\""), 1u);
  EXPECT_EQ(countOf(json, "\"ph\":\"X\""), 3u * 4 * 8);
  EXPECT_EQ(countOf(json, "\"cat\":\"W\""), 4u * 8);
  EXPECT_NE(json.find("\"name\":\"F mb0 chunk0\",\"cat\":\"F\",\"ph\":\"X\","
                      "\"pid\":0,\"tid\":0,\"ts\":0.000,\"dur\":1000.000,"
                      "\"args\":{\"microbatch\":0,\"chunk\":0}"),
            std::string::npos);
  // Balanced outside strings, and nothing after the top-level object.
  int braces = 0, brackets = 0;
  bool inString = false, closed = false;
  for (char c : json) {
    if (closed) {
      EXPECT_TRUE(std::isspace(static_cast<unsigned char>(c)));
      continue;
    }
    if (c == '"')
      inString = !inString;
    if (inString)
      continue;
    braces += c == '{' ? 1 : c == '}' ? -1 : 0;
    brackets += c == '[' ? 1 : c == ']' ? -1 : 0;
    ASSERT_GE(braces, 0);
    ASSERT_GE(brackets, 0);
    closed = braces == 0 && c == '}';
  }
  EXPECT_TRUE(closed);
  EXPECT_EQ(brackets, 0);
  EXPECT_FALSE(inString);
}
