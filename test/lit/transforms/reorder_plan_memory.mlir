// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff,qtrain-reorder,qtrain-plan-memory' | filecheck %s
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff,qtrain-plan-memory' | filecheck %s --check-prefix=NAIVE
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff,qtrain-reorder,qtrain-plan-memory{sram-kb=0}' 2>&1 | filecheck %s --check-prefix=BADKB
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-plan-memory{sram-kb=1}' 2>&1 | filecheck %s --check-prefix=OVER
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-reorder' 2>&1 | filecheck %s --check-prefix=ORDER

// The plan: module totals, per-function arena and argument offsets, per-result offsets.
// CHECK: builtin.module attributes {qtrain.memory = {peak_sram_bytes = [[PEAK:[0-9]+]] : i64, arena_bytes = 44 : i64, trainable_bytes = 76 : i64, scratch_bytes = {{[0-9]+}} : i64
// CHECK: func.func @forward(%image: tensor<1x2x2x2xi8>) -> tensor<1x3xi8> attributes {qtrain.arg_offsets = array<i64: [[IMG:[0-9]+]]>, qtrain.arena_bytes = {{[0-9]+}} : i64}
// CHECK: func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 attributes {qtrain.arg_offsets = array<i64: [[IMG]], -1>, qtrain.arena_bytes = 44 : i64}
// CHECK: %h, %{{.*}} = qtrain.conv2d %image, %w0, %b0 {qtrain.offsets = array<i64: {{[0-9]+}}, {{[0-9]+}}>
// Reordered: each update right after its gradient, the gradient fused into it (no arena offset);
// the weight update of conv1 waits for the input gradient that still reads the old weight.
// CHECK:      %g_conv1_bias = qtrain.bias_grad %g_acc {qtrain.fused_update}
// CHECK-NEXT: qtrain.sgd_update @conv1.bias, %g_conv1_bias
// CHECK-NEXT: %{{.*}} = qtrain.conv2d_input_grad %g_acc, %w1 {qtrain.offsets
// CHECK-NEXT: %g_conv1_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.fused_update
// CHECK-NEXT: qtrain.sgd_update @conv1.weight, %g_conv1_weight
// CHECK:      %g_conv0_bias = qtrain.bias_grad %g_acc_1 {qtrain.fused_update}
// CHECK-NEXT: qtrain.sgd_update @conv0.bias
// CHECK-NEXT: %g_conv0_weight = qtrain.conv2d_weight_grad %image, %g_acc_1 {qtrain.fused_update
// CHECK-NEXT: qtrain.sgd_update @conv0.weight
// CHECK-NEXT: func.return %loss : f32

// Naive: all updates at the end, every gradient materialised in the arena.
// NAIVE-NOT: qtrain.fused_update
// NAIVE: %g_conv1_bias = qtrain.bias_grad %g_acc {qtrain.offsets
// NAIVE: %g_conv0_weight = qtrain.conv2d_weight_grad %image, %g_acc_1 {qtrain.offsets
// NAIVE-NEXT: qtrain.sgd_update @conv0.weight
// NAIVE-NEXT: qtrain.sgd_update @conv0.bias
// NAIVE-NEXT: qtrain.sgd_update @conv1.weight
// NAIVE-NEXT: qtrain.sgd_update @conv1.bias

// BADKB: qtrain-opt: error: qtrain-plan-memory: sram-kb must be positive, got 0
// OVER: qtrain-opt: error: qtrain-plan-memory: needs {{[0-9]+}} bytes of SRAM, over the budget of 1024 ({{[0-9]+}} too many)
// OVER-NEXT: arena {{[0-9]+}} + trainable copies {{[0-9]+}} + kernel scratch {{[0-9]+}}
// OVER-NEXT: live at the peak (@train_step #{{[0-9]+}} {{.*}}):
// OVER-NEXT: {{ +[0-9]+}} B  {{.*}}  [ops {{[0-9]+}}..{{[0-9]+}}]
// ORDER: qtrain-opt: error: qtrain-reorder: no func.func @train_step; run qtrain-autodiff first
