// RUN: hotstage-opt %s --nn-autodiff="split-backward=false" | FileCheck %s
// RUN: hotstage-opt %s --nn-autodiff | FileCheck %s --check-prefix=SPLIT

// Two layers of a `repeat` stack named "blocks", recomputed: the backward
// recomputes each layer from its input just before that layer's rules.
// An op's layer is its NameLoc ("blocks.1.act" is in layer "blocks.1").
module attributes {nn.train = {recompute = "blocks"}} {
  nn.param @w0 : tensor<4x4xf32> init #nn.init<zeros>
  nn.param @w1 : tensor<4x4xf32> init #nn.init<zeros>
  nn.param @head : tensor<3x4xf32> init #nn.init<zeros>
  func.func @forward(%x: tensor<2x4xf32>, %t: tensor<2xi32>) -> tensor<f32> {
    %w0 = nn.param_ref @w0 : tensor<4x4xf32> loc(#l0)
    %a0 = nn.linear %x, %w0 : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32> loc(#l0)
    %h = nn.tanh %a0 : tensor<2x4xf32> loc(#l0)
    %w1 = nn.param_ref @w1 : tensor<4x4xf32> loc(#l1)
    %a1 = nn.linear %h, %w1 : (tensor<2x4xf32>, tensor<4x4xf32>) -> tensor<2x4xf32> loc(#l1)
    %y = nn.tanh %a1 : tensor<2x4xf32> loc(#l1m)
    %wh = nn.param_ref @head : tensor<3x4xf32>
    %logits = nn.linear %y, %wh : (tensor<2x4xf32>, tensor<3x4xf32>) -> tensor<2x3xf32>
    %l = nn.cross_entropy %logits, %t : (tensor<2x3xf32>, tensor<2xi32>) -> tensor<f32>
    return %l : tensor<f32>
  }
}
#f = loc("model.hot":1:1)
#l0 = loc("blocks.0"(#f))
#l1 = loc("blocks.1"(#f))
#l1m = loc("blocks.1.act"(#f))

// The forward hands on the logits, the stack's output %y (the head reads
// it) and what enters layer 1 (%h); layer 0's input is the model input.
// Nothing inside a layer (the pre-activations) is handed on.
// CHECK-LABEL: func.func @forward
// CHECK-SAME: -> (tensor<f32>, tensor<2x3xf32>, tensor<2x4xf32>, tensor<2x4xf32>)
// CHECK: %[[H:.*]] = nn.tanh
// CHECK: %[[Y:.*]] = nn.tanh
// CHECK: %[[LOGITS:.*]] = nn.linear %[[Y]]
// CHECK: return %{{.*}}, %[[LOGITS]], %[[Y]], %[[H]] :
// CHECK-LABEL: func.func @backward(
// CHECK-SAME: %[[BH:[a-z0-9]+]]: tensor<2x4xf32> {nn.source = "forward:3"}
// CHECK-SAME: %[[BX:[a-z0-9]+]]: tensor<2x4xf32> {nn.source = "input:0"}
// Layer 1 again from its input, then its rules; W right after B.
// CHECK: nn.cross_entropy_grad
// CHECK: %[[W1:.*]] = nn.param_ref @w1
// CHECK: %[[RA1:.*]] = nn.linear %[[BH]], %[[W1]]
// CHECK: %[[G1:.*]] = nn.activation_grad "tanh" %{{.*}}, %[[RA1]]
// CHECK: nn.transpose %[[G1]]
// Layer 0 again, from x.
// CHECK: %[[RA0:.*]] = nn.linear %[[BX]]
// CHECK: nn.activation_grad "tanh" %{{.*}}, %[[RA0]]
// CHECK: nn.store
// CHECK-NOT: func.func @backward_weight

// Kept apart, W reads the recomputed layer input from B.
// SPLIT-LABEL: func.func @forward
// SPLIT-SAME: -> (tensor<f32>, tensor<2x3xf32>, tensor<2x4xf32>, tensor<2x4xf32>)
// SPLIT-LABEL: func.func @backward_input
// SPLIT: nn.activation_grad "tanh"
// SPLIT-LABEL: func.func @backward_weight
// SPLIT-SAME: {nn.source = "backward_input:
