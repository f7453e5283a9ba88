// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p qtrain-autodiff | filecheck %s
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{qas=false lr=0.1 bias-lr=0.01 weight-storage=i8}' | filecheck %s --check-prefix=PLAIN
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p qtrain-autodiff --print-op-generic | qtrain-opt | filecheck %s
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{weight-storage=i16}' | filecheck %s --check-prefix=I16
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{weight-storage=i8-nearest}' | filecheck %s --check-prefix=NEAREST
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{lr=0.02 bias-lr=0.002 warmup-steps=10 steps=500 final-lr-ratio=0.25 momentum=0.9}' | filecheck %s --check-prefix=RECIPE
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{warmup-steps=0 steps=0}' | filecheck %s --check-prefix=CONST

// Every parameter becomes trainable; weights get an fp32 master copy by default.
// CHECK:      qtrain.param @conv0.weight trainable storage(f32) = dense<
// CHECK-NEXT: qtrain.param @conv0.bias trainable = dense<[100, -50]> : tensor<2xi32>
// CHECK:      func.func @forward(
// CHECK:      func.func @train_step(%image: tensor<1x2x2x2xi8>, %label: i32) -> f32 {

// Forward: each conv also saves its 1-bit clamp mask.
// CHECK:        %h, %[[M0:.*]] = qtrain.conv2d %image, %w0, %b0 {{.*}} -> tensor<1x1x1x2xi8>, tensor<1x1x1x2xi1>
// CHECK:        %y, %[[M1:.*]] = qtrain.conv2d %h, %w1, %b1 {{.*}} -> tensor<1x1x1x3xi8>, tensor<1x1x1x3xi1>
// CHECK-NEXT:   %logits = qtrain.reshape %y
// Loss on the dequantized logits.
// CHECK-NEXT:   %logits_real = qtrain.dequantize %logits {input_q = #qtrain.quant<scales = [0.25], zp = 0>}
// CHECK-NEXT:   %loss = qtrain.cross_entropy %logits_real, %label : tensor<1x3xf32> -> f32
// Backward, in reverse: dL/dlogits, then into the int8 domain (x s_out = 0.25), through the reshape.
// CHECK-NEXT:   %[[GL:.*]] = qtrain.cross_entropy_grad %logits_real, %label : tensor<1x3xf32> -> tensor<1x3xf32>
// CHECK-NEXT:   %[[GQ:.*]] = qtrain.requant_grad %[[GL]] {multiplier = #qtrain.f32<[0.25]>}
// CHECK-NEXT:   %[[GY:.*]] = qtrain.reshape %[[GQ]] : tensor<1x3xf32> -> tensor<1x1x1x3xf32>
// Classifier: masked requantization gradient with s_x * s_w[c] / s_y per channel, then bias, weight, input.
// CHECK-NEXT:   %g_acc = qtrain.requant_grad %[[GY]] mask %[[M1]] {multiplier = #qtrain.f32<[1.0, 0.5, 0.25]>}
// CHECK-NEXT:   %g_conv1_bias = qtrain.bias_grad %g_acc : tensor<1x1x1x3xf32> -> tensor<3xf32>
// CHECK-NEXT:   %g_conv1_weight = qtrain.conv2d_weight_grad %h, %g_acc {{.*}}input_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x1x1x2xi8>, tensor<1x1x1x3xf32>) -> tensor<3x1x1x2xf32>
// CHECK-NEXT:   %[[GH:.*]] = qtrain.conv2d_input_grad %g_acc, %w1 {{.*}} : (tensor<1x1x1x3xf32>, tensor<3x1x1x2xi8>) -> tensor<1x1x1x2xf32>
// First conv: no input gradient (the image is not trainable; the CHECK-NEXT chain leaves no room for one).
// CHECK-NEXT:   %g_acc_1 = qtrain.requant_grad %[[GH]] mask %[[M0]] {multiplier = #qtrain.f32<[0.25, 0.125]>}
// CHECK-NEXT:   %g_conv0_bias = qtrain.bias_grad %g_acc_1
// CHECK-NEXT:   %g_conv0_weight = qtrain.conv2d_weight_grad %image, %g_acc_1
// This step's learning-rate factor (the default recipe's provisional schedule: 50 warm-up steps, cosine
// over 1000 to 0.1), then the updates at the end (naive schedule), each scaled by the factor, with QAS
// factors s_w^-2 and (s_x * s_w)^-2; no momentum by default.
// CHECK-NEXT:   %lr_factor = qtrain.lr_schedule {warmup_steps = 50 : i64, steps = 1000 : i64, final_ratio = 1.000000e-01 : f32} : f32
// CHECK-NEXT:   qtrain.sgd_update @conv0.weight, %g_conv0_weight factor %lr_factor {lr = 1.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>} : tensor<2x2x1x2xf32>
// CHECK-NEXT:   qtrain.sgd_update @conv0.bias, %g_conv0_bias factor %lr_factor {lr = 1.000000e-03 : f32, grad_scale = #qtrain.f32<[64.0, 256.0]>} : tensor<2xf32>
// CHECK-NEXT:   qtrain.sgd_update @conv1.weight, %g_conv1_weight factor %lr_factor {lr = 1.000000e-02 : f32, grad_scale = #qtrain.f32<[4.0, 16.0, 64.0]>}
// CHECK-NEXT:   qtrain.sgd_update @conv1.bias, %g_conv1_bias factor %lr_factor {lr = 1.000000e-03 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 256.0]>}
// CHECK-NEXT:   func.return %loss : f32

// Without QAS: grad_scale 1; separate bias learning rate; int8 weights updated in place, rounded
// stochastically (int32 biases: to nearest).
// PLAIN:      qtrain.param @conv0.weight trainable = dense<
// PLAIN:      qtrain.sgd_update @conv0.weight, %g_conv0_weight factor %lr_factor {lr = 1.000000e-01 : f32, grad_scale = #qtrain.f32<[1.0]>, stochastic}
// PLAIN-NEXT: qtrain.sgd_update @conv0.bias, %g_conv0_bias factor %lr_factor {lr = 1.000000e-02 : f32, grad_scale = #qtrain.f32<[1.0]>}

// The 16-bit fixed-point master: storage(i16), always rounded stochastically; i8-nearest: int8 in place,
// rounded to nearest.
// I16:        qtrain.param @conv0.weight trainable storage(i16) = dense<
// I16:        qtrain.sgd_update @conv0.weight, %g_conv0_weight factor %lr_factor {{{.*}}, stochastic}
// I16-NEXT:   qtrain.sgd_update @conv0.bias, %g_conv0_bias factor %lr_factor {lr = 1.000000e-03 : f32, grad_scale = #qtrain.f32<[64.0, 256.0]>}
// NEAREST:    qtrain.param @conv0.weight trainable = dense<
// NEAREST:    qtrain.sgd_update @conv0.weight, %g_conv0_weight factor %lr_factor {lr = 1.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>}
// NEAREST-NOT: stochastic

// The recipe's options: base rates, warm-up, horizon and final ratio on the schedule, which weights and
// biases share; momentum on every update (each keeps a velocity).
// RECIPE:      %lr_factor = qtrain.lr_schedule {warmup_steps = 10 : i64, steps = 500 : i64, final_ratio = 2.500000e-01 : f32} : f32
// RECIPE-NEXT: qtrain.sgd_update @conv0.weight, %g_conv0_weight factor %lr_factor {lr = 2.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0]>, momentum = 9.000000e-01 : f32}
// RECIPE-NEXT: qtrain.sgd_update @conv0.bias, %g_conv0_bias factor %lr_factor {lr = 2.000000e-03 : f32, grad_scale = #qtrain.f32<[64.0, 256.0]>, momentum = 9.000000e-01 : f32}
// RECIPE-NEXT: qtrain.sgd_update @conv1.weight, %g_conv1_weight factor %lr_factor {lr = 2.000000e-02 : f32, {{.*}}, momentum = 9.000000e-01 : f32}
// RECIPE-NEXT: qtrain.sgd_update @conv1.bias, %g_conv1_bias factor %lr_factor {lr = 2.000000e-03 : f32, {{.*}}, momentum = 9.000000e-01 : f32}

// A constant rate is a schedule without warm-up or decay (the step counter still counts).
// CONST:      %lr_factor = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 0 : i64, final_ratio = 1.000000e-01 : f32} : f32
// CONST-NOT:  momentum
