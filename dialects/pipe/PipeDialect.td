//===- PipeDialect.td - The pipe dialect --------------------*- tablegen -*-===//
//
// What each rank of a pipeline does in one training step: its chunks'
// forward and backward actions in schedule order, the transfers between
// ranks, and the step's collective end. docs/pipeline.md shows it
// (`hotstage build --emit=pipe`).
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_PIPE_PIPEDIALECT_TD
#define HOTSTAGE_DIALECTS_PIPE_PIPEDIALECT_TD

include "mlir/IR/OpBase.td"

def Pipe_Dialect : Dialect {
  let name = "pipe";
  let cppNamespace = "::hotstage::pipe";
  let summary = "Pipeline stages, transfers and per-rank schedules";
  let description = [{
    A `pipe.pipeline` holds one `pipe.rank` per pipeline stage; each rank
    lists, in order, the actions of one training step: `pipe.forward`,
    `pipe.backward` (or `pipe.backward_input` and `pipe.backward_weight`)
    of a chunk and microbatch, `pipe.send` and `pipe.recv` of an
    activation or a gradient, and the step's end (`pipe.all_reduce`,
    `pipe.exchange`, `pipe.grad_norms`, `pipe.optimizer_step`).
  }];
}

#endif // HOTSTAGE_DIALECTS_PIPE_PIPEDIALECT_TD
