// RUN: qtrain-opt %S/../Inputs/lite_residual_blocks.mlir -p 'qtrain-lite-residual' 2>/dev/null | filecheck %s
// RUN: qtrain-opt %S/../Inputs/lite_residual_blocks.mlir -p 'qtrain-lite-residual{blocks=0,1}' 2>/dev/null | filecheck %s --check-prefix=BLOCK0
// RUN: qtrain-opt %S/../Inputs/lite_residual_blocks.mlir -p 'qtrain-lite-residual,qtrain-lite-residual' 2>/dev/null | filecheck %s --check-prefix=TWICE
// RUN: qtrain-opt %S/../Inputs/lite_residual_blocks.mlir -p 'qtrain-lite-residual' 2>&1 >/dev/null | filecheck %s --check-prefix=WARN
// RUN: not qtrain-opt %S/../Inputs/lite_residual_blocks.mlir -p 'qtrain-lite-residual{blocks=7}' 2>&1 | filecheck %s --check-prefix=BAD

// Default: every block but the first (TinyTL). Parameters: int8 convs, fp32 GroupNorm gamma/beta, the last
// gamma 0 (an exact no-op until trained).
// CHECK-NOT:  qtrain.param @lite_residual0.
// CHECK:      qtrain.param @lite_residual1.conv1.weight = dense<{{.*}}> : tensor<8x3x3x4xi8>
// CHECK-NEXT: qtrain.param @lite_residual1.gn1.gamma = dense<{{.*}}> : tensor<8xf32>
// CHECK-NEXT: qtrain.param @lite_residual1.gn1.beta = dense<0.000000e+00> : tensor<8xf32>
// CHECK-NEXT: qtrain.param @lite_residual1.conv2.weight = dense<{{.*}}> : tensor<16x1x1x8xi8>
// CHECK-NEXT: qtrain.param @lite_residual1.gn2.gamma = dense<0.000000e+00> : tensor<16xf32>
// CHECK-NEXT: qtrain.param @lite_residual1.gn2.beta = dense<0.000000e+00> : tensor<16xf32>
// CHECK:      qtrain.param @lite_residual2.conv1.weight = dense<{{.*}}> : tensor<16x1x1x8xi8>
// CHECK:      qtrain.param @lite_residual3.conv1.weight = dense<{{.*}}> : tensor<16x1x1x8xi8>
// Block 1 (8x8 -> 4x4, no shortcut): pool 2x2/2 to 4x4, the 5x5 kernel shrunk to 3x3 (4 < 5), the block's
// stride 2, groups 2; ReLU fused into the first GroupNorm; upsample 2x2 -> 4x4; the add after the projection.
// CHECK:      %lr1_pool = qtrain.avgpool %[[X1:.*]] {qtrain.lite_residual = 1 : i64, kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, input_q = #qtrain.quant<scales = [0.07], zp = -20>, output_q = #qtrain.quant<scales = [0.07], zp = -20>} : tensor<1x8x8x8xi8> -> tensor<1x4x4x8xi8>
// CHECK:      %lr1_conv1 = qtrain.conv2d %lr1_pool, %{{.*}} {qtrain.lite_residual = 1 : i64, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, groups = 2 : i64,
// CHECK-SAME: -> tensor<1x2x2x8xi8>
// CHECK:      %lr1_gn1 = qtrain.group_norm %lr1_conv1, {{.*}} {qtrain.lite_residual = 1 : i64, groups = 1 : i64, epsilon = 1.000000e-05 : f32, {{.*}}output_q = #qtrain.quant<scales = [{{.*}}], zp = -128>, clamp = array<i64: -128, 127>}
// CHECK:      %lr1_conv2 = qtrain.conv2d %lr1_gn1, %{{.*}} {qtrain.lite_residual = 1 : i64, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64,
// CHECK:      %lr1_gn2 = qtrain.group_norm %lr1_conv2, {{.*}} {qtrain.lite_residual = 1 : i64, qtrain.lite_residual_final, groups = 2 : i64, {{.*}}output_q = #qtrain.quant<scales = [0.05], zp = 0>}
// CHECK:      %[[P1:.*]] = qtrain.conv2d %{{.*}} -> tensor<1x4x4x16xi8>
// CHECK-NEXT: %lr1_upsample = qtrain.upsample %lr1_gn2 {qtrain.lite_residual = 1 : i64, input_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.05], zp = 0>} : tensor<1x2x2x16xi8> -> tensor<1x4x4x16xi8>
// CHECK-NEXT: %lr1_add = qtrain.add %[[P1]], %lr1_upsample {qtrain.lite_residual = 1 : i64, lhs_q = #qtrain.quant<scales = [0.05], zp = 2>, rhs_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.05], zp = 2>}
// Block 2 (4x4 -> 2x2) reads block 1's output with its module added; pooled resolution 2, so the kernel
// shrinks 5 -> 3 -> 1.
// CHECK:      %lr2_pool = qtrain.avgpool %lr1_add
// CHECK:      %lr2_conv1 = qtrain.conv2d %lr2_pool, %{{.*}} {qtrain.lite_residual = 2 : i64, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 2 : i64,
// CHECK-SAME: (tensor<1x2x2x16xi8>, tensor<16x1x1x8xi8>) -> tensor<1x1x1x16xi8>
// Block 3 at 2x2: pooled resolution 1, so the pool is global and the kernel 1x1; its add comes before the
// identity shortcut's.
// CHECK:      %lr3_pool = qtrain.avgpool %{{.*}} {qtrain.lite_residual = 3 : i64, kernel = array<i64: 2, 2>, strides = array<i64: 1, 1>, {{.*}} : tensor<1x2x2x16xi8> -> tensor<1x1x1x16xi8>
// CHECK:      %lr3_add = qtrain.add %[[P3:.*]], %lr3_upsample
// CHECK-NEXT: qtrain.add %{{.*}}, %lr3_add

// blocks=0,1: block 0's module joins its projection before the shortcut add (X + (P + branch)).
// BLOCK0:      %lr0_pool = qtrain.avgpool %[[X0:.*]] {qtrain.lite_residual = 0 : i64
// BLOCK0:      %lr0_conv1 = qtrain.conv2d {{.*}} strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 2 : i64,
// BLOCK0:      %[[P0:.*]] = qtrain.conv2d %{{.*}} -> tensor<1x8x8x8xi8>
// BLOCK0-NEXT: %lr0_upsample = qtrain.upsample %lr0_gn2 {{.*}} : tensor<1x4x4x8xi8> -> tensor<1x8x8x8xi8>
// BLOCK0-NEXT: %lr0_add = qtrain.add %[[P0]], %lr0_upsample
// BLOCK0-NEXT: qtrain.add %[[X0]], %lr0_add
// BLOCK0:      %lr1_add = qtrain.add
// BLOCK0-NOT:  %lr2_

// A block that has a module keeps it: a second run adds nothing.
// TWICE-COUNT-3: qtrain.param @{{lite_residual[0-9]}}.conv1.weight
// TWICE-NOT:     qtrain.param @{{lite_residual[0-9]}}.conv1.weight

// WARN: LiteResidualWarning: qtrain-lite-residual: no calibration images; the branch scales come from 16 images of uniform int8 noise (seed 0)

// BAD: qtrain-lite-residual: no block 7: the network has 4 blocks (0..3)
