//===- NNOps.td - Operations of the nn dialect --------------*- tablegen -*-===//
//
// Every op of docs/nn-dialect.md. Element types are checked by the operand
// constraints and traits below; shapes by the verifiers in NNOps.cpp, which
// call the rules of dialects/nn/ShapeRules.h.
//
//===----------------------------------------------------------------------===//

#ifndef HOTSTAGE_DIALECTS_NN_NNOPS_TD
#define HOTSTAGE_DIALECTS_NN_NNOPS_TD

include "dialects/nn/NNDialect.td"
include "dialects/nn/NNAttrs.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

// Statically shaped tensors only: the shape rules work on known sizes.
def NN_FloatTensor : StaticShapeTensorOf<[F32, BF16, F16]>;
def NN_IdTensor : StaticShapeTensorOf<[I32, I64]>;
def NN_Tensor : StaticShapeTensorOf<[F32, BF16, F16, I32, I64]>;
def NN_LossTensor : 0DTensorOf<[F32]>;

def NN_DenseElementsAttr : ElementsAttrBase<
    CPred<"::llvm::isa<::mlir::DenseElementsAttr>($_self)">,
    "dense elements attribute"> {
  let storageType = "::mlir::DenseElementsAttr";
  let returnType = "::mlir::DenseElementsAttr";
}

class NN_Op<string mnemonic, list<Trait> traits = []>
    : Op<NN_Dialect, mnemonic, traits>;

//===----------------------------------------------------------------------===//
// Parameters and constants
//===----------------------------------------------------------------------===//

def NN_ParamOp : NN_Op<"param", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "a trainable parameter of the model";
  let description = [{
    Declares a parameter at module level; functions read it with
    `nn.param_ref`.

    ```mlir
    nn.param @wte : tensor<256x64xf32> init #nn.init<normal, 0.000000e+00, 2.000000e-02>
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<NN_FloatTensor>:$type,
                       NN_InitAttr:$init);
  let assemblyFormat = [{
    $sym_name `:` $type `init` qualified($init) attr-dict
  }];
}

def NN_ParamRefOp : NN_Op<"param_ref", [
    Pure, DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "the value of a parameter";
  let description = [{
    ```mlir
    %w = nn.param_ref @wte : tensor<256x64xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def NN_ConstantOp : NN_Op<"constant", [
    ConstantLike, Pure, AllTypesMatch<["value", "result"]>]> {
  let summary = "a constant tensor";
  let description = [{
    ```mlir
    %c = nn.constant dense<1.000000e+00> : tensor<4xf32>
    ```
  }];
  let arguments = (ins NN_DenseElementsAttr:$value);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "attr-dict $value";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

class NN_BinaryOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, SameOperandsAndResultElementType]> {
  let summary = what # " with NumPy broadcasting";
  let description = [{
    ```mlir
    %c = nn.}] # mnemonic # [{ %a, %b : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$lhs, NN_Tensor:$rhs);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_AddOp : NN_BinaryOp<"add", "elementwise sum">;
def NN_SubOp : NN_BinaryOp<"sub", "elementwise difference">;
def NN_MulOp : NN_BinaryOp<"mul", "elementwise product">;
def NN_DivOp : NN_BinaryOp<"div", "elementwise quotient">;
def NN_MaximumOp : NN_BinaryOp<"maximum", "elementwise maximum">;
def NN_MinimumOp : NN_BinaryOp<"minimum", "elementwise minimum">;

def NN_GreaterEqualOp : NN_Op<"greater_equal", [
    Pure, SameOperandsAndResultElementType]> {
  let summary = "1 where lhs >= rhs, else 0, with NumPy broadcasting";
  let description = [{
    A float mask, so that gradients of `maximum` and `reduce_max` are
    products.

    ```mlir
    %m = nn.greater_equal %a, %b : (tensor<8x64xf32>, tensor<8x1xf32>) -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$lhs, NN_FloatTensor:$rhs);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_BroadcastOp : NN_Op<"broadcast", [
    Pure, SameOperandsAndResultElementType]> {
  let summary = "NumPy broadcast to the result shape";
  let description = [{
    ```mlir
    %y = nn.broadcast %x : tensor<8x1xf32> -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

class NN_UnaryOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, SameOperandsAndResultType]> {
  let summary = what # ", elementwise";
  let description = [{
    ```mlir
    %y = nn.}] # mnemonic # [{ %x : tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($result)";
}

def NN_NegOp : NN_UnaryOp<"neg", "negation">;
def NN_ExpOp : NN_UnaryOp<"exp", "exponential">;
def NN_LogOp : NN_UnaryOp<"log", "natural logarithm">;
def NN_SqrtOp : NN_UnaryOp<"sqrt", "square root">;
def NN_RsqrtOp : NN_UnaryOp<"rsqrt", "reciprocal square root">;
def NN_TanhOp : NN_UnaryOp<"tanh", "hyperbolic tangent">;
def NN_SigmoidOp : NN_UnaryOp<"sigmoid", "logistic sigmoid">;
def NN_ReluOp : NN_UnaryOp<"relu", "rectified linear unit">;
def NN_SiluOp : NN_UnaryOp<"silu", "x * sigmoid(x)">;

def NN_GeluOp : NN_UnaryOp<"gelu", "Gaussian error linear unit"> {
  let description = [{
    `approximate` is `"none"` (erf, the default) or `"tanh"`.

    ```mlir
    %y = nn.gelu %x approximate = "tanh" : tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input,
                       DefaultValuedStrAttr<StrAttr, "none">:$approximate);
  let assemblyFormat = [{
    $input (`approximate` `=` $approximate^)? attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def NN_CastOp : NN_Op<"cast", [Pure]> {
  let summary = "element type conversion";
  let description = [{
    ```mlir
    %y = nn.cast %x : tensor<8x64xf32> to tensor<8x64xbf16>
    ```
  }];
  let arguments = (ins NN_Tensor:$input);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `to` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Contractions
//===----------------------------------------------------------------------===//

def NN_MatmulOp : NN_Op<"matmul", [Pure, SameOperandsAndResultElementType]> {
  let summary = "batched matrix product";
  let description = [{
    `a[..., M, K] @ b[..., K, N] -> [..., M, N]`, batch dimensions broadcast.

    ```mlir
    %c = nn.matmul %a, %b : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$lhs, NN_FloatTensor:$rhs);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $lhs `,` $rhs attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LinearOp : NN_Op<"linear", [Pure, SameOperandsAndResultElementType]> {
  let summary = "x W^T + b";
  let description = [{
    `x[..., in]`, `weight[out, in]`, optional `bias[out]`.

    ```mlir
    %y = nn.linear %x, %w, %b : (tensor<8x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<8x32xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$weight,
                       Optional<NN_FloatTensor>:$bias);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `,` $weight (`,` $bias^)? attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Reductions and normalization
//===----------------------------------------------------------------------===//

class NN_ReduceOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, SameOperandsAndResultElementType]> {
  let summary = what # " over axes";
  let description = [{
    `axes` may be negative; no `axes` reduces all of them. `keepdim` keeps
    the reduced dimensions with size 1.

    ```mlir
    %y = nn.}] # mnemonic # [{ %x axes = [1] keepdim : tensor<8x64xf32> -> tensor<8x1xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input,
                       DefaultValuedAttr<DenseI64ArrayAttr, "{}">:$axes,
                       UnitAttr:$keepdim);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input (`axes` `=` $axes^)? (`keepdim` $keepdim^)? attr-dict `:`
    type($input) `->` type($result)
  }];
  let hasVerifier = 1;
}

def NN_ReduceSumOp : NN_ReduceOp<"reduce_sum", "sum">;
def NN_ReduceMeanOp : NN_ReduceOp<"reduce_mean", "mean">;
def NN_ReduceMaxOp : NN_ReduceOp<"reduce_max", "maximum">;

def NN_SquaredNormsOp : NN_Op<"squared_norms", [Pure]> {
  let summary = "each operand's sum of squares, as one vector";
  let description = [{
    Element `i` of the result is the sum of `x * x` over the elements of
    operand `i`. The optimizer's gradient norm reads every gradient through
    one op, so that a target computes all of them in a few kernels rather
    than two per gradient. A pipeline stage passes a zero scalar for each
    parameter another stage owns.

    ```mlir
    %n = nn.squared_norms %g0, %g1 : (tensor<64x32xf32>, tensor<32xf32>) -> tensor<2xf32>
    ```
  }];
  let arguments = (ins Variadic<NN_FloatTensor>:$inputs);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $inputs attr-dict `:` functional-type($inputs, results)
  }];
  let hasVerifier = 1;
}

def NN_SoftmaxOp : NN_Op<"softmax", [Pure, SameOperandsAndResultType]> {
  let summary = "softmax along an axis";
  let description = [{
    ```mlir
    %y = nn.softmax %x axis = -1 : tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, I64Attr:$axis);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `axis` `=` $axis attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

class NN_NormOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, SameOperandsAndResultElementType]> {
  let summary = what # " over the last dimension";
  let results = (outs NN_FloatTensor:$result);
  let hasVerifier = 1;
}

def NN_LayerNormOp : NN_NormOp<"layer_norm", "layer normalization"> {
  let description = [{
    `scale` and the optional `bias` are `[D]` for an input `[..., D]`;
    `eps` defaults to 1e-5.

    ```mlir
    %y = nn.layer_norm %x, %w, %b : (tensor<8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$scale,
                       Optional<NN_FloatTensor>:$bias,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let assemblyFormat = [{
    $input `,` $scale (`,` $bias^)? (`eps` `=` $eps^)? attr-dict `:`
    functional-type(operands, results)
  }];
}

def NN_RMSNormOp : NN_NormOp<"rms_norm", "root-mean-square normalization"> {
  let description = [{
    `scale` is `[D]` for an input `[..., D]`; `eps` defaults to 1e-5.

    ```mlir
    %y = nn.rms_norm %x, %w eps = 1.000000e-06 : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, NN_FloatTensor:$scale,
                       DefaultValuedAttr<F64Attr, "1.0e-5">:$eps);
  let assemblyFormat = [{
    $input `,` $scale (`eps` `=` $eps^)? attr-dict `:`
    functional-type(operands, results)
  }];
}

//===----------------------------------------------------------------------===//
// Model building blocks
//===----------------------------------------------------------------------===//

def NN_EmbeddingOp : NN_Op<"embedding", [
    Pure, AllElementTypesMatch<["table", "result"]>]> {
  let summary = "rows of a table gathered by integer ids";
  let description = [{
    `table[V, D]` and `ids[...]` give `[..., D]`.

    ```mlir
    %y = nn.embedding %wte, %ids : (tensor<256x64xf32>, tensor<8x16xi32>) -> tensor<8x16x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$table, NN_IdTensor:$ids);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $table `,` $ids attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_AttentionOp : NN_Op<"attention", [
    Pure, SameOperandsAndResultElementType]> {
  let summary = "multi-head scaled dot-product attention";
  let description = [{
    `q[B, T, H*hd]`, `k` and `v` `[B, T, Hkv*hd]` give `[B, T, H*hd]`.
    `kv_heads` defaults to `heads` (grouped-query attention when smaller),
    `scale` to `1/sqrt(hd)`; `causal` masks future positions.

    ```mlir
    %y = nn.attention %q, %k, %v heads = 4 kv_heads = 2 causal : (tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$query, NN_FloatTensor:$key,
                       NN_FloatTensor:$value, I64Attr:$heads,
                       OptionalAttr<I64Attr>:$kv_heads, UnitAttr:$causal,
                       OptionalAttr<F64Attr>:$scale);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $query `,` $key `,` $value `heads` `=` $heads
    (`kv_heads` `=` $kv_heads^)? (`causal` $causal^)? (`scale` `=` $scale^)?
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Key/value heads: `kv_heads`, or `heads` when absent.
    int64_t getNumKvHeads() {
      return static_cast<int64_t>(getKvHeads().value_or(getHeads()));
    }
    /// Head size: query channels over heads.
    int64_t getHeadDim();
    /// Softmax scale: `scale`, or 1/sqrt(head size) when absent.
    double getScaleOrDefault();
  }];
}

def NN_RopeOp : NN_Op<"rope", [Pure, SameOperandsAndResultType]> {
  let summary = "rotary position embedding";
  let description = [{
    Rotates each head of `x[B, T, H*hd]` (even `hd`) by position; `theta`
    defaults to 10000.

    ```mlir
    %y = nn.rope %x heads = 4 : tensor<2x16x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$input, I64Attr:$heads,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $input `heads` `=` $heads (`theta` `=` $theta^)? attr-dict `:`
    type($result)
  }];
  let hasVerifier = 1;
}

def NN_CrossEntropyOp : NN_Op<"cross_entropy", [Pure]> {
  let summary = "mean cross entropy of logits against integer targets";
  let description = [{
    `logits[..., V]` and `targets[...]` give a scalar `tensor<f32>`.

    ```mlir
    %loss = nn.cross_entropy %logits, %targets : (tensor<8x16x256xf32>, tensor<8x16xi32>) -> tensor<f32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$logits, NN_IdTensor:$targets);
  let results = (outs NN_LossTensor:$result);
  let assemblyFormat = [{
    $logits `,` $targets attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Data movement
//===----------------------------------------------------------------------===//

def NN_ReshapeOp : NN_Op<"reshape", [
    Pure, SameOperandsAndResultElementType]> {
  let summary = "same elements, new shape";
  let description = [{
    The result type is the target shape.

    ```mlir
    %y = nn.reshape %x : tensor<8x64xf32> -> tensor<8x4x16xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = "$input attr-dict `:` type($input) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def NN_TransposeOp : NN_Op<"transpose", [
    Pure, SameOperandsAndResultElementType]> {
  let summary = "permutation of the dimensions";
  let description = [{
    Result dimension `i` is input dimension `perm[i]`.

    ```mlir
    %y = nn.transpose %x perm = [1, 0] : tensor<8x64xf32> -> tensor<64x8xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, DenseI64ArrayAttr:$perm);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = [{
    $input `perm` `=` $perm attr-dict `:` type($input) `->` type($result)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

def NN_SplitOp : NN_Op<"split", [Pure, SameOperandsAndResultElementType]> {
  let summary = "pieces of a tensor along an axis";
  let description = [{
    The sizes of the pieces are those of the result types.

    ```mlir
    %q, %k, %v = nn.split %x axis = -1 : tensor<8x192xf32> -> tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, I64Attr:$axis);
  let results = (outs Variadic<NN_Tensor>:$results);
  let assemblyFormat = [{
    $input `axis` `=` $axis attr-dict `:` type($input) `->` type($results)
  }];
  let hasVerifier = 1;
}

def NN_ConcatOp : NN_Op<"concat", [Pure, SameOperandsAndResultElementType]> {
  let summary = "concatenation along an axis";
  let description = [{
    ```mlir
    %y = nn.concat %a, %b axis = 0 : (tensor<2x64xf32>, tensor<6x64xf32>) -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins Variadic<NN_Tensor>:$inputs, I64Attr:$axis);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = [{
    $inputs `axis` `=` $axis attr-dict `:` functional-type($inputs, $result)
  }];
  let hasVerifier = 1;
}

def NN_SliceOp : NN_Op<"slice", [Pure, SameOperandsAndResultElementType]> {
  let summary = "static slice with stride 1";
  let description = [{
    Takes the result type's sizes from `offsets` on every axis.

    ```mlir
    %y = nn.slice %x offsets = [0, 16] : tensor<8x64xf32> -> tensor<8x16xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, DenseI64ArrayAttr:$offsets);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = [{
    $input `offsets` `=` $offsets attr-dict `:` type($input) `->`
    type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Gradients
//
// The ops that the autodiff pass emits where a gradient is not a short
// composition of the ops above. Each recomputes what it needs from the
// forward inputs (statistics, probabilities) instead of keeping extra
// forward results alive.
//===----------------------------------------------------------------------===//

def NN_ActivationGradOp : NN_Op<"activation_grad", [
    Pure, SameOperandsAndResultType]> {
  let summary = "dy * f'(x) for an elementwise activation f";
  let description = [{
    `kind` is one of `gelu` (erf), `gelu_tanh`, `relu`, `silu`, `sigmoid`
    and `tanh`.

    ```mlir
    %dx = nn.activation_grad "gelu_tanh" %dy, %x : tensor<8x64xf32>
    ```
  }];
  let arguments = (ins StrAttr:$kind, NN_FloatTensor:$grad,
                       NN_FloatTensor:$input);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = "$kind $grad `,` $input attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def NN_SoftmaxGradOp : NN_Op<"softmax_grad", [
    Pure, SameOperandsAndResultType]> {
  let summary = "input gradient of softmax, from its output";
  let description = [{
    `dx = y * (dy - sum(dy * y, axis))`.

    ```mlir
    %dx = nn.softmax_grad %dy, %y axis = -1 : tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$output,
                       I64Attr:$axis);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $output `axis` `=` $axis attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

class NN_NormGradOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, SameOperandsAndResultElementType]> {
  let summary = "input gradient of " # what;
  let description = [{
    `grad` and `input` are `[..., D]`, `scale` is `[D]`; the statistics are
    recomputed from `input`.

    ```mlir
    %dx = nn.}] # mnemonic # [{ %dy, %x, %w eps = 1.000000e-05 : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       NN_FloatTensor:$scale, F64Attr:$eps);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input `,` $scale `eps` `=` $eps attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LayerNormGradOp : NN_NormGradOp<"layer_norm_grad", "layer_norm">;
def NN_RMSNormGradOp : NN_NormGradOp<"rms_norm_grad", "rms_norm">;

class NN_NormScaleGradOp<string mnemonic, string what>
    : NN_Op<mnemonic, [Pure, SameOperandsAndResultElementType]> {
  let summary = "scale gradient of " # what;
  let description = [{
    `sum(dy * normalized(x))` over every dimension but the last: `[D]`.

    ```mlir
    %dw = nn.}] # mnemonic # [{ %dy, %x eps = 1.000000e-05 : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$input,
                       F64Attr:$eps);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $input `eps` `=` $eps attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_LayerNormScaleGradOp
    : NN_NormScaleGradOp<"layer_norm_scale_grad", "layer_norm">;
def NN_RMSNormScaleGradOp
    : NN_NormScaleGradOp<"rms_norm_scale_grad", "rms_norm">;

def NN_EmbeddingGradOp : NN_Op<"embedding_grad", [
    Pure, AllElementTypesMatch<["grad", "result"]>]> {
  let summary = "table gradient of embedding: rows scatter-added by id";
  let description = [{
    `grad[..., D]` and `ids[...]` give `[V, D]`, V from the result type.

    ```mlir
    %dt = nn.embedding_grad %dy, %ids : (tensor<8x16x64xf32>, tensor<8x16xi32>) -> tensor<256x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_IdTensor:$ids);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $ids attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_AttentionGradOp : NN_Op<"attention_grad", [
    Pure, SameOperandsAndResultElementType]> {
  let summary = "gradients of attention with respect to q, k and v";
  let description = [{
    The attributes are those of the forward `nn.attention`; the attention
    probabilities are recomputed from `query` and `key`.

    ```mlir
    %dq, %dk, %dv = nn.attention_grad %dy, %q, %k, %v heads = 4 causal : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>)
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, NN_FloatTensor:$query,
                       NN_FloatTensor:$key, NN_FloatTensor:$value,
                       I64Attr:$heads, OptionalAttr<I64Attr>:$kv_heads,
                       UnitAttr:$causal, OptionalAttr<F64Attr>:$scale);
  let results = (outs NN_FloatTensor:$query_grad, NN_FloatTensor:$key_grad,
                      NN_FloatTensor:$value_grad);
  let assemblyFormat = [{
    $grad `,` $query `,` $key `,` $value `heads` `=` $heads
    (`kv_heads` `=` $kv_heads^)? (`causal` $causal^)? (`scale` `=` $scale^)?
    attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getNumKvHeads() {
      return static_cast<int64_t>(getKvHeads().value_or(getHeads()));
    }
    int64_t getHeadDim();
    double getScaleOrDefault();
  }];
}

def NN_RopeGradOp : NN_Op<"rope_grad", [Pure, SameOperandsAndResultType]> {
  let summary = "input gradient of rope: the inverse rotation";
  let description = [{
    ```mlir
    %dx = nn.rope_grad %dy heads = 4 : tensor<2x16x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$grad, I64Attr:$heads,
                       DefaultValuedAttr<F64Attr, "10000.0">:$theta);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `heads` `=` $heads (`theta` `=` $theta^)? attr-dict `:`
    type($result)
  }];
  let hasVerifier = 1;
}

def NN_CrossEntropyGradOp : NN_Op<"cross_entropy_grad", [
    Pure, AllTypesMatch<["logits", "result"]>]> {
  let summary = "logit gradient of the mean cross entropy";
  let description = [{
    `(softmax(logits) - onehot(targets)) * grad / N` for N target positions.

    ```mlir
    %dl = nn.cross_entropy_grad %dloss, %logits, %targets : (tensor<f32>, tensor<8x16x256xf32>, tensor<8x16xi32>) -> tensor<8x16x256xf32>
    ```
  }];
  let arguments = (ins NN_LossTensor:$grad, NN_FloatTensor:$logits,
                       NN_IdTensor:$targets);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = [{
    $grad `,` $logits `,` $targets attr-dict `:`
    functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

def NN_PadOp : NN_Op<"pad", [Pure, SameOperandsAndResultElementType]> {
  let summary = "zero padding: the gradient of a slice";
  let description = [{
    Places `input` at `offsets` inside a zero tensor of the result type.

    ```mlir
    %y = nn.pad %x offsets = [0, 16] : tensor<8x16xf32> -> tensor<8x64xf32>
    ```
  }];
  let arguments = (ins NN_Tensor:$input, DenseI64ArrayAttr:$offsets);
  let results = (outs NN_Tensor:$result);
  let assemblyFormat = [{
    $input `offsets` `=` $offsets attr-dict `:` type($input) `->`
    type($result)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Training state
//
// What persists between steps besides the parameters: gradient
// accumulators and optimizer moments. Each is a module-level symbol that
// functions read with `nn.state_ref` and write with `nn.store`; the memory
// plan gives these symbols (and the parameters) buffers of their own.
//===----------------------------------------------------------------------===//

def NN_StateOp : NN_Op<"state", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "a persistent tensor of the training state, zero at start";
  let description = [{
    `role` says what it holds: `grad` (the gradient accumulator of
    parameter `of`), `exp_avg` or `exp_avg_sq` (AdamW's moments),
    `momentum` (SGD's) or `norm` (a pipeline's squared gradient norms, one
    per parameter from `of` on: `tensor<Nxf32>`).

    ```mlir
    nn.state @wte.grad : tensor<256x64xf32> role = "grad" of @wte
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name,
                       TypeAttrOf<NN_FloatTensor>:$type, StrAttr:$role,
                       FlatSymbolRefAttr:$of);
  let assemblyFormat = [{
    $sym_name `:` $type `role` `=` $role `of` $of attr-dict
  }];
  let hasVerifier = 1;
}

def NN_StateRefOp : NN_Op<"state_ref", [
    DeclareOpInterfaceMethods<SymbolUserOpInterface>,
    MemoryEffects<[MemRead]>]> {
  let summary = "the current value of a state tensor";
  let description = [{
    Reads the value as of this point: a later `nn.store` does not change it.

    ```mlir
    %g = nn.state_ref @wte.grad : tensor<256x64xf32>
    ```
  }];
  let arguments = (ins FlatSymbolRefAttr:$name);
  let results = (outs NN_FloatTensor:$result);
  let assemblyFormat = "$name attr-dict `:` type($result)";
}

def NN_StoreOp : NN_Op<"store", [
    DeclareOpInterfaceMethods<SymbolUserOpInterface>,
    MemoryEffects<[MemWrite]>]> {
  let summary = "writes a parameter or a state tensor";
  let description = [{
    ```mlir
    nn.store %g, @wte.grad : tensor<256x64xf32>
    ```
  }];
  let arguments = (ins NN_FloatTensor:$value, FlatSymbolRefAttr:$target);
  let assemblyFormat = "$value `,` $target attr-dict `:` type($value)";
}

def NN_LrScheduleOp : NN_Op<"lr_schedule", [Pure]> {
  let summary = "the learning rate of a step";
  let description = [{
    For a 0-based `step` of `total` steps: a linear warmup over `warmup`
    steps to `lr` (`lr * (step + 1) / warmup`), then `constant`, `cosine`
    (from `lr` down to `min_lr`) or `linear` decay over the remaining
    `total - warmup` steps; past `total` it stays at `min_lr`.

    ```mlir
    %lr = nn.lr_schedule %step, %total "cosine" lr = 6.000000e-04 min_lr = 6.000000e-05 warmup = 700 : (tensor<i64>, tensor<i64>) -> tensor<f32>
    ```
  }];
  let arguments = (ins 0DTensorOf<[I64]>:$step, 0DTensorOf<[I64]>:$total,
                       StrAttr:$schedule, F64Attr:$lr, F64Attr:$min_lr,
                       I64Attr:$warmup);
  let results = (outs NN_LossTensor:$result);
  let assemblyFormat = [{
    $step `,` $total $schedule `lr` `=` $lr `min_lr` `=` $min_lr
    `warmup` `=` $warmup attr-dict `:` functional-type(operands, results)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Fusion groups (made by the nn-fusion pass)
//===----------------------------------------------------------------------===//

def NN_FusedOp : NN_Op<"fused", [IsolatedFromAbove, Pure, SingleBlock]> {
  let summary = "a group of elementwise ops that a target runs as one kernel";
  let description = [{
    The body computes the results from the block arguments (one per input,
    in order) with elementwise nn ops; every op of the body has the result
    shape `shape` of the group, so one loop nest over `shape` computes all
    of them, reading each input with NumPy broadcasting. The results are
    the values the ops outside need, in `nn.yield` order.

    ```mlir
    %r:2 = nn.fused (%g, %m) shape = [64, 64] : (tensor<64x64xf32>, tensor<64x64xf32>) -> (tensor<64x64xf32>, tensor<64x64xf32>) {
    ^bb0(%a: tensor<64x64xf32>, %b: tensor<64x64xf32>):
      %0 = nn.mul %a, %b : (tensor<64x64xf32>, tensor<64x64xf32>) -> tensor<64x64xf32>
      %1 = nn.add %0, %a : (tensor<64x64xf32>, tensor<64x64xf32>) -> tensor<64x64xf32>
      nn.yield %0, %1 : tensor<64x64xf32>, tensor<64x64xf32>
    }
    ```
  }];
  let arguments = (ins Variadic<NN_Tensor>:$inputs,
                       DenseI64ArrayAttr:$shape);
  let results = (outs Variadic<NN_Tensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = [{
    `(` $inputs `)` `shape` `=` $shape attr-dict `:`
        functional-type($inputs, $results) $body
  }];
  let hasVerifier = 1;
}

def NN_YieldOp : NN_Op<"yield", [Pure, Terminator, HasParent<"FusedOp">]> {
  let summary = "the results of an nn.fused group";
  let arguments = (ins Variadic<NN_Tensor>:$values);
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

#endif // HOTSTAGE_DIALECTS_NN_NNOPS_TD
