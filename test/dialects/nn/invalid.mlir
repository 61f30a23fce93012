// Every verifier rule of the nn dialect, one negative case at a time.
// RUN: hotstage-opt %s -split-input-file -verify-diagnostics

//===----------------------------------------------------------------------===//
// Module attributes
//===----------------------------------------------------------------------===//

// expected-error@+1 {{'nn.train' must be a dictionary, got 1 : i64}}
module attributes {nn.train = 1 : i64} {}

// -----

// expected-error@+1 {{'nn.model' must be a string, got 3 : i64}}
module attributes {nn.model = 3 : i64} {}

// -----

// expected-error@+1 {{unknown nn dialect attribute 'nn.trian'}}
module attributes {nn.trian = {}} {}

// -----

// expected-error@+1 {{'nn.model' is only valid on a module}}
func.func @f() attributes {nn.model = "GPT2"} {
  return
}

//===----------------------------------------------------------------------===//
// #nn.init
//===----------------------------------------------------------------------===//

// -----

// expected-error@+1 {{unknown init kind 'gaussian', expected zeros, ones, constant, normal or uniform}}
nn.param @w : tensor<4xf32> init #nn.init<gaussian, 0.0, 1.0>

// -----

// expected-error@+1 {{'zeros' init takes no parameters, got 1}}
nn.param @w : tensor<4xf32> init #nn.init<zeros, 1.0>

// -----

// expected-error@+1 {{'ones' init takes no parameters, got 2}}
nn.param @w : tensor<4xf32> init #nn.init<ones, 1.0, 2.0>

// -----

// expected-error@+1 {{'constant' init takes 1 parameter (value), got 0}}
nn.param @w : tensor<4xf32> init #nn.init<constant>

// -----

// expected-error@+1 {{'normal' init takes 2 parameters (mean, std), got 1}}
nn.param @w : tensor<4xf32> init #nn.init<normal, 0.02>

// -----

// expected-error@+1 {{'uniform' init takes 2 parameters (low, high), got 3}}
nn.param @w : tensor<4xf32> init #nn.init<uniform, 0.0, 1.0, 2.0>

// -----

// expected-error@+1 {{'normal' init needs a positive std, got 0.000000e+00}}
nn.param @w : tensor<4xf32> init #nn.init<normal, 0.0, 0.0>

// -----

// expected-error@+1 {{'normal' init needs a positive std, got -1.000000e+00}}
nn.param @w : tensor<4xf32> init #nn.init<normal, 0.0, -1.0>

// -----

// expected-error@+1 {{'uniform' init needs low < high, got 1.000000e+00 and 1.000000e+00}}
nn.param @w : tensor<4xf32> init #nn.init<uniform, 1.0, 1.0>

// -----

// expected-error@+1 {{'constant' init parameters must be finite}}
nn.param @w : tensor<4xf32> init #nn.init<constant, 0x7FF0000000000000>

//===----------------------------------------------------------------------===//
// nn.param and nn.param_ref
//===----------------------------------------------------------------------===//

// -----

func.func @f() {
  // expected-error@+1 {{'nn.param' op expects parent op 'builtin.module'}}
  nn.param @w : tensor<4xf32> init #nn.init<zeros>
  return
}

// -----

// expected-error@+1 {{'nn.param' op attribute 'type' failed to satisfy constraint: type attribute of statically shaped tensor of 32-bit float or bfloat16 type or 16-bit float values}}
nn.param @w : tensor<4xi32> init #nn.init<zeros>

// -----

// expected-error@+1 {{'nn.param' op attribute 'type' failed to satisfy constraint}}
nn.param @w : tensor<?xf32> init #nn.init<zeros>

// -----

// expected-note@+1 {{see existing symbol definition here}}
nn.param @w : tensor<4xf32> init #nn.init<zeros>
// expected-error@+1 {{redefinition of symbol named 'w'}}
nn.param @w : tensor<4xf32> init #nn.init<ones>

// -----

func.func @f() -> tensor<4xf32> {
  // expected-error@+1 {{'nn.param_ref' op refers to an unknown parameter @missing}}
  %0 = nn.param_ref @missing : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// expected-note@+1 {{symbol defined here}}
func.func @g() {
  return
}
func.func @f() -> tensor<4xf32> {
  // expected-error@+1 {{'nn.param_ref' op @g is not an nn.param}}
  %0 = nn.param_ref @g : tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// expected-note@+1 {{parameter defined here}}
nn.param @w : tensor<4xf32> init #nn.init<zeros>
func.func @f() -> tensor<4xbf16> {
  // expected-error@+1 {{'nn.param_ref' op type 'tensor<4xbf16>' does not match the type 'tensor<4xf32>' of parameter @w}}
  %0 = nn.param_ref @w : tensor<4xbf16>
  return %0 : tensor<4xbf16>
}

// -----

nn.param @w : tensor<4xf32> init #nn.init<zeros>
func.func @f() -> tensor<2x2xf32> {
  // expected-error@+1 {{does not match the type 'tensor<4xf32>' of parameter @w}}
  %0 = nn.param_ref @w : tensor<2x2xf32>
  // expected-note@-4 {{parameter defined here}}
  return %0 : tensor<2x2xf32>
}

//===----------------------------------------------------------------------===//
// nn.constant
//===----------------------------------------------------------------------===//

// -----

func.func @f() {
  // expected-error@+1 {{'nn.constant' op failed to verify that all of {value, result} have same type}}
  %0 = "nn.constant"() <{value = dense<1.0> : tensor<4xf32>}> : () -> tensor<3xf32>
  return
}

// -----

func.func @f() {
  // expected-error@+1 {{'nn.constant' op result #0 must be statically shaped tensor of 32-bit float or bfloat16 type or 16-bit float or 32-bit signless integer or 64-bit signless integer values, but got 'tensor<2xi1>'}}
  %0 = nn.constant dense<true> : tensor<2xi1>
  return
}

//===----------------------------------------------------------------------===//
// Element types
//===----------------------------------------------------------------------===//

// -----

func.func @f(%x: tensor<4xi32>) {
  // expected-error@+1 {{'nn.exp' op operand #0 must be statically shaped tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<4xi32>'}}
  %0 = nn.exp %x : tensor<4xi32>
  return
}

// -----

func.func @f(%x: tensor<4xf64>) {
  // expected-error@+1 {{'nn.relu' op operand #0 must be statically shaped tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<4xf64>'}}
  %0 = nn.relu %x : tensor<4xf64>
  return
}

// -----

func.func @f(%x: tensor<?x4xf32>) {
  // expected-error@+1 {{'nn.add' op operand #0 must be statically shaped tensor}}
  %0 = nn.add %x, %x : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
  return
}

// -----

func.func @f(%x: tensor<*xf32>) {
  // expected-error@+1 {{'nn.neg' op operand #0 must be statically shaped tensor}}
  %0 = "nn.neg"(%x) : (tensor<*xf32>) -> tensor<*xf32>
  return
}

// -----

func.func @f(%a: tensor<4xf32>, %b: tensor<4xbf16>) {
  // expected-error@+1 {{'nn.add' op requires the same element type for all operands and results}}
  %0 = nn.add %a, %b : (tensor<4xf32>, tensor<4xbf16>) -> tensor<4xf32>
  return
}

// -----

func.func @f(%a: tensor<4xi32>) {
  // expected-error@+1 {{'nn.mul' op requires the same element type for all operands and results}}
  %0 = nn.mul %a, %a : (tensor<4xi32>, tensor<4xi32>) -> tensor<4xi64>
  return
}

// -----

func.func @f(%x: tensor<4xf32>) {
  // expected-error@+1 {{'nn.tanh' op requires the same type for all operands and results}}
  %0 = "nn.tanh"(%x) : (tensor<4xf32>) -> tensor<4xf16>
  return
}

// -----

func.func @f(%a: tensor<2x3xi32>, %b: tensor<3x4xi32>) {
  // expected-error@+1 {{'nn.matmul' op operand #0 must be statically shaped tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<2x3xi32>'}}
  %0 = nn.matmul %a, %b : (tensor<2x3xi32>, tensor<3x4xi32>) -> tensor<2x4xi32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<3x4xf16>) {
  // expected-error@+1 {{'nn.matmul' op requires the same element type for all operands and results}}
  %0 = nn.matmul %a, %b : (tensor<2x3xf32>, tensor<3x4xf16>) -> tensor<2x4xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %w: tensor<4x3xf32>, %b: tensor<4xbf16>) {
  // expected-error@+1 {{'nn.linear' op requires the same element type for all operands and results}}
  %0 = nn.linear %x, %w, %b : (tensor<2x3xf32>, tensor<4x3xf32>, tensor<4xbf16>) -> tensor<2x4xf32>
  return
}

// -----

func.func @f(%t: tensor<10x4xf32>, %ids: tensor<3xf32>) {
  // expected-error@+1 {{'nn.embedding' op operand #1 must be statically shaped tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<3xf32>'}}
  %0 = nn.embedding %t, %ids : (tensor<10x4xf32>, tensor<3xf32>) -> tensor<3x4xf32>
  return
}

// -----

func.func @f(%t: tensor<10x4xf32>, %ids: tensor<3xi32>) {
  // expected-error@+1 {{'nn.embedding' op failed to verify that all of {table, result} have same element type}}
  %0 = nn.embedding %t, %ids : (tensor<10x4xf32>, tensor<3xi32>) -> tensor<3x4xbf16>
  return
}

// -----

func.func @f(%l: tensor<3x10xf32>, %t: tensor<3xf32>) {
  // expected-error@+1 {{'nn.cross_entropy' op operand #1 must be statically shaped tensor of 32-bit signless integer or 64-bit signless integer values, but got 'tensor<3xf32>'}}
  %0 = nn.cross_entropy %l, %t : (tensor<3x10xf32>, tensor<3xf32>) -> tensor<f32>
  return
}

// -----

func.func @f(%l: tensor<3x10xbf16>, %t: tensor<3xi32>) {
  // expected-error@+1 {{'nn.cross_entropy' op result #0 must be 0D tensor of 32-bit float values, but got 'tensor<bf16>'}}
  %0 = nn.cross_entropy %l, %t : (tensor<3x10xbf16>, tensor<3xi32>) -> tensor<bf16>
  return
}

// -----

func.func @f(%l: tensor<3x10xf32>, %t: tensor<3xi32>) {
  // expected-error@+1 {{'nn.cross_entropy' op result #0 must be 0D tensor of 32-bit float values, but got 'tensor<3xf32>'}}
  %0 = nn.cross_entropy %l, %t : (tensor<3x10xf32>, tensor<3xi32>) -> tensor<3xf32>
  return
}

// -----

func.func @f(%x: tensor<4xf32>) {
  // expected-error@+1 {{'nn.cast' op cannot change the shape: [4] to [2, 2]}}
  %0 = nn.cast %x : tensor<4xf32> to tensor<2x2xbf16>
  return
}

// -----

func.func @f(%x: tensor<4xf32>) {
  // expected-error@+1 {{'nn.gelu' op approximate must be "none" or "tanh", got "erf"}}
  %0 = nn.gelu %x approximate = "erf" : tensor<4xf32>
  return
}

//===----------------------------------------------------------------------===//
// Shape rules: broadcasting
//===----------------------------------------------------------------------===//

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<4xf32>) {
  // expected-error@+1 {{'nn.add' op shapes [2, 3] and [4] of 'add' cannot be broadcast together}}
  %0 = nn.add %a, %b : (tensor<2x3xf32>, tensor<4xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<3x1xf32>) {
  // expected-error@+1 {{'nn.maximum' op shapes [2, 3] and [3, 1] of 'maximum' cannot be broadcast together}}
  %0 = nn.maximum %a, %b : (tensor<2x3xf32>, tensor<3x1xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<3xf32>) {
  // expected-error@+1 {{'nn.sub' op result type 'tensor<3xf32>' does not match the inferred shape [2, 3]}}
  %0 = nn.sub %a, %b : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @f(%a: tensor<5x3xf32>, %b: tensor<4x1xf32>) {
  // expected-error@+1 {{'nn.div' op shapes [5, 3] and [4, 1] of 'div' cannot be broadcast together}}
  %0 = nn.div %a, %b : (tensor<5x3xf32>, tensor<4x1xf32>) -> tensor<5x3xf32>
  return
}

// -----

func.func @f(%a: tensor<2xf32>, %b: tensor<3xf32>) {
  // expected-error@+1 {{'nn.mul' op shapes [2] and [3] of 'mul' cannot be broadcast together}}
  %0 = nn.mul %a, %b : (tensor<2xf32>, tensor<3xf32>) -> tensor<3xf32>
  return
}

//===----------------------------------------------------------------------===//
// Shape rules: contractions
//===----------------------------------------------------------------------===//

// -----

func.func @f(%a: tensor<f32>, %b: tensor<3x4xf32>) {
  // expected-error@+1 {{'nn.matmul' op 'matmul' needs operands of rank at least 1, got [] and [3, 4]}}
  %0 = nn.matmul %a, %b : (tensor<f32>, tensor<3x4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<4x5xf32>) {
  // expected-error@+1 {{'nn.matmul' op inner dimensions of 'matmul' differ: [2, 3] @ [4, 5] (3 vs 4)}}
  %0 = nn.matmul %a, %b : (tensor<2x3xf32>, tensor<4x5xf32>) -> tensor<2x5xf32>
  return
}

// -----

func.func @f(%a: tensor<2x4x3xf32>, %b: tensor<5x3x6xf32>) {
  // expected-error@+1 {{'nn.matmul' op batch dimensions of 'matmul' cannot be broadcast: [2, 4, 3] @ [5, 3, 6]}}
  %0 = nn.matmul %a, %b : (tensor<2x4x3xf32>, tensor<5x3x6xf32>) -> tensor<2x4x6xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<3x5xf32>) {
  // expected-error@+1 {{'nn.matmul' op result type 'tensor<2x3xf32>' does not match the inferred shape [2, 5]}}
  %0 = nn.matmul %a, %b : (tensor<2x3xf32>, tensor<3x5xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %w: tensor<3xf32>) {
  // expected-error@+1 {{'nn.linear' op 'linear' weight must be [out, in], got [3]}}
  %0 = nn.linear %x, %w : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %w: tensor<4x5xf32>) {
  // expected-error@+1 {{'nn.linear' op 'linear' input [2, 3] does not match weight [4, 5]: last dimension must be 5}}
  %0 = nn.linear %x, %w : (tensor<2x3xf32>, tensor<4x5xf32>) -> tensor<2x4xf32>
  return
}

// -----

func.func @f(%x: tensor<f32>, %w: tensor<4x5xf32>) {
  // expected-error@+1 {{'nn.linear' op 'linear' input [] does not match weight [4, 5]: last dimension must be 5}}
  %0 = nn.linear %x, %w : (tensor<f32>, tensor<4x5xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %w: tensor<4x3xf32>, %b: tensor<3xf32>) {
  // expected-error@+1 {{'nn.linear' op 'linear' bias [3] must be [4] for weight [4, 3]}}
  %0 = nn.linear %x, %w, %b : (tensor<2x3xf32>, tensor<4x3xf32>, tensor<3xf32>) -> tensor<2x4xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %w: tensor<4x3xf32>) {
  // expected-error@+1 {{'nn.linear' op result type 'tensor<2x3xf32>' does not match the inferred shape [2, 4]}}
  %0 = nn.linear %x, %w : (tensor<2x3xf32>, tensor<4x3xf32>) -> tensor<2x3xf32>
  return
}

//===----------------------------------------------------------------------===//
// Shape rules: reductions and normalization
//===----------------------------------------------------------------------===//

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.reduce_sum' op axis 2 of 'reduce_sum' is out of range for shape [2, 3]}}
  %0 = nn.reduce_sum %x axes = [2] : tensor<2x3xf32> -> tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.reduce_mean' op axis -3 of 'reduce_mean' is out of range for shape [2, 3]}}
  %0 = nn.reduce_mean %x axes = [-3] : tensor<2x3xf32> -> tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.reduce_max' op axis -1 of 'reduce_max' is repeated}}
  %0 = nn.reduce_max %x axes = [1, -1] : tensor<2x3xf32> -> tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.reduce_sum' op result type 'tensor<2xf32>' does not match the inferred shape [2, 1]}}
  %0 = nn.reduce_sum %x axes = [1] keepdim : tensor<2x3xf32> -> tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xi32>) {
  // expected-error@+1 {{'nn.reduce_sum' op operand #0 must be statically shaped tensor of 32-bit float or bfloat16 type or 16-bit float values, but got 'tensor<2x3xi32>'}}
  %0 = nn.reduce_sum %x : tensor<2x3xi32> -> tensor<i32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %y: tensor<3xf32>) {
  // expected-error@+1 {{'nn.squared_norms' op result type 'tensor<3xf32>' should be tensor<2xf32>, one element per operand}}
  %0 = nn.squared_norms %x, %y : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xbf16>) {
  // expected-error@+1 {{'nn.squared_norms' op operand #0 is 'tensor<2x3xbf16>'; squared norms are taken of f32 tensors}}
  %0 = nn.squared_norms %x : (tensor<2x3xbf16>) -> tensor<1xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.softmax' op axis 2 of 'softmax' is out of range for shape [2, 3]}}
  %0 = nn.softmax %x axis = 2 : tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<f32>, %s: tensor<1xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op 'layer_norm' needs an input of rank at least 1}}
  %0 = nn.layer_norm %x, %s : (tensor<f32>, tensor<1xf32>) -> tensor<f32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %s: tensor<2xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op 'layer_norm' scale [2] must be [3] for input [2, 3]}}
  %0 = nn.layer_norm %x, %s : (tensor<2x3xf32>, tensor<2xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %s: tensor<3xf32>, %b: tensor<1x3xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op 'layer_norm' bias [1, 3] must be [3] for input [2, 3]}}
  %0 = nn.layer_norm %x, %s, %b : (tensor<2x3xf32>, tensor<3xf32>, tensor<1x3xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %s: tensor<3xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op result type 'tensor<3x2xf32>' does not match the inferred shape [2, 3]}}
  %0 = nn.layer_norm %x, %s : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<3x2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %s: tensor<3xf32>) {
  // expected-error@+1 {{'nn.layer_norm' op eps must be non-negative and finite, got -1.000000e+00}}
  %0 = nn.layer_norm %x, %s eps = -1.0 : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %s: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.rms_norm' op 'rms_norm' scale [2, 3] must be [3] for input [2, 3]}}
  %0 = nn.rms_norm %x, %s : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<f32>, %s: tensor<1xf32>) {
  // expected-error@+1 {{'nn.rms_norm' op 'rms_norm' needs an input of rank at least 1}}
  %0 = nn.rms_norm %x, %s : (tensor<f32>, tensor<1xf32>) -> tensor<f32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>, %s: tensor<3xf32>) {
  // expected-error@+1 {{'nn.rms_norm' op eps must be non-negative and finite, got -1.000000e-05}}
  %0 = nn.rms_norm %x, %s eps = -1.0e-5 : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  return
}

//===----------------------------------------------------------------------===//
// Shape rules: model building blocks
//===----------------------------------------------------------------------===//

// -----

func.func @f(%t: tensor<10xf32>, %ids: tensor<3xi32>) {
  // expected-error@+1 {{'nn.embedding' op 'embedding' table must be [rows, dim], got [10]}}
  %0 = nn.embedding %t, %ids : (tensor<10xf32>, tensor<3xi32>) -> tensor<3xf32>
  return
}

// -----

func.func @f(%t: tensor<10x4xf32>, %ids: tensor<2x3xi64>) {
  // expected-error@+1 {{'nn.embedding' op result type 'tensor<6x4xf32>' does not match the inferred shape [2, 3, 4]}}
  %0 = nn.embedding %t, %ids : (tensor<10x4xf32>, tensor<2x3xi64>) -> tensor<6x4xf32>
  return
}

// -----

func.func @f(%q: tensor<16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' needs q, k and v of rank 3 [B, T, C], got [16, 64], [16, 64] and [16, 64]}}
  %0 = nn.attention %q, %q, %q heads = 4 : (tensor<16x64xf32>, tensor<16x64xf32>, tensor<16x64xf32>) -> tensor<16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' needs a positive head count, got 0 and 0}}
  %0 = nn.attention %q, %q, %q heads = 0 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' needs a positive head count, got 4 and -2}}
  %0 = nn.attention %q, %q, %q heads = 4 kv_heads = -2 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>, %kv: tensor<2x16x48xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' query heads (4) must be a multiple of key/value heads (3)}}
  %0 = nn.attention %q, %kv, %kv heads = 4 kv_heads = 3 : (tensor<2x16x64xf32>, tensor<2x16x48xf32>, tensor<2x16x48xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' channels 64 of q are not divisible by 5 heads}}
  %0 = nn.attention %q, %q, %q heads = 5 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>, %k: tensor<2x16x64xf32>, %v: tensor<2x8x64xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' k [2, 16, 64] and v [2, 8, 64] must have the same shape}}
  %0 = nn.attention %q, %k, %v heads = 4 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x8x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>, %kv: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op 'attention' k and v [2, 16, 64] must be [2, 16, 32] for q [2, 16, 64] with 4 heads and 2 key/value heads}}
  %0 = nn.attention %q, %kv, %kv heads = 4 kv_heads = 2 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op result type 'tensor<2x16x32xf32>' does not match the inferred shape [2, 16, 64]}}
  %0 = nn.attention %q, %q, %q heads = 4 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x32xf32>
  return
}

// -----

func.func @f(%q: tensor<2x16x64xf32>) {
  // expected-error@+1 {{'nn.attention' op scale must be positive and finite, got 0.000000e+00}}
  %0 = nn.attention %q, %q, %q heads = 4 scale = 0.0 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  return
}

// -----

func.func @f(%x: tensor<16x64xf32>) {
  // expected-error@+1 {{'nn.rope' op 'rope' needs an input of rank 3 [B, T, C], got [16, 64]}}
  %0 = nn.rope %x heads = 4 : tensor<16x64xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x24xf32>) {
  // expected-error@+1 {{'nn.rope' op 'rope' channels 24 must split into 8 heads of even size}}
  %0 = nn.rope %x heads = 8 : tensor<2x16x24xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x24xf32>) {
  // expected-error@+1 {{'nn.rope' op 'rope' channels 24 must split into 5 heads of even size}}
  %0 = nn.rope %x heads = 5 : tensor<2x16x24xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x24xf32>) {
  // expected-error@+1 {{'nn.rope' op 'rope' channels 24 must split into 0 heads of even size}}
  %0 = nn.rope %x heads = 0 : tensor<2x16x24xf32>
  return
}

// -----

func.func @f(%x: tensor<2x16x24xf32>) {
  // expected-error@+1 {{'nn.rope' op theta must be positive and finite, got -1.000000e+00}}
  %0 = nn.rope %x heads = 2 theta = -1.0 : tensor<2x16x24xf32>
  return
}

// -----

func.func @f(%l: tensor<3x10xf32>, %t: tensor<4xi32>) {
  // expected-error@+1 {{'nn.cross_entropy' op 'cross_entropy' targets [4] must match logits [3, 10] without the last dimension}}
  %0 = nn.cross_entropy %l, %t : (tensor<3x10xf32>, tensor<4xi32>) -> tensor<f32>
  return
}

// -----

func.func @f(%l: tensor<f32>, %t: tensor<i32>) {
  // expected-error@+1 {{'nn.cross_entropy' op 'cross_entropy' targets [] must match logits [] without the last dimension}}
  %0 = nn.cross_entropy %l, %t : (tensor<f32>, tensor<i32>) -> tensor<f32>
  return
}

//===----------------------------------------------------------------------===//
// Shape rules: data movement
//===----------------------------------------------------------------------===//

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.reshape' op cannot 'reshape' [2, 3] (6 elements) into [4, 2] (8 elements)}}
  %0 = nn.reshape %x : tensor<2x3xf32> -> tensor<4x2xf32>
  return
}

// -----

func.func @f(%x: tensor<4294967296x4294967296x4xf32>) {
  // expected-error@+1 {{'nn.reshape' op 'reshape' input [4294967296, 4294967296, 4] is too large}}
  %0 = nn.reshape %x : tensor<4294967296x4294967296x4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @f(%x: tensor<4xf32>) {
  // expected-error@+1 {{'nn.reshape' op 'reshape' target [4294967296, 4294967296, 4] is too large}}
  %0 = nn.reshape %x : tensor<4xf32> -> tensor<4294967296x4294967296x4xf32>
  return
}

// -----

func.func @f(%x: tensor<4xf32>) {
  // expected-error@+1 {{'nn.reshape' op requires the same element type for all operands and results}}
  %0 = nn.reshape %x : tensor<4xf32> -> tensor<2x2xf16>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.transpose' op 'transpose' permutation [0] does not match rank 2 of [2, 3]}}
  %0 = nn.transpose %x perm = [0] : tensor<2x3xf32> -> tensor<2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.transpose' op 'transpose' permutation [1, 1] is not a permutation of 2 dimensions}}
  %0 = nn.transpose %x perm = [1, 1] : tensor<2x3xf32> -> tensor<3x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.transpose' op 'transpose' permutation [0, 2] is not a permutation of 2 dimensions}}
  %0 = nn.transpose %x perm = [0, 2] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.transpose' op result type 'tensor<2x3xf32>' does not match the inferred shape [3, 2]}}
  %0 = nn.transpose %x perm = [1, 0] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // expected-error@+1 {{'nn.split' op axis 2 of 'split' is out of range for shape [2, 6]}}
  %0:2 = nn.split %x axis = 2 : tensor<2x6xf32> -> tensor<2x3xf32>, tensor<2x3xf32>
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // expected-error@+1 {{'nn.split' op 'split' sizes [6, 0] must be positive}}
  %0:2 = nn.split %x axis = 1 : tensor<2x6xf32> -> tensor<2x6xf32>, tensor<2x0xf32>
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // expected-error@+1 {{'nn.split' op 'split' sizes [3, 2] do not add up to 6, dimension -1 of [2, 6]}}
  %0:2 = nn.split %x axis = -1 : tensor<2x6xf32> -> tensor<2x3xf32>, tensor<2x2xf32>
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // Zero pieces never reach the split rule: the element type trait needs a
  // result.
  // expected-error@+1 {{'nn.split' op expected 1 or more results}}
  "nn.split"(%x) <{axis = 1 : i64}> : (tensor<2x6xf32>) -> ()
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // expected-error@+1 {{'nn.split' op result #1 type 'tensor<6xf32>' must have rank 2 like the input}}
  %0:2 = nn.split %x axis = 0 : tensor<2x6xf32> -> tensor<1x6xf32>, tensor<6xf32>
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // expected-error@+1 {{'nn.split' op result #1 type 'tensor<1x4xf32>' does not match the inferred shape [1, 6]}}
  %0:2 = nn.split %x axis = 0 : tensor<2x6xf32> -> tensor<1x6xf32>, tensor<1x4xf32>
  return
}

// -----

func.func @f(%x: tensor<2x6xf32>) {
  // expected-error@+1 {{'nn.split' op requires the same element type for all operands and results}}
  %0:2 = nn.split %x axis = 0 : tensor<2x6xf32> -> tensor<1x6xf32>, tensor<1x6xbf16>
  return
}

// -----

func.func @f() {
  // Zero operands never reach the concat rule: the element type trait needs
  // an operand.
  // expected-error@+1 {{'nn.concat' op expected 1 or more operands, but found 0}}
  %0 = "nn.concat"() <{axis = 0 : i64}> : () -> tensor<2xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>) {
  // expected-error@+1 {{'nn.concat' op axis -3 of 'concat' is out of range for shape [2, 3]}}
  %0 = nn.concat %a, %a axis = -3 : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<4x3xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>) {
  // expected-error@+1 {{'nn.concat' op 'concat' operands [2, 3] and [2, 4] differ outside axis 0}}
  %0 = nn.concat %a, %b axis = 0 : (tensor<2x3xf32>, tensor<2x4xf32>) -> tensor<4x3xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<3xf32>) {
  // expected-error@+1 {{'nn.concat' op 'concat' operands [2, 3] and [3] differ outside axis 1}}
  %0 = nn.concat %a, %b axis = 1 : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x6xf32>
  return
}

// -----

func.func @f(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>) {
  // expected-error@+1 {{'nn.concat' op result type 'tensor<2x8xf32>' does not match the inferred shape [2, 7]}}
  %0 = nn.concat %a, %b axis = 1 : (tensor<2x3xf32>, tensor<2x4xf32>) -> tensor<2x8xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.slice' op 'slice' offsets [0] and sizes [4, 8] must have rank 2 like [8, 64]}}
  %0 = nn.slice %x offsets = [0] : tensor<8x64xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.slice' op 'slice' offsets [0, 0] and sizes [8] must have rank 2 like [8, 64]}}
  %0 = nn.slice %x offsets = [0, 0] : tensor<8x64xf32> -> tensor<8xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.slice' op 'slice' [60:68] is out of bounds for dimension 1 of [8, 64]}}
  %0 = nn.slice %x offsets = [0, 60] : tensor<8x64xf32> -> tensor<8x8xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.slice' op 'slice' [-1:3] is out of bounds for dimension 0 of [8, 64]}}
  %0 = nn.slice %x offsets = [-1, 0] : tensor<8x64xf32> -> tensor<4x64xf32>
  return
}
