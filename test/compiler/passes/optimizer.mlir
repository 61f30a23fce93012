// RUN: hotstage-opt %s --nn-optimizer --split-input-file --verify-diagnostics | FileCheck %s

// AdamW with clipping, warmup and cosine decay; the 2-D weight is decayed,
// the vector is not.
module attributes {nn.train = {optimizer = "adamw", lr = 1.0e-3 : f64, beta1 = 0.9 : f64, beta2 = 0.95 : f64, eps = 1.0e-8 : f64, weight_decay = 0.1 : f64, lr_schedule = "cosine", warmup = 10 : i64, min_lr = 1.0e-4 : f64, clip_grad_norm = 1.0 : f64}} {
  nn.param @w : tensor<3x2xf32> init #nn.init<zeros>
  nn.param @b : tensor<3xf32> init #nn.init<zeros>
  nn.state @"w:grad" : tensor<3x2xf32> role = "grad" of @w
  nn.state @"b:grad" : tensor<3xf32> role = "grad" of @b
}
// CHECK: nn.state @"w:grad"
// CHECK-NEXT: nn.state @"w:exp_avg" : tensor<3x2xf32> role = "exp_avg" of @w
// CHECK-NEXT: nn.state @"w:exp_avg_sq" : tensor<3x2xf32> role = "exp_avg_sq" of @w
// CHECK-NEXT: nn.state @"b:grad"
// CHECK-NEXT: nn.state @"b:exp_avg"
// CHECK-NEXT: nn.state @"b:exp_avg_sq"
// CHECK-LABEL: func.func @optimizer_step
// CHECK-SAME: (%[[STEP:.*]]: tensor<i64> {nn.name = "step"}, %[[TOTAL:.*]]: tensor<i64> {nn.name = "total_steps"}) -> (tensor<f32>, tensor<f32>)
// CHECK: %[[LR:.*]] = nn.lr_schedule %[[STEP]], %[[TOTAL]] "cosine" lr = 1.000000e-03 min_lr = 1.000000e-04 warmup = 10
// The global norm: every gradient's squared norm in one op, summed.
// CHECK: %[[GW:.*]] = nn.state_ref @"w:grad"
// CHECK: %[[GB:.*]] = nn.state_ref @"b:grad"
// CHECK: %[[SQ:.*]] = nn.squared_norms %[[GW]], %[[GB]] : (tensor<3x2xf32>, tensor<3xf32>) -> tensor<2xf32>
// CHECK: %[[SUM:.*]] = nn.reduce_sum %[[SQ]] : tensor<2xf32> -> tensor<f32>
// CHECK: %[[NORM:.*]] = nn.sqrt %[[SUM]]
// CHECK: nn.minimum
// CHECK: %[[W:.*]] = nn.param_ref @w
// CHECK: nn.state_ref @"w:exp_avg"
// CHECK: nn.state_ref @"w:exp_avg_sq"
// CHECK: nn.mul %[[W]], {{.*}} : (tensor<3x2xf32>, tensor<f32>)
// CHECK: nn.store {{.*}}, @w :
// CHECK: nn.store {{.*}}, @"w:exp_avg"
// CHECK: nn.store {{.*}}, @"w:exp_avg_sq"
// CHECK: %[[Z:.*]] = nn.constant dense<0.000000e+00> : tensor<3x2xf32>
// CHECK: nn.store %[[Z]], @"w:grad"
// CHECK: %[[B:.*]] = nn.param_ref @b
// CHECK-NOT: nn.mul %[[B]]
// CHECK: nn.store {{.*}}, @b :
// CHECK: return %[[LR]], %[[NORM]]

// -----

// SGD with momentum: one momentum buffer, no moments.
module attributes {nn.train = {optimizer = "sgd", lr = 0.1 : f64, momentum = 0.9 : f64}} {
  nn.param @w : tensor<2xf32> init #nn.init<zeros>
  nn.state @"w:grad" : tensor<2xf32> role = "grad" of @w
}
// CHECK: nn.state @"w:momentum"
// CHECK-NOT: exp_avg
// CHECK: nn.store {{.*}}, @"w:momentum"
// CHECK: nn.store {{.*}}, @w :

// -----

// expected-error @+1 {{optimizer: no parameter has a gradient; run nn-autodiff first}}
module {
  nn.param @w : tensor<2xf32> init #nn.init<zeros>
}
