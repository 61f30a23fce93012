// Round trip of the ops that autodiff and the optimizer emit.
// RUN: hotstage-opt %s | hotstage-opt | FileCheck %s
// RUN: hotstage-opt %s --mlir-print-op-generic | hotstage-opt | FileCheck %s

module {
// CHECK: nn.param @w : tensor<64x64xf32>
nn.param @w : tensor<64x64xf32> init #nn.init<zeros>
// CHECK: nn.state @"w:grad" : tensor<64x64xf32> role = "grad" of @w
nn.state @"w:grad" : tensor<64x64xf32> role = "grad" of @w

// CHECK-LABEL: func.func @grads
func.func @grads(%x: tensor<8x64xf32>, %dy: tensor<8x64xf32>, %s: tensor<64xf32>,
                 %q: tensor<2x16x64xf32>, %k: tensor<2x16x32xf32>, %ids: tensor<8xi32>,
                 %loss: tensor<f32>, %t: tensor<8xi32>, %step: tensor<i64>) {
  // CHECK: nn.broadcast %{{.*}} : tensor<64xf32> -> tensor<8x64xf32>
  %0 = nn.broadcast %s : tensor<64xf32> -> tensor<8x64xf32>
  // CHECK: nn.greater_equal %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %1 = nn.greater_equal %x, %s : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.minimum
  %2 = nn.minimum %x, %s : (tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.activation_grad "gelu_tanh" %{{.*}}, %{{.*}} : tensor<8x64xf32>
  %3 = nn.activation_grad "gelu_tanh" %dy, %x : tensor<8x64xf32>
  // CHECK: nn.softmax_grad %{{.*}}, %{{.*}} axis = -1 : tensor<8x64xf32>
  %4 = nn.softmax_grad %dy, %x axis = -1 : tensor<8x64xf32>
  // CHECK: nn.layer_norm_grad %{{.*}}, %{{.*}}, %{{.*}} eps = 1.000000e-05 : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  %5 = nn.layer_norm_grad %dy, %x, %s eps = 1.0e-5 : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.rms_norm_grad
  %6 = nn.rms_norm_grad %dy, %x, %s eps = 1.0e-6 : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  // CHECK: nn.layer_norm_scale_grad %{{.*}}, %{{.*}} eps = 1.000000e-05 : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<64xf32>
  %7 = nn.layer_norm_scale_grad %dy, %x eps = 1.0e-5 : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<64xf32>
  // CHECK: nn.rms_norm_scale_grad
  %8 = nn.rms_norm_scale_grad %dy, %x eps = 1.0e-5 : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<64xf32>
  // CHECK: nn.embedding_grad %{{.*}}, %{{.*}} : (tensor<8x64xf32>, tensor<8xi32>) -> tensor<256x64xf32>
  %9 = nn.embedding_grad %dy, %ids : (tensor<8x64xf32>, tensor<8xi32>) -> tensor<256x64xf32>
  // CHECK: nn.attention_grad %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}} heads = 4 kv_heads = 2 causal
  %10:3 = nn.attention_grad %q, %q, %k, %k heads = 4 kv_heads = 2 causal : (tensor<2x16x64xf32>, tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>) -> (tensor<2x16x64xf32>, tensor<2x16x32xf32>, tensor<2x16x32xf32>)
  // CHECK: nn.rope_grad %{{.*}} heads = 4 : tensor<2x16x64xf32>
  %11 = nn.rope_grad %q heads = 4 : tensor<2x16x64xf32>
  // CHECK: nn.cross_entropy_grad %{{.*}}, %{{.*}}, %{{.*}} : (tensor<f32>, tensor<8x64xf32>, tensor<8xi32>) -> tensor<8x64xf32>
  %12 = nn.cross_entropy_grad %loss, %x, %t : (tensor<f32>, tensor<8x64xf32>, tensor<8xi32>) -> tensor<8x64xf32>
  // CHECK: nn.pad %{{.*}} offsets = [2, 0] : tensor<8x64xf32> -> tensor<16x64xf32>
  %13 = nn.pad %x offsets = [2, 0] : tensor<8x64xf32> -> tensor<16x64xf32>
  // CHECK: nn.state_ref @"w:grad" : tensor<64x64xf32>
  %14 = nn.state_ref @"w:grad" : tensor<64x64xf32>
  // CHECK: nn.store %{{.*}}, @"w:grad" : tensor<64x64xf32>
  nn.store %14, @"w:grad" : tensor<64x64xf32>
  // CHECK: nn.store %{{.*}}, @w : tensor<64x64xf32>
  nn.store %14, @w : tensor<64x64xf32>
  // CHECK: nn.lr_schedule %{{.*}}, %{{.*}} "cosine" lr = 6.000000e-04 min_lr = 6.000000e-05 warmup = 700 : (tensor<i64>, tensor<i64>) -> tensor<f32>
  %15 = nn.lr_schedule %step, %step "cosine" lr = 6.0e-4 min_lr = 6.0e-5 warmup = 700 : (tensor<i64>, tensor<i64>) -> tensor<f32>
  return
}
}
