//===- PipeDialect.cpp - The pipe dialect and its verifiers ---------------===//

#include "dialects/pipe/PipeDialect.h"

#include <set>
#include <tuple>

using namespace mlir;
using namespace hotstage::pipe;

#include "dialects/pipe/PipeDialect.cpp.inc"

void PipeDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "dialects/pipe/PipeOps.cpp.inc"
      >();
}

#define GET_OP_CLASSES
#include "dialects/pipe/PipeOps.cpp.inc"

namespace {

PipelineOp pipelineOf(Operation *op) {
  return op->getParentOfType<PipelineOp>();
}

int64_t rankOf(Operation *op) {
  auto rank = op->getParentOfType<RankOp>();
  return rank ? static_cast<int64_t>(rank.getRank()) : -1;
}

/// A chunk and microbatch that exist, the chunk on this op's rank.
LogicalResult verifyComputeOp(Operation *op, uint64_t chunk,
                              uint64_t microbatch) {
  PipelineOp pipeline = pipelineOf(op);
  if (!pipeline)
    return success();
  ArrayRef<int64_t> ranks = pipeline.getChunkRanks();
  if (chunk >= ranks.size())
    return op->emitOpError() << "chunk " << chunk << " of a pipeline of "
                             << ranks.size() << " chunks";
  if (ranks[chunk] != rankOf(op))
    return op->emitOpError() << "chunk " << chunk << " lives on rank "
                             << ranks[chunk] << ", not rank " << rankOf(op);
  if (microbatch >= pipeline.getMicrobatches())
    return op->emitOpError() << "microbatch " << microbatch << " of a step of "
                             << pipeline.getMicrobatches() << " microbatches";
  return success();
}

/// A transfer between the ranks of two neighbouring chunks: `chunk` sends
/// its activation to chunk + 1, or its input gradient to chunk - 1.
LogicalResult verifyTransfer(Operation *op, StringRef kind, uint64_t chunk,
                             uint64_t microbatch, uint64_t peer, bool send) {
  if (kind != "activation" && kind != "gradient")
    return op->emitOpError()
           << "kind must be activation or gradient, got '" << kind << "'";
  PipelineOp pipeline = pipelineOf(op);
  if (!pipeline)
    return success();
  ArrayRef<int64_t> ranks = pipeline.getChunkRanks();
  int64_t numChunks = ranks.size();
  bool activation = kind == "activation";
  int64_t to = activation ? int64_t(chunk) + 1 : int64_t(chunk) - 1;
  if (int64_t(chunk) >= numChunks || to < 0 || to >= numChunks)
    return op->emitOpError() << "chunk " << chunk << " has no "
                             << (activation ? "next" : "previous")
                             << " chunk to take its " << kind;
  if (microbatch >= pipeline.getMicrobatches())
    return op->emitOpError() << "microbatch " << microbatch << " of a step of "
                             << pipeline.getMicrobatches() << " microbatches";
  int64_t from = ranks[chunk], dest = ranks[to];
  int64_t self = rankOf(op), other = send ? dest : from;
  if ((send ? from : dest) != self || int64_t(peer) != other)
    return op->emitOpError()
           << "the " << kind << " of chunk " << chunk << " goes from rank "
           << from << " to rank " << dest << ", not " << (send ? "to" : "from")
           << " rank " << peer << " on rank " << self;
  if (from == dest)
    return op->emitOpError()
           << "chunks " << chunk << " and " << to << " share rank " << from
           << ": nothing to transfer";
  return success();
}

} // namespace

LogicalResult PipelineOp::verifyRegions() {
  std::set<int64_t> seen;
  for (int64_t r : getChunkRanks())
    if (r < 0 || r >= static_cast<int64_t>(getStages()))
      return emitOpError() << "chunk_ranks names rank " << r << " of "
                           << getStages();
  // (from, to, kind, chunk, microbatch) of every send and receive.
  using Message = std::tuple<int64_t, int64_t, std::string, int64_t, int64_t>;
  std::multiset<Message> sends, recvs;
  for (Operation &op : getBody().front()) {
    auto rank = dyn_cast<RankOp>(op);
    if (!rank)
      return op.emitOpError("only pipe.rank ops go in a pipe.pipeline");
    if (!seen.insert(rank.getRank()).second)
      return rank.emitOpError()
             << "rank " << rank.getRank() << " appears twice";
    rank.walk([&](Operation *inner) {
      int64_t self = static_cast<int64_t>(rank.getRank());
      if (auto s = dyn_cast<SendOp>(inner))
        sends.insert({self, int64_t(s.getPeer()), s.getKind().str(),
                      int64_t(s.getChunk()), int64_t(s.getMicrobatch())});
      if (auto r = dyn_cast<RecvOp>(inner))
        recvs.insert({int64_t(r.getPeer()), self, r.getKind().str(),
                      int64_t(r.getChunk()), int64_t(r.getMicrobatch())});
    });
  }
  for (const Message &m : sends)
    if (sends.count(m) != recvs.count(m))
      return emitOpError() << "the " << std::get<2>(m) << " of chunk "
                           << std::get<3>(m) << ", microbatch "
                           << std::get<4>(m) << " from rank " << std::get<0>(m)
                           << " to rank " << std::get<1>(m) << " is sent "
                           << sends.count(m) << " time(s) and received "
                           << recvs.count(m);
  for (const Message &m : recvs)
    if (!sends.count(m))
      return emitOpError() << "rank " << std::get<1>(m) << " waits for the "
                           << std::get<2>(m) << " of chunk " << std::get<3>(m)
                           << ", microbatch " << std::get<4>(m) << " from rank "
                           << std::get<0>(m) << ", which never sends it";
  return success();
}

LogicalResult RankOp::verify() {
  auto pipeline = (*this)->getParentOfType<PipelineOp>();
  if (getRank() >= pipeline.getStages())
    return emitOpError() << "rank " << getRank() << " of a pipeline of "
                         << pipeline.getStages() << " stages";
  return success();
}

#define HS_COMPUTE_VERIFIER(Op)                                                \
  LogicalResult Op::verify() {                                                 \
    return verifyComputeOp(*this, getChunk(), getMicrobatch());                \
  }
HS_COMPUTE_VERIFIER(ForwardOp)
HS_COMPUTE_VERIFIER(BackwardOp)
HS_COMPUTE_VERIFIER(BackwardInputOp)
HS_COMPUTE_VERIFIER(BackwardWeightOp)
#undef HS_COMPUTE_VERIFIER

LogicalResult SendOp::verify() {
  return verifyTransfer(*this, getKind(), getChunk(), getMicrobatch(),
                        getPeer(), /*send=*/true);
}

LogicalResult RecvOp::verify() {
  return verifyTransfer(*this, getKind(), getChunk(), getMicrobatch(),
                        getPeer(), /*send=*/false);
}
