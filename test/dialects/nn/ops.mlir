// Round trip of every nn op and attribute, in the custom and generic forms
// and through bytecode.
// RUN: hotstage-opt %s | hotstage-opt | FileCheck %s
// RUN: hotstage-opt %s --mlir-print-op-generic | hotstage-opt | FileCheck %s
// RUN: hotstage-opt %s -emit-bytecode | hotstage-opt | FileCheck %s

// CHECK: module attributes {nn.model = "GPT2", nn.train = {batch = 8 : i64, lr = 3.000000e-04 : f64}}
module attributes {nn.model = "GPT2", nn.train = {batch = 8 : i64, lr = 3.0e-4 : f64}} {

// CHECK: nn.param @wte : tensor<256x64xf32> init #nn.init<normal, 0.000000e+00, 2.000000e-02>
nn.param @wte : tensor<256x64xf32> init #nn.init<normal, 0.0, 2.0e-02>
// CHECK: nn.param @blocks.0.ln1.weight : tensor<64xf32> init #nn.init<ones>
nn.param @"blocks.0.ln1.weight" : tensor<64xf32> init #nn.init<ones>
// CHECK: nn.param @bias : tensor<64xbf16> init #nn.init<zeros>
nn.param @bias : tensor<64xbf16> init #nn.init<zeros>
// CHECK: nn.param @c : tensor<4xf16> init #nn.init<constant, 5.000000e-01>
nn.param @c : tensor<4xf16> init #nn.init<constant, 0.5>
// CHECK: nn.param @u : tensor<4x4xf32> init #nn.init<uniform, -1.000000e-01, 1.000000e-01>
nn.param @u : tensor<4x4xf32> init #nn.init<uniform, -0.1, 0.1>

// CHECK-LABEL: func.func @params
func.func @params() -> tensor<256x64xf32> {
  // CHECK: nn.param_ref @wte : tensor<256x64xf32>
  %w = nn.param_ref @wte : tensor<256x64xf32>
  // CHECK: nn.param_ref @blocks.0.ln1.weight : tensor<64xf32>
  %s = nn.param_ref @"blocks.0.ln1.weight" : tensor<64xf32>
  return %w : tensor<256x64xf32>
}

// CHECK-LABEL: func.func @constants
func.func @constants() -> (tensor<4xf32>, tensor<2x2xi32>, tensor<bf16>) {
  // CHECK: nn.constant dense<1.000000e+00> : tensor<4xf32>
  %0 = nn.constant dense<1.0> : tensor<4xf32>
  // CHECK: nn.constant dense<{{\[\[}}1, 2], [3, 4]]> : tensor<2x2xi32>
  %1 = nn.constant dense<[[1, 2], [3, 4]]> : tensor<2x2xi32>
  // CHECK: nn.constant dense<2.500000e-01> : tensor<bf16>
  %2 = nn.constant dense<0.25> : tensor<bf16>
  return %0, %1, %2 : tensor<4xf32>, tensor<2x2xi32>, tensor<bf16>
}

// CHECK-LABEL: func.func @binary
func.func @binary(%a: tensor<8x64xf32>, %b: tensor<64xf32>, %i: tensor<4xi64>, %s: tensor<f32>) {
  // CHECK: nn.add %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %0 = nn.add %a, %b : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.sub %{{.*}}, %{{.*}} : (tensor<64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %1 = nn.sub %b, %a : (tensor<64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.mul %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<f32>) -> tensor<8x64xf32>
  %2 = nn.mul %a, %s : (tensor<8x64xf32>, tensor<f32>) -> tensor<8x64xf32>
  // CHECK: nn.div %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %3 = nn.div %a, %a : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.maximum %{{.*}}, %{{.*}} : (tensor<4xi64>, tensor<4xi64>) -> tensor<4xi64>
  %4 = nn.maximum %i, %i : (tensor<4xi64>, tensor<4xi64>) -> tensor<4xi64>
  // CHECK: nn.add %{{.*}}, %{{.*}} : (tensor<8x1xf32>, tensor<1x64xf32>) -> tensor<8x64xf32>
  %x = nn.reshape %b : tensor<64xf32> -> tensor<1x64xf32>
  %y = nn.reduce_sum %a axes = [1] keepdim : tensor<8x64xf32> -> tensor<8x1xf32>
  %5 = nn.add %y, %x : (tensor<8x1xf32>, tensor<1x64xf32>) -> tensor<8x64xf32>
  return
}

// CHECK-LABEL: func.func @unary
func.func @unary(%x: tensor<8x64xf32>, %h: tensor<2x3xbf16>, %g: tensor<5xf16>) {
  // CHECK: nn.neg %{{.*}} : tensor<8x64xf32>
  %0 = nn.neg %x : tensor<8x64xf32>
  // CHECK: nn.exp %{{.*}} : tensor<2x3xbf16>
  %1 = nn.exp %h : tensor<2x3xbf16>
  // CHECK: nn.log %{{.*}} : tensor<5xf16>
  %2 = nn.log %g : tensor<5xf16>
  // CHECK: nn.sqrt %{{.*}} : tensor<8x64xf32>
  %3 = nn.sqrt %x : tensor<8x64xf32>
  // CHECK: nn.rsqrt %{{.*}} : tensor<8x64xf32>
  %4 = nn.rsqrt %x : tensor<8x64xf32>
  // CHECK: nn.tanh %{{.*}} : tensor<8x64xf32>
  %5 = nn.tanh %x : tensor<8x64xf32>
  // CHECK: nn.sigmoid %{{.*}} : tensor<8x64xf32>
  %6 = nn.sigmoid %x : tensor<8x64xf32>
  // CHECK: nn.relu %{{.*}} : tensor<8x64xf32>
  %7 = nn.relu %x : tensor<8x64xf32>
  // CHECK: nn.silu %{{.*}} : tensor<8x64xf32>
  %8 = nn.silu %x : tensor<8x64xf32>
  // CHECK: nn.gelu %{{.*}} : tensor<8x64xf32>
  %9 = nn.gelu %x : tensor<8x64xf32>
  // The default is elided.
  // CHECK: nn.gelu %{{.*}} : tensor<8x64xf32>
  %10 = nn.gelu %x approximate = "none" : tensor<8x64xf32>
  // CHECK: nn.gelu %{{.*}} approximate = "tanh" : tensor<8x64xf32>
  %11 = nn.gelu %x approximate = "tanh" : tensor<8x64xf32>
  return
}

// CHECK-LABEL: func.func @cast
func.func @cast(%x: tensor<8x64xf32>, %i: tensor<8xi32>) {
  // CHECK: nn.cast %{{.*}} : tensor<8x64xf32> to tensor<8x64xbf16>
  %0 = nn.cast %x : tensor<8x64xf32> to tensor<8x64xbf16>
  // CHECK: nn.cast %{{.*}} : tensor<8xi32> to tensor<8xf32>
  %1 = nn.cast %i : tensor<8xi32> to tensor<8xf32>
  // CHECK: nn.cast %{{.*}} : tensor<8xi32> to tensor<8xi64>
  %2 = nn.cast %i : tensor<8xi32> to tensor<8xi64>
  return
}

// CHECK-LABEL: func.func @contractions
func.func @contractions(%a: tensor<8x64xf32>, %b: tensor<64x32xf32>, %w: tensor<32x64xf32>, %bias: tensor<32xf32>, %q: tensor<4x8x64xf32>, %v: tensor<64xf32>) {
  // CHECK: nn.matmul %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
  %0 = nn.matmul %a, %b : (tensor<8x64xf32>, tensor<64x32xf32>) -> tensor<8x32xf32>
  // CHECK: nn.matmul %{{.*}}, %{{.*}} : (tensor<4x8x64xf32>, tensor<64x32xf32>) -> tensor<4x8x32xf32>
  %1 = nn.matmul %q, %b : (tensor<4x8x64xf32>, tensor<64x32xf32>) -> tensor<4x8x32xf32>
  // CHECK: nn.matmul %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8xf32>
  %2 = nn.matmul %a, %v : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8xf32>
  // CHECK: nn.linear %{{.*}}, %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  %3 = nn.linear %a, %w, %bias : (tensor<8x64xf32>, tensor<32x64xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  // CHECK: nn.linear %{{.*}}, %{{.*}} : (tensor<4x8x64xf32>, tensor<32x64xf32>) -> tensor<4x8x32xf32>
  %4 = nn.linear %q, %w : (tensor<4x8x64xf32>, tensor<32x64xf32>) -> tensor<4x8x32xf32>
  return
}

// CHECK-LABEL: func.func @reductions
func.func @reductions(%x: tensor<2x8x64xf32>) {
  // CHECK: nn.reduce_sum %{{.*}} : tensor<2x8x64xf32> -> tensor<f32>
  %0 = nn.reduce_sum %x : tensor<2x8x64xf32> -> tensor<f32>
  // CHECK: nn.reduce_sum %{{.*}} keepdim : tensor<2x8x64xf32> -> tensor<1x1x1xf32>
  %1 = nn.reduce_sum %x keepdim : tensor<2x8x64xf32> -> tensor<1x1x1xf32>
  // CHECK: nn.reduce_mean %{{.*}} axes = [-1] : tensor<2x8x64xf32> -> tensor<2x8xf32>
  %2 = nn.reduce_mean %x axes = [-1] : tensor<2x8x64xf32> -> tensor<2x8xf32>
  // CHECK: nn.reduce_max %{{.*}} axes = [0, 2] keepdim : tensor<2x8x64xf32> -> tensor<1x8x1xf32>
  %3 = nn.reduce_max %x axes = [0, 2] keepdim : tensor<2x8x64xf32> -> tensor<1x8x1xf32>
  // CHECK: nn.softmax %{{.*}} axis = -1 : tensor<2x8x64xf32>
  %4 = nn.softmax %x axis = -1 : tensor<2x8x64xf32>
  // CHECK: nn.softmax %{{.*}} axis = 1 : tensor<2x8x64xf32>
  %5 = nn.softmax %x axis = 1 : tensor<2x8x64xf32>
  // CHECK: nn.squared_norms %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x8x64xf32>, tensor<2x8xf32>, tensor<f32>) -> tensor<3xf32>
  %6 = nn.squared_norms %x, %2, %0 : (tensor<2x8x64xf32>, tensor<2x8xf32>, tensor<f32>) -> tensor<3xf32>
  return
}

// CHECK-LABEL: func.func @norms
func.func @norms(%x: tensor<2x8x64xf32>, %s: tensor<64xf32>, %b: tensor<64xf32>) {
  // CHECK: nn.layer_norm %{{.*}}, %{{.*}}, %{{.*}} : (tensor<2x8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %0 = nn.layer_norm %x, %s, %b : (tensor<2x8x64xf32>, tensor<64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  // CHECK: nn.layer_norm %{{.*}}, %{{.*}} eps = 1.000000e-03 : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %1 = nn.layer_norm %x, %s eps = 1.0e-3 : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  // CHECK: nn.rms_norm %{{.*}}, %{{.*}} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %2 = nn.rms_norm %x, %s : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  // CHECK: nn.rms_norm %{{.*}}, %{{.*}} eps = 2.000000e-06 : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %3 = nn.rms_norm %x, %s eps = 2.0e-6 : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  return
}

// CHECK-LABEL: func.func @blocks
func.func @blocks(%table: tensor<256x64xf32>, %ids: tensor<2x16xi32>, %ids64: tensor<16xi64>,
                  %q: tensor<2x16x64xf32>, %kv: tensor<2x16x32xf32>, %logits: tensor<2x16x256xbf16>) {
  // CHECK: nn.embedding %{{.*}}, %{{.*}} : (tensor<256x64xf32>, tensor<2x16xi32>) -> tensor<2x16x64xf32>
  %0 = nn.embedding %table, %ids : (tensor<256x64xf32>, tensor<2x16xi32>) -> tensor<2x16x64xf32>
  // CHECK: nn.embedding %{{.*}}, %{{.*}} : (tensor<256x64xf32>, tensor<16xi64>) -> tensor<16x64xf32>
  %1 = nn.embedding %table, %ids64 : (tensor<256x64xf32>, tensor<16xi64>) -> tensor<16x64xf32>
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} heads = 4 causal : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  %2 = nn.attention %q, %q, %q heads = 4 causal : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} heads = 4 kv_heads = 2 causal scale = 2.500000e-01 : (tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x64xf32>
  %3 = nn.attention %q, %kv, %kv heads = 4 kv_heads = 2 causal scale = 0.25 : (tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> tensor<2x16x64xf32>
  // CHECK: nn.attention %{{.*}}, %{{.*}}, %{{.*}} heads = 8 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  %4 = nn.attention %q, %q, %q heads = 8 : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x64xf32>) -> tensor<2x16x64xf32>
  // CHECK: nn.rope %{{.*}} heads = 4 : tensor<2x16x64xf32>
  %5 = nn.rope %q heads = 4 : tensor<2x16x64xf32>
  // CHECK: nn.rope %{{.*}} heads = 4 theta = 5.000000e+05 : tensor<2x16x64xf32>
  %6 = nn.rope %q heads = 4 theta = 500000.0 : tensor<2x16x64xf32>
  // CHECK: nn.cross_entropy %{{.*}}, %{{.*}} : (tensor<2x16x256xbf16>, tensor<2x16xi32>) -> tensor<f32>
  %7 = nn.cross_entropy %logits, %ids : (tensor<2x16x256xbf16>, tensor<2x16xi32>) -> tensor<f32>
  return
}

// CHECK-LABEL: func.func @movement
func.func @movement(%x: tensor<8x64xf32>, %y: tensor<2x64xf32>, %i: tensor<6xi32>) {
  // CHECK: nn.reshape %{{.*}} : tensor<8x64xf32> -> tensor<8x4x16xf32>
  %0 = nn.reshape %x : tensor<8x64xf32> -> tensor<8x4x16xf32>
  // CHECK: nn.reshape %{{.*}} : tensor<6xi32> -> tensor<2x3xi32>
  %1 = nn.reshape %i : tensor<6xi32> -> tensor<2x3xi32>
  // CHECK: nn.transpose %{{.*}} perm = [1, 0] : tensor<8x64xf32> -> tensor<64x8xf32>
  %2 = nn.transpose %x perm = [1, 0] : tensor<8x64xf32> -> tensor<64x8xf32>
  // CHECK: nn.transpose %{{.*}} perm = [0, 2, 1] : tensor<8x4x16xf32> -> tensor<8x16x4xf32>
  %3 = nn.transpose %0 perm = [0, 2, 1] : tensor<8x4x16xf32> -> tensor<8x16x4xf32>
  // CHECK: nn.split %{{.*}} axis = -1 : tensor<8x64xf32> -> tensor<8x32xf32>, tensor<8x16xf32>, tensor<8x16xf32>
  %4:3 = nn.split %x axis = -1 : tensor<8x64xf32> -> tensor<8x32xf32>, tensor<8x16xf32>, tensor<8x16xf32>
  // CHECK: nn.split %{{.*}} axis = 0 : tensor<8x64xf32> -> tensor<8x64xf32>
  %5 = nn.split %x axis = 0 : tensor<8x64xf32> -> tensor<8x64xf32>
  // CHECK: nn.concat %{{.*}}, %{{.*}} axis = 0 : (tensor<8x64xf32>, tensor<2x64xf32>) -> tensor<10x64xf32>
  %6 = nn.concat %x, %y axis = 0 : (tensor<8x64xf32>, tensor<2x64xf32>) -> tensor<10x64xf32>
  // CHECK: nn.concat %{{.*}}, %{{.*}}, %{{.*}} axis = -1 : (tensor<8x32xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x64xf32>
  %7 = nn.concat %4#0, %4#1, %4#2 axis = -1 : (tensor<8x32xf32>, tensor<8x16xf32>, tensor<8x16xf32>) -> tensor<8x64xf32>
  // CHECK: nn.concat %{{.*}} axis = 0 : (tensor<6xi32>) -> tensor<6xi32>
  %8 = nn.concat %i axis = 0 : (tensor<6xi32>) -> tensor<6xi32>
  // CHECK: nn.slice %{{.*}} offsets = [0, 16] : tensor<8x64xf32> -> tensor<8x16xf32>
  %9 = nn.slice %x offsets = [0, 16] : tensor<8x64xf32> -> tensor<8x16xf32>
  // CHECK: nn.slice %{{.*}} offsets = [6] : tensor<6xi32> -> tensor<0xi32>
  %10 = nn.slice %i offsets = [6] : tensor<6xi32> -> tensor<0xi32>
  return
}

}
