//===- Passes.td - The passes of the Hotstage compiler ------*- tablegen -*-===//
//
// Every pass between the nn dialect of the front end and target lowering.
// They are target-independent: the host and CUDA targets share them.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_COMPILER_PASSES_PASSES_TD
#define HOTSTAGE_COMPILER_PASSES_PASSES_TD

include "mlir/Pass/PassBase.td"

def Autodiff : Pass<"nn-autodiff", "::mlir::ModuleOp"> {
  let summary = "reverse-mode differentiation of @forward, split into F, B and W";
  let description = [{
    Differentiates the scalar loss of `@forward` with respect to every
    parameter it reads and splits one training microbatch into three
    functions that a schedule can place independently:

    * `@forward(inputs) -> (loss, saved...)`: the forward ops, returning
      every value the backward needs;
    * `@backward_input(...) -> (...)` (B): the gradients of activations,
      the chain a pipeline stage must finish before the previous stage can
      go on;
    * `@backward_weight(...)` (W): the gradients of parameters, added into
      one `nn.state` accumulator per parameter (`@"name:grad"`).

    Each argument of B and W carries `nn.source = "input:K"`,
    `"forward:K"` or `"backward_input:K"`: the input or result it is. The
    loss gradient is seeded with 1/microbatches, so accumulating every
    microbatch gives the gradient of the mean loss.

    With `split-backward=false` B and W stay one function, `@backward`, in
    the order the rules built them: each W right after the B it reads, so
    what W needs dies early. Schedules that do not defer W (everything but
    the zero-bubble ones) want this.

    Recomputation: `recompute = "NAME"` in `nn.train` makes every instance
    of the block member NAME (each layer of a `repeat` stack named NAME) a
    segment whose forward is recomputed in the backward instead of stored;
    an op's instance is the name of its `NameLoc` ("blocks.3.mlp.fc").
    The forward then hands on only what enters each segment.
  }];
  let options = [
    Option<"splitBackward", "split-backward", "bool", /*default=*/"true",
           "emit B and W as @backward_input and @backward_weight (false: "
           "one @backward)">,
  ];
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

def SplitChunks : Pass<"nn-split-chunks", "::mlir::ModuleOp"> {
  let summary = "cuts @forward into one function per pipeline chunk";
  let description = [{
    Reads `nn.chunks`, the first atom (compiler/partition) of every
    pipeline chunk, and replaces `@forward` with `@"cK.forward"` per chunk
    K: the chunk's ops, taking the model's inputs and then the activations
    that enter the chunk (`pipe.boundary = i`), returning those that leave
    it (the last chunk returns the loss). Ops of parameters alone are
    cloned into each chunk that reads them; parameters read in more than
    one atom get `nn.tied_atoms`. Without `nn.chunks` it does nothing.
    Runs before `nn-autodiff`, which differentiates each chunk.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

def Optimizer : Pass<"nn-optimizer", "::mlir::ModuleOp"> {
  let summary = "builds @optimizer_step from the module's train section";
  let description = [{
    Emits `@optimizer_step(%step, %total) -> (lr, grad_norm)` from the
    `nn.train` attribute: the learning-rate schedule, the global gradient
    norm and clipping, and an AdamW (decoupled weight decay, bias
    correction, no decay on parameters of rank < 2) or SGD-with-momentum
    update of every parameter that has a gradient accumulator, as nn ops.
    It stores the new parameters and moments and zeroes the accumulators
    for the next step. Runs after `nn-autodiff`.
  }];
  let dependentDialects = ["::mlir::func::FuncDialect"];
}

def Fusion : Pass<"nn-fusion", "::mlir::func::FuncOp"> {
  let summary = "groups elementwise chains into nn.fused kernels and marks GEMM epilogues";
  let description = [{
    Walks each function in order and grows groups of elementwise ops
    (`nn::isFusibleElementwise`) with the same result shape: an op joins
    the group of one of its operands when no op outside the group reads a
    member's result before it. Each group of two or more ops becomes one
    `nn.fused` op, placed where its last member was, whose results are the
    members' values that ops outside read. A target runs it as one kernel:
    one pass over memory instead of one per op.

    GEMMs (`nn.linear`, `nn.matmul`) whose result flows through a chain of
    single readers (the function's return aside) into an activation, an
    activation's gradient or a residual add are marked
    `nn.epilogue = ["bias", "gelu", "residual"]` (in order). When the
    mark's first stage after the bias is one of `epilogues` (the stages a
    target's GEMM library computes: cuBLASLt), the reader it names
    (`nn::epilogueReader`: a residual add, a tanh GELU or its gradient)
    stays out of the groups, and the target's lowering computes it in the
    GEMM. Otherwise it groups as any elementwise op.
  }];
  let options = [
    Option<"maxArguments", "max-arguments", "unsigned", /*default=*/"12",
           "most inputs (splat constants aside) plus results of one group; "
           "a larger group is cut into consecutive pieces (kernel argument "
           "limits)">,
    ListOption<"epilogues", "epilogues", "std::string",
               "the epilogue stages the target's GEMMs compute (residual, "
               "gelu_tanh, dgelu_tanh): the ops they name stay out of the "
               "groups">,
  ];
}

#endif // HOTSTAGE_COMPILER_PASSES_PASSES_TD
