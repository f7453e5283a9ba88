// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -p 'qtrain-plan-memory{sram-kb=1}' | filecheck %s
// RUN: not qtrain-opt %s --split-input-file -p 'qtrain-plan-memory{sram-kb=0}' 2>&1 | filecheck %s --check-prefix=BADKB

// The budget is 1 KiB so that the third case fails; the first two fit. A budget of 0 is refused first:
// BADKB: qtrain-opt: error: qtrain-plan-memory: sram-kb must be positive, got 0

// A plan to check by hand. Schedule positions: 0 %w, 1 %b, 2 %x1, 3 %x2, 4 %x3, 5 %logits (6: return).
// - %image (16 B) lives 0..2; %x1 (16 B) 2..3. The depthwise kernel may write its output head-aligned
//   over its dying input, so %x1 shares offset 0 with the image.
// - %x2 (4 B) lives 3..4 and overlaps %x1 in time (avgpool never runs in place): first free offset 16.
// - %x3 (4 B) lives 4..6 (through its view %logits): %x1 is dead by then, so it reuses offset 0.
// Arena 16 + 4 = 20, reached while the first pool runs (#3). Kernel scratch: the depthwise kernel's
// 4 * KH * columns = 4 * 3 * ((2 - 1) + 3) = 48 (avgpool needs none). Nothing trains. Flash: weight 36
// + bias 16 + 4 fp32 multipliers 16 = 68.
builtin.module {
  qtrain.param @dw.weight = dense<1> : tensor<4x3x3x1xi8>
  qtrain.param @dw.bias = dense<0> : tensor<4xi32>
  func.func @forward(%image: tensor<1x2x2x4xi8>) -> tensor<1x4xi8> {
    %w = qtrain.get_param @dw.weight : tensor<4x3x3x1xi8>
    %b = qtrain.get_param @dw.bias : tensor<4xi32>
    %x1 = qtrain.conv2d %image, %w, %b {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 4 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.25, 0.25, 0.25], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = 0>} : (tensor<1x2x2x4xi8>, tensor<4x3x3x1xi8>, tensor<4xi32>) -> tensor<1x2x2x4xi8>
    %x2 = qtrain.avgpool %x1 {kernel = array<i64: 2, 2>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.5], zp = 0>, output_q = #qtrain.quant<scales = [0.5], zp = 0>} : tensor<1x2x2x4xi8> -> tensor<1x1x1x4xi8>
    %x3 = qtrain.avgpool %x2 {kernel = array<i64: 1, 1>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.5], zp = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : tensor<1x1x1x4xi8> -> tensor<1x1x1x4xi8>
    %logits = qtrain.reshape %x3 : tensor<1x1x1x4xi8> -> tensor<1x4xi8>
    func.return %logits : tensor<1x4xi8>
  }
}
// CHECK-LABEL: builtin.module attributes {qtrain.memory = {peak_sram_bytes = 68 : i64, arena_bytes = 20 : i64, trainable_bytes = 0 : i64, state_bytes = 0 : i64, scratch_bytes = 48 : i64, flash_bytes = 68 : i64, peak_op = "@forward #3 qtrain.avgpool -> %x2"}}
// CHECK:       func.func @forward(%image: tensor<1x2x2x4xi8>) -> tensor<1x4xi8> attributes {qtrain.arg_offsets = array<i64: 0>, qtrain.arena_bytes = 20 : i64}
// CHECK:       %x1 = qtrain.conv2d %image, %w, %b {qtrain.offsets = array<i64: 0>,
// CHECK-NEXT:  %x2 = qtrain.avgpool %x1 {qtrain.offsets = array<i64: 16>,
// CHECK-NEXT:  %x3 = qtrain.avgpool %x2 {qtrain.offsets = array<i64: 0>,
// CHECK-NEXT:  %logits = qtrain.reshape %x3 {qtrain.offsets = array<i64: 0>}

// -----

// The three-conv network of reorder.mlir after qtrain-reorder, @forward included: the two entry points
// share one arena and the image sits at the same offset in both (the harness may call either).
// Flash: parameters 4 + 8 + 8 + 8 + 8 + 12 = 48 B, requantization multipliers 2 x (2 + 2 + 3) floats,
// gradient multipliers 1 + 3 + 2 and QAS factors 3 + 3 + 2 floats: 48 + 4 * 28 = 160.
builtin.module {
  qtrain.param @conv0.weight = dense<[[[[2, -1]]], [[[1, 3]]]]> : tensor<2x1x1x2xi8>
  qtrain.param @conv0.bias = dense<[4, -4]> : tensor<2xi32>
  qtrain.param @conv1.weight trainable storage(f32) channels [0, 1] = dense<[[[[1, -2]], [[3, 0]]], [[[-1, 2]], [[0, 1]]]]> : tensor<2x2x1x2xi8>
  qtrain.param @conv1.bias = dense<[100, -50]> : tensor<2xi32>
  qtrain.param @conv2.weight trainable storage(f32) = dense<[[[[5, -3]]], [[[-2, 4]]], [[[1, 1]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @conv2.bias trainable = dense<[7, -7, 0]> : tensor<3xi32>
  func.func @forward(%image: tensor<1x2x2x2xi8>) -> tensor<1x3xi8> {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %x0 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x2x2xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<2x2x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<2xi32>
    %h = qtrain.conv2d %x0, %w1, %b1 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x2x1x2xi8>, tensor<2xi32>) -> tensor<1x1x1x2xi8>
    %w2 = qtrain.get_param @conv2.weight : tensor<3x1x1x2xi8>
    %b2 = qtrain.get_param @conv2.bias : tensor<3xi32>
    %y = qtrain.conv2d %h, %w2, %b2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %logits = qtrain.reshape %y : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %logits : tensor<1x3xi8>
  }
  func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %x0 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x2x2xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<2x2x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<2xi32>
    %h, %mask1 = qtrain.conv2d %x0, %w1, %b1 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x2x1x2xi8>, tensor<2xi32>) -> tensor<1x1x1x2xi8>, tensor<1x1x1x2xi1>
    %saved_conv1_weight = qtrain.channel_slice %x0 {start = 0 : i64, stop = 1 : i64} : tensor<1x2x2x2xi8> -> tensor<1x2x2x1xi8>
    %w2 = qtrain.get_param @conv2.weight : tensor<3x1x1x2xi8>
    %b2 = qtrain.get_param @conv2.bias : tensor<3xi32>
    %y, %mask2 = qtrain.conv2d %h, %w2, %b2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>, tensor<1x1x1x3xi1>
    %logits = qtrain.reshape %y : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    %logits_real = qtrain.dequantize %logits {input_q = #qtrain.quant<scales = [0.25], zp = 0>} : tensor<1x3xi8> -> tensor<1x3xf32>
    %loss = qtrain.cross_entropy %logits_real, %label : tensor<1x3xf32> -> f32
    %0 = qtrain.cross_entropy_grad %logits_real, %label : tensor<1x3xf32> -> tensor<1x3xf32>
    %1 = qtrain.requant_grad %0 {multiplier = #qtrain.f32<[0.25]>} : tensor<1x3xf32> -> tensor<1x3xf32>
    %2 = qtrain.reshape %1 : tensor<1x3xf32> -> tensor<1x1x1x3xf32>
    %g_acc = qtrain.requant_grad %2 mask %mask2 {multiplier = #qtrain.f32<[1.0, 0.5, 0.25]>} : tensor<1x1x1x3xf32>, tensor<1x1x1x3xi1> -> tensor<1x1x1x3xf32>
    %g_conv2_bias = qtrain.bias_grad %g_acc {qtrain.fused_update} : tensor<1x1x1x3xf32> -> tensor<3xf32>
    qtrain.sgd_update @conv2.bias, %g_conv2_bias {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 256.0]>} : tensor<3xf32>
    %3 = qtrain.conv2d_input_grad %g_acc, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x1x1x3xf32>, tensor<3x1x1x2xi8>) -> tensor<1x1x1x2xf32>
    %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.fused_update, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x1x1x2xi8>, tensor<1x1x1x3xf32>) -> tensor<3x1x1x2xf32>
    qtrain.sgd_update @conv2.weight, %g_conv2_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[4.0, 16.0, 64.0]>} : tensor<3x1x1x2xf32>
    %g_acc_1 = qtrain.requant_grad %3 mask %mask1 {multiplier = #qtrain.f32<[0.25, 0.125]>} : tensor<1x1x1x2xf32>, tensor<1x1x1x2xi1> -> tensor<1x1x1x2xf32>
    %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {qtrain.fused_update, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, channels = array<i64: 0, 1>} : (tensor<1x2x2x1xi8>, tensor<1x1x1x2xf32>) -> tensor<2x2x1x1xf32>
    qtrain.sgd_update @conv1.weight, %g_conv1_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>} : tensor<2x2x1x1xf32>
    func.return %loss : f32
  }
}
// Trainable SRAM copies: conv1's weight slice 2x2x1x1 and conv2's weight 3x1x1x2 as fp32 masters
// (16 + 24 B), conv2's bias as int32 (12 B): 52. The peak is at cross_entropy_grad, where its input
// and output (12 B each) are live with what the backward still reads: %h, %mask1, %saved_conv1_weight,
// %mask2 (2, 1, 4 and 1 B, 4 each once aligned): 12 + 12 + 16 = 40, and the arena reaches exactly that.
// Scratch: conv2's input gradient converts its fp32 master to int8 (6 B, 8 aligned) next to 16 * C_out
// = 48 B of gradient rows: 56.
// CHECK-LABEL: builtin.module attributes {qtrain.memory = {peak_sram_bytes = 148 : i64, arena_bytes = 40 : i64, trainable_bytes = 52 : i64, state_bytes = 0 : i64, scratch_bytes = 56 : i64, flash_bytes = 160 : i64, peak_op = "@train_step #13 qtrain.cross_entropy_grad"}}
// CHECK:       func.func @forward(%image: tensor<1x2x2x2xi8>) -> tensor<1x3xi8> attributes {qtrain.arg_offsets = array<i64: [[IMG:[0-9]+]]>, qtrain.arena_bytes = {{[0-9]+}} : i64}
// CHECK:       func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 attributes {qtrain.arg_offsets = array<i64: [[IMG]], -1>, qtrain.arena_bytes = 40 : i64}
// A gradient computed straight into its update (qtrain.fused_update) has no arena buffer: no offsets.
// The input gradient has one.
// CHECK:       %g_conv2_bias = qtrain.bias_grad %g_acc {qtrain.fused_update} :
// CHECK-NEXT:  qtrain.sgd_update @conv2.bias
// CHECK-NEXT:  qtrain.conv2d_input_grad %g_acc, %w2 {qtrain.offsets = array<i64: {{[0-9]+}}>, strides
// CHECK-NEXT:  %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.fused_update, strides
// CHECK:       %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {qtrain.fused_update, strides

// -----

// Over the budget: the 1 KiB image and the 256 B pooled result are both live while the pool runs
// (avgpool never writes over its input), and there is nothing else.
builtin.module {
  func.func @forward(%image: tensor<1x16x16x4xi8>) -> tensor<1x8x8x4xi8> {
    %x1 = qtrain.avgpool %image {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, input_q = #qtrain.quant<scales = [0.5], zp = 0>, output_q = #qtrain.quant<scales = [0.5], zp = 0>} : tensor<1x16x16x4xi8> -> tensor<1x8x8x4xi8>
    func.return %x1 : tensor<1x8x8x4xi8>
  }
}
// CHECK:      qtrain-plan-memory: needs 1280 bytes of SRAM, over the budget of 1024 (256 too many); Flash 0 bytes of weights and constants (the firmware adds code)
// CHECK-NEXT:   arena 1280 + trainable copies 0 + kernel scratch 0
// CHECK-NEXT:   live at the peak (@forward #0 qtrain.avgpool -> %x1):
// CHECK-NEXT:          1024 B  %image (argument)  [ops 0..0]
// CHECK-NEXT:           256 B  %x1 (qtrain.avgpool)  [ops 0..1]
// CHECK-NEXT:   what would help: a sparser scheme (fewer or narrower trained layers; bias-only keeps no weight copies); qtrain-search-scheme --budget-kb K

// -----

builtin.module {
}
// CHECK: qtrain-plan-memory: no @forward or @train_step to plan

// -----

// Training state is static SRAM counted with the trainable copies: the bias copy (12 B), the schedule's
// step counter (4 B) and the momentum velocity of the bias (3 fp32, 12 B): trainable_bytes 28, of which
// state_bytes 16. Neither the scalar factor nor the state gets an arena offset; the gradient does (12 B).
builtin.module {
  qtrain.param @b trainable = dense<[1, 2, 3]> : tensor<3xi32>
  func.func @train_step(%g: tensor<3xf32>) {
    %f = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 0 : i64, final_ratio = 1.0 : f32} : f32
    qtrain.sgd_update @b, %g factor %f {lr = 0.5 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 0.9 : f32} : tensor<3xf32>
    func.return
  }
}
// CHECK-LABEL: builtin.module attributes {qtrain.memory = {peak_sram_bytes = 40 : i64, arena_bytes = 12 : i64, trainable_bytes = 28 : i64, state_bytes = 16 : i64, scratch_bytes = 0 : i64,
// CHECK:       func.func @train_step(%g: tensor<3xf32>) attributes {qtrain.arg_offsets = array<i64: 0>, qtrain.arena_bytes = 12 : i64}
// CHECK-NEXT:    %f = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 0 : i64, final_ratio = 1.000000e+00 : f32} : f32
// CHECK-NEXT:    qtrain.sgd_update @b, %g factor %f {lr = 5.000000e-01 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 9.000000e-01 : f32} : tensor<3xf32>
