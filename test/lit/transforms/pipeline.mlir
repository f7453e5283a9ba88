// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=full},qtrain-dead-gradient-elim,qtrain-reorder,qtrain-plan-memory' | filecheck %s
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=full},qtrain-dead-gradient-elim,qtrain-reorder,qtrain-plan-memory' | qtrain-opt -t c | filecheck %s --check-prefix=C
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=full},qtrain-dead-gradient-elim,qtrain-plan-memory' | filecheck %s --check-prefix=NAIVE

// The passes compose: the training pipeline of transforms/pipeline.py (as in the README) from forward-only
// IR to planned IR and on to C. Each pass has its own file with an inline input (dead_gradient_elim.mlir,
// reorder.mlir, plan_memory.mlir, ../lowering/emit_c.mlir); this one checks that what one pass hands the
// next is what the next expects, on the two-conv model with every parameter trained.

// Trainable copies: conv0's weight 8 and conv1's 6 fp32 masters (32 + 24 B), biases 2 and 3 int32 (8 + 12 B),
// plus the training state: the schedule's step counter (4 B).
// CHECK: builtin.module attributes {qtrain.memory = {peak_sram_bytes = {{[0-9]+}} : i64, arena_bytes = 44 : i64, trainable_bytes = 80 : i64, state_bytes = 4 : i64, scratch_bytes = {{[0-9]+}} : i64
// CHECK: func.func @forward(%image: tensor<1x2x2x2xi8>) -> tensor<1x3xi8> attributes {qtrain.arg_offsets = array<i64: [[IMG:[0-9]+]]>, qtrain.arena_bytes = {{[0-9]+}} : i64}
// CHECK: func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 attributes {qtrain.arg_offsets = array<i64: [[IMG]], -1>, qtrain.arena_bytes = 44 : i64}
// The schedule costs no arena (a scalar) and reorder runs it first.
// CHECK-NEXT: %lr_factor = qtrain.lr_schedule {warmup_steps = 50 : i64, steps = 1000 : i64, final_ratio = 1.000000e-01 : f32} : f32
// CHECK: %h, %{{.*}} = qtrain.conv2d %image, %w0, %b0 {qtrain.offsets = array<i64: {{[0-9]+}}, {{[0-9]+}}>
// Reordered: each update right after its gradient, the gradient fused into it (no arena offset);
// the weight update of conv1 waits for the input gradient that still reads the old weight.
// CHECK:      %g_conv1_bias = qtrain.bias_grad %g_acc {qtrain.fused_update}
// CHECK-NEXT: qtrain.sgd_update @conv1.bias, %g_conv1_bias factor %lr_factor
// CHECK-NEXT: %{{.*}} = qtrain.conv2d_input_grad %g_acc, %w1 {qtrain.offsets
// CHECK-NEXT: %g_conv1_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.fused_update
// CHECK-NEXT: qtrain.sgd_update @conv1.weight, %g_conv1_weight
// CHECK:      %g_conv0_bias = qtrain.bias_grad %g_acc_1 {qtrain.fused_update}
// CHECK-NEXT: qtrain.sgd_update @conv0.bias
// CHECK-NEXT: %g_conv0_weight = qtrain.conv2d_weight_grad %image, %g_acc_1 {qtrain.fused_update
// CHECK-NEXT: qtrain.sgd_update @conv0.weight
// CHECK-NEXT: func.return %loss : f32

// The planned IR lowers: one arena of the planned size; the fused gradients go through scratch; the
// step counter is static SRAM next to the trainable copies; each update steps with fp32(lr * factor).
// C: static uint8_t qtrain_arena[44] QTRAIN_ARENA;
// C: static uint32_t qtrain_state_step[1] QTRAIN_TRAINABLE;
// C-LABEL: void qtrain_init(void) {
// C:       for (int32_t k = 0; k < 1; ++k) { qtrain_state_step[k] = 0; }
// C-LABEL: float qtrain_train_step(
// C:       const float [[F:lr_factor_[0-9]+]] = qtrain_lr_schedule_f32(qtrain_state_step, 50, 1000, 0x1.99999a0000000p-4f);
// C:       qtrain_bias_grad_f32({{.*}}, ((float *)qtrain_scratch));
// C-NEXT:  qtrain_sgd_update_s32(conv1_bias_sram, ((float *)qtrain_scratch), 3, 1, (0x1.0624de0000000p-10f * [[F]]), grad_scale{{[0-9]+}}, 3);
// C:       qtrain_conv2d_weight_grad_sgd_update({{.*}}, (0x1.47ae140000000p-7f * [[F]]), {{.*}}, QTRAIN_STORAGE_F32, conv1_weight_sram));
// C:       qtrain_bias_grad_f32({{.*}}, ((float *)qtrain_scratch));
// C-NEXT:  qtrain_sgd_update_s32(conv0_bias_sram, ((float *)qtrain_scratch),
// C:       qtrain_conv2d_weight_grad_sgd_update({{.*}}, QTRAIN_STORAGE_F32, conv0_weight_sram));
// C-NEXT:  QTRAIN_GUARDS_CHECK();
// C-NEXT:  return loss;
// What a checkpoint saves: every trainable copy, then the step counter.
// C:       const qtrain_state_region_t qtrain_training_state[5] = {
// C-NEXT:      {"conv0.weight", conv0_weight_sram, (uint32_t)sizeof conv0_weight_sram},
// C-NEXT:      {"conv0.bias", conv0_bias_sram, (uint32_t)sizeof conv0_bias_sram},
// C-NEXT:      {"conv1.weight", conv1_weight_sram, (uint32_t)sizeof conv1_weight_sram},
// C-NEXT:      {"conv1.bias", conv1_bias_sram, (uint32_t)sizeof conv1_bias_sram},
// C-NEXT:      {"step", qtrain_state_step, (uint32_t)sizeof qtrain_state_step},
// C-NEXT:  };
// C-NEXT:  const uint32_t qtrain_training_state_count = 5u;
// The checkpoint's buffers: the schedule's step counter (the one counter: lr_schedule advances it)
// first, then the other regions.
// C:       static const qtrain_state_buffer_t qtrain_state_buffers[5] = {
// C-NEXT:      {qtrain_state_step, 4u}, /* step */
// C-NEXT:      {conv0_weight_sram, 32u}, /* conv0.weight */
// C:       0x{{[0-9a-f]+}}u, qtrain_state_step, 5u, qtrain_state_buffers,

// Without qtrain-reorder: all updates at the end, every weight and bias gradient materialised in the
// arena until then: 92 bytes instead of 44.
// NAIVE:       builtin.module attributes {qtrain.memory = {peak_sram_bytes = {{[0-9]+}} : i64, arena_bytes = 92 : i64, trainable_bytes = 80 : i64,
// NAIVE-LABEL: func.func @train_step
// NAIVE:       %g_conv1_bias = qtrain.bias_grad %g_acc {qtrain.offsets = array<i64: {{[0-9]+}}>} :
// NAIVE-NEXT:  %g_conv1_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.offsets = array<i64: {{[0-9]+}}>, strides
// NAIVE-NEXT:  qtrain.conv2d_input_grad %g_acc, %w1
// NAIVE-NEXT:  %g_acc_1 = qtrain.requant_grad
// NAIVE-NEXT:  %g_conv0_bias = qtrain.bias_grad %g_acc_1 {qtrain.offsets = array<i64: {{[0-9]+}}>} :
// NAIVE-NEXT:  %g_conv0_weight = qtrain.conv2d_weight_grad %image, %g_acc_1 {qtrain.offsets = array<i64: {{[0-9]+}}>, strides
// NAIVE-NEXT:  %lr_factor = qtrain.lr_schedule
// NAIVE-NEXT:  qtrain.sgd_update @conv0.weight
// NAIVE-NEXT:  qtrain.sgd_update @conv0.bias
// NAIVE-NEXT:  qtrain.sgd_update @conv1.weight
// NAIVE-NEXT:  qtrain.sgd_update @conv1.bias
// NAIVE-NEXT:  func.return %loss : f32
