// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%a = "test.op"() : () -> tensor<1x4x4x8xi8>
%b = "test.op"() : () -> tensor<1x4x4x4xi8>
%y = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07], zp = 0>, rhs_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.09], zp = 0>} : (tensor<1x4x4x8xi8>, tensor<1x4x4x4xi8>) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.add: lhs, rhs and output must have the same shape, got tensor<1x4x4x8xi8>, tensor<1x4x4x4xi8>, tensor<1x4x4x8xi8>

// -----

%a = "test.op"() : () -> tensor<1x4x4x8xf32>
%b = "test.op"() : () -> tensor<1x4x4x8xi8>
%y = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07], zp = 0>, rhs_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.09], zp = 0>} : (tensor<1x4x4x8xf32>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
// CHECK: qtrain.add: lhs must have element type i8, got tensor<1x4x4x8xf32>

// -----

%a = "test.op"() : () -> tensor<1x4x4x2xi8>
%b = "test.op"() : () -> tensor<1x4x4x2xi8>
%y = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07, 0.1], zp = 0, axis = 3>, rhs_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.09], zp = 0>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x2xi8>) -> tensor<1x4x4x2xi8>
// CHECK: qtrain.add: lhs_q must be per-tensor (one scale, no axis)

// -----

%a = "test.op"() : () -> tensor<1x4x4x2xi8>
%b = "test.op"() : () -> tensor<1x4x4x2xi8>
%y = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07], zp = 0>, rhs_q = #qtrain.quant<scales = [0.05], zp = 0>, output_q = #qtrain.quant<scales = [0.09], zp = 0>, clamp = array<i64: 5>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x2xi8>) -> tensor<1x4x4x2xi8>
// CHECK: qtrain.add: clamp needs 2 values, got 1
