//===- NNDialect.h - The nn dialect -----------------------------*- C++ -*-===//
//
// The dialect class; NNOps.h and NNAttrs.h hold its ops and attributes.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_NNDIALECT_H
#define HOTSTAGE_DIALECTS_NN_NNDIALECT_H

#include "mlir/IR/Dialect.h"

#include "dialects/nn/NNDialect.h.inc"

#endif // HOTSTAGE_DIALECTS_NN_NNDIALECT_H
