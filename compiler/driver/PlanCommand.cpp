//===- PlanCommand.cpp - hotstage plan: the pipeline before it runs -------===//

#include "compiler/driver/PlanCommand.h"
#include "compiler/driver/Pipelining.h"
#include "compiler/partition/Partition.h"
#include "compiler/schedule/Schedule.h"
#include "compiler/schedule/Simulate.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <set>

using namespace mlir;
using namespace hotstage;
using namespace hotstage::partition;

namespace {

std::string mib(int64_t bytes) {
  return llvm::formatv("{0:F1} MiB", bytes / 1048576.0).str();
}

/// "blocks.0..3" for a run of layers, else the names joined.
std::string describeChunk(const ModelAnalysis &model, const Chunk &chunk) {
  std::vector<std::string> parts;
  for (int i = chunk.first; i <= chunk.last; ++i) {
    const Atom &a = model.atoms[i];
    if (a.role == AtomRole::Layer && !parts.empty() && i > chunk.first &&
        model.atoms[i - 1].role == AtomRole::Layer) {
      // Extend "blocks.3" or "blocks.3..5" to this layer.
      StringRef prev = parts.back();
      StringRef stem = a.name;
      stem = stem.rsplit('.').first;
      if (prev.starts_with(stem.str() + ".")) {
        std::string start = prev.split("..").first.str();
        parts.back() =
            start + ".." + StringRef(a.name).rsplit('.').second.str();
        continue;
      }
    }
    parts.push_back(a.name);
  }
  return llvm::join(parts, ", ");
}

/// The textbook bubble fraction of `kind` for identical stages, or a
/// negative number where there is no closed form.
double textbookBubble(schedule::Kind kind, double p, double m, double v) {
  switch (kind) {
  case schedule::Kind::GPipe:
  case schedule::Kind::OneFOneB:
    return (p - 1) / (m + p - 1);
  case schedule::Kind::Interleaved1F1B:
    return (p - 1) / (v * m + p - 1);
  case schedule::Kind::ZBH1:
    // A third of 1F1B's bubble time when F, B and W take the same time.
    return (p - 1) / (3 * m + p - 1);
  default:
    return -1;
  }
}

const char *textbookFormula(schedule::Kind kind) {
  switch (kind) {
  case schedule::Kind::GPipe:
  case schedule::Kind::OneFOneB:
    return "(p-1)/(m+p-1)";
  case schedule::Kind::Interleaved1F1B:
    return "(p-1)/(v*m+p-1)";
  case schedule::Kind::ZBH1:
    return "(p-1)/(3m+p-1), F = B = W";
  default:
    return "";
  }
}

} // namespace

std::string hotstage::withCommas(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return out;
}

bool hotstage::parseByteCount(StringRef text, int64_t &bytes) {
  text = text.trim();
  size_t digits = text.find_first_not_of("0123456789");
  StringRef number = text.take_front(digits),
            suffix = text.drop_front(number.size());
  unsigned long long n;
  if (number.empty() || number.getAsInteger(10, n))
    return false;
  int shift = 0;
  std::string s = suffix.trim().lower();
  if (s == "" || s == "b")
    shift = 0;
  else if (s == "k" || s == "kib")
    shift = 10;
  else if (s == "m" || s == "mib")
    shift = 20;
  else if (s == "g" || s == "gib")
    shift = 30;
  else if (s == "t" || s == "tib")
    shift = 40;
  else
    return false;
  if (n > (static_cast<unsigned long long>(INT64_MAX) >> shift))
    return false;
  bytes = static_cast<int64_t>(n << shift);
  return true;
}

int hotstage::runPlanCommand(ModuleOp module, const PipelineSetup &setup,
                             const std::vector<plan::Plan> &plans,
                             const PlanCommandOptions &options,
                             llvm::raw_ostream &os) {
  const TrainConfig &train = setup.train;
  const MachineModel &machine = setup.machine;
  const ModelAnalysis &model = setup.model;
  const schedule::Schedule &sched = setup.schedule;
  const schedule::Config &config = sched.config;
  const Partition &cut = setup.cut;
  int numChunks = sched.numChunks();

  // Per chunk: the sums of its atoms.
  struct ChunkCost {
    double f = 0, b = 0, w = 0, flops = 0;
    int64_t saved = 0, weightSaved = 0, weightInput = 0, out = 0;
    std::set<std::string> params;
  };
  std::vector<ChunkCost> chunks(numChunks);
  for (int c = 0; c < numChunks; ++c) {
    ChunkCost &cc = chunks[c];
    for (int i = cut.chunks[c].first; i <= cut.chunks[c].last; ++i) {
      const Atom &a = model.atoms[i];
      cc.f += a.forwardSeconds;
      cc.b += a.backwardInputSeconds;
      cc.w += a.backwardWeightSeconds;
      cc.flops +=
          a.forward.flops + a.backwardInput.flops + a.backwardWeight.flops;
      cc.saved += a.savedBytes;
      cc.weightSaved += a.weightSavedBytes;
      cc.weightInput += a.weightInputBytes;
      cc.params.insert(a.params.begin(), a.params.end());
    }
    cc.out = c + 1 < numChunks ? model.atoms[cut.chunks[c].last].outBytes : 0;
  }

  // Per rank: its chunks' parameters (a tied one on every rank that reads
  // it), their gradients and optimizer moments, and the activations its
  // schedule holds at its peak.
  int ranks = config.stages;
  struct RankMemory {
    int64_t weights = 0, activations = 0, peakMicrobatches = 0;
    std::set<std::string> params;
  };
  std::vector<RankMemory> memory(ranks);
  int moments = train.optimizer == "adamw" ? 2 : (train.momentum > 0 ? 1 : 0);
  for (int c = 0; c < numChunks; ++c)
    memory[sched.chunkRank[c]].params.insert(chunks[c].params.begin(),
                                             chunks[c].params.end());
  for (int r = 0; r < ranks; ++r) {
    RankMemory &mem = memory[r];
    for (const std::string &p : mem.params)
      mem.weights += model.paramBytes(p);
    int64_t held = 0, inFlight = 0;
    for (const schedule::Action &a : sched.ranks[r]) {
      const ChunkCost &cc = chunks[a.chunk];
      switch (a.phase) {
      case schedule::Phase::F:
        held += cc.saved;
        ++inFlight;
        break;
      case schedule::Phase::B:
        held -= sched.splitBackward ? cc.saved - cc.weightSaved - cc.weightInput
                                    : cc.saved;
        --inFlight;
        break;
      case schedule::Phase::W:
        held -= cc.weightSaved + cc.weightInput;
        break;
      }
      mem.activations = std::max(mem.activations, held);
      mem.peakMicrobatches = std::max(mem.peakMicrobatches, inFlight);
    }
  }

  schedule::Costs costs;
  for (const ChunkCost &cc : chunks) {
    costs.forward.push_back(cc.f * 1e3);
    costs.backwardInput.push_back(cc.b * 1e3);
    costs.backwardWeight.push_back(cc.w * 1e3);
  }
  int64_t boundary = 0;
  for (const ChunkCost &cc : chunks)
    boundary = std::max(boundary, cc.out);
  costs.transfer = machine.transferSeconds(boundary) * 1e3;
  schedule::Timeline timeline = schedule::simulate(sched, costs);

  StringRef modelName = "model";
  if (auto name = module->getAttrOfType<StringAttr>("nn.model"))
    modelName = name.getValue();
  int64_t rows =
      train.batch / std::max<int64_t>(1, train.microbatches * train.dp);
  os << "pipeline plan for " << modelName << ": " << config.stages
     << " stage(s) x " << config.virtualStages << " virtual, schedule "
     << schedule::kindName(config.kind) << ", " << config.microbatches
     << " microbatches of " << rows << "x" << train.seq << " tokens";
  if (train.dp > 1)
    os << ", " << train.dp << " data-parallel replicas";
  os << " (" << config.stages * train.dp << " ranks)\n";
  os << "partition: " << cut.source << "; cost model '" << machine.name
     << "': " << llvm::format("%.0f", machine.flopsPerSecond / 1e9)
     << " GFLOP/s, " << llvm::format("%.0f", machine.bytesPerSecond / 1e9)
     << " GB/s, links "
     << llvm::format("%.0f", machine.linkBytesPerSecond / 1e9) << " GB/s\n\n";

  os << llvm::formatv("{0,4} {1,5}  {2,-34} {3,13} {4,10} {5,8} {6,8} {7,8} "
                      "{8,12} {9,11}\n",
                      "rank", "chunk", "units", "parameters", "GFLOP/mb",
                      "F ms", "B ms", "W ms", "saved/mb", "send/mb");
  for (int c = 0; c < numChunks; ++c) {
    const ChunkCost &cc = chunks[c];
    int64_t params = 0;
    for (const std::string &p : cc.params)
      params += model.paramBytes(p) / 4;
    std::string units = describeChunk(model, cut.chunks[c]);
    if (units.size() > 34)
      units = units.substr(0, 31) + "...";
    os << llvm::formatv("{0,4} {1,5}  {2,-34} {3,13} {4,10:F3} {5,8:F3} "
                        "{6,8:F3} {7,8:F3} {8,12} {9,11}\n",
                        sched.chunkRank[c], c, units, withCommas(params),
                        cc.flops / 1e9, cc.f * 1e3, cc.b * 1e3, cc.w * 1e3,
                        mib(cc.saved), cc.out ? mib(cc.out) : "-");
  }

  os << "\nmemory per rank (weights, gradients, optimizer moments x" << moments
     << ", activations held for the backward at the peak; the arena is the\n"
        "exact allocation of the rank's memory plan, working buffers and "
        "transfer slots included)\n";
  os << llvm::formatv(
      "{0,4} {1,12} {2,12} {3,12} {4,14} {5,12} {6,12} {7,12}\n", "rank",
      "weights", "gradients", "optimizer", "activations", "in flight", "total",
      "arena");
  std::string overBudget;
  for (int r = 0; r < ranks; ++r) {
    const RankMemory &mem = memory[r];
    int64_t total = mem.weights * (2 + moments) + mem.activations;
    const plan::Plan *compiled =
        r < static_cast<int>(plans.size()) ? &plans[r] : nullptr;
    os << llvm::formatv(
        "{0,4} {1,12} {2,12} {3,12} {4,14} {5,12} {6,12} {7,12}\n", r,
        mib(mem.weights), mib(mem.weights), mib(mem.weights * moments),
        mib(mem.activations), std::to_string(mem.peakMicrobatches) + " mb",
        mib(total), compiled ? mib(compiled->arenaBytes) : "-");
    if (compiled && options.memoryBudget > 0 && overBudget.empty())
      overBudget = plan::overBudget(*compiled, options.memoryBudget);
  }

  double makespan = timeline.makespan;
  double bubble = timeline.bubble();
  os << "\npredicted step: " << llvm::format("%.3f", makespan)
     << " ms for the pipeline, bubble " << llvm::format("%.1f", bubble * 100)
     << "%";
  double textbook = textbookBubble(config.kind, config.stages,
                                   config.microbatches, config.virtualStages);
  if (textbook >= 0)
    os << " (textbook " << textbookFormula(config.kind) << " = "
       << llvm::format("%.1f", textbook * 100) << "%)";
  os << "\nidle per rank:";
  for (int r = 0; r < ranks; ++r)
    os << "  " << r << ": " << llvm::format("%.1f", timeline.idle(r) * 100)
       << "%";
  os << "\n\ntimeline (F forward, B input gradients, W weight gradients; "
        "digits: microbatch)\n";
  os << schedule::renderTimeline(timeline, sched, options.timelineWidth);

  if (!options.traceFile.empty()) {
    std::error_code ec;
    llvm::raw_fd_ostream trace(options.traceFile, ec, llvm::sys::fs::OF_Text);
    if (ec) {
      llvm::errs() << "hotstage plan: cannot write " << options.traceFile
                   << ": " << ec.message() << "\n";
      return 1;
    }
    // Milliseconds of the cost model, microseconds in the trace.
    trace << schedule::chromeTrace(timeline, 1000);
    os << "\nwrote " << options.traceFile
       << " (Chrome trace: open in Perfetto or chrome://tracing)\n";
  }

  if (!overBudget.empty()) {
    emitError(module.getLoc()) << overBudget;
    return 1;
  }
  return 0;
}
