// Folders of the nn dialect, through the canonicalizer.
// RUN: hotstage-opt %s -canonicalize -split-input-file | FileCheck %s

// CHECK-LABEL: func.func @cast_to_same_type
// CHECK-SAME: (%[[X:.*]]: tensor<4xf32>)
// CHECK-NEXT: return %[[X]]
func.func @cast_to_same_type(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = nn.cast %x : tensor<4xf32> to tensor<4xf32>
  return %0 : tensor<4xf32>
}

// -----

// CHECK-LABEL: func.func @cast_kept
// CHECK: nn.cast %{{.*}} : tensor<4xf32> to tensor<4xbf16>
func.func @cast_kept(%x: tensor<4xf32>) -> tensor<4xbf16> {
  %0 = nn.cast %x : tensor<4xf32> to tensor<4xbf16>
  return %0 : tensor<4xbf16>
}

// -----

// CHECK-LABEL: func.func @reshape_to_same_type
// CHECK-SAME: (%[[X:.*]]: tensor<2x3xf32>)
// CHECK-NEXT: return %[[X]]
func.func @reshape_to_same_type(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = nn.reshape %x : tensor<2x3xf32> -> tensor<2x3xf32>
  return %0 : tensor<2x3xf32>
}

// -----

// CHECK-LABEL: func.func @reshape_of_reshape
// CHECK-SAME: (%[[X:.*]]: tensor<2x3xf32>)
// CHECK-NEXT: %[[R:.*]] = nn.reshape %[[X]] : tensor<2x3xf32> -> tensor<3x2xf32>
// CHECK-NEXT: return %[[R]]
func.func @reshape_of_reshape(%x: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %0 = nn.reshape %x : tensor<2x3xf32> -> tensor<6xf32>
  %1 = nn.reshape %0 : tensor<6xf32> -> tensor<3x2xf32>
  return %1 : tensor<3x2xf32>
}

// -----

// A round trip through reshapes folds away completely.
// CHECK-LABEL: func.func @reshape_round_trip
// CHECK-SAME: (%[[X:.*]]: tensor<2x3xf32>)
// CHECK-NEXT: return %[[X]]
func.func @reshape_round_trip(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = nn.reshape %x : tensor<2x3xf32> -> tensor<6xf32>
  %1 = nn.reshape %0 : tensor<6xf32> -> tensor<2x3xf32>
  return %1 : tensor<2x3xf32>
}

// -----

// CHECK-LABEL: func.func @reshape_of_constant
// CHECK-NEXT: %[[C:.*]] = nn.constant dense<{{\[\[}}1, 2, 3], [4, 5, 6]]> : tensor<2x3xi32>
// CHECK-NEXT: return %[[C]]
func.func @reshape_of_constant() -> tensor<2x3xi32> {
  %0 = nn.constant dense<[1, 2, 3, 4, 5, 6]> : tensor<6xi32>
  %1 = nn.reshape %0 : tensor<6xi32> -> tensor<2x3xi32>
  return %1 : tensor<2x3xi32>
}

// -----

// CHECK-LABEL: func.func @identity_transpose
// CHECK-SAME: (%[[X:.*]]: tensor<2x3xf32>)
// CHECK-NEXT: return %[[X]]
func.func @identity_transpose(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %0 = nn.transpose %x perm = [0, 1] : tensor<2x3xf32> -> tensor<2x3xf32>
  return %0 : tensor<2x3xf32>
}

// -----

// CHECK-LABEL: func.func @transpose_kept
// CHECK: nn.transpose %{{.*}} perm = [1, 0]
func.func @transpose_kept(%x: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %0 = nn.transpose %x perm = [1, 0] : tensor<2x3xf32> -> tensor<3x2xf32>
  return %0 : tensor<3x2xf32>
}

// -----

// A transpose of a transpose is one transpose, or none.
// CHECK-LABEL: func.func @transpose_of_transpose
// CHECK-SAME: (%[[X:.*]]: tensor<2x3x4xf32>)
// CHECK-NEXT: %[[T:.*]] = nn.transpose %[[X]] perm = [2, 0, 1] : tensor<2x3x4xf32> -> tensor<4x2x3xf32>
// CHECK-NEXT: return %[[X]], %[[T]]
func.func @transpose_of_transpose(%x: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>, tensor<4x2x3xf32>) {
  %0 = nn.transpose %x perm = [1, 0, 2] : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
  %1 = nn.transpose %0 perm = [1, 0, 2] : tensor<3x2x4xf32> -> tensor<2x3x4xf32>
  %2 = nn.transpose %0 perm = [2, 1, 0] : tensor<3x2x4xf32> -> tensor<4x2x3xf32>
  return %1, %2 : tensor<2x3x4xf32>, tensor<4x2x3xf32>
}

// -----

// transpose(a @ b) is transpose(b) @ transpose(a): a tied LM head's weight
// gradient x^T g, transposed back to the table's shape, becomes g^T x.
// CHECK-LABEL: func.func @transpose_of_matmul
// CHECK-SAME: (%[[X:.*]]: tensor<6x4xf32>, %[[G:.*]]: tensor<6x8xf32>)
// CHECK-NEXT: %[[GT:.*]] = nn.transpose %[[G]] perm = [1, 0] : tensor<6x8xf32> -> tensor<8x6xf32>
// CHECK-NEXT: %[[D:.*]] = nn.matmul %[[GT]], %[[X]] : (tensor<8x6xf32>, tensor<6x4xf32>) -> tensor<8x4xf32>
// CHECK-NEXT: return %[[D]]
func.func @transpose_of_matmul(%x: tensor<6x4xf32>, %g: tensor<6x8xf32>) -> tensor<8x4xf32> {
  %0 = nn.transpose %x perm = [1, 0] : tensor<6x4xf32> -> tensor<4x6xf32>
  %1 = nn.matmul %0, %g : (tensor<4x6xf32>, tensor<6x8xf32>) -> tensor<4x8xf32>
  %2 = nn.transpose %1 perm = [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
  return %2 : tensor<8x4xf32>
}

// -----

// A product that something else reads too is left alone.
// CHECK-LABEL: func.func @transpose_of_shared_matmul
// CHECK: %[[P:.*]] = nn.matmul
// CHECK-NEXT: nn.transpose %[[P]]
func.func @transpose_of_shared_matmul(%a: tensor<4x6xf32>, %b: tensor<6x8xf32>) -> (tensor<4x8xf32>, tensor<8x4xf32>) {
  %0 = nn.matmul %a, %b : (tensor<4x6xf32>, tensor<6x8xf32>) -> tensor<4x8xf32>
  %1 = nn.transpose %0 perm = [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
  return %0, %1 : tensor<4x8xf32>, tensor<8x4xf32>
}

// -----

// Equal constants are merged and unused ones dropped.
// CHECK-LABEL: func.func @constants
// CHECK-NEXT: %[[C:.*]] = nn.constant dense<1.000000e+00> : tensor<4xf32>
// CHECK-NEXT: return %[[C]], %[[C]]
func.func @constants() -> (tensor<4xf32>, tensor<4xf32>) {
  %0 = nn.constant dense<1.0> : tensor<4xf32>
  %1 = nn.constant dense<1.0> : tensor<4xf32>
  %2 = nn.constant dense<2.0> : tensor<4xf32>
  return %0, %1 : tensor<4xf32>, tensor<4xf32>
}
