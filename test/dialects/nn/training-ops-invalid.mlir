// The verifiers of the ops that autodiff and the optimizer emit.
// RUN: hotstage-opt %s -split-input-file -verify-diagnostics

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.broadcast' op result type 'tensor<8x1xf32>' does not match the inferred shape [8, 64]}}
  %0 = nn.broadcast %x : tensor<8x64xf32> -> tensor<8x1xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{unknown activation "swish"; expected gelu, gelu_tanh, relu, silu, sigmoid or tanh}}
  %0 = nn.activation_grad "swish" %x, %x : tensor<8x64xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>, %dy: tensor<4x64xf32>, %s: tensor<64xf32>) {
  // expected-error@+1 {{gradient shape [4, 64] does not match the input shape [8, 64]}}
  %0 = nn.layer_norm_grad %dy, %x, %s eps = 1.0e-5 : (tensor<4x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> tensor<8x64xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.layer_norm_scale_grad' op result type 'tensor<8xf32>' does not match the inferred shape [64]}}
  %0 = nn.layer_norm_scale_grad %x, %x eps = 1.0e-5 : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8xf32>
  return
}

// -----

func.func @f(%dy: tensor<8x32xf32>, %ids: tensor<8xi32>) {
  // expected-error@+1 {{gradient type 'tensor<8x32xf32>' does not match the inferred shape [8, 64]}}
  %0 = nn.embedding_grad %dy, %ids : (tensor<8x32xf32>, tensor<8xi32>) -> tensor<256x64xf32>
  return
}

// -----

func.func @f(%x: tensor<8x64xf32>) {
  // expected-error@+1 {{'nn.pad' op}}
  %0 = nn.pad %x offsets = [2, 0] : tensor<8x64xf32> -> tensor<9x64xf32>
  return
}

// -----

module {
  nn.param @w : tensor<4xf32> init #nn.init<zeros>
  // expected-error@+1 {{unknown role "velocity"; expected grad, exp_avg, exp_avg_sq, momentum or norm}}
  nn.state @"w:v" : tensor<4xf32> role = "velocity" of @w
}

// -----

module {
  nn.param @w : tensor<4xf32> init #nn.init<zeros>
  // expected-error@+1 {{type 'tensor<8xf32>' does not match the parameter type 'tensor<4xf32>'}}
  nn.state @"w:grad" : tensor<8xf32> role = "grad" of @w
}

// -----

module {
  // expected-note@+1 {{symbol defined here}}
  nn.param @w : tensor<4xf32> init #nn.init<zeros>
  func.func @f() {
    // expected-error@+1 {{@w is not an nn.state}}
    %0 = nn.state_ref @w : tensor<4xf32>
    return
  }
}

// -----

module {
  nn.param @w : tensor<4xf32> init #nn.init<zeros>
  func.func @f(%x: tensor<8xf32>) {
    // expected-error@+1 {{type 'tensor<8xf32>' does not match the type 'tensor<4xf32>' of @w}}
    nn.store %x, @w : tensor<8xf32>
    return
  }
}

// -----

func.func @f(%s: tensor<i64>) {
  // expected-error@+1 {{unknown schedule "exp"; expected constant, cosine or linear}}
  %0 = nn.lr_schedule %s, %s "exp" lr = 1.0 min_lr = 0.0 warmup = 0 : (tensor<i64>, tensor<i64>) -> tensor<f32>
  return
}
