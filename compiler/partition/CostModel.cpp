//===- CostModel.cpp - FLOPs, bytes and time of nn ops --------------------===//

#include "compiler/partition/CostModel.h"
#include "dialects/nn/NNOps.h"

#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>

using namespace mlir;
using namespace hotstage;
using namespace hotstage::partition;
using namespace hotstage::nn;

static double elements(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type || !type.hasStaticShape())
    return 0;
  return static_cast<double>(type.getNumElements());
}

int64_t partition::bytesOf(Value v) {
  auto type = dyn_cast<RankedTensorType>(v.getType());
  if (!type || !type.hasStaticShape())
    return 0;
  unsigned bits = type.getElementType().getIntOrFloatBitWidth();
  return type.getNumElements() * std::max(1u, bits / 8);
}

/// Rows times columns times depth of a (batched) GEMM producing `result`
/// with inner dimension `k`.
static double gemmFlops(Value result, int64_t k) {
  return 2.0 * elements(result) * static_cast<double>(k);
}

/// Scores of attention: batch x heads x queries x keys, halved when causal.
template <typename AttentionLike>
static double attentionScores(AttentionLike op) {
  auto q = cast<RankedTensorType>(op.getQuery().getType());
  double b = q.getDimSize(0), t = q.getDimSize(1);
  double pairs = b * static_cast<double>(op.getHeads()) * t * t;
  return op.getCausal() ? pairs / 2 : pairs;
}

OpCost partition::costOf(Operation *op) {
  OpCost cost;
  if (isa<ParamRefOp, StateRefOp, ConstantOp, ReshapeOp>(op)) {
    cost.isView = true;
    return cost;
  }
  for (Value v : op->getOperands())
    cost.bytes += bytesOf(v);
  for (Value v : op->getResults())
    cost.bytes += bytesOf(v);
  double out = op->getNumResults() ? elements(op->getResult(0)) : 0;
  double in = op->getNumOperands() ? elements(op->getOperand(0)) : 0;
  cost.flops =
      llvm::TypeSwitch<Operation *, double>(op)
          .Case([&](MatmulOp m) {
            auto a = cast<RankedTensorType>(m.getLhs().getType());
            return gemmFlops(m.getResult(), a.getShape().back());
          })
          .Case([&](LinearOp l) {
            auto x = cast<RankedTensorType>(l.getInput().getType());
            return gemmFlops(l.getResult(), x.getShape().back()) +
                   (l.getBias() ? out : 0);
          })
          .Case([&](AttentionOp a) {
            // Q K^T and P V, two multiply-adds per score and head channel,
            // plus the softmax.
            return attentionScores(a) * (4.0 * a.getHeadDim() + 5);
          })
          .Case([&](AttentionGradOp a) {
            // Recomputed scores, then dV, dP, dQ and dK.
            return attentionScores(a) * (10.0 * a.getHeadDim() + 8);
          })
          .Case<LayerNormOp, RMSNormOp, SoftmaxOp, CrossEntropyOp>(
              [&](Operation *) { return 8 * in; })
          .Case<LayerNormGradOp, RMSNormGradOp, SoftmaxGradOp,
                CrossEntropyGradOp, LayerNormScaleGradOp, RMSNormScaleGradOp>(
              [&](Operation *) { return 12 * out; })
          .Case<GeluOp, SiluOp, SigmoidOp, TanhOp, ExpOp, LogOp,
                ActivationGradOp>([&](Operation *) { return 10 * out; })
          .Case([&](FusedOp fused) {
            double flops = 0;
            for (Operation &inner : fused.getBody().front())
              flops += costOf(&inner).flops;
            return flops;
          })
          .Case<SplitOp, ConcatOp, SliceOp, PadOp, TransposeOp, BroadcastOp,
                EmbeddingOp, EmbeddingGradOp, StoreOp>(
              [&](Operation *) { return 0.0; })
          .Default([&](Operation *) { return std::max(in, out); });
  return cost;
}

double MachineModel::seconds(const OpCost &cost) const {
  if (cost.isView)
    return 0;
  return std::max(cost.flops / flopsPerSecond, cost.bytes / bytesPerSecond) +
         secondsPerOp;
}

double MachineModel::transferSeconds(double bytes) const {
  return bytes > 0 ? linkLatencySeconds + bytes / linkBytesPerSecond : 0;
}
