//===- Plan.cpp - Memory plan and text form of the plan -------------------===//

#include "compiler/plan/Plan.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <map>

using namespace hotstage;
using namespace hotstage::plan;

// Cache lines, and what the widest vector loads like.
static constexpr int64_t kAlignment = 64;

static int64_t alignUp(int64_t x) {
  return (x + kAlignment - 1) / kAlignment * kAlignment;
}

int Plan::find(llvm::StringRef name, BufferKind kind) const {
  for (auto [i, b] : llvm::enumerate(buffers))
    if (b.kind == kind && b.name == name)
      return static_cast<int>(i);
  return -1;
}

int64_t plan::runStride(int64_t bytes) { return alignUp(bytes); }

int64_t plan::runBytes(const Plan &plan, llvm::ArrayRef<int> run) {
  int64_t bytes = 0;
  for (int b : run.drop_back())
    bytes += alignUp(plan.buffers[b].bytes);
  return bytes + plan.buffers[run.back()].bytes;
}

void plan::assignOffsets(Plan &plan) {
  std::map<int, const std::vector<int> *> runOf;
  for (const std::vector<int> &run : plan.contiguous)
    for (int b : run)
      runOf[b] = &run;
  int64_t offset = 0;
  std::vector<int> temps;
  std::vector<bool> placed(plan.buffers.size());
  auto place = [&](int i) {
    Buffer &b = plan.buffers[i];
    b.offset = offset;
    offset += alignUp(b.bytes) * std::max(1, b.slots);
    placed[i] = true;
  };
  for (auto [i, b] : llvm::enumerate(plan.buffers)) {
    if (b.kind == BufferKind::Temp) {
      if (b.firstUse >= 0)
        temps.push_back(static_cast<int>(i));
      continue;
    }
    if (placed[i])
      continue;
    auto run = runOf.find(static_cast<int>(i));
    if (run == runOf.end()) {
      place(static_cast<int>(i));
      continue;
    }
    for (int r : *run->second)
      place(r);
  }
  plan.persistentBytes = offset;

  // Largest first, each at the lowest offset that overlaps no placed
  // buffer whose lifetime intersects its own.
  llvm::stable_sort(temps, [&](int a, int b) {
    return plan.buffers[a].bytes > plan.buffers[b].bytes;
  });
  std::vector<int> packed;
  int64_t peak = offset;
  for (int t : temps) {
    Buffer &b = plan.buffers[t];
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (int p : packed) {
      const Buffer &o = plan.buffers[p];
      if (o.firstUse <= b.lastUse && b.firstUse <= o.lastUse)
        busy.push_back({o.offset, o.offset + o.bytes});
    }
    llvm::sort(busy);
    int64_t candidate = offset;
    for (auto [begin, end] : busy) {
      if (candidate + b.bytes <= begin)
        break;
      candidate = std::max(candidate, alignUp(end));
    }
    b.offset = candidate;
    peak = std::max(peak, alignUp(candidate + b.bytes));
    packed.push_back(t);
  }
  plan.arenaBytes = peak;
}

static llvm::StringRef kindName(BufferKind kind) {
  switch (kind) {
  case BufferKind::Param:
    return "param";
  case BufferKind::State:
    return "state";
  case BufferKind::Input:
    return "input";
  case BufferKind::Scalar:
    return "scalar";
  case BufferKind::Temp:
    return "temp";
  case BufferKind::Stash:
    return "stash";
  case BufferKind::Boundary:
    return "boundary";
  }
  return "?";
}

static void printShape(llvm::ArrayRef<int64_t> shape, llvm::raw_ostream &os) {
  if (shape.empty()) {
    os << "scalar";
    return;
  }
  llvm::interleave(shape, os, "x");
}

void plan::print(const Plan &plan, llvm::raw_ostream &os) {
  os << "hotstage-plan 1\n";
  os << "model " << plan.model << "\n";
  os << "microbatches " << plan.microbatches << "\n";
  os << "batch " << plan.batch << "\n";
  os << "seq " << plan.seq << "\n";
  os << "vocab " << plan.vocab << "\n";
  if (plan.replicas > 1 && !plan.pipeline)
    os << "replicas " << plan.replicas << "\n";
  if (const Pipeline *p = plan.pipeline ? &*plan.pipeline : nullptr) {
    os << "pipeline " << p->stages << " " << p->dp << " " << p->rank << " "
       << p->schedule << "\n";
    for (size_t c = 0; c < p->chunkRank.size(); ++c)
      os << "chunk " << c << " rank " << p->chunkRank[c] << " slots "
         << p->chunkSlots[c] << "\n";
  }
  os << "arena " << plan.arenaBytes << "\n";
  os << "persistent " << plan.persistentBytes << "\n";
  for (auto [i, b] : llvm::enumerate(plan.buffers)) {
    if (b.kind == BufferKind::Temp && b.firstUse < 0)
      continue;
    os << "buffer " << i << " " << kindName(b.kind) << " "
       << (b.name.empty() ? "-" : b.name) << " " << b.dtype << " ";
    printShape(b.shape, os);
    os << " offset " << b.offset << " bytes " << b.bytes;
    if (b.pitch)
      os << " pitch " << b.pitch;
    if (b.kind == BufferKind::Param)
      os << " init " << b.init << " " << llvm::format("%.17g", b.initA) << " "
         << llvm::format("%.17g", b.initB);
    if (b.kind == BufferKind::State)
      os << " role " << b.role << " of " << b.of;
    if (b.kind == BufferKind::Temp)
      os << " live " << b.firstUse << " " << b.lastUse;
    if (b.kind == BufferKind::Boundary)
      os << " role " << b.role << " index " << b.index;
    if (b.chunk >= 0)
      os << " chunk " << b.chunk << " slots " << b.slots;
    os << "\n";
  }
  for (auto [i, k] : llvm::enumerate(plan.kernels))
    os << "kernel " << i << " " << k << "\n";
  for (const Function &f : plan.functions) {
    os << "function " << f.name << " " << f.actions.size() << "\n";
    for (const Action &a : f.actions) {
      if (a.kind == Action::Kind::Call) {
        os << "  call " << a.kernel << " " << a.parallel << " "
           << a.buffers.size();
        for (int b : a.buffers)
          os << " " << b;
        if (a.block)
          os << " block " << a.block;
      } else if (a.kind == Action::Kind::Attention ||
                 a.kind == Action::Kind::AttentionGrad) {
        os << (a.kind == Action::Kind::Attention ? "  attention "
                                                 : "  attention_grad ")
           << a.batch << " " << a.seq << " " << a.heads << " " << a.kvHeads
           << " " << a.headDim << " " << a.causal << " "
           << llvm::format("%.9g", a.scale);
        for (int b : a.buffers)
          os << " " << b;
        if (a.packedQKV)
          os << " qkv";
        if (a.packedDQKV)
          os << " dqkv";
      } else {
        os << "  gemm " << a.batch << " " << a.m << " " << a.n << " " << a.k
           << " " << a.transA << " " << a.transB << " " << a.accumulate << " "
           << a.buffers[0] << " " << a.buffers[1] << " " << a.buffers[2] << " "
           << a.strideA << " " << a.strideB << " " << a.strideC;
        if (a.bias >= 0)
          os << " bias " << a.bias;
        if (a.addend >= 0)
          os << " addend " << a.addend;
        if (!a.activation.empty())
          os << " " << a.activation;
        if (a.aux >= 0)
          os << " aux " << a.aux;
        if (a.bgrad >= 0)
          os << " bgrad " << a.bgrad;
      }
      os << " # " << a.note << "\n";
    }
  }
  if (const Pipeline *p = plan.pipeline ? &*plan.pipeline : nullptr) {
    for (const Pipeline::Send &s : p->sends)
      os << "send " << s.chunk << " "
         << (s.gradient ? "gradient" : "activation") << " " << s.index << " "
         << s.buffer << "\n";
    for (const Pipeline::Exchange &e : p->exchanges)
      os << "exchange " << (e.send ? "send" : "receive") << " " << e.tag << " "
         << e.buffer << " " << e.peer << "\n";
    os << "steps " << p->steps.size() << "\n";
    for (const Pipeline::Step &s : p->steps)
      os << "  " << s.phase << " " << s.chunk << " " << s.microbatch << "\n";
  }
  os << "end\n";
}

void plan::printMemorySummary(const Plan &plan, llvm::raw_ostream &os) {
  int64_t params = 0, grads = 0, moments = 0, copies = 0, other = 0,
          stashed = 0;
  for (const Buffer &b : plan.buffers) {
    if (b.kind == BufferKind::Param)
      params += b.bytes;
    else if (b.kind == BufferKind::State && b.role == "grad")
      grads += b.bytes;
    else if (b.kind == BufferKind::State && b.role == "bf16")
      copies += b.bytes;
    else if (b.kind == BufferKind::State)
      moments += b.bytes;
    else if (b.kind == BufferKind::Stash || b.kind == BufferKind::Boundary)
      stashed += alignUp(b.bytes) * b.slots;
    else if (b.kind != BufferKind::Temp)
      other += b.bytes;
  }
  auto line = [&](llvm::StringRef what, int64_t bytes) {
    os << "  " << llvm::left_justify(what, 28)
       << llvm::right_justify(std::to_string(bytes), 14) << " bytes  "
       << llvm::format("%10.1f MiB", bytes / double(1 << 20)) << "\n";
  };
  os << "memory plan (one training step, f32, host):\n";
  line("parameters", params);
  line("gradients", grads);
  line("optimizer state", moments);
  if (copies)
    line("bf16 weight copies", copies);
  line("inputs and scalars", other);
  if (plan.pipeline)
    line("microbatches in flight", stashed);
  line("activations (peak, packed)", plan.arenaBytes - plan.persistentBytes);
  line("arena (allocated once)", plan.arenaBytes);
}

std::string plan::overBudget(const Plan &plan, int64_t budget) {
  if (plan.arenaBytes <= budget)
    return "";
  auto mib = [](int64_t bytes) {
    return llvm::formatv("{0:F1} MiB", bytes / 1048576.0).str();
  };
  // By what they hold: the categories a user can act on.
  std::map<std::string, int64_t> byWhat;
  for (const Buffer &b : plan.buffers) {
    std::string what;
    switch (b.kind) {
    case BufferKind::Temp:
      continue;
    case BufferKind::Param:
      what = "parameters";
      break;
    case BufferKind::State:
      what = b.role == "grad"   ? "gradient accumulators"
             : b.role == "bf16" ? "bf16 weight copies"
                                : "optimizer state";
      break;
    case BufferKind::Stash:
      what = "saved activations of chunk " + std::to_string(b.chunk) + " (x" +
             std::to_string(b.slots) + " microbatches)";
      break;
    case BufferKind::Boundary:
      what = "received " + b.role + "s of chunk " + std::to_string(b.chunk) +
             " (x" + std::to_string(b.slots) + ")";
      break;
    case BufferKind::Input:
    case BufferKind::Scalar:
      what = "inputs and scalars";
      break;
    }
    byWhat[what] += alignUp(b.bytes) * b.slots;
  }
  std::vector<std::pair<int64_t, std::string>> biggest;
  for (auto &[what, bytes] : byWhat)
    biggest.push_back({bytes, what});
  biggest.push_back(
      {plan.arenaBytes - plan.persistentBytes, "working buffers (packed)"});
  llvm::sort(biggest, [](auto &a, auto &b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::string out =
      "rank " + std::to_string(plan.pipeline ? plan.pipeline->rank : 0) +
      " needs " + mib(plan.arenaBytes) + ", over the memory budget of " +
      mib(budget) + "; its biggest buffers:";
  for (size_t i = 0; i < std::min<size_t>(3, biggest.size()); ++i)
    out += (i ? ", " : " ") + biggest[i].second + " " + mib(biggest[i].first);
  return out;
}
