// RUN: hotstage-opt %s -split-input-file -verify-diagnostics

func.func @not_elementwise(%x: tensor<4x8xf32>) -> tensor<f32> {
  %r = nn.fused(%x) shape = [4, 8] : (tensor<4x8xf32>) -> tensor<f32> {
  ^bb0(%a: tensor<4x8xf32>):
    // expected-error@+1 {{'nn.reduce_sum' op is not elementwise and cannot be in an nn.fused group}}
    %0 = nn.reduce_sum %a : tensor<4x8xf32> -> tensor<f32>
    nn.yield %0 : tensor<f32>
  }
  return %r : tensor<f32>
}

// -----

func.func @wrong_shape(%x: tensor<8xf32>) -> tensor<8xf32> {
  %r = nn.fused(%x) shape = [4, 8] : (tensor<8xf32>) -> tensor<8xf32> {
  ^bb0(%a: tensor<8xf32>):
    // expected-error@+1 {{'nn.exp' op has shape [8], not the group's [4, 8]}}
    %0 = nn.exp %a : tensor<8xf32>
    nn.yield %0 : tensor<8xf32>
  }
  return %r : tensor<8xf32>
}

// -----

func.func @no_broadcast(%x: tensor<3xf32>) -> tensor<4x8xf32> {
  // expected-error@+1 {{'nn.fused' op input 0 of shape [3] does not broadcast to [4, 8]}}
  %r = nn.fused(%x) shape = [4, 8] : (tensor<3xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<3xf32>):
    %0 = nn.broadcast %a : tensor<3xf32> -> tensor<4x8xf32>
    nn.yield %0 : tensor<4x8xf32>
  }
  return %r : tensor<4x8xf32>
}

// -----

func.func @arguments(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{'nn.fused' op has 1 inputs but its body takes 2 arguments}}
  %r = nn.fused(%x) shape = [4] : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>, %b: tensor<4xf32>):
    %0 = nn.add %a, %b : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
    nn.yield %0 : tensor<4xf32>
  }
  return %r : tensor<4xf32>
}

// -----

func.func @yield_types(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{'nn.fused' op yields 2 values whose types differ from its results}}
  %r = nn.fused(%x) shape = [4] : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    %0 = nn.exp %a : tensor<4xf32>
    nn.yield %0, %0 : tensor<4xf32>, tensor<4xf32>
  }
  return %r : tensor<4xf32>
}

// -----

func.func @bad_epilogue(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
  // expected-error@+1 {{'nn.epilogue' must be an array of bias, gelu, gelu_tanh, relu, silu, residual and dgelu_tanh, got ["softmax"]}}
  %0 = nn.matmul %x, %w {nn.epilogue = ["softmax"]} : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}

// -----

func.func @epilogue_on_add(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error@+1 {{'nn.epilogue' is only valid on nn.linear and nn.matmul}}
  %0 = nn.add %x, %x {nn.epilogue = ["bias"]} : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return %0 : tensor<4xf32>
}
