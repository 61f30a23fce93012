//===- Plan.h - The plan as the runtime reads it ----------------*- C++ -*-===//
//
// Parses the text plan the compiler embeds in the executable (format in
// docs/plan.md): buffers with their arena offsets, the kernel table's size
// and each function's actions. No graph logic: just what to call, where.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_RUNTIME_HOST_PLAN_H
#define HOTSTAGE_RUNTIME_HOST_PLAN_H

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace hotstage::rt {

struct PlanBuffer {
  std::string kind, name, dtype; // kind: param, state, input, scalar, temp
  std::vector<int64_t> shape;
  int64_t offset = 0, bytes = 0;
  /// Elements from one row (last dimension) to the next where the rows
  /// are padded (docs/plan.md), else 0.
  int64_t pitch = 0;
  std::string init, role, of; // params: initializer; states: role, param
  double initA = 0, initB = 0;
  // Pipelines: the chunk whose microbatches own the buffer, its copies
  // (one per microbatch in flight), and a boundary buffer's index.
  int chunk = -1, slots = 1, index = -1;
  int64_t numElements() const;
  /// Bytes from one slot to the next.
  int64_t slotStride() const { return (bytes + 63) / 64 * 64; }
};

/// A pipeline rank's part of the step (docs/plan.md).
struct PlanPipeline {
  int stages = 1, dp = 1, rank = 0;
  std::string schedule;
  std::vector<int> chunkRank, chunkSlots;
  struct Step {
    char phase; // F, B, W
    int chunk, microbatch;
  };
  std::vector<Step> steps;
  struct Send {
    int chunk;
    bool gradient;
    int index, buffer;
  };
  std::vector<Send> sends;
  struct Exchange {
    bool send;
    int tag, buffer, peer;
  };
  std::vector<Exchange> exchanges;
};

struct PlanAction {
  bool gemm = false;
  int kernel = -1;
  int64_t parallel = 1;
  /// A call's GPU block size, where its threads share memory; 0: any.
  int64_t block = 0;
  std::vector<int> buffers;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool transA = false, transB = false, accumulate = false;
  int64_t strideA = 0, strideB = 0, strideC = 0;
  /// Elements between the rows of A, B and C as stored (a padded buffer's
  /// pitch, else its row length).
  int64_t lda = 0, ldb = 0, ldc = 0;
  /// A GEMM whose A and B buffers hold bf16 (precision = bf16): f32
  /// accumulation.
  bool bf16 = false;
  /// A GEMM whose C is kept in bf16 (precision = bf16, an activation only
  /// kernels and GEMMs read): computed in f32, rounded once as stored; its
  /// bias, if any, is bf16 too.
  bool bf16Out = false;
  /// A GEMM's epilogue (docs/plan.md): indexes into `buffers` of the bias
  /// (N f32), the addend and the aux matrix (M x N f32), or -1, and
  /// "gelu_tanh", "dgelu_tanh" or "".
  int biasArg = -1, addendArg = -1, auxArg = -1;
  std::string activation;
  /// Or, alone: where the sums over K of A's columns go (A transposed; M
  /// f32: a bias gradient, cuBLASLt's BGRADB), or -1.
  int bgradArg = -1;
  /// 1: fused attention, 2: its gradient (docs/plan.md), on bf16
  /// [batch, seq, heads * headDim] buffers Q K V O, f32 statistics
  /// [batch, heads, seq], then dO dQ dK dV.
  int attention = 0;
  int64_t seq = 0, heads = 0, kvHeads = 0, headDim = 0;
  bool causal = false;
  float scale = 1;
  /// `qkv`: Q, K and V are one [batch, seq, (heads + 2 kvHeads) headDim]
  /// buffer, a QKV projection's output; `dqkv`: dQ, dK and dV are one such
  /// buffer (the concatenation of the three).
  bool packedQKV = false, packedDQKV = false;
  /// Where attention tensor `i` (the plan's order: Q K V O STATS dO dQ dK
  /// dV) starts in its buffer and how far apart its rows (tokens) are, in
  /// elements.
  int64_t attentionOffset(int i) const;
  int64_t attentionRow(int i) const;
  std::string note;
  /// How HOTSTAGE_PROFILE names it: the note, with a GEMM's shape
  /// ("gemm linear 8192x2304x768 NT bf16": M x N x K, A and B transposed
  /// or not, operands' type) or attention's ("attention B8 T1024 H12/12
  /// D64 causal"), so that each shape is timed apart
  /// (bench/gpu_step.py --profile holds them against cuBLAS's and SDPA's).
  std::string profileName() const;
};

struct Plan {
  std::string model;
  int64_t microbatches = 1, batch = 0, seq = 0, vocab = 0;
  int replicas = 1;       // data-parallel replicas of a one-stage plan
  bool pipelined = false; // `pipeline` below is set
  PlanPipeline pipeline;
  int64_t arenaBytes = 0, persistentBytes = 0;
  std::map<int, PlanBuffer> buffers;
  std::vector<std::string> kernels;
  std::map<std::string, std::vector<PlanAction>> functions;

  /// The buffer of kind `kind` named `name`, or nullptr.
  const PlanBuffer *find(const std::string &kind,
                         const std::string &name) const;
  /// The gradient accumulators of a parameter in declaration order: one,
  /// or one per atom of the model that reads a tied parameter (their sum,
  /// last first, is the gradient).
  std::vector<const PlanBuffer *> gradients(const std::string &param) const;
};

/// Parses plan number `which` of `text` (a pipelined executable holds one
/// per rank, one after the other); on failure fills `error` with the line
/// and what is wrong.
bool parsePlan(const char *text, Plan &plan, std::string &error, int which = 0);

} // namespace hotstage::rt

#endif // HOTSTAGE_RUNTIME_HOST_PLAN_H
