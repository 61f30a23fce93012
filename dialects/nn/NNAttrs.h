//===- NNAttrs.h - Attributes of the nn dialect -----------------*- C++ -*-===//
//
// `#nn.init<...>` and its kind enum. Build one with
// `InitAttr::get(ctx, InitKind::Normal, 0.0, 0.02)`.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_NNATTRS_H
#define HOTSTAGE_DIALECTS_NN_NNATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/APFloat.h"

#include "dialects/nn/NNEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialects/nn/NNAttrs.h.inc"

#endif // HOTSTAGE_DIALECTS_NN_NNATTRS_H
