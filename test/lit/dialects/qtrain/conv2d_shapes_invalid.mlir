// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x5x5x4xi8>
// CHECK: qtrain.conv2d: output must be tensor<1x4x4x4xi8> for this input, kernel, stride and padding, got tensor<1x5x5x4xi8>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 2 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: groups = 2 must divide input channels (3) and output channels (4)

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x2xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x2xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: weight input-channel dim is 2, expected C_in / groups = 3 / 1

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<3xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<3xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: bias must be tensor<4xi32> (one per output channel), got tensor<3xi32>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 0 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
// CHECK: qtrain.conv2d: groups must be >= 1, got 0

// -----

%x = "test.op"() : () -> tensor<1x2x2x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%b = "test.op"() : () -> tensor<4xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1, 0.2, 0.3, 0.4], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x1x1x4xi8>
// CHECK: qtrain.conv2d: kernel 3x3 is larger than the padded input 2x2
