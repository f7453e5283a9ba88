// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x8x8x3xf32>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xf32>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: input must have element type i8, got tensor<1x8x8x3xf32>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi32>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi32>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: weight must have element type i8, got tensor<4x3x3x3xi32>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi8>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi8>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: bias must have element type i32, got tensor<4xi8>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi32>
// CHECK: qtrain.conv2d: output must have element type i8, got tensor<1x4x4x4xi32>

// -----

%x = "test.op"() : () -> tensor<8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: input must be rank 4 (NHWC), got tensor<8x8x3xi8>
