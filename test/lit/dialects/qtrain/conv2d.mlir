// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

// A 3x3 stride-2 conv with bias and a fused ReLU clamp, a depthwise 3x3, and a 1x1 conv without bias.
%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%dw = "test.op"() : () -> tensor<4x3x3x1xi8>
%pw = "test.op"() : () -> tensor<6x1x1x4xi8>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>, clamp = array<i64: -128, 127>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
%d = qtrain.conv2d %y, %dw {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 4 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25], zp = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x4x4x4xi8>, tensor<4x3x3x1xi8>) -> tensor<1x4x4x4xi8>
%p = qtrain.conv2d %d, %pw {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.25], zp = 0>, output_q = #qtrain.quant<scales = [0.125], zp = 3>} : (tensor<1x4x4x4xi8>, tensor<6x1x1x4xi8>) -> tensor<1x4x4x6xi8>

// CHECK: %y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>, clamp = array<i64: -128, 127>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK-NEXT: %d = qtrain.conv2d %y, %dw {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 4 : i64, {{.*}}} : (tensor<1x4x4x4xi8>, tensor<4x3x3x1xi8>) -> tensor<1x4x4x4xi8>
// CHECK-NEXT: %p = qtrain.conv2d %d, %pw {{{.*}}output_q = #qtrain.quant<scales = [0.125], zp = 3>} : (tensor<1x4x4x4xi8>, tensor<6x1x1x4xi8>) -> tensor<1x4x4x6xi8>

// GENERIC: %y = "qtrain.conv2d"(%x, %w, %b) <{strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, {{.*}}clamp = array<i64: -128, 127>}> : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// GENERIC: %d = "qtrain.conv2d"(%y, %dw) <{{{.*}}groups = 4 : i64{{.*}}}> : (tensor<1x4x4x4xi8>, tensor<4x3x3x1xi8>) -> tensor<1x4x4x4xi8>
