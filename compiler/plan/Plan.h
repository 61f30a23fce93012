//===- Plan.h - The plan: what the runtime executes -------------*- C++ -*-===//
//
// The contract between the compiler and the runtime (docs/plan.md): the
// buffers of one arena, the parameter and state tables, and per function
// the list of actions (kernel calls and GEMMs) with their buffers. Plain
// C++, no MLIR: targets fill it in and `print` writes the text form that
// is embedded in the executable and that `--emit=plan` shows.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_PLAN_PLAN_H
#define HOTSTAGE_COMPILER_PLAN_PLAN_H

#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hotstage::plan {

/// What a buffer holds and so how long it lives.
enum class BufferKind {
  Param,  // a parameter: persistent, initialised by the runtime
  State,  // gradient accumulator or optimizer moment: persistent, zeroed
  Input,  // filled by the runtime before each forward (tokens, targets)
  Scalar, // a persistent scalar the runtime reads or writes (loss, lr, ...)
  Temp,   // an intermediate: lives from its first write to its last read
  // Pipelines only: what one microbatch of a chunk hands from one of its
  // functions to the next (saved activations, inputs, gradients for W),
  // one copy per microbatch the schedule keeps in flight (`slots`).
  Stash,
  // Pipelines only: an activation received from the previous chunk or a
  // gradient from the next one (role "activation" or "gradient", index),
  // slotted like a stash.
  Boundary,
};

struct Buffer {
  BufferKind kind = BufferKind::Temp;
  std::string name;  // parameter path, state symbol, input or scalar name
  std::string dtype; // f32, i32, i64
  llvm::SmallVector<int64_t, 4> shape;
  int64_t bytes = 0;
  int64_t offset = -1; // in the arena, set by the memory plan
  // Elements from one row (last dimension) to the next, where more than
  // the row's: a row length GEMMs cannot align to 16 bytes padded (GPT-2's
  // 50,257 logits a token as 50,304), as llm.c pads its vocabulary.
  int64_t pitch = 0;
  // Parameters: the initializer; states: role and parameter.
  std::string init, role, of;
  double initA = 0, initB = 0;
  // Liveness, as indices into the step's action order (temps only).
  int64_t firstUse = -1, lastUse = -1;
  // Pipelines: the chunk whose microbatches own the buffer, the copies it
  // has, and for a boundary buffer its index among the chunk's.
  int chunk = -1, slots = 1, index = -1;
};

/// One action of a function: a kernel call over a parallel range, or a
/// (batched) row-major GEMM C = A op(B) (+ C when accumulate).
struct Action {
  enum class Kind { Call, Gemm, Attention, AttentionGrad } kind = Kind::Call;
  int kernel = -1;      // Call: index into the kernel table
  int64_t parallel = 1; // Call: the range [0, parallel) split over threads
  // Call: the threads a GPU block must have (its threads share memory), or
  // 0 for any.
  int64_t block = 0;
  llvm::SmallVector<int, 8> buffers; // Call: arguments; Gemm: A, B, C
  // Gemm: C[b] (m x n) = op(A[b]) (m x k) * op(B[b]) (k x n), strides in
  // elements between batches (0: shared).
  int64_t batch = 1, m = 0, n = 0, k = 0;
  bool transA = false, transB = false, accumulate = false;
  int64_t strideA = 0, strideB = 0, strideC = 0;
  // Gemm epilogue (one GEMM, no accumulate): C = act(A op(B) + addend +
  // bias), with the value before `act` in aux; or, for dgelu_tanh,
  // C = (A op(B)) * gelu_tanh'(aux). Buffers, or -1.
  int bias = -1, addend = -1, aux = -1;
  // Or, alone and accumulating or not, the sums over K of A's columns (A
  // transposed: a bias gradient, cuBLASLt's BGRADB): M f32, or -1.
  int bgrad = -1;
  std::string activation; // "", "gelu_tanh" or "dgelu_tanh"
  // Attention (fused scaled dot-product attention, a library call on bf16
  // [batch, seq, heads * headDim] tensors): batch, seq, its heads, the
  // key/value heads, headDim, causal and scale. Buffers: Q K V O STATS
  // (f32 [batch, heads, seq]: each row's log-sum-exp), then for the
  // gradient dO dQ dK dV.
  int64_t seq = 0, heads = 0, kvHeads = 0, headDim = 0;
  bool causal = false;
  double scale = 1;
  // Q K V (dQ dK dV) as one packed [batch, seq, (heads + 2 kvHeads) *
  // headDim] buffer, named three times: a QKV projection's output (the
  // concatenation its gradient is).
  bool packedQKV = false, packedDQKV = false;
  std::string note; // the op it implements, for --emit=plan
};

struct Function {
  std::string name;
  std::vector<Action> actions;
};

/// A pipeline rank's part of the step: its actions in schedule order, the
/// ranks of all chunks, and what it sends and exchanges.
struct Pipeline {
  int stages = 1, dp = 1, rank = 0;
  std::string schedule;
  std::vector<int> chunkRank, chunkSlots; // every chunk of the model
  struct Step {
    char phase; // 'F', 'B' or 'W'
    int chunk, microbatch;
  };
  std::vector<Step> steps;
  /// After F (activation i of the next chunk) or B (gradient i of the
  /// previous chunk's output): the buffer that holds it.
  struct Send {
    int chunk;
    bool gradient;
    int index, buffer;
  };
  std::vector<Send> sends;
  /// A tied parameter's accumulator that another rank fills (receive) or
  /// needs (send), before the gradient norms; `tag` is the same on both.
  struct Exchange {
    bool send;
    int tag, buffer, peer;
  };
  std::vector<Exchange> exchanges;
};

struct Plan {
  std::string model;
  int64_t microbatches = 1, batch = 0, seq = 0, vocab = 0;
  int64_t replicas = 1; // data-parallel replicas (one-stage plans)
  std::optional<Pipeline> pipeline;
  std::vector<Buffer> buffers;
  std::vector<std::string> kernels; // symbol names, in table order
  std::vector<Function> functions;  // forward, backward_input, ...
  int64_t arenaBytes = 0;
  int64_t persistentBytes = 0;
  /// Persistent buffers laid back to back, in order (each from the
  /// 64-byte boundary after the one before): one kernel reads them as one
  /// array (the optimizer's update of many parameters at once).
  std::vector<std::vector<int>> contiguous;

  int addBuffer(Buffer buffer) {
    buffers.push_back(std::move(buffer));
    return static_cast<int>(buffers.size()) - 1;
  }
  /// The buffer of a named parameter, state, input or scalar, or -1.
  int find(llvm::StringRef name, BufferKind kind) const;
};

/// The bytes from the start of `run`'s first buffer to the end of its
/// last, laid out as `contiguous` runs are.
int64_t runBytes(const Plan &plan, llvm::ArrayRef<int> run);
/// What a buffer of `bytes` takes in a run before the next one starts.
int64_t runStride(int64_t bytes);

/// Assigns every buffer an offset: persistent buffers first, in order (a
/// contiguous run's together, where the first of them would be), then
/// temporaries packed by liveness (largest first, lowest free
/// offset). Sets `arenaBytes` to the exact peak.
void assignOffsets(Plan &plan);

/// The text form of docs/plan.md.
/// What `hotstage info` shows: the arena by kind of buffer and its exact
/// peak.
void printMemorySummary(const Plan &plan, llvm::raw_ostream &os);

void print(const Plan &plan, llvm::raw_ostream &os);

/// "" when the plan's arena fits in `budget` bytes; else the error: the
/// rank, its arena, the budget and its three biggest buffers.
std::string overBudget(const Plan &plan, int64_t budget);

} // namespace hotstage::plan

#endif // HOTSTAGE_COMPILER_PLAN_PLAN_H
