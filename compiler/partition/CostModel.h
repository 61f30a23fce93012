//===- CostModel.h - FLOPs, bytes and time of nn ops ------------*- C++ -*-===//
//
// What the partitioner balances and the plan predicts: per op, the
// floating-point work and the bytes it reads and writes, and a roofline
// time on a machine model. Views (reshape, param_ref, state_ref, constants)
// cost nothing.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_PARTITION_COSTMODEL_H
#define HOTSTAGE_COMPILER_PARTITION_COSTMODEL_H

#include "mlir/IR/Operation.h"

#include <cstdint>

namespace hotstage::partition {

struct OpCost {
  double flops = 0;
  double bytes = 0; // read and written
  bool isView = false;

  OpCost &operator+=(const OpCost &other) {
    flops += other.flops;
    bytes += other.bytes;
    return *this;
  }
};

/// The machine the times are predicted for. The defaults describe one core
/// class of a current x86 server running the host target; only the ratios
/// between stages matter for balance, the absolute values for the predicted
/// step time.
struct MachineModel {
  const char *name = "host";
  double flopsPerSecond = 100e9;
  double bytesPerSecond = 20e9;
  double secondsPerOp = 2e-6;        // launch and threading overhead
  double linkBytesPerSecond = 10e9;  // between ranks
  double linkLatencySeconds = 20e-6; // per message

  double seconds(const OpCost &cost) const;
  double transferSeconds(double bytes) const;
};

/// The cost of one op of the nn dialect.
OpCost costOf(mlir::Operation *op);

/// The bytes of a statically shaped tensor value (0 for anything else).
int64_t bytesOf(mlir::Value value);

} // namespace hotstage::partition

#endif // HOTSTAGE_COMPILER_PARTITION_COSTMODEL_H
