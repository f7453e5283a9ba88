// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -p qtrain-dead-gradient-elim | filecheck %s

// A three-conv network (conv0 1x1, conv1 2x1 stride 2, classifier conv2 1x1) as qtrain-autodiff and
// qtrain-sparse-update leave it, with a per-layer scheme (n_bias_update 0, manual_weight_idx [1],
// weight_update_ratio [0.5]) that trains conv1's weight on input channel 0 (forward saves that slice
// of %x0) and the classifier; conv0 and conv1's bias are frozen, their updates already gone. @forward
// is left out (this pass only edits @train_step) and the masks are named %maskN for reading. One line
// added by hand: %saved_conv0_weight, a saved slice of the image that only conv0's (dead) weight
// gradient reads, as a narrowed layer whose update was later dropped would leave it.
builtin.module {
  qtrain.param @conv0.weight = dense<[[[[2, -1]]], [[[1, 3]]]]> : tensor<2x1x1x2xi8>
  qtrain.param @conv0.bias = dense<[4, -4]> : tensor<2xi32>
  qtrain.param @conv1.weight trainable storage(f32) channels [0, 1] = dense<[[[[1, -2]], [[3, 0]]], [[[-1, 2]], [[0, 1]]]]> : tensor<2x2x1x2xi8>
  qtrain.param @conv1.bias = dense<[100, -50]> : tensor<2xi32>
  qtrain.param @conv2.weight trainable storage(f32) = dense<[[[[5, -3]]], [[[-2, 4]]], [[[1, 1]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @conv2.bias trainable = dense<[7, -7, 0]> : tensor<3xi32>
  func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 {
    %saved_conv0_weight = qtrain.channel_slice %image {start = 0 : i64, stop = 1 : i64} : tensor<1x2x2x2xi8> -> tensor<1x2x2x1xi8>
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %x0, %mask0 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x2x2xi8>, tensor<1x2x2x2xi1>
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
    %3 = qtrain.cross_entropy_grad %logits_real, %label : tensor<1x3xf32> -> tensor<1x3xf32>
    %4 = qtrain.requant_grad %3 {multiplier = #qtrain.f32<[0.25]>} : tensor<1x3xf32> -> tensor<1x3xf32>
    %5 = qtrain.reshape %4 : tensor<1x3xf32> -> tensor<1x1x1x3xf32>
    %g_acc = qtrain.requant_grad %5 mask %mask2 {multiplier = #qtrain.f32<[1.0, 0.5, 0.25]>} : tensor<1x1x1x3xf32>, tensor<1x1x1x3xi1> -> tensor<1x1x1x3xf32>
    %g_conv2_bias = qtrain.bias_grad %g_acc : tensor<1x1x1x3xf32> -> tensor<3xf32>
    %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x1x1x2xi8>, tensor<1x1x1x3xf32>) -> tensor<3x1x1x2xf32>
    %6 = qtrain.conv2d_input_grad %g_acc, %w2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x1x1x3xf32>, tensor<3x1x1x2xi8>) -> tensor<1x1x1x2xf32>
    %g_acc_1 = qtrain.requant_grad %6 mask %mask1 {multiplier = #qtrain.f32<[0.25, 0.125]>} : tensor<1x1x1x2xf32>, tensor<1x1x1x2xi1> -> tensor<1x1x1x2xf32>
    %g_conv1_bias = qtrain.bias_grad %g_acc_1 : tensor<1x1x1x2xf32> -> tensor<2xf32>
    %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, channels = array<i64: 0, 1>} : (tensor<1x2x2x1xi8>, tensor<1x1x1x2xf32>) -> tensor<2x2x1x1xf32>
    %7 = qtrain.conv2d_input_grad %g_acc_1, %w1 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x1x1x2xf32>, tensor<2x2x1x2xi8>) -> tensor<1x2x2x2xf32>
    %g_acc_2 = qtrain.requant_grad %7 mask %mask0 {multiplier = #qtrain.f32<[0.25, 0.125]>} : tensor<1x2x2x2xf32>, tensor<1x2x2x2xi1> -> tensor<1x2x2x2xf32>
    %g_conv0_bias = qtrain.bias_grad %g_acc_2 : tensor<1x2x2x2xf32> -> tensor<2xf32>
    %g_conv0_weight = qtrain.conv2d_weight_grad %saved_conv0_weight, %g_acc_2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, channels = array<i64: 0, 1>} : (tensor<1x2x2x1xi8>, tensor<1x2x2x2xf32>) -> tensor<2x1x1x1xf32>
    qtrain.sgd_update @conv1.weight, %g_conv1_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>} : tensor<2x2x1x1xf32>
    qtrain.sgd_update @conv2.weight, %g_conv2_weight {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[4.0, 16.0, 64.0]>} : tensor<3x1x1x2xf32>
    qtrain.sgd_update @conv2.bias, %g_conv2_bias {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 256.0]>} : tensor<3xf32>
    func.return %loss : f32
  }
}

// Forward: the slice nobody needs is gone; conv0 loses its mask (no gradient reaches conv0);
// conv1 and conv2 keep theirs (their requant_grad reads them); conv1's saved slice stays.
// The CHECK-NEXT chain pins every line of the result: nothing else is left.
// CHECK-LABEL: func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 {
// CHECK-NEXT:  %w0 = qtrain.get_param @conv0.weight
// CHECK-NEXT:  %b0 = qtrain.get_param @conv0.bias
// CHECK-NEXT:  %x0 = qtrain.conv2d %image, %w0, %b0 {{.*}} -> tensor<1x2x2x2xi8>{{$}}
// CHECK-NEXT:  %saved_conv1_weight = qtrain.channel_slice %x0 {start = 0 : i64, stop = 1 : i64}
// CHECK-NEXT:  %w1 = qtrain.get_param @conv1.weight
// CHECK-NEXT:  %b1 = qtrain.get_param @conv1.bias
// CHECK-NEXT:  %h, %mask1 = qtrain.conv2d %x0, %w1, %b1 {{.*}} -> tensor<1x1x1x2xi8>, tensor<1x1x1x2xi1>
// CHECK-NEXT:  %w2 = qtrain.get_param @conv2.weight
// CHECK-NEXT:  %b2 = qtrain.get_param @conv2.bias
// CHECK-NEXT:  %y, %mask2 = qtrain.conv2d %h, %w2, %b2 {{.*}} -> tensor<1x1x1x3xi8>, tensor<1x1x1x3xi1>
// The loss and everything the three updates read stay, in order.
// CHECK-NEXT:  %logits = qtrain.reshape %y
// CHECK-NEXT:  %logits_real = qtrain.dequantize %logits
// CHECK-NEXT:  %loss = qtrain.cross_entropy %logits_real, %label
// CHECK-NEXT:  %[[GL:.*]] = qtrain.cross_entropy_grad %logits_real, %label
// CHECK-NEXT:  %[[GQ:.*]] = qtrain.requant_grad %[[GL]] {multiplier
// CHECK-NEXT:  %[[GY:.*]] = qtrain.reshape %[[GQ]]
// CHECK-NEXT:  %g_acc = qtrain.requant_grad %[[GY]] mask %mask2
// CHECK-NEXT:  %g_conv2_bias = qtrain.bias_grad %g_acc
// CHECK-NEXT:  %g_conv2_weight = qtrain.conv2d_weight_grad %h, %g_acc
// CHECK-NEXT:  %[[GH:.*]] = qtrain.conv2d_input_grad %g_acc, %w2
// CHECK-NEXT:  %g_acc_1 = qtrain.requant_grad %[[GH]] mask %mask1
// Backward below conv1, the first trainable layer, is gone: no bias gradient for the frozen bias, no
// input gradient dL/dx0, nothing of conv0's.
// CHECK-NEXT:  %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_1 {{.*}}channels = array<i64: 0, 1>}
// CHECK-NEXT:  qtrain.sgd_update @conv1.weight, %g_conv1_weight
// CHECK-NEXT:  qtrain.sgd_update @conv2.weight, %g_conv2_weight
// CHECK-NEXT:  qtrain.sgd_update @conv2.bias, %g_conv2_bias
// CHECK-NEXT:  func.return %loss : f32

// -----

// Nothing to prune before qtrain-autodiff has made @train_step.
builtin.module {
  func.func @forward() {
    func.return
  }
}
// CHECK: qtrain-dead-gradient-elim: no func.func @train_step; run qtrain-autodiff first
