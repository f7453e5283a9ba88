// RUN: qtrain-opt %S/../Inputs/inverted_residual.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="last-k=2"},qtrain-dead-gradient-elim,qtrain-fuse-streaming' | filecheck %s
// RUN: qtrain-opt %S/../Inputs/inverted_residual.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="last-k=3"},qtrain-dead-gradient-elim,qtrain-fuse-streaming' | filecheck %s --check-prefix=DWTRAINS
// RUN: qtrain-opt %S/../Inputs/inverted_residual.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="last-k=4"},qtrain-dead-gradient-elim,qtrain-fuse-streaming' | filecheck %s --check-prefix=PWTRAINS
// RUN: qtrain-opt %S/../Inputs/inverted_residual.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="%S/../Inputs/inverted_residual_schemes.json#ir/stem"},qtrain-dead-gradient-elim,qtrain-fuse-streaming' | filecheck %s --check-prefix=FLOWS
// RUN: qtrain-opt %S/../Inputs/inverted_residual.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="last-k=2"},qtrain-dead-gradient-elim,qtrain-fuse-streaming,qtrain-reorder,qtrain-plan-memory' | filecheck %s --check-prefix=PLAN
// RUN: qtrain-opt %S/../Inputs/inverted_residual.mlir -p 'qtrain-fuse-streaming' | filecheck %s --check-prefix=FORWARD

// last-k=2 trains conv3 and the classifier: nothing flows into conv1 or conv2, so the expanded tensor
// %x1 (16x16x16) is read by conv2 alone, in @forward and in @train_step; the fused op takes conv2's
// place and name, conv1 disappears.
// CHECK:      func.func @forward
// CHECK-NOT:  qtrain.conv2d %x0,
// CHECK:      %x2 = qtrain.fused_pointwise_depthwise %x0, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.05], zp = -128>, pw_weight_q = #qtrain.quant<scales = [{{.*}}], zp = 0, axis = 0>, mid_q = #qtrain.quant<scales = [0.04], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 16 : i64, dw_weight_q = #qtrain.quant<scales = [{{.*}}], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.03], zp = -128>} : (tensor<1x16x16x4xi8>, pw(tensor<16x1x1x4xi8>, tensor<16xi32>), dw(tensor<16x3x3x1xi8>, tensor<16xi32>)) -> tensor<1x8x8x16xi8>
// CHECK-NEXT: %w3 = qtrain.get_param @conv3.weight
// CHECK:      func.func @train_step
// CHECK-NOT:  qtrain.conv2d %x0,
// CHECK:      %x2 = qtrain.fused_pointwise_depthwise %x0, pw(%w1, %b1), dw(%w2, %b2)
// CHECK-NOT:  qtrain.fused_pointwise_depthwise
// CHECK:      %x3, %{{.*}} = qtrain.conv2d %x2, %w3, %b3
// CHECK:      qtrain.conv2d_weight_grad %x2,

// last-k=3 also trains the depthwise conv2: its weight gradient reads %x1, so nothing is fused in
// @train_step; @forward fuses neither, as conv2's weight is trainable.
// DWTRAINS-NOT: qtrain.fused_pointwise_depthwise
// DWTRAINS:     %x1 = qtrain.conv2d %x0, %w1, %b1
// DWTRAINS:     func.func @train_step
// DWTRAINS:     %x1 = qtrain.conv2d %x0, %w1, %b1
// DWTRAINS-NOT: qtrain.fused_pointwise_depthwise
// DWTRAINS:     %x2, %{{.*}} = qtrain.conv2d %x1, %w2, %b2
// DWTRAINS:     qtrain.conv2d_weight_grad %x1,

// last-k=4 trains the 1x1 expansion conv1 itself: never fused.
// PWTRAINS-NOT: qtrain.fused_pointwise_depthwise
// PWTRAINS:     %x1, %{{.*}} = qtrain.conv2d %x0, %w1, %b1
// PWTRAINS-NOT: qtrain.fused_pointwise_depthwise

// ir/stem trains only the first conv0 (and the classifier): its gradient flows back through conv2 and
// conv1, whose masks the backward pass reads: in @train_step conv1 and conv2 stay separate although
// neither trains. @forward computes no gradient: fused there.
// FLOWS:       func.func @forward
// FLOWS:       %x2 = qtrain.fused_pointwise_depthwise %x0, pw(%w1, %b1), dw(%w2, %b2)
// FLOWS-LABEL: func.func @train_step
// FLOWS:       %x1, %[[M1:.*]] = qtrain.conv2d %x0, %w1, %b1
// FLOWS-NOT:   qtrain.fused_pointwise_depthwise
// FLOWS:       %x2, %[[M2:.*]] = qtrain.conv2d %x1, %w2, %b2
// FLOWS:       qtrain.requant_grad %{{.*}} mask %[[M2]]
// FLOWS:       qtrain.requant_grad %{{.*}} mask %[[M1]]

// Planned: the fused op gets one arena offset (its output; the 4 KB intermediate has none) and the
// reorder pass schedules it like any forward op. The arena bytes free while it runs (more than the
// shared scratch) are its scratch gap.
// PLAN: %x2 = qtrain.fused_pointwise_depthwise %x0, pw(%w1, %b1), dw(%w2, %b2) {qtrain.offsets = array<i64: {{[0-9]+}}>, qtrain.scratch_gap = array<i64: {{[0-9]+}}, {{[0-9]+}}>, pw_strides

// On a forward-only module (no parameter trains yet) the pass fuses @forward.
// FORWARD: %x2 = qtrain.fused_pointwise_depthwise %x0, pw(%w1, %b1), dw(%w2, %b2)
