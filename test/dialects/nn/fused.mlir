// RUN: hotstage-opt %s | hotstage-opt | FileCheck %s

// CHECK-LABEL: func.func @adam_like
// CHECK: %{{.*}}:2 = nn.fused(%{{.*}}, %{{.*}}, %{{.*}}) shape = [4, 8] : (tensor<4x8xf32>, tensor<8xf32>, tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
// CHECK: ^bb0(%{{.*}}: tensor<4x8xf32>, %{{.*}}: tensor<8xf32>, %{{.*}}: tensor<f32>):
// CHECK: nn.yield %{{.*}}, %{{.*}} : tensor<4x8xf32>, tensor<4x8xf32>
func.func @adam_like(%x: tensor<4x8xf32>, %b: tensor<8xf32>, %s: tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %r:2 = nn.fused(%x, %b, %s) shape = [4, 8] : (tensor<4x8xf32>, tensor<8xf32>, tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  ^bb0(%a0: tensor<4x8xf32>, %a1: tensor<8xf32>, %a2: tensor<f32>):
    %0 = nn.add %a0, %a1 : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
    %1 = nn.mul %0, %a2 : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
    nn.yield %0, %1 : tensor<4x8xf32>, tensor<4x8xf32>
  }
  return %r#0, %r#1 : tensor<4x8xf32>, tensor<4x8xf32>
}

// CHECK-LABEL: func.func @epilogue
// CHECK: nn.matmul %{{.*}}, %{{.*}} {nn.epilogue = ["bias", "relu", "residual"]}
func.func @epilogue(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
  %0 = nn.matmul %x, %w {nn.epilogue = ["bias", "relu", "residual"]} : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  return %0 : tensor<4x8xf32>
}
