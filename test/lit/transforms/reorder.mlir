// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -p qtrain-reorder | filecheck %s
// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -p 'qtrain-reorder{fuse-updates=false}' | filecheck %s --check-prefix=NOFUSE

// The three-conv network of dead_gradient_elim.mlir after that pass (conv1's weight on channel 0 and
// the classifier conv2 train): the naive schedule of qtrain-autodiff, every update after the whole
// backward pass.

builtin.module {
  qtrain.param @conv0.weight = dense<[[[[2, -1]]], [[[1, 3]]]]> : tensor<2x1x1x2xi8>
  qtrain.param @conv0.bias = dense<[4, -4]> : tensor<2xi32>
  qtrain.param @conv1.weight trainable storage(f32) channels [0, 1] = dense<[[[[1, -2]], [[3, 0]]], [[[-1, 2]], [[0, 1]]]]> : tensor<2x2x1x2xi8>
  qtrain.param @conv1.bias = dense<[100, -50]> : tensor<2xi32>
  qtrain.param @conv2.weight trainable storage(f32) = dense<[[[[5, -3]]], [[[-2, 4]]], [[[1, 1]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @conv2.bias trainable = dense<[7, -7, 0]> : tensor<3xi32>
  func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %x0 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x2x2xi8>
    %saved_conv1_weight = qtrain.channel_slice %x0 {start = 0 : i64, stop = 1 : i64} : tensor<1x2x2x2xi8> -> tensor<1x2x2x1xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<2x2x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<2xi32>
    %h, %mask1 = qtrain.conv2d %x0, %w1, %b1 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x2x1x2xi8>, tensor<2xi32>) -> tensor<1x1x1x2xi8>, tensor<1x1x1x2xi1>
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
    %g_conv2_bias = qtrain.bias_grad %g_acc : tensor<1x1x1x3xf32> -> tensor<3xf32>
    %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x1x1x2xi8>, tensor<1x1x1x3xf32>) -> tensor<3x1x1x2xf32>
    %3 = qtrain.conv2d_input_grad %g_acc, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x1x1x3xf32>, tensor<3x1x1x2xi8>) -> tensor<1x1x1x2xf32>
    %g_acc_1 = qtrain.requant_grad %3 mask %mask1 {multiplier = #qtrain.f32<[0.25, 0.125]>} : tensor<1x1x1x2xf32>, tensor<1x1x1x2xi1> -> tensor<1x1x1x2xf32>
    %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, channels = array<i64: 0, 1>} : (tensor<1x2x2x1xi8>, tensor<1x1x1x2xf32>) -> tensor<2x2x1x1xf32>
    qtrain.sgd_update @conv1.weight, %g_conv1_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>} : tensor<2x2x1x1xf32>
    qtrain.sgd_update @conv2.weight, %g_conv2_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[4.0, 16.0, 64.0]>} : tensor<3x1x1x2xf32>
    qtrain.sgd_update @conv2.bias, %g_conv2_bias {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 256.0]>} : tensor<3xf32>
    func.return %loss : f32
  }
}

// Each update moves up to right after its gradient, and a weight or bias gradient whose only user is
// its update is marked qtrain.fused_update (computed straight into the update, no arena buffer).
// conv2's weight update must wait for conv2d_input_grad, which still reads the old %w2: running
// %g_conv2_weight first would free %h sooner, but read-before-update wins.
// CHECK-LABEL: func.func @train_step
// CHECK:       %y, %mask2 = qtrain.conv2d %h, %w2, %b2
// CHECK:       %g_acc = qtrain.requant_grad %{{.*}} mask %mask2
// CHECK-NEXT:  %g_conv2_bias = qtrain.bias_grad %g_acc {qtrain.fused_update} :
// CHECK-NEXT:  qtrain.sgd_update @conv2.bias, %g_conv2_bias
// CHECK-NEXT:  %[[GH:.*]] = qtrain.conv2d_input_grad %g_acc, %w2 {strides
// CHECK-NEXT:  %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {qtrain.fused_update, strides
// CHECK-NEXT:  qtrain.sgd_update @conv2.weight, %g_conv2_weight
// CHECK-NEXT:  %g_acc_1 = qtrain.requant_grad %[[GH]] mask %mask1 {multiplier
// CHECK-NEXT:  %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {qtrain.fused_update, strides
// CHECK-NEXT:  qtrain.sgd_update @conv1.weight, %g_conv1_weight
// CHECK-NEXT:  func.return %loss : f32

// fuse-updates=false: the updates still move up to their gradients, but no gradient is
// marked (each attribute dictionary starts with the op's own attributes); each gradient keeps an arena
// buffer until its update.
// NOFUSE-LABEL: func.func @train_step
// NOFUSE:       %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {strides
// NOFUSE-NEXT:  qtrain.sgd_update @conv1.weight, %g_conv1_weight
// NOFUSE-NEXT:  %g_conv2_bias = qtrain.bias_grad %g_acc :
// NOFUSE-NEXT:  qtrain.sgd_update @conv2.bias, %g_conv2_bias
// NOFUSE-NEXT:  %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {strides
// NOFUSE-NEXT:  qtrain.sgd_update @conv2.weight, %g_conv2_weight
// NOFUSE-NEXT:  func.return %loss : f32

// -----

// Nothing to schedule before qtrain-autodiff has made @train_step.
builtin.module {
  func.func @forward() {
    func.return
  }
}
// CHECK: qtrain-reorder: no func.func @train_step; run qtrain-autodiff first
// NOFUSE: qtrain-reorder: no func.func @train_step; run qtrain-autodiff first
