//===- Plan.cpp - Parsing the plan ----------------------------------------===//

#include "runtime/host/Plan.h"

#include <sstream>

using namespace hotstage::rt;

int64_t PlanBuffer::numElements() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

const PlanBuffer *Plan::find(const std::string &kind,
                             const std::string &name) const {
  for (auto &[id, b] : buffers)
    if (b.kind == kind && b.name == name)
      return &b;
  return nullptr;
}

std::vector<const PlanBuffer *>
Plan::gradients(const std::string &param) const {
  std::vector<const PlanBuffer *> out;
  for (auto &[id, b] : buffers)
    if (b.kind == "state" && b.role == "grad" && b.of == param)
      out.push_back(&b);
  return out;
}

static std::vector<int64_t> parseShape(const std::string &s) {
  std::vector<int64_t> shape;
  if (s == "scalar")
    return shape;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, 'x'))
    shape.push_back(std::stoll(part));
  return shape;
}

/// What is wrong with GEMM `a`'s epilogue, or "": its buffers are f32 of
/// the right sizes, and it is one GEMM that writes C afresh.
static std::string checkEpilogue(Plan &plan, const PlanAction &a) {
  if (a.bgradArg >= 0) {
    const PlanBuffer &g = plan.buffers[a.buffers[a.bgradArg]];
    if (a.batch != 1 || !a.transA || a.biasArg >= 0 || a.addendArg >= 0 ||
        a.auxArg >= 0 || !a.activation.empty())
      return "gemm bgrad needs one GEMM with A transposed and no other "
             "epilogue";
    if (g.dtype != "f32" || g.bytes != a.m * 4)
      return "gemm bgrad must be " + std::to_string(a.m) + " f32";
    if (a.buffers[a.bgradArg] == a.buffers[2])
      return "gemm bgrad must not be its output";
    return "";
  }
  bool any = a.biasArg >= 0 || a.addendArg >= 0 || a.auxArg >= 0 ||
             !a.activation.empty();
  if (!any)
    return "";
  if (a.batch != 1 || a.accumulate)
    return "a gemm epilogue needs one GEMM that does not accumulate";
  if (a.activation == "dgelu_tanh" &&
      (a.auxArg < 0 || a.biasArg >= 0 || a.addendArg >= 0))
    return "dgelu_tanh takes aux (the GELU's input) and nothing else";
  if (a.activation.empty() && a.auxArg >= 0)
    return "gemm aux without an activation";
  if (a.activation == "gelu_tanh" && a.addendArg >= 0)
    return "gemm with both an addend and gelu_tanh";
  auto sized = [&](int arg, int64_t elements, const char *dtype = "f32") {
    if (arg < 0)
      return true;
    const PlanBuffer &b = plan.buffers[a.buffers[arg]];
    int64_t size = std::string(dtype) == "bf16" ? 2 : 4;
    return b.dtype == dtype && b.bytes == elements * size;
  };
  // The bias, addend and aux have C's type (as cuBLASLt wants them).
  const char *type = a.bf16Out ? "bf16" : "f32";
  if (!sized(a.biasArg, a.n, type))
    return "gemm bias must be " + std::to_string(a.n) + " " + type;
  if (!sized(a.addendArg, a.m * a.n, type) || !sized(a.auxArg, a.m * a.n, type))
    return "gemm addend and aux must be " + std::to_string(a.m) + "x" +
           std::to_string(a.n) + " " + type;
  for (int arg : {a.addendArg, a.auxArg})
    if (arg >= 0 && a.buffers[arg] == a.buffers[2])
      return "gemm addend and aux must not be its output";
  return "";
}

std::string PlanAction::profileName() const {
  auto str = [](int64_t v) { return std::to_string(v); };
  if (gemm)
    return "gemm " + note + " " + (batch > 1 ? str(batch) + "x" : "") + str(m) +
           "x" + str(n) + "x" + str(k) + " " + (transA ? "T" : "N") +
           (transB ? "T" : "N") + (bf16 ? " bf16" : " f32");
  if (attention)
    return note + " B" + str(batch) + " T" + str(seq) + " H" + str(heads) +
           "/" + str(kvHeads) + " D" + str(headDim) + (causal ? " causal" : "");
  return note;
}

int64_t PlanAction::attentionOffset(int i) const {
  bool packed = i < 3 ? packedQKV : i >= 6 && packedDQKV;
  int piece = i < 3 ? i : i - 6;
  if (!packed || piece == 0)
    return 0;
  return (piece == 1 ? heads : heads + kvHeads) * headDim;
}

int64_t PlanAction::attentionRow(int i) const {
  if (i < 3 ? packedQKV : i >= 6 && packedDQKV)
    return (heads + 2 * kvHeads) * headDim;
  bool kv = i == 1 || i == 2 || i == 7 || i == 8;
  return (kv ? kvHeads : heads) * headDim;
}

/// What is wrong with attention action `a`, or "".
static std::string checkAttention(Plan &plan, const PlanAction &a) {
  if (a.batch < 1 || a.seq < 1 || a.heads < 1 || a.kvHeads < 1 ||
      a.headDim < 1 || a.heads % a.kvHeads != 0)
    return "attention needs positive sizes and heads a multiple of kv heads";
  int64_t q = a.batch * a.seq * a.heads * a.headDim,
          kv = a.batch * a.seq * a.kvHeads * a.headDim,
          packed = a.batch * a.seq * (a.heads + 2 * a.kvHeads) * a.headDim;
  // Q K V O STATS [dO dQ dK dV]: elements and type of each.
  int64_t elements[] = {q, kv, kv, q, a.batch * a.heads * a.seq, q, q, kv, kv};
  // A packed Q K V (dQ dK dV) names one buffer three times.
  for (int first : {0, 6}) {
    if (!(first == 0 ? a.packedQKV : a.packedDQKV))
      continue;
    if (first >= static_cast<int>(a.buffers.size()))
      return "dqkv on an attention that makes no gradients";
    if (a.buffers[first] != a.buffers[first + 1] ||
        a.buffers[first] != a.buffers[first + 2])
      return std::string(first == 0 ? "qkv" : "dqkv") +
             " attention names one buffer three times";
    for (int i = first; i < first + 3; ++i)
      elements[i] = packed;
  }
  for (size_t i = 0; i < a.buffers.size(); ++i) {
    const PlanBuffer &b = plan.buffers[a.buffers[i]];
    const char *dtype = i == 4 ? "f32" : "bf16";
    if (b.dtype != dtype || b.bytes != elements[i] * (i == 4 ? 4 : 2))
      return "attention buffer " + std::to_string(i + 1) + " must be " +
             std::to_string(elements[i]) + " " + dtype;
  }
  return "";
}

bool hotstage::rt::parsePlan(const char *text, Plan &plan, std::string &error,
                             int which) {
  std::istringstream in(text);
  std::string line;
  int lineNo = 0;
  // Skip the plans before `which`.
  for (int skipped = 0; skipped < which;) {
    if (!std::getline(in, line)) {
      error = "the executable holds no plan " + std::to_string(which);
      return false;
    }
    ++lineNo;
    if (line == "end")
      ++skipped;
  }
  int first = lineNo + 1;
  bool inSteps = false;
  std::vector<PlanAction> *function = nullptr;
  auto fail = [&](const std::string &what) {
    error = "plan line " + std::to_string(lineNo) + ": " + what + ": '" + line +
            "'";
    return false;
  };
  bool ended = false;
  while (std::getline(in, line)) {
    ++lineNo;
    std::string body = line.substr(0, line.find('#'));
    std::istringstream f(body);
    std::string word;
    if (!(f >> word))
      continue;
    if (lineNo == first) {
      int version = 0;
      if (word != "hotstage-plan" || !(f >> version) || version != 1)
        return fail("not a version 1 plan");
      continue;
    }
    if (word == "model") {
      f >> plan.model;
    } else if (word == "microbatches") {
      f >> plan.microbatches;
    } else if (word == "batch") {
      f >> plan.batch;
    } else if (word == "seq") {
      f >> plan.seq;
    } else if (word == "vocab") {
      f >> plan.vocab;
    } else if (word == "replicas") {
      f >> plan.replicas;
    } else if (word == "pipeline") {
      PlanPipeline &p = plan.pipeline;
      if (!(f >> p.stages >> p.dp >> p.rank >> p.schedule) || p.stages < 1 ||
          p.dp < 1 || p.rank < 0 || p.rank >= p.stages)
        return fail("bad pipeline");
      plan.pipelined = true;
    } else if (word == "chunk") {
      int chunk, rank, slots;
      std::string r, s;
      if (!(f >> chunk >> r >> rank >> s >> slots) ||
          chunk != static_cast<int>(plan.pipeline.chunkRank.size()) ||
          slots < 1)
        return fail("bad chunk");
      plan.pipeline.chunkRank.push_back(rank);
      plan.pipeline.chunkSlots.push_back(slots);
    } else if (word == "send") {
      PlanPipeline::Send send;
      std::string kind;
      if (!(f >> send.chunk >> kind >> send.index >> send.buffer) ||
          !plan.buffers.count(send.buffer))
        return fail("bad send");
      send.gradient = kind == "gradient";
      plan.pipeline.sends.push_back(send);
    } else if (word == "exchange") {
      PlanPipeline::Exchange e;
      std::string kind;
      if (!(f >> kind >> e.tag >> e.buffer >> e.peer) ||
          !plan.buffers.count(e.buffer))
        return fail("bad exchange");
      e.send = kind == "send";
      plan.pipeline.exchanges.push_back(e);
    } else if (word == "steps") {
      inSteps = true;
    } else if (inSteps && (word == "F" || word == "B" || word == "W")) {
      PlanPipeline::Step step{word[0], 0, 0};
      if (!(f >> step.chunk >> step.microbatch) || step.chunk < 0 ||
          step.chunk >= static_cast<int>(plan.pipeline.chunkRank.size()))
        return fail("bad step");
      plan.pipeline.steps.push_back(step);
    } else if (word == "arena") {
      f >> plan.arenaBytes;
    } else if (word == "persistent") {
      f >> plan.persistentBytes;
    } else if (word == "buffer") {
      int id;
      PlanBuffer b;
      std::string shape, key;
      if (!(f >> id >> b.kind >> b.name >> b.dtype >> shape))
        return fail("bad buffer");
      b.shape = parseShape(shape);
      while (f >> key) {
        if (key == "offset")
          f >> b.offset;
        else if (key == "bytes")
          f >> b.bytes;
        else if (key == "pitch")
          f >> b.pitch;
        else if (key == "init")
          f >> b.init >> b.initA >> b.initB;
        else if (key == "role")
          f >> b.role;
        else if (key == "of")
          f >> b.of;
        else if (key == "live") {
          int64_t firstUse, lastUse;
          f >> firstUse >> lastUse;
        } else if (key == "index")
          f >> b.index;
        else if (key == "chunk")
          f >> b.chunk;
        else if (key == "slots")
          f >> b.slots;
        else
          return fail("unknown buffer field '" + key + "'");
      }
      if (b.pitch && (b.shape.empty() || b.pitch < b.shape.back() ||
                      b.bytes != b.numElements() / b.shape.back() * b.pitch *
                                     (b.dtype == "bf16" ? 2 : 4)))
        return fail("buffer " + std::to_string(id) + ": pitch " +
                    std::to_string(b.pitch) +
                    " does not fit its shape and "
                    "bytes");
      if (b.offset < 0 || b.bytes < 0 || b.slots < 1 ||
          b.offset + b.slotStride() * (b.slots - 1) + b.bytes > plan.arenaBytes)
        return fail("buffer outside the arena");
      plan.buffers[id] = b;
    } else if (word == "kernel") {
      int index;
      std::string name;
      f >> index >> name;
      if (index != static_cast<int>(plan.kernels.size()))
        return fail("kernels out of order");
      plan.kernels.push_back(name);
    } else if (word == "function") {
      std::string name;
      f >> name;
      function = &plan.functions[name];
    } else if (word == "call" || word == "gemm" || word == "attention" ||
               word == "attention_grad") {
      if (!function)
        return fail("action outside a function");
      PlanAction a;
      size_t hash = line.find('#');
      if (hash != std::string::npos)
        a.note = line.substr(hash + 2);
      if (word == "attention" || word == "attention_grad") {
        a.attention = word == "attention" ? 1 : 2;
        a.buffers.resize(a.attention == 1 ? 5 : 9);
        if (!(f >> a.batch >> a.seq >> a.heads >> a.kvHeads >> a.headDim >>
              a.causal >> a.scale))
          return fail("bad " + word);
        for (int &b : a.buffers)
          if (!(f >> b) || !plan.buffers.count(b))
            return fail("bad " + word + " buffer");
        std::string layout;
        while (f >> layout) {
          bool &flag = layout == "qkv" ? a.packedQKV : a.packedDQKV;
          if ((layout != "qkv" && layout != "dqkv") || flag)
            return fail("unknown attention layout '" + layout + "'");
          flag = true;
        }
        if (std::string bad = checkAttention(plan, a); !bad.empty())
          return fail(bad);
      } else if (word == "call") {
        size_t n = 0;
        if (!(f >> a.kernel >> a.parallel >> n))
          return fail("bad call");
        a.buffers.resize(n);
        for (int &b : a.buffers)
          f >> b;
        if (a.kernel < 0 || a.kernel >= static_cast<int>(plan.kernels.size()))
          return fail("unknown kernel");
        // `block B`: the threads a GPU block must have (a whole number of
        // warps, at most 1024).
        std::string key;
        if (f >> key) {
          if (key != "block" || !(f >> a.block) || a.block < 32 ||
              a.block > 1024 || a.block % 32 != 0)
            return fail("bad call block");
        }
      } else {
        a.gemm = true;
        a.buffers.resize(3);
        if (!(f >> a.batch >> a.m >> a.n >> a.k >> a.transA >> a.transB >>
              a.accumulate >> a.buffers[0] >> a.buffers[1] >> a.buffers[2] >>
              a.strideA >> a.strideB >> a.strideC))
          return fail("bad gemm");
        // The epilogue: `bias B`, `addend R`, `gelu_tanh`, `dgelu_tanh`,
        // `aux X`; or `bgrad G`.
        std::string key;
        while (f >> key) {
          int *arg = key == "bias"     ? &a.biasArg
                     : key == "addend" ? &a.addendArg
                     : key == "aux"    ? &a.auxArg
                     : key == "bgrad"  ? &a.bgradArg
                                       : nullptr;
          if (arg) {
            int b;
            if (*arg >= 0 || !(f >> b))
              return fail("bad gemm " + key);
            *arg = static_cast<int>(a.buffers.size());
            a.buffers.push_back(b);
          } else if ((key == "gelu_tanh" || key == "dgelu_tanh") &&
                     a.activation.empty()) {
            a.activation = key;
          } else {
            return fail("unknown gemm epilogue '" + key + "'");
          }
        }
      }
      for (int b : a.buffers)
        if (!plan.buffers.count(b))
          return fail("unknown buffer " + std::to_string(b));
      if (a.gemm) {
        const std::string &ta = plan.buffers[a.buffers[0]].dtype,
                          &tb = plan.buffers[a.buffers[1]].dtype,
                          &tc = plan.buffers[a.buffers[2]].dtype;
        a.bf16 = ta == "bf16";
        a.bf16Out = tc == "bf16";
        if (tb != ta || (ta != "f32" && ta != "bf16") ||
            (tc != "f32" && !(a.bf16 && tc == "bf16")))
          return fail("gemm of " + ta + " x " + tb + " -> " + tc +
                      " (f32 or bf16 inputs; f32 output, or bf16 from bf16)");
        if (std::string bad = checkEpilogue(plan, a); !bad.empty())
          return fail(bad);
        // Each operand's rows as stored: op(A) is m x k, op(B) k x n.
        bool padded = false, fits = true;
        auto ld = [&](int arg, int64_t row) {
          const PlanBuffer &b = plan.buffers[a.buffers[arg]];
          if (!b.pitch)
            return row;
          padded = true;
          fits = fits && !b.shape.empty() && b.shape.back() == row;
          return b.pitch;
        };
        a.lda = ld(0, a.transA ? a.m : a.k);
        a.ldb = ld(1, a.transB ? a.k : a.n);
        a.ldc = ld(2, a.n);
        if (padded && (!fits || a.batch != 1 ||
                       (a.ldc != a.n && (a.addendArg >= 0 || a.auxArg >= 0))))
          return fail("a gemm with padded rows is one GEMM, its rows those "
                      "of the padded buffers (and no addend or aux with a "
                      "padded C)");
      }
      function->push_back(std::move(a));
    } else if (word == "end") {
      ended = true;
      break;
    } else {
      return fail("unknown entry '" + word + "'");
    }
  }
  if (!ended)
    return fail("the plan is truncated");
  return true;
}
