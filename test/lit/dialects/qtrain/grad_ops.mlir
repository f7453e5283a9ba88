// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

builtin.module {
  qtrain.param @w trainable storage(f32) channels [0, 2] = dense<1> : tensor<3x1x1x4xi8>
  qtrain.param @dw trainable channels [1, 3] depthwise = dense<1> : tensor<4x3x3x1xi8>
  qtrain.param @b trainable = dense<0> : tensor<3xi32>
  func.func @f(%x: tensor<1x4x4x4xi8>, %g: tensor<1x4x4x3xf32>, %m: tensor<1x4x4x3xi1>, %gd: tensor<1x4x4x4xf32>, %l: tensor<1x3xf32>, %label: i32) {
    %ce = qtrain.cross_entropy_grad %l, %label : tensor<1x3xf32> -> tensor<1x3xf32>
    %acc = qtrain.requant_grad %g mask %m {multiplier = #qtrain.f32<[0.5, 0.25, 2.0]>} : tensor<1x4x4x3xf32>, tensor<1x4x4x3xi1> -> tensor<1x4x4x3xf32>
    %acc2 = qtrain.requant_grad %acc {multiplier = #qtrain.f32<[0.5]>} : tensor<1x4x4x3xf32> -> tensor<1x4x4x3xf32>
    %w = qtrain.get_param @w : tensor<3x1x1x4xi8>
    %gx = qtrain.conv2d_input_grad %acc, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x4x4x3xf32>, tensor<3x1x1x4xi8>) -> tensor<1x4x4x4xf32>
    %xs = qtrain.channel_slice %x {start = 0 : i64, stop = 2 : i64} : tensor<1x4x4x4xi8> -> tensor<1x4x4x2xi8>
    %gw = qtrain.conv2d_weight_grad %xs, %acc {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, channels = array<i64: 0, 2>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x3xf32>) -> tensor<3x1x1x2xf32>
    %xd = qtrain.channel_slice %x {start = 1 : i64, stop = 3 : i64} : tensor<1x4x4x4xi8> -> tensor<1x4x4x2xi8>
    %gdw = qtrain.conv2d_weight_grad %xd, %gd {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 4 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, channels = array<i64: 1, 3>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x4xf32>) -> tensor<2x3x3x1xf32>
    %gb = qtrain.bias_grad %acc : tensor<1x4x4x3xf32> -> tensor<3xf32>
    %sum = qtrain.grad_accumulate %gx, %gd : tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32> -> tensor<1x4x4x4xf32>
    %pool = qtrain.avgpool_grad %acc2 {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>} : tensor<1x4x4x3xf32> -> tensor<1x8x8x3xf32>
    qtrain.sgd_update @w, %gw {lr = 0.05 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 4.0]>} : tensor<3x1x1x2xf32>
    qtrain.sgd_update @dw, %gdw {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<2x3x3x1xf32>
    qtrain.sgd_update @b, %gb {lr = 0.01 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3xf32>
    func.return
  }
}
// CHECK:      qtrain.param @w trainable storage(f32) channels [0, 2] = dense<1> : tensor<3x1x1x4xi8>
// CHECK-NEXT: qtrain.param @dw trainable channels [1, 3] depthwise = dense<1> : tensor<4x3x3x1xi8>
// CHECK:      %ce = qtrain.cross_entropy_grad %l, %label : tensor<1x3xf32> -> tensor<1x3xf32>
// CHECK-NEXT: %acc = qtrain.requant_grad %g mask %m {multiplier = #qtrain.f32<[0.5, 0.25, 2.0]>} : tensor<1x4x4x3xf32>, tensor<1x4x4x3xi1> -> tensor<1x4x4x3xf32>
// CHECK-NEXT: %acc2 = qtrain.requant_grad %acc {multiplier = #qtrain.f32<[0.5]>} : tensor<1x4x4x3xf32> -> tensor<1x4x4x3xf32>
// CHECK:      %gx = qtrain.conv2d_input_grad %acc, %w {{.*}} : (tensor<1x4x4x3xf32>, tensor<3x1x1x4xi8>) -> tensor<1x4x4x4xf32>
// CHECK-NEXT: %xs = qtrain.channel_slice %x {start = 0 : i64, stop = 2 : i64} : tensor<1x4x4x4xi8> -> tensor<1x4x4x2xi8>
// CHECK-NEXT: %gw = qtrain.conv2d_weight_grad %xs, %acc {{.*}}channels = array<i64: 0, 2>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x3xf32>) -> tensor<3x1x1x2xf32>
// CHECK:      %gdw = qtrain.conv2d_weight_grad %xd, %gd {{.*}} -> tensor<2x3x3x1xf32>
// CHECK-NEXT: %gb = qtrain.bias_grad %acc : tensor<1x4x4x3xf32> -> tensor<3xf32>
// CHECK-NEXT: %sum = qtrain.grad_accumulate %gx, %gd : tensor<1x4x4x4xf32>, tensor<1x4x4x4xf32> -> tensor<1x4x4x4xf32>
// CHECK-NEXT: %pool = qtrain.avgpool_grad %acc2 {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>} : tensor<1x4x4x3xf32> -> tensor<1x8x8x3xf32>
// CHECK-NEXT: qtrain.sgd_update @w, %gw {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 4.0]>} : tensor<3x1x1x2xf32>
// GENERIC: "qtrain.sgd_update"(%gw) <{param = @w, lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[16.0, 64.0, 4.0]>}> : (tensor<3x1x1x2xf32>) -> ()
