// RUN: hotstage-opt %s --nn-autodiff --split-input-file --verify-diagnostics | FileCheck %s

// A linear layer: the input gradient is B, the weight and bias gradients
// are W, and W reads what B hands it.
module attributes {nn.train = {microbatches = 4 : i64}} {
  nn.param @w : tensor<3x2xf32> init #nn.init<zeros>
  nn.param @b : tensor<3xf32> init #nn.init<zeros>
  func.func @forward(%x: tensor<4x2xf32>, %t: tensor<4xi32>) -> tensor<f32> {
    %w = nn.param_ref @w : tensor<3x2xf32>
    %b = nn.param_ref @b : tensor<3xf32>
    %y = nn.linear %x, %w, %b : (tensor<4x2xf32>, tensor<3x2xf32>, tensor<3xf32>) -> tensor<4x3xf32>
    %l = nn.cross_entropy %y, %t : (tensor<4x3xf32>, tensor<4xi32>) -> tensor<f32>
    return %l : tensor<f32>
  }
}
// CHECK: nn.state @"w:grad" : tensor<3x2xf32> role = "grad" of @w
// CHECK: nn.state @"b:grad" : tensor<3xf32> role = "grad" of @b
// CHECK-LABEL: func.func @forward
// CHECK-SAME: -> (tensor<f32>, tensor<4x3xf32>)
// CHECK: %[[Y:.*]] = nn.linear
// CHECK: %[[L:.*]] = nn.cross_entropy %[[Y]]
// CHECK: return %[[L]], %[[Y]]
// CHECK-LABEL: func.func @backward_input
// CHECK-SAME: (%[[LOGITS:.*]]: tensor<4x3xf32> {nn.source = "forward:1"}, %[[T:.*]]: tensor<4xi32> {nn.source = "input:1"}) -> tensor<4x3xf32>
// CHECK: %[[SEED:.*]] = nn.constant dense<2.500000e-01> : tensor<f32>
// CHECK: %[[DY:.*]] = nn.cross_entropy_grad %[[SEED]], %[[LOGITS]], %[[T]]
// CHECK-NOT: nn.matmul
// CHECK: return %[[DY]]
// CHECK-LABEL: func.func @backward_weight
// CHECK-SAME: (%[[G:.*]]: tensor<4x3xf32> {nn.source = "backward_input:0"}, %[[X:.*]]: tensor<4x2xf32> {nn.source = "input:0"})
// CHECK: %[[GT:.*]] = nn.transpose %[[G]] perm = [1, 0]
// CHECK: %[[DW:.*]] = nn.matmul %[[GT]], %[[X]] : (tensor<3x4xf32>, tensor<4x2xf32>) -> tensor<3x2xf32>
// CHECK: %[[DB:.*]] = nn.reduce_sum %[[G]] axes = [0] : tensor<4x3xf32> -> tensor<3xf32>
// CHECK: %[[OLDW:.*]] = nn.state_ref @"w:grad"
// CHECK: %[[SUMW:.*]] = nn.add %[[OLDW]], %[[DW]]
// CHECK: nn.store %[[SUMW]], @"w:grad"
// CHECK: %[[OLDB:.*]] = nn.state_ref @"b:grad"
// CHECK: %[[SUMB:.*]] = nn.add %[[OLDB]], %[[DB]]
// CHECK: nn.store %[[SUMB]], @"b:grad"

// -----

// A tied parameter: the embedding table is also the output projection, so
// its two gradients are summed into one accumulator (in W: both are
// gradients of the parameter). A slice's gradient is a pad.
module {
  nn.param @wte : tensor<8x4xf32> init #nn.init<zeros>
  nn.param @wpe : tensor<6x4xf32> init #nn.init<zeros>
  func.func @forward(%ids: tensor<2x3xi32>, %t: tensor<2x3xi32>) -> tensor<f32> {
    %wte = nn.param_ref @wte : tensor<8x4xf32>
    %wpe = nn.param_ref @wpe : tensor<6x4xf32>
    %e = nn.embedding %wte, %ids : (tensor<8x4xf32>, tensor<2x3xi32>) -> tensor<2x3x4xf32>
    %p = nn.slice %wpe offsets = [0, 0] : tensor<6x4xf32> -> tensor<3x4xf32>
    %x = nn.add %e, %p : (tensor<2x3x4xf32>, tensor<3x4xf32>) -> tensor<2x3x4xf32>
    %wt = nn.transpose %wte perm = [1, 0] : tensor<8x4xf32> -> tensor<4x8xf32>
    %logits = nn.matmul %x, %wt : (tensor<2x3x4xf32>, tensor<4x8xf32>) -> tensor<2x3x8xf32>
    %l = nn.cross_entropy %logits, %t : (tensor<2x3x8xf32>, tensor<2x3xi32>) -> tensor<f32>
    return %l : tensor<f32>
  }
}
// The transposed table is rebuilt from the parameter where it is read (a
// view of a parameter, like the parameter itself), not saved by the
// forward; the canonicalizer then folds the two transposes.
// CHECK-LABEL: func.func @backward_input
// CHECK-SAME: (%{{[^:]*}}: tensor<2x3x8xf32> {nn.source = "forward:1"}, %{{[^:]*}}: tensor<2x3xi32> {nn.source = "input:1"}) ->
// CHECK: %[[DL:.*]] = nn.cross_entropy_grad
// CHECK: %[[WTE:.*]] = nn.param_ref @wte
// CHECK: %[[WT:.*]] = nn.transpose %[[WTE]] perm = [1, 0] : tensor<8x4xf32> -> tensor<4x8xf32>
// CHECK: %[[T2:.*]] = nn.transpose %[[WT]] perm = [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
// CHECK: %[[DX:.*]] = nn.matmul %[[DL]], %[[T2]] : (tensor<2x3x8xf32>, tensor<8x4xf32>) -> tensor<2x3x4xf32>
// CHECK: return %[[DL]], %[[DX]]
// CHECK-LABEL: func.func @backward_weight
// CHECK: nn.matmul {{.*}} : (tensor<4x6xf32>, tensor<6x8xf32>) -> tensor<4x8xf32>
// CHECK: %[[DWT:.*]] = nn.transpose {{.*}} perm = [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
// CHECK: %[[DP:.*]] = nn.reduce_sum {{.*}} axes = [0] : tensor<2x3x4xf32> -> tensor<3x4xf32>
// CHECK: %[[DWPE:.*]] = nn.pad %[[DP]] offsets = [0, 0] : tensor<3x4xf32> -> tensor<6x4xf32>
// CHECK: %[[DE:.*]] = nn.embedding_grad {{.*}} -> tensor<8x4xf32>
// CHECK: %[[DWTE:.*]] = nn.add %[[DWT]], %[[DE]]
// CHECK: nn.add {{.*}}, %[[DWTE]]
// CHECK: nn.store {{.*}}, @"wte:grad"
// CHECK: nn.add {{.*}}, %[[DWPE]]
// CHECK: nn.store {{.*}}, @"wpe:grad"

// -----

// Attention, split and a norm: one attention_grad serves q, k and v, and a
// split's gradient concatenates its pieces' gradients.
module {
  nn.param @w : tensor<24x8xf32> init #nn.init<zeros>
  nn.param @g : tensor<8xf32> init #nn.init<ones>
  func.func @forward(%x: tensor<1x4x8xf32>) -> tensor<f32> {
    %w = nn.param_ref @w : tensor<24x8xf32>
    %g = nn.param_ref @g : tensor<8xf32>
    %n = nn.rms_norm %x, %g : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %qkv = nn.linear %n, %w : (tensor<1x4x8xf32>, tensor<24x8xf32>) -> tensor<1x4x24xf32>
    %q, %k, %v = nn.split %qkv axis = -1 : tensor<1x4x24xf32> -> tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>
    %r = nn.rope %q heads = 2 : tensor<1x4x8xf32>
    %a = nn.attention %r, %k, %v heads = 2 causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %s = nn.reduce_mean %a : tensor<1x4x8xf32> -> tensor<f32>
    return %s : tensor<f32>
  }
}
// CHECK-LABEL: func.func @backward_input
// CHECK: %[[B:.*]] = nn.broadcast {{.*}} : tensor<1x1x1xf32> -> tensor<1x4x8xf32>
// CHECK: %[[DA:.*]] = nn.mul %[[B]], {{.*}} : (tensor<1x4x8xf32>, tensor<f32>) -> tensor<1x4x8xf32>
// CHECK: %[[DQ:[a-z_0-9]+]], %[[DK:[a-z_0-9]+]], %[[DV:[a-z_0-9]+]] = nn.attention_grad %[[DA]], {{.*}} heads = 2 causal
// CHECK: %[[DR:.*]] = nn.rope_grad %[[DQ]] heads = 2
// CHECK: %[[DQKV:.*]] = nn.concat %[[DR]], %[[DK]], %[[DV]] axis = -1
// The input needs no gradient, so the norm's input does not either; its
// output's gradient goes on to W for the scale.
// CHECK: %[[DN:.*]] = nn.matmul %[[DQKV]]
// CHECK-NOT: nn.rms_norm_grad
// CHECK: return %[[DQKV]], %[[DN]]
// CHECK-LABEL: func.func @backward_weight
// CHECK: nn.rms_norm_scale_grad

// -----

// expected-error @+1 {{autodiff: the module has no @forward function}}
module {
}

// -----

module {
  nn.param @w : tensor<4xf32> init #nn.init<zeros>
  // expected-error @+1 {{autodiff: @forward must be one block returning the loss as tensor<f32>}}
  func.func @forward(%x: tensor<4xf32>) -> tensor<4xf32> {
    return %x : tensor<4xf32>
  }
}
