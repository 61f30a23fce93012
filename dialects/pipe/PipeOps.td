//===- PipeOps.td - Ops of the pipe dialect -----------------*- tablegen -*-===//

#ifndef HOTSTAGE_DIALECTS_PIPE_PIPEOPS_TD
#define HOTSTAGE_DIALECTS_PIPE_PIPEOPS_TD

include "dialects/pipe/PipeDialect.td"
include "mlir/IR/OpBase.td"

class Pipe_Op<string mnemonic, list<Trait> traits = []>
    : Op<Pipe_Dialect, mnemonic, traits>;

def Pipe_PipelineOp : Pipe_Op<"pipeline", [SingleBlock, NoTerminator]> {
  let summary = "a pipeline: its shape and one pipe.rank per stage";
  let description = [{
    `stages` ranks (pipeline stages) of `replicas` data-parallel replicas
    run `chunk_ranks.size()` chunks; chunk c lives on rank
    `chunk_ranks[c]`. Every `pipe.send` must have the `pipe.recv` that
    takes it on its peer, and every receive a send.

    ```mlir
    pipe.pipeline schedule "1f1b" stages 2 replicas 1 microbatches 2 chunk_ranks [0, 1] {
      pipe.rank 0 {
        pipe.forward chunk 0 microbatch 0
        pipe.send activation chunk 0 microbatch 0 to 1
        ...
      }
      ...
    }
    ```
  }];
  let arguments = (ins StrAttr:$schedule, I64Attr:$stages, I64Attr:$replicas,
                       I64Attr:$microbatches, DenseI64ArrayAttr:$chunk_ranks);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    `schedule` $schedule `stages` $stages `replicas` $replicas
    `microbatches` $microbatches `chunk_ranks` $chunk_ranks $body attr-dict
  }];
  let hasRegionVerifier = 1;
}

def Pipe_RankOp : Pipe_Op<"rank", [SingleBlock, NoTerminator,
                                   HasParent<"PipelineOp">]> {
  let summary = "the actions of one pipeline rank in one step, in order";
  let arguments = (ins I64Attr:$rank);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$rank $body attr-dict";
  let hasVerifier = 1;
}

class Pipe_ComputeOp<string mnemonic, string what>
    : Pipe_Op<mnemonic, [HasParent<"RankOp">]> {
  let summary = what # " of one chunk and microbatch";
  let arguments = (ins I64Attr:$chunk, I64Attr:$microbatch);
  let assemblyFormat = "`chunk` $chunk `microbatch` $microbatch attr-dict";
  let hasVerifier = 1;
}

def Pipe_ForwardOp : Pipe_ComputeOp<"forward", "the forward (F)">;
def Pipe_BackwardOp
    : Pipe_ComputeOp<"backward", "the whole backward (B and W)">;
def Pipe_BackwardInputOp
    : Pipe_ComputeOp<"backward_input", "the input gradients (B)">;
def Pipe_BackwardWeightOp
    : Pipe_ComputeOp<"backward_weight", "the weight gradients (W)">;

class Pipe_TransferOp<string mnemonic, string what, string direction>
    : Pipe_Op<mnemonic, [HasParent<"RankOp">]> {
  let summary = what;
  let description = [{
    `activation`: the output of chunk `chunk` for the next chunk;
    `gradient`: the gradient of chunk `chunk`'s input for the previous one.
  }];
  let arguments = (ins StrAttr:$kind, I64Attr:$chunk, I64Attr:$microbatch,
                       I64Attr:$peer);
  let assemblyFormat = "$kind `chunk` $chunk `microbatch` $microbatch `" #
                       direction # "` $peer attr-dict";
  let hasVerifier = 1;
}

def Pipe_SendOp : Pipe_TransferOp<"send", "a non-blocking send to a rank",
                                  "to">;
def Pipe_RecvOp : Pipe_TransferOp<"recv", "waits for a message from a rank",
                                  "from">;

def Pipe_AllReduceOp : Pipe_Op<"all_reduce", [HasParent<"RankOp">]> {
  let summary = "sums the gradient accumulators across the replicas";
  let arguments = (ins I64Attr:$replicas);
  let assemblyFormat = "`gradients` `over` $replicas `replicas` attr-dict";
}

def Pipe_ExchangeOp : Pipe_Op<"exchange", [HasParent<"RankOp">]> {
  let summary = "hands a tied parameter's accumulators between its ranks";
  let arguments = (ins StrAttr:$accumulator, StrAttr:$direction,
                       I64Attr:$peer);
  let assemblyFormat = "$accumulator $direction $peer attr-dict";
}

def Pipe_GradNormsOp : Pipe_Op<"grad_norms", [HasParent<"RankOp">]> {
  let summary = "the squared norms of the rank's parameters, summed over all ranks";
  let assemblyFormat = "attr-dict";
}

def Pipe_OptimizerStepOp : Pipe_Op<"optimizer_step", [HasParent<"RankOp">]> {
  let summary = "the optimizer update of the rank's parameters";
  let assemblyFormat = "attr-dict";
}

#endif // HOTSTAGE_DIALECTS_PIPE_PIPEOPS_TD
