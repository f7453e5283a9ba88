// RUN: QTRAIN_ROUNDTRIP

// Depthwise convs as MCUNet uses them: groups = C, weight [C, K, K, 1]; 3x3/5x5/7x7, stride 1 and 2.
%x = "test.op"() : () -> tensor<1x16x16x8xi8>
%w3 = "test.op"() : () -> tensor<8x3x3x1xi8>
%w5 = "test.op"() : () -> tensor<8x5x5x1xi8>
%w7 = "test.op"() : () -> tensor<8x7x7x1xi8>
%b = "test.op"() : () -> tensor<8xi32>
%a = qtrain.conv2d %x, %w3, %b {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 8 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x16x16x8xi8>, tensor<8x3x3x1xi8>, tensor<8xi32>) -> tensor<1x16x16x8xi8>
%c = qtrain.conv2d %x, %w5, %b {strides = array<i64: 2, 2>, padding = array<i64: 2, 2, 2, 2>, groups = 8 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x16x16x8xi8>, tensor<8x5x5x1xi8>, tensor<8xi32>) -> tensor<1x8x8x8xi8>
%d = qtrain.conv2d %x, %w7, %b {strides = array<i64: 2, 2>, padding = array<i64: 3, 3, 3, 3>, groups = 8 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x16x16x8xi8>, tensor<8x7x7x1xi8>, tensor<8xi32>) -> tensor<1x8x8x8xi8>
// CHECK: %a = qtrain.conv2d %x, %w3, %b {{{.*}}groups = 8 : i64{{.*}}} : (tensor<1x16x16x8xi8>, tensor<8x3x3x1xi8>, tensor<8xi32>) -> tensor<1x16x16x8xi8>
// CHECK: %c = qtrain.conv2d %x, %w5, %b {strides = array<i64: 2, 2>, padding = array<i64: 2, 2, 2, 2>, groups = 8 : i64{{.*}}} : (tensor<1x16x16x8xi8>, tensor<8x5x5x1xi8>, tensor<8xi32>) -> tensor<1x8x8x8xi8>
// CHECK: %d = qtrain.conv2d %x, %w7, %b {strides = array<i64: 2, 2>, padding = array<i64: 3, 3, 3, 3>, groups = 8 : i64{{.*}}} : (tensor<1x16x16x8xi8>, tensor<8x7x7x1xi8>, tensor<8xi32>) -> tensor<1x8x8x8xi8>
