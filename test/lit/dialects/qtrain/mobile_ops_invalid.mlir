// RUN: qtrain-opt %s --split-input-file --verify-diagnostics --parsing-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%y = qtrain.lut %x {function = "gelu", input_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.05], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x4x4x8xi8>
// CHECK: qtrain.lut: unknown function 'gelu'; one of identity, hardsigmoid, hardswish, sigmoid, silu

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%s = "test.op"() : () -> tensor<1x2x2x8xi8>
%y = qtrain.mul %x, %s {lhs_q = #qtrain.quant<scales = [0.05], zp = 0>, rhs_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.05], zp = 0>} : (tensor<1x4x4x8xi8>, tensor<1x2x2x8xi8>) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.mul: rhs must be tensor<1x4x4x8xi8> or tensor<1x1x1x8xi8> and the output tensor<1x4x4x8xi8>

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%y = qtrain.maxpool %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, q = #qtrain.quant<scales = [0.05], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x3x3x8xi8>
// CHECK: qtrain.maxpool: the pooled tensor must be tensor<1x2x2x8>

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%y = qtrain.gather_channels %x {indices = array<i64: 1, 1>, q = #qtrain.quant<scales = [0.05], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x4x4x2xi8>
// CHECK: qtrain.gather_channels: indices must be distinct channels in [0, 8)
