// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 0, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: strides must be >= 1, got [0, 2]

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: strides needs 2 values, got 3

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: padding [top, left, bottom, right] needs 4 values, got 2

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: -1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: padding must be >= 0

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>, clamp = array<i64: 10, 0>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: clamp [10, 0] must satisfy -128 <= lo <= hi <= 127

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>, clamp = array<i64: -200, 127>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: clamp [-200, 127] must satisfy -128 <= lo <= hi <= 127
