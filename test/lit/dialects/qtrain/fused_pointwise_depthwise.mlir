// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

// qtrain.fused_pointwise_depthwise: a 1x1 conv (stride 1, no padding, groups 1) and the depthwise conv
// reading its output, as one op; the intermediate tensor (here 1x16x16x24) is not a value. Biases are
// optional, each conv keeps its own clamp.
%x = "test.op"() : () -> tensor<1x16x16x8xi8>
%w1 = "test.op"() : () -> tensor<24x1x1x8xi8>
%b1 = "test.op"() : () -> tensor<24xi32>
%w2 = "test.op"() : () -> tensor<24x3x3x1xi8>
%w7 = "test.op"() : () -> tensor<24x7x7x1xi8>
%b2 = "test.op"() : () -> tensor<24xi32>
%y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, pw_clamp = array<i64: -128, 127>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 24 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x16x16x8xi8>, pw(tensor<24x1x1x8xi8>, tensor<24xi32>), dw(tensor<24x3x3x1xi8>, tensor<24xi32>)) -> tensor<1x8x8x24xi8>
%z = qtrain.fused_pointwise_depthwise %x, pw(%w1), dw(%w7) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 3>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -7>, dw_strides = array<i64: 1, 1>, dw_padding = array<i64: 3, 3, 3, 3>, dw_groups = 24 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>, dw_clamp = array<i64: -128, 0>} : (tensor<1x16x16x8xi8>, pw(tensor<24x1x1x8xi8>), dw(tensor<24x7x7x1xi8>)) -> tensor<1x16x16x24xi8>
%u = qtrain.fused_pointwise_depthwise %x, pw(%w1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 3>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -7>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 0, 0, 1, 1>, dw_groups = 24 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x16x16x8xi8>, pw(tensor<24x1x1x8xi8>), dw(tensor<24x3x3x1xi8>, tensor<24xi32>)) -> tensor<1x8x8x24xi8>

// CHECK:      %y = qtrain.fused_pointwise_depthwise %x, pw(%w1, %b1), dw(%w2, %b2) {pw_strides = array<i64: 1, 1>, pw_padding = array<i64: 0, 0, 0, 0>, pw_groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = -128>, pw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, mid_q = #qtrain.quant<scales = [0.2], zp = -128>, pw_clamp = array<i64: -128, 127>, dw_strides = array<i64: 2, 2>, dw_padding = array<i64: 1, 1, 1, 1>, dw_groups = 24 : i64, dw_weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.1], zp = -128>} : (tensor<1x16x16x8xi8>, pw(tensor<24x1x1x8xi8>, tensor<24xi32>), dw(tensor<24x3x3x1xi8>, tensor<24xi32>)) -> tensor<1x8x8x24xi8>
// CHECK-NEXT: %z = qtrain.fused_pointwise_depthwise %x, pw(%w1), dw(%w7) {{{.*}}dw_clamp = array<i64: -128, 0>} : (tensor<1x16x16x8xi8>, pw(tensor<24x1x1x8xi8>), dw(tensor<24x7x7x1xi8>)) -> tensor<1x16x16x24xi8>
// CHECK-NEXT: %u = qtrain.fused_pointwise_depthwise %x, pw(%w1), dw(%w2, %b2) {{{.*}}dw_padding = array<i64: 0, 0, 1, 1>{{.*}}} : (tensor<1x16x16x8xi8>, pw(tensor<24x1x1x8xi8>), dw(tensor<24x3x3x1xi8>, tensor<24xi32>)) -> tensor<1x8x8x24xi8>

// The generic form carries the operand segment sizes (input, pw weight, pw bias, dw weight, dw bias).
// GENERIC: "qtrain.fused_pointwise_depthwise"(%x, %w1, %b1, %w2, %b2) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 1, 1, 1>}>
// GENERIC: "qtrain.fused_pointwise_depthwise"(%x, %w1, %w7) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 0, 1, 0>}>
// GENERIC: "qtrain.fused_pointwise_depthwise"(%x, %w1, %w2, %b2) <{{{.*}}operandSegmentSizes = array<i32: 1, 1, 0, 1, 1>}>
