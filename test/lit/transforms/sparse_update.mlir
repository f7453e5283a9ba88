// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="%S/../Inputs/tiny_schemes.json#tiny/half"},qtrain-dead-gradient-elim' | filecheck %s
// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="%S/../Inputs/tiny_schemes.json#tiny/half"},qtrain-dead-gradient-elim' | filecheck %s --check-prefix=DEAD
// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=bias-only},qtrain-dead-gradient-elim' | filecheck %s --check-prefix=BIAS
// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=last-k k=1},qtrain-dead-gradient-elim' | filecheck %s --check-prefix=LAST1
// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="last-k=1"},qtrain-dead-gradient-elim' | filecheck %s --check-prefix=LAST1
// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=full},qtrain-dead-gradient-elim' | filecheck %s --check-prefix=FULL

// tiny/half: bias of the last backbone conv (conv2), depthwise conv1's weight on half its channels,
// and the classifier. conv0 is frozen, so nothing flows into the residual's shortcut or below conv1.
// CHECK:      qtrain.param @conv0.weight = dense<
// CHECK-NEXT: qtrain.param @conv0.bias = dense<
// CHECK-NEXT: qtrain.param @conv1.weight trainable storage(f32) channels [0, 2] depthwise = dense<
// CHECK-NEXT: qtrain.param @conv1.bias = dense<
// CHECK-NEXT: qtrain.param @conv2.weight = dense<
// CHECK-NEXT: qtrain.param @conv2.bias trainable = dense<
// CHECK-NEXT: qtrain.param @conv3.weight trainable storage(f32) = dense<
// CHECK-NEXT: qtrain.param @conv3.bias trainable = dense<
// CHECK:      func.func @train_step
// Forward keeps only the masks a gradient reads, and saves channels 0..1 of conv1's input.
// CHECK:        %x1 = qtrain.conv2d %image, %w0, %b0 {{.*}} -> tensor<1x4x4x4xi8>{{$}}
// CHECK-NEXT:   %saved_conv1_weight = qtrain.channel_slice %x1 {start = 0 : i64, stop = 2 : i64} : tensor<1x4x4x4xi8> -> tensor<1x4x4x2xi8>
// CHECK:        %x2, %{{.*}} = qtrain.conv2d %x1, %w1, %b1
// CHECK:        %x4, %{{.*}} = qtrain.add %x3, %x1
// Backward: the shortcut's gradient, conv2's weight gradient and conv1's input gradient are gone.
// CHECK:        %g_conv2_bias = qtrain.bias_grad
// CHECK-NOT:    %g_conv2_weight
// CHECK:        %g_conv1_weight = qtrain.conv2d_weight_grad %saved_conv1_weight, %g_acc_2 {{.*}}channels = array<i64: 0, 2>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x4xf32>) -> tensor<2x3x3x1xf32>
// CHECK-NEXT:   %lr_factor = qtrain.lr_schedule
// The narrowed update keeps its schedule factor, learning rate and QAS factors of the kept channels.
// CHECK-NEXT:   qtrain.sgd_update @conv1.weight, %g_conv1_weight factor %lr_factor {lr = 1.000000e-02 : f32, grad_scale = #qtrain.f32<[2500.0, 2500.0]>} : tensor<2x3x3x1xf32>
// CHECK-NEXT:   qtrain.sgd_update @conv2.bias
// CHECK-NEXT:   qtrain.sgd_update @conv3.weight
// CHECK-NEXT:   qtrain.sgd_update @conv3.bias
// CHECK-NEXT:   func.return %loss : f32

// Nowhere in @train_step: the shortcut's gradient joining conv1's (grad_accumulate), conv1's input
// gradient, conv2's weight gradient, anything of conv0's.
// DEAD-LABEL: func.func @train_step
// DEAD-NOT:   qtrain.grad_accumulate
// DEAD-NOT:   qtrain.conv2d_input_grad %{{.*}}, %w1
// DEAD-NOT:   %g_conv2_weight
// DEAD-NOT:   %g_conv0_
// DEAD:       func.return %loss : f32

// bias-only: every bias and the classifier weight; no weight gradient but the classifier's.
// BIAS:     qtrain.param @conv0.weight = dense<
// BIAS:     qtrain.param @conv0.bias trainable = dense<
// BIAS:     qtrain.param @conv3.weight trainable storage(f32) = dense<
// BIAS-COUNT-1: qtrain.conv2d_weight_grad
// BIAS-NOT: qtrain.conv2d_weight_grad
// BIAS:     qtrain.sgd_update @conv0.bias
// BIAS:     qtrain.sgd_update @conv1.bias
// BIAS:     qtrain.sgd_update @conv2.bias
// BIAS:     qtrain.sgd_update @conv3.weight
// BIAS:     qtrain.sgd_update @conv3.bias

// last-k=1: only the classifier learns; the backward is three ops long.
// LAST1:      qtrain.param @conv3.weight trainable storage(f32) = dense<
// LAST1:      %loss = qtrain.cross_entropy
// LAST1-NEXT: qtrain.cross_entropy_grad
// LAST1-NEXT: qtrain.requant_grad
// LAST1-NEXT: qtrain.reshape
// LAST1-NEXT: %g_acc = qtrain.requant_grad
// LAST1-NEXT: qtrain.bias_grad
// LAST1-NEXT: qtrain.conv2d_weight_grad %x5, %g_acc
// LAST1-NEXT: %lr_factor = qtrain.lr_schedule
// LAST1-NEXT: qtrain.sgd_update @conv3.weight
// LAST1-NEXT: qtrain.sgd_update @conv3.bias
// LAST1-NEXT: func.return

// full: everything stays (four weight gradients, eight updates), conv0 still has no input gradient.
// FULL:         func.func @train_step
// FULL-COUNT-4: qtrain.conv2d_weight_grad
// FULL-NOT:     qtrain.conv2d_weight_grad
// FULL-NOT:     qtrain.conv2d_input_grad %{{.*}}, %w0
// FULL-COUNT-8: qtrain.sgd_update
// FULL-NEXT:    func.return %loss : f32
