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

#endif // HOTSTAGE_DIALECTS_NN_NNOPS_TD
