// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

// a 3x3 first conv is not pointwise
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x3x3x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x3x3x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_weight must be a 1x1 kernel [C_mid, 1, 1, C_in], got tensor<8x3x3x4xi8>

// -----

// input channels
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x5xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x5xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_weight has 5 input channels, the input has 4

// -----

// strided pointwise
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 2, 2>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_strides must be [1, 1], got [2, 2]

// -----

// padded pointwise
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 1, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_padding must be [0, 0, 0, 0], got [0, 0, 1, 0]

// -----

// grouped pointwise
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 2 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_groups must be 1, got 2

// -----

// second conv not depthwise
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x2xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x2xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: dw_weight must be a depthwise weight [C_mid, KH, KW, 1] = [8, KH, KW, 1], got tensor<8x3x3x2xi8>

// -----

// depthwise groups
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 4 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: dw_groups must be C_mid = 8 (depthwise), got 4

// -----

// pw bias
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<4xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<4xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_bias must be tensor<8xi32> (one per channel), got tensor<4xi32>

// -----

// dw bias type
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi8>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi8>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: dw_bias must have element type i32, got tensor<8xi8>

// -----

// output shape
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x8x8x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: output must be tensor<1x4x4x8xi8> for this input, kernels, stride and padding, got tensor<1x8x8x8xi8>

// -----

// kernel larger than padded input
%x = "test.op"() : () -> tensor<1x2x2x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x5x5x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x2x2x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x5x5x1xi8>, tensor<8xi32>)) -> tensor<1x1x1x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: dw kernel 5x5 is larger than the padded intermediate tensor 2x2

// -----

// per-channel mid
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.1, 0.2], zp = 0, axis = 3>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: mid_q must be per-tensor (one scale, no axis)

// -----

// asymmetric weights
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 1>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: weights are symmetric, dw_weight_q zero point must be 0, got 1

// -----

// scale count
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1, 0.2], zp = 0, axis = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: pw_weight_q has 2 scales, need one per channel (8)

// -----

// clamp
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_clamp = array<i64: 10, -10>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: clamp [10, -10] must satisfy -128 <= lo <= hi <= 127

// -----

// dw negative padding
%x = "test.op"() : () -> tensor<1x8x8x4xi8>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: -1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi8>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: dw_padding must be >= 0

// -----

// int32 input
%x = "test.op"() : () -> tensor<1x8x8x4xi32>
%w1 = "test.op"() : () -> tensor<8x1x1x4xi8>
%b1 = "test.op"() : () -> tensor<8xi32>
%w2 = "test.op"() : () -> tensor<8x3x3x1xi8>
%b2 = "test.op"() : () -> tensor<8xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 8 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x8x8x4xi32>, pw(tensor<8x1x1x4xi8>, tensor<8xi32>), dw(tensor<8x3x3x1xi8>, tensor<8xi32>)) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.fused_pointwise_depthwise: input must have element type i8, got tensor<1x8x8x4xi32>
