//===- PipeDialect.h - The pipe dialect -------------------------*- C++ -*-===//
//
// The dialect class and its ops (PipeOps.td).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_PIPE_PIPEDIALECT_H
#define HOTSTAGE_DIALECTS_PIPE_PIPEDIALECT_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"

#include "dialects/pipe/PipeDialect.h.inc"

#define GET_OP_CLASSES
#include "dialects/pipe/PipeOps.h.inc"

#endif // HOTSTAGE_DIALECTS_PIPE_PIPEDIALECT_H
