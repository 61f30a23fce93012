// RUN: hotstage-opt %s --pass-pipeline='builtin.module(func.func(nn-fusion))' -split-input-file | FileCheck %s
// RUN: hotstage-opt %s --pass-pipeline='builtin.module(func.func(nn-fusion{max-arguments=3}))' -split-input-file | FileCheck %s --check-prefix=SMALL
// RUN: hotstage-opt %s --pass-pipeline='builtin.module(func.func(nn-fusion{epilogues=residual,gelu_tanh,dgelu_tanh}))' -split-input-file | FileCheck %s --check-prefix=EPI
// RUN: hotstage-opt %s --pass-pipeline='builtin.module(func.func(nn-fusion{epilogues=residual}))' -split-input-file | FileCheck %s --check-prefix=RESIDUAL

// A chain becomes one group; only the value read outside is a result, and
// the splat constant stays an input.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: (%[[X:.*]]: tensor<4x8xf32>, %[[B:.*]]: tensor<8xf32>)
// CHECK: %[[C:.*]] = nn.constant
// CHECK: %[[F:.*]] = nn.fused(%[[X]], %[[B]], %[[C]]) shape = [4, 8] : (tensor<4x8xf32>, tensor<8xf32>, tensor<f32>) -> tensor<4x8xf32> {
// CHECK-NEXT: ^bb0(%[[A0:.*]]: tensor<4x8xf32>, %[[A1:.*]]: tensor<8xf32>, %[[A2:.*]]: tensor<f32>):
// CHECK-NEXT: %[[S:.*]] = nn.add %[[A0]], %[[A1]]
// CHECK-NEXT: %[[G:.*]] = nn.gelu %[[S]]
// CHECK-NEXT: %[[M:.*]] = nn.mul %[[G]], %[[A2]]
// CHECK-NEXT: nn.yield %[[M]] : tensor<4x8xf32>
// CHECK-NEXT: }
// CHECK-NEXT: return %[[F]]
func.func @chain(%x: tensor<4x8xf32>, %b: tensor<8xf32>) -> tensor<4x8xf32> {
  %c = nn.constant dense<2.0> : tensor<f32>
  %0 = nn.add %x, %b : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %1 = nn.gelu %0 : tensor<4x8xf32>
  %2 = nn.mul %1, %c : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  return %2 : tensor<4x8xf32>
}

// -----

// Two groups read by one op merge; a member read outside is a result too.
// CHECK-LABEL: func.func @merge
// CHECK: %[[F:.*]]:2 = nn.fused(%{{.*}}, %{{.*}}) shape = [4, 8]
// CHECK: nn.exp
// CHECK: nn.exp
// CHECK: nn.add
// CHECK: nn.yield
// CHECK-NOT: nn.exp
// CHECK: nn.reduce_sum %[[F]]#0
// CHECK: return %{{.*}}, %[[F]]#1
func.func @merge(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> (tensor<f32>, tensor<4x8xf32>) {
  %0 = nn.exp %x : tensor<4x8xf32>
  %1 = nn.exp %y : tensor<4x8xf32>
  %2 = nn.add %0, %1 : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  %3 = nn.reduce_sum %0 : tensor<4x8xf32> -> tensor<f32>
  return %3, %2 : tensor<f32>, tensor<4x8xf32>
}

// -----

// A member read by an op outside before the next elementwise op closes the
// group: the group would have to move past its reader.
// CHECK-LABEL: func.func @closed
// CHECK-NOT: nn.fused
// CHECK: nn.exp
// CHECK: nn.reduce_sum
// CHECK: nn.add
func.func @closed(%x: tensor<4x8xf32>) -> (tensor<f32>, tensor<4x8xf32>) {
  %0 = nn.exp %x : tensor<4x8xf32>
  %1 = nn.reduce_sum %0 : tensor<4x8xf32> -> tensor<f32>
  %2 = nn.add %0, %x : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %1, %2 : tensor<f32>, tensor<4x8xf32>
}

// -----

// Different result shapes are different groups.
// CHECK-LABEL: func.func @shapes
// CHECK: nn.fused({{.*}}) shape = [8]
// CHECK: nn.fused({{.*}}) shape = [4, 8]
func.func @shapes(%v: tensor<8xf32>, %x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = nn.exp %v : tensor<8xf32>
  %1 = nn.neg %0 : tensor<8xf32>
  %2 = nn.add %x, %1 : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %3 = nn.tanh %2 : tensor<4x8xf32>
  return %3 : tensor<4x8xf32>
}

// -----

// With max-arguments=3 a group of five inputs is cut into consecutive pieces.
// SMALL-LABEL: func.func @cut
// SMALL: %[[P:.*]] = nn.fused(%{{.*}}, %{{.*}}) shape = [4]
// SMALL: %[[Q:.*]] = nn.fused(%[[P]], %{{.*}}) shape = [4]
// SMALL: %[[R:.*]] = nn.fused(%[[Q]], %{{.*}}) shape = [4]
// SMALL: nn.div %[[R]]
func.func @cut(%a: tensor<4xf32>, %b: tensor<4xf32>, %c: tensor<4xf32>,
               %d: tensor<4xf32>, %e: tensor<4xf32>) -> tensor<4xf32> {
  %0 = nn.add %a, %b : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %1 = nn.exp %0 : tensor<4xf32>
  %2 = nn.mul %1, %c : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %3 = nn.exp %2 : tensor<4xf32>
  %4 = nn.sub %3, %d : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  %5 = nn.exp %4 : tensor<4xf32>
  %6 = nn.div %5, %e : (tensor<4xf32>, tensor<4xf32>) -> tensor<4xf32>
  return %6 : tensor<4xf32>
}

// -----

// GEMM epilogues: a linear's bias and the activation it flows into; a
// matmul's residual add. The host target fuses the rest as a group.
// CHECK-LABEL: func.func @epilogues
// CHECK: nn.linear {{.*}} {nn.epilogue = ["bias", "gelu_tanh"]}
// CHECK: nn.matmul {{.*}} {nn.epilogue = ["residual"]}
// CHECK: nn.matmul
// CHECK-NOT: nn.epilogue
func.func @epilogues(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<16xf32>,
                     %w2: tensor<16x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %0 = nn.linear %x, %w, %b : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %1 = nn.gelu %0 approximate = "tanh" : tensor<4x16xf32>
  %2 = nn.matmul %1, %w2 : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32>
  %3 = nn.add %x, %2 : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  // Two readers: no epilogue.
  %4 = nn.matmul %1, %w2 : (tensor<4x16xf32>, tensor<16x8xf32>) -> tensor<4x8xf32>
  %5 = nn.exp %4 : tensor<4x8xf32>
  %6 = nn.add %4, %5 : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  return %3, %6 : tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// The backward of a tanh GELU after a GEMM is an epilogue (cuBLASLt's
// DGELU, reading the GELU's saved input). When the target's GEMMs compute
// the mark's first stage (epilogues=...,dgelu_tanh), the op it names stays
// out of the groups, for the GEMM to compute; else it groups as usual.
// CHECK-LABEL: func.func @gelu_backward
// CHECK: nn.matmul {{.*}} {nn.epilogue = ["dgelu_tanh"]}
// CHECK: nn.fused
// CHECK: nn.activation_grad
// CHECK: nn.mul
// EPI-LABEL: func.func @gelu_backward
// EPI: %[[P:.*]] = nn.matmul {{.*}} {nn.epilogue = ["dgelu_tanh"]}
// EPI-NEXT: nn.activation_grad "gelu_tanh" %[[P]]
// EPI-NOT: nn.fused
// RESIDUAL-LABEL: func.func @gelu_backward
// RESIDUAL: nn.fused
// RESIDUAL: nn.activation_grad
func.func @gelu_backward(%dy: tensor<4x8xf32>, %w: tensor<8x16xf32>, %x: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %0 = nn.matmul %dy, %w : (tensor<4x8xf32>, tensor<8x16xf32>) -> tensor<4x16xf32>
  %1 = nn.activation_grad "gelu_tanh" %0, %x : tensor<4x16xf32>
  %2 = nn.mul %1, %1 : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  return %2 : tensor<4x16xf32>
}

// -----

// A tanh GELU's input also returned (saved for the backward) stays a
// GEMM result: the epilogue writes it as aux. The erf GELU has no
// cuBLASLt epilogue, so it groups either way.
// EPI-LABEL: func.func @gelu_forward
// EPI: %[[P:.*]] = nn.linear {{.*}} {nn.epilogue = ["bias", "gelu_tanh"]}
// EPI-NEXT: nn.gelu %[[P]] approximate = "tanh"
// EPI: nn.linear {{.*}} {nn.epilogue = ["bias", "gelu"]}
// EPI-NEXT: nn.fused
func.func @gelu_forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>, %b: tensor<16xf32>) -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>) {
  %0 = nn.linear %x, %w, %b : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %1 = nn.gelu %0 approximate = "tanh" : tensor<4x16xf32>
  %2 = nn.exp %1 : tensor<4x16xf32>
  %3 = nn.linear %x, %w, %b : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %4 = nn.gelu %3 : tensor<4x16xf32>
  %5 = nn.exp %4 : tensor<4x16xf32>
  return %0, %2, %5 : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4x16xf32>
}
