// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -t c | filecheck %s

// -t c renders each op's kernel calls in schedule order, every tensor a pointer at its planned arena
// offset. Input: the planned three-conv network of plan_memory.mlir (conv1's weight slice and the
// classifier conv2 train; updates fused into their gradients by qtrain-reorder).
builtin.module attributes {qtrain.memory = {peak_sram_bytes = 148 : i64, arena_bytes = 40 : i64, trainable_bytes = 52 : i64, scratch_bytes = 56 : i64, flash_bytes = 160 : i64, peak_op = "@train_step #13 qtrain.cross_entropy_grad"}} {
  qtrain.param @conv0.weight = dense<[[[[2, -1]]], [[[1, 3]]]]> : tensor<2x1x1x2xi8>
  qtrain.param @conv0.bias = dense<[4, -4]> : tensor<2xi32>
  qtrain.param @conv1.weight trainable storage(f32) channels [0, 1] = dense<[[[[1, -2]], [[3, 0]]], [[[-1, 2]], [[0, 1]]]]> : tensor<2x2x1x2xi8>
  qtrain.param @conv1.bias = dense<[100, -50]> : tensor<2xi32>
  qtrain.param @conv2.weight trainable storage(f32) = dense<[[[[5, -3]]], [[[-2, 4]]], [[[1, 1]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @conv2.bias trainable = dense<[7, -7, 0]> : tensor<3xi32>
  func.func @forward(%image: tensor<1x2x2x2xi8>) -> tensor<1x3xi8> attributes {qtrain.arg_offsets = array<i64: 0>, qtrain.arena_bytes = 12 : i64} {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %x0 = qtrain.conv2d %image, %w0, %b0 {qtrain.offsets = array<i64: 0>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x2x2xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<2x2x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<2xi32>
    %h = qtrain.conv2d %x0, %w1, %b1 {qtrain.offsets = array<i64: 8>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x2x1x2xi8>, tensor<2xi32>) -> tensor<1x1x1x2xi8>
    %w2 = qtrain.get_param @conv2.weight : tensor<3x1x1x2xi8>
    %b2 = qtrain.get_param @conv2.bias : tensor<3xi32>
    %y = qtrain.conv2d %h, %w2, %b2 {qtrain.offsets = array<i64: 8>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %logits = qtrain.reshape %y {qtrain.offsets = array<i64: 8>} : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %logits : tensor<1x3xi8>
  }
  func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 attributes {qtrain.arg_offsets = array<i64: 0, -1>, qtrain.arena_bytes = 40 : i64} {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %x0 = qtrain.conv2d %image, %w0, %b0 {qtrain.offsets = array<i64: 0>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x2x2xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<2x2x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<2xi32>
    %h, %mask1 = qtrain.conv2d %x0, %w1, %b1 {qtrain.offsets = array<i64: 24, 28>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x2x1x2xi8>, tensor<2xi32>) -> tensor<1x1x1x2xi8>, tensor<1x1x1x2xi1>
    %saved_conv1_weight = qtrain.channel_slice %x0 {qtrain.offsets = array<i64: 32>, start = 0 : i64, stop = 1 : i64} : tensor<1x2x2x2xi8> -> tensor<1x2x2x1xi8>
    %w2 = qtrain.get_param @conv2.weight : tensor<3x1x1x2xi8>
    %b2 = qtrain.get_param @conv2.bias : tensor<3xi32>
    %y, %mask2 = qtrain.conv2d %h, %w2, %b2 {qtrain.offsets = array<i64: 12, 36>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>, tensor<1x1x1x3xi1>
    %logits = qtrain.reshape %y {qtrain.offsets = array<i64: 12>} : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    %logits_real = qtrain.dequantize %logits {qtrain.offsets = array<i64: 0>, input_q = #qtrain.quant<scales = [0.25], zp = 0>} : tensor<1x3xi8> -> tensor<1x3xf32>
    %loss = qtrain.cross_entropy %logits_real, %label : tensor<1x3xf32> -> f32
    %0 = qtrain.cross_entropy_grad %logits_real, %label {qtrain.offsets = array<i64: 12>} : tensor<1x3xf32> -> tensor<1x3xf32>
    %1 = qtrain.requant_grad %0 {qtrain.offsets = array<i64: 12>, multiplier = #qtrain.f32<[0.25]>} : tensor<1x3xf32> -> tensor<1x3xf32>
    %2 = qtrain.reshape %1 {qtrain.offsets = array<i64: 12>} : tensor<1x3xf32> -> tensor<1x1x1x3xf32>
    %g_acc = qtrain.requant_grad %2 mask %mask2 {qtrain.offsets = array<i64: 12>, multiplier = #qtrain.f32<[1.0, 0.5, 0.25]>} : tensor<1x1x1x3xf32>, tensor<1x1x1x3xi1> -> tensor<1x1x1x3xf32>
    %g_conv2_bias = qtrain.bias_grad %g_acc {qtrain.fused_update} : tensor<1x1x1x3xf32> -> tensor<3xf32>
    qtrain.sgd_update @conv2.bias, %g_conv2_bias {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 256.0]>} : tensor<3xf32>
    %3 = qtrain.conv2d_input_grad %g_acc, %w2 {qtrain.offsets = array<i64: 0>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x1x1x3xf32>, tensor<3x1x1x2xi8>) -> tensor<1x1x1x2xf32>
    %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.fused_update, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x1x1x2xi8>, tensor<1x1x1x3xf32>) -> tensor<3x1x1x2xf32>
    qtrain.sgd_update @conv2.weight, %g_conv2_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[4.0, 16.0, 64.0]>} : tensor<3x1x1x2xf32>
    %g_acc_1 = qtrain.requant_grad %3 mask %mask1 {qtrain.offsets = array<i64: 0>, multiplier = #qtrain.f32<[0.25, 0.125]>} : tensor<1x1x1x2xf32>, tensor<1x1x1x2xi1> -> tensor<1x1x1x2xf32>
    %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {qtrain.fused_update, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, channels = array<i64: 0, 1>} : (tensor<1x2x2x1xi8>, tensor<1x1x1x2xf32>) -> tensor<2x2x1x1xf32>
    qtrain.sgd_update @conv1.weight, %g_conv1_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>} : tensor<2x2x1x1xf32>
    func.return %loss : f32
  }
}

// One arena and one scratch buffer of the planned sizes (qtrain.arena_bytes of @train_step, the
// module's scratch_bytes).
// CHECK:      static uint8_t qtrain_arena[40] QTRAIN_ARENA;
// CHECK-NEXT: static uint8_t qtrain_scratch[56] QTRAIN_SCRATCH;
// Parameters: const in Flash; trainable ones also get an SRAM copy (fp32 masters for the weights, of
// the trained slice only for conv1: 2x2x1x1 of 2x2x1x2).
// CHECK:      static const int8_t conv0_weight[4] QTRAIN_WEIGHTS = {
// CHECK-NEXT:     2, -1, 1, 3
// CHECK-NEXT: };
// CHECK-NEXT: static const int32_t conv0_bias[2] QTRAIN_WEIGHTS = {
// CHECK-NEXT:     4, -4
// CHECK-NEXT: };
// CHECK-NEXT: static const int8_t conv1_weight[8] QTRAIN_WEIGHTS = {
// CHECK-NEXT:     1, -2, 3, 0, -1, 2, 0, 1
// CHECK-NEXT: };
// CHECK-NEXT: static float conv1_weight_sram[4] QTRAIN_TRAINABLE;
// CHECK-NEXT: static const int32_t conv1_bias[2] QTRAIN_WEIGHTS = {
// CHECK-NEXT:     100, -50
// CHECK-NEXT: };
// CHECK-NEXT: static const int8_t conv2_weight[6] QTRAIN_WEIGHTS = {
// CHECK-NEXT:     5, -3, -2, 4, 1, 1
// CHECK-NEXT: };
// CHECK-NEXT: static float conv2_weight_sram[6] QTRAIN_TRAINABLE;
// CHECK-NEXT: static const int32_t conv2_bias[3] QTRAIN_WEIGHTS = {
// CHECK-NEXT:     7, -7, 0
// CHECK-NEXT: };
// CHECK-NEXT: static int32_t conv2_bias_sram[3] QTRAIN_TRAINABLE;

// qtrain_init copies channel 0 of conv1's OHWI weight (every 2nd element) and all of conv2's, then
// restores the newest valid checkpoint over them (if there is one).
// CHECK-LABEL: void qtrain_init(void) {
// CHECK-NEXT:      for (int32_t k = 0; k < 4; ++k) { conv1_weight_sram[k] = (float)conv1_weight[(k / 1) * 2 + 0 + k % 1]; }
// CHECK-NEXT:      for (int32_t k = 0; k < 6; ++k) { conv2_weight_sram[k] = (float)conv2_weight[k]; }
// CHECK-NEXT:      for (int32_t k = 0; k < 3; ++k) { conv2_bias_sram[k] = conv2_bias[k]; }
// CHECK-NEXT:      (void)qtrain_checkpoint_restore();
// CHECK-NEXT:      QTRAIN_GUARDS_SET();
// CHECK-NEXT:  }

// Inference reads the trained copies (conv1's master slice through its weight struct, conv2's bias
// from SRAM) and saves no masks.
// CHECK-LABEL: void qtrain_infer(const int8_t *image, float *logits) {
// CHECK:           QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {{.*}}, ((int8_t *)(qtrain_arena + 0)), {{.*}}, &conv0_weight_w, conv0_bias, {{.*}}, ((int8_t *)(qtrain_arena + 0)), NULL));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {{.*}}, ((int8_t *)(qtrain_arena + 0)), {{.*}}, &conv1_weight_w, conv1_bias, {{.*}}, ((int8_t *)(qtrain_arena + 8)), NULL));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {{.*}}, ((int8_t *)(qtrain_arena + 8)), {{.*}}, &conv2_weight_w, conv2_bias_sram, {{.*}}, ((int8_t *)(qtrain_arena + 8)), NULL));
// CHECK-NEXT:      qtrain_dequantize_s8_f32(((int8_t *)(qtrain_arena + 8)), 3, 0x1.0000000000000p-2f, 0, logits);
// CHECK-NEXT:      QTRAIN_GUARDS_CHECK();
// CHECK-NEXT:  }

// The training step, one call per op in the planned order, at the planned offsets.
// CHECK-LABEL: float qtrain_train_step(const int8_t *image, int label) {
// CHECK-NEXT:      float loss = 0.0f;
// CHECK-NEXT:      if (image != ((int8_t *)(qtrain_arena + 0))) {
// CHECK-NEXT:          memmove(((int8_t *)(qtrain_arena + 0)), image, 8);
// CHECK-NEXT:      }
// Forward: conv0 over the image in place and without a mask; conv1 and conv2 write their masks
// (offsets 28 and 36); the channel slice conv1's weight gradient will read.
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {{.*}}, ((int8_t *)(qtrain_arena + 0)), {{.*}}, &conv0_weight_w, conv0_bias, {{.*}}, ((int8_t *)(qtrain_arena + 0)), NULL));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {{.*}}, ((int8_t *)(qtrain_arena + 0)), {{.*}}, &conv1_weight_w, conv1_bias, {{.*}}, ((int8_t *)(qtrain_arena + 24)), ((uint8_t *)(qtrain_arena + 28))));
// CHECK-NEXT:      qtrain_channel_slice_s8(((int8_t *)(qtrain_arena + 0)), 4, 2, 0, 1, ((int8_t *)(qtrain_arena + 32)));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_wrapper_s8(&qtrain_ctx, {{.*}}, ((int8_t *)(qtrain_arena + 24)), {{.*}}, &conv2_weight_w, conv2_bias_sram, {{.*}}, ((int8_t *)(qtrain_arena + 12)), ((uint8_t *)(qtrain_arena + 36))));
// Loss (lr 0.05 = 0x1.99999ap-5f below).
// CHECK-NEXT:      qtrain_dequantize_s8_f32(((int8_t *)(qtrain_arena + 12)), 3, 0x1.0000000000000p-2f, 0, ((float *)(qtrain_arena + 0)));
// CHECK-NEXT:      loss = qtrain_cross_entropy_f32(((float *)(qtrain_arena + 0)), 3, label, NULL);
// CHECK-NEXT:      qtrain_cross_entropy_grad_f32(((float *)(qtrain_arena + 0)), 3, label, ((float *)(qtrain_arena + 12)));
// CHECK-NEXT:      qtrain_requant_grad_f32(((float *)(qtrain_arena + 12)), NULL, 3, 3, {{grad_multiplier[0-9]+}}, 1, ((float *)(qtrain_arena + 12)));
// CHECK-NEXT:      qtrain_requant_grad_f32(((float *)(qtrain_arena + 12)), ((uint8_t *)(qtrain_arena + 36)), 3, 3, {{grad_multiplier[0-9]+}}, 3, ((float *)(qtrain_arena + 12)));
// The fused bias gradient goes to the start of scratch, and its update reads it from there.
// CHECK-NEXT:      qtrain_bias_grad_f32(((float *)(qtrain_arena + 12)), 1, 3, ((float *)qtrain_scratch));
// CHECK-NEXT:      qtrain_sgd_update_s32(conv2_bias_sram, ((float *)qtrain_scratch), 3, 1, 0x1.99999a0000000p-5f, {{grad_scale[0-9]+}}, 3);
// conv2's input gradient reads the old weight, then conv2's weight gradient goes straight into its update.
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_input_grad_wrapper_f32(&qtrain_ctx, {{.*}}, ((float *)(qtrain_arena + 12)), {{.*}}, &conv2_weight_w, {{.*}}, ((float *)(qtrain_arena + 0))));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_weight_grad_sgd_update({{.*}}, ((int8_t *)(qtrain_arena + 24)), {{.*}}, ((float *)(qtrain_arena + 12)), {{.*}}, 0x1.99999a0000000p-5f, {{grad_scale[0-9]+}}, 3, QTRAIN_STORAGE_F32, conv2_weight_sram));
// CHECK-NEXT:      qtrain_requant_grad_f32(((float *)(qtrain_arena + 0)), ((uint8_t *)(qtrain_arena + 28)), 2, 2, {{grad_multiplier[0-9]+}}, 2, ((float *)(qtrain_arena + 0)));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_weight_grad_sgd_update({{.*}}, ((int8_t *)(qtrain_arena + 32)), {{.*}}, ((float *)(qtrain_arena + 0)), {{.*}}, 0x1.99999a0000000p-5f, {{grad_scale[0-9]+}}, 2, QTRAIN_STORAGE_F32, conv1_weight_sram));
// CHECK-NEXT:      QTRAIN_GUARDS_CHECK();
// CHECK-NEXT:      if (qtrain_step_counter[0] < 4294967295u) { qtrain_step_counter[0]++; }
// CHECK-NEXT:      return loss;
// CHECK-NEXT:  }
// The planner's figures, in the order of qtrain_memory_report_t: peak, arena, trainable, scratch, flash.
// CHECK:       const qtrain_memory_report_t qtrain_memory = {
// CHECK-NEXT:      148u, 40u, 52u, 56u, 160u,
// CHECK-NEXT:  };
// The checkpointed state: the step counter, then each trainable SRAM copy (bytes: fp32 slice, fp32,
// int32), under the model's fingerprint.
// CHECK:       static const qtrain_state_buffer_t qtrain_state_buffers[4] = {
// CHECK-NEXT:      {qtrain_step_counter, 4u}, /* step */
// CHECK-NEXT:      {conv1_weight_sram, 16u}, /* conv1.weight */
// CHECK-NEXT:      {conv2_weight_sram, 24u}, /* conv2.weight */
// CHECK-NEXT:      {conv2_bias_sram, 12u}, /* conv2.bias */
// CHECK-NEXT:  };
// CHECK:       const qtrain_state_desc_t qtrain_state = {
// CHECK-NEXT:      0x{{[0-9a-f]+}}u, qtrain_step_counter, 4u, qtrain_state_buffers,
// CHECK-NEXT:  };
// CHECK:       int qtrain_checkpoint_save(void) {
// CHECK-NEXT:      return qtrain_checkpoint_write(&qtrain_state);
// CHECK:       int qtrain_checkpoint_restore(void) {
// CHECK-NEXT:      return qtrain_checkpoint_read(&qtrain_state);

// -----

// A one-conv classifier after qtrain-autodiff{weight-storage=i8} and qtrain-plan-memory without
// qtrain-reorder: every gradient has an arena buffer, the updates come last, and the int8 weight is
// updated in place in its SRAM copy.
builtin.module attributes {qtrain.memory = {peak_sram_bytes = 96 : i64, arena_bytes = 52 : i64, trainable_bytes = 20 : i64, scratch_bytes = 24 : i64, flash_bytes = 84 : i64, peak_op = "@forward #0 qtrain.get_param -> %w"}} {
  qtrain.param @fc.weight trainable = dense<[[[[5, -3]]], [[[-2, 4]]], [[[1, 1]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @fc.bias trainable = dense<[7, -7, 0]> : tensor<3xi32>
  func.func @forward(%image: tensor<1x1x1x2xi8>) -> tensor<1x3xi8> attributes {qtrain.arg_offsets = array<i64: 48>, qtrain.arena_bytes = 52 : i64} {
    %w = qtrain.get_param @fc.weight : tensor<3x1x1x2xi8>
    %b = qtrain.get_param @fc.bias : tensor<3xi32>
    %y = qtrain.conv2d %image, %w, %b {qtrain.offsets = array<i64: 48>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %logits = qtrain.reshape %y {qtrain.offsets = array<i64: 48>} : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %logits : tensor<1x3xi8>
  }
  func.func @train_step(%image: tensor<1x1x1x2xi8>, %label: i32) -> f32 attributes {qtrain.arg_offsets = array<i64: 48, -1>, qtrain.arena_bytes = 52 : i64} {
    %w = qtrain.get_param @fc.weight : tensor<3x1x1x2xi8>
    %b = qtrain.get_param @fc.bias : tensor<3xi32>
    %y, %mask = qtrain.conv2d %image, %w, %b {qtrain.offsets = array<i64: 12, 16>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>, tensor<1x1x1x3xi1>
    %logits = qtrain.reshape %y {qtrain.offsets = array<i64: 12>} : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    %logits_real = qtrain.dequantize %logits {qtrain.offsets = array<i64: 0>, input_q = #qtrain.quant<scales = [0.25], zp = 0>} : tensor<1x3xi8> -> tensor<1x3xf32>
    %loss = qtrain.cross_entropy %logits_real, %label : tensor<1x3xf32> -> f32
    %g_logits = qtrain.cross_entropy_grad %logits_real, %label {qtrain.offsets = array<i64: 24>} : tensor<1x3xf32> -> tensor<1x3xf32>
    %g_y = qtrain.requant_grad %g_logits {qtrain.offsets = array<i64: 24>, multiplier = #qtrain.f32<[0.25]>} : tensor<1x3xf32> -> tensor<1x3xf32>
    %g_y4 = qtrain.reshape %g_y {qtrain.offsets = array<i64: 24>} : tensor<1x3xf32> -> tensor<1x1x1x3xf32>
    %g_acc = qtrain.requant_grad %g_y4 mask %mask {qtrain.offsets = array<i64: 24>, multiplier = #qtrain.f32<[1.0, 0.5, 0.25]>} : tensor<1x1x1x3xf32>, tensor<1x1x1x3xi1> -> tensor<1x1x1x3xf32>
    %g_fc_bias = qtrain.bias_grad %g_acc {qtrain.offsets = array<i64: 36>} : tensor<1x1x1x3xf32> -> tensor<3xf32>
    %g_fc_weight = qtrain.conv2d_weight_grad %image, %g_acc {qtrain.offsets = array<i64: 0>, strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x1x1x2xi8>, tensor<1x1x1x3xf32>) -> tensor<3x1x1x2xf32>
    qtrain.sgd_update @fc.weight, %g_fc_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[4.0, 16.0, 64.0]>} : tensor<3x1x1x2xf32>
    qtrain.sgd_update @fc.bias, %g_fc_bias {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 256.0]>} : tensor<3xf32>
    func.return %loss : f32
  }
}

// CHECK:      static uint8_t qtrain_arena[52] QTRAIN_ARENA;
// CHECK-NEXT: static uint8_t qtrain_scratch[24] QTRAIN_SCRATCH;
// CHECK:      static int8_t fc_weight_sram[6] QTRAIN_TRAINABLE;
// CHECK:      static int32_t fc_bias_sram[3] QTRAIN_TRAINABLE;
// CHECK-LABEL: float qtrain_train_step(const int8_t *image, int label) {
// CHECK:           qtrain_bias_grad_f32(((float *)(qtrain_arena + 24)), 1, 3, ((float *)(qtrain_arena + 36)));
// CHECK-NEXT:      QTRAIN_CHECK(qtrain_conv2d_weight_grad_f32({{.*}}, ((int8_t *)(qtrain_arena + 48)), {{.*}}, ((float *)(qtrain_arena + 24)), {{.*}}, ((float *)(qtrain_arena + 0))));
// CHECK-NEXT:      qtrain_sgd_update_s8(fc_weight_sram, ((float *)(qtrain_arena + 0)), 3, 2, 0x1.99999a0000000p-5f, {{grad_scale[0-9]+}}, 3);
// CHECK-NEXT:      qtrain_sgd_update_s32(fc_bias_sram, ((float *)(qtrain_arena + 36)), 3, 1, 0x1.99999a0000000p-5f, {{grad_scale[0-9]+}}, 3);
// CHECK-NEXT:      QTRAIN_GUARDS_CHECK();
// CHECK-NEXT:      if (qtrain_step_counter[0] < 4294967295u) { qtrain_step_counter[0]++; }
// CHECK-NEXT:      return loss;
// The int8 weight copy is 6 bytes (the checkpoint pads it to 8).
// CHECK:       {fc_weight_sram, 6u}, /* fc.weight */

// -----

// Not planned: -t c needs the offsets.
builtin.module {
  func.func @forward() {
    func.return
  }
}
// CHECK: the module has no memory plan; run qtrain-plan-memory before -t c
