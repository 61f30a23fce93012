//===- Simulate.cpp - Pipeline schedules on a cost model -----------------===//

#include "compiler/schedule/Simulate.h"

#include <algorithm>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstdio>

using namespace hotstage;
using namespace hotstage::schedule;

Costs Costs::uniform(int chunks, double f, double b, double w) {
  Costs costs;
  costs.forward.assign(std::max(0, chunks), f);
  costs.backwardInput.assign(std::max(0, chunks), b);
  costs.backwardWeight.assign(std::max(0, chunks), w);
  return costs;
}

double Costs::of(const Action &action, bool splitBackward) const {
  auto at = [&](const std::vector<double> &v) {
    assert(action.chunk < static_cast<int>(v.size()) && "a cost per chunk");
    return action.chunk < static_cast<int>(v.size()) ? v[action.chunk] : 0.0;
  };
  switch (action.phase) {
  case Phase::F:
    return at(forward);
  case Phase::B:
    return splitBackward ? at(backwardInput)
                         : at(backwardInput) + at(backwardWeight);
  case Phase::W:
    return at(backwardWeight);
  }
  return 0;
}

double Timeline::bubble() const {
  double total = makespan * static_cast<double>(busy.size());
  return total > 0 ? bubbleTime() / total : 0;
}

double Timeline::bubbleTime() const {
  double sum = 0;
  for (double b : busy)
    sum += b;
  return makespan * static_cast<double>(busy.size()) - sum;
}

double Timeline::idle(int rank) const {
  if (makespan <= 0 || rank < 0 || rank >= static_cast<int>(busy.size()))
    return 0;
  return 1 - busy[rank] / makespan;
}

Timeline schedule::simulate(const Schedule &s, const Costs &costs) {
  int numRanks = s.numRanks(), chunks = s.numChunks();
  int m = s.config.microbatches;
  Timeline t;
  t.ranks.resize(numRanks);
  t.busy.assign(numRanks, 0);
  auto valid = [&](const Action &a) {
    return a.chunk >= 0 && a.chunk < chunks && a.microbatch >= 0 &&
           a.microbatch < m;
  };
  auto id = [&](const Action &a) {
    return (static_cast<int>(a.phase) * chunks + a.chunk) * m + a.microbatch;
  };
  std::vector<double> end(3 * std::max(0, chunks) * std::max(0, m), -1);
  std::vector<double> freeAt(numRanks, 0);
  std::vector<size_t> next(numRanks, 0);
  // Each pass runs every rank as far as its inputs allow; times depend only
  // on the producers, so the order of ranks within a pass does not matter.
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < numRanks; ++r) {
      for (; next[r] < s.ranks[r].size(); ++next[r]) {
        const Action &a = s.ranks[r][next[r]];
        if (!valid(a))
          break;
        double start = freeAt[r];
        Dependencies deps = dependencies(s, a);
        bool ready = true;
        for (int d = 0; d < deps.count && ready; ++d) {
          double produced = end[id(deps.of[d])];
          if (produced < 0) {
            ready = false;
            break;
          }
          if (s.chunkRank[deps.of[d].chunk] != r)
            produced += costs.transfer;
          start = std::max(start, produced);
        }
        if (!ready)
          break;
        double duration = costs.of(a, s.splitBackward);
        Timed timed;
        timed.action = a;
        timed.rank = r;
        timed.start = start;
        timed.end = start + duration;
        t.ranks[r].push_back(timed);
        end[id(a)] = timed.end;
        freeAt[r] = timed.end;
        t.busy[r] += duration;
        t.makespan = std::max(t.makespan, timed.end);
        progress = true;
      }
    }
  }
  return t;
}

// The label of an action on its rank: letter and microbatch, the rank's
// k-th chunk shown by case (two chunks per rank) or as ".k" (more).
static std::string label(const Action &a, const Schedule &s,
                         int chunksPerRank) {
  int local = 0;
  for (int c = 0; c < a.chunk && c < s.numChunks(); ++c)
    local += s.chunkRank[c] == s.chunkRank[a.chunk];
  char letter = phaseName(a.phase)[0];
  if (chunksPerRank == 2 && local == 1)
    letter = static_cast<char>(std::tolower(letter));
  std::string text = letter + std::to_string(a.microbatch);
  if (chunksPerRank > 2)
    text += "." + std::to_string(local);
  return text;
}

static std::string formatNumber(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", value);
  return buf;
}

std::string schedule::renderTimeline(const Timeline &t, const Schedule &s,
                                     int width) {
  int numRanks = static_cast<int>(t.ranks.size());
  int chunksPerRank = 0;
  for (int r = 0; r < numRanks; ++r)
    chunksPerRank = std::max(
        chunksPerRank, static_cast<int>(std::count(s.chunkRank.begin(),
                                                   s.chunkRank.end(), r)));

  std::string out = "schedule " + std::string(kindName(s.config.kind)) + ": " +
                    std::to_string(s.config.stages) + " stages, " +
                    std::to_string(s.config.microbatches) + " microbatches";
  if (s.config.virtualStages > 1)
    out += ", " + std::to_string(s.config.virtualStages) + " virtual stages";
  char buf[64];
  std::snprintf(buf, sizeof buf, "; bubble %.1f%%", 100 * t.bubble());
  out += buf;
  out += "\n";

  std::string last = std::to_string(std::max(0, numRanks - 1));
  size_t prefix = std::string("rank ").size() + last.size() + 2; // " |"
  int columns = std::max(10, width - static_cast<int>(prefix) - 1);
  // Whole columns per time unit where they fit, so that equal costs get
  // equal widths.
  double scale = 1;
  if (t.makespan > 0) {
    scale = columns / t.makespan;
    if (scale >= 1)
      scale = std::floor(scale);
  }
  int used = static_cast<int>(std::lround(t.makespan * scale));
  used = std::min(std::max(used, 1), columns);
  out += "time 0 to " + formatNumber(t.makespan) +
         ", 1 column = " + formatNumber(1 / scale) + " time units, '.' idle";
  if (chunksPerRank == 2)
    out += ", lower case: the rank's second chunk";
  if (chunksPerRank > 2)
    out += ", .k: the rank's k-th chunk";
  out += "\n";

  for (int r = 0; r < numRanks; ++r) {
    std::string row(used, '.');
    for (const Timed &timed : t.ranks[r]) {
      int from = static_cast<int>(std::lround(timed.start * scale));
      int to = static_cast<int>(std::lround(timed.end * scale));
      from = std::min(std::max(from, 0), used);
      to = std::min(std::max(to, from), used);
      std::string text = label(timed.action, s, chunksPerRank);
      if (to == from) {
        // Shorter than a column: show it unless it would hide another.
        if (from < used && row[from] == '.')
          row[from] = text[0];
        continue;
      }
      int length = to - from;
      if (static_cast<int>(text.size()) > length)
        text = std::string(length, text[0]);
      text.resize(length, ' ');
      row.replace(from, length, text);
    }
    std::string name = "rank " + std::to_string(r);
    name.resize(prefix - 2, ' ');
    out += name + " |" + row + "|\n";
  }
  return out;
}

std::string schedule::chromeTrace(const Timeline &t, double usPerUnit) {
  std::string out = "{\"traceEvents\":[\n";
  out += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"tid\":0,"
         "\"args\":{\"name\":\"plan\"}}";
  char buf[256];
  for (int r = 0, e = static_cast<int>(t.ranks.size()); r < e; ++r) {
    std::snprintf(buf, sizeof buf,
                  ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":0,"
                  "\"tid\":%d,\"args\":{\"name\":\"rank %d\"}}",
                  r, r);
    out += buf;
    std::snprintf(buf, sizeof buf,
                  ",\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":0,"
                  "\"tid\":%d,\"args\":{\"sort_index\":%d}}",
                  r, r);
    out += buf;
  }
  for (const std::vector<Timed> &row : t.ranks)
    for (const Timed &timed : row) {
      const Action &a = timed.action;
      const char *phase = phaseName(a.phase);
      std::snprintf(buf, sizeof buf,
                    ",\n{\"name\":\"%s mb%d chunk%d\",\"cat\":\"%s\","
                    "\"ph\":\"X\",\"pid\":0,\"tid\":%d,\"ts\":%.3f,"
                    "\"dur\":%.3f,\"args\":{\"microbatch\":%d,\"chunk\":%d}}",
                    phase, a.microbatch, a.chunk, phase, timed.rank,
                    timed.start * usPerUnit,
                    (timed.end - timed.start) * usPerUnit, a.microbatch,
                    a.chunk);
      out += buf;
    }
  out += "\n],\"displayTimeUnit\":\"ms\"}\n";
  return out;
}
