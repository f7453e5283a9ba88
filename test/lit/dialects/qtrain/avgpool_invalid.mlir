// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>, output_q = #qtrain.quant<scales = [0.2], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x1x1x4xi8>
// CHECK: qtrain.avgpool: output must be tensor<1x1x1x8xi8>, got tensor<1x1x1x4xi8>

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 5, 5>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>, output_q = #qtrain.quant<scales = [0.2], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x1x1x8xi8>
// CHECK: qtrain.avgpool: kernel 5x5 is larger than the input 4x4

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 2, 2>, strides = array<i64: 0, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>, output_q = #qtrain.quant<scales = [0.2], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x2x2x8xi8>
// CHECK: qtrain.avgpool: kernel and strides must be >= 1

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xf32>
%g = qtrain.avgpool %x {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>, output_q = #qtrain.quant<scales = [0.2], zp = 0>} : tensor<1x4x4x8xf32> -> tensor<1x1x1x8xi8>
// CHECK: qtrain.avgpool: input must have element type i8, got tensor<1x4x4x8xf32>

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x1x1x8xi8>
// CHECK: property 'output_q' expected in operation 'qtrain.avgpool'
