// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p qtrain-verify-quant-chain | filecheck %s
// RUN: qtrain-opt %s -p qtrain-verify-quant-chain --split-input-file --verify-diagnostics | filecheck %s --check-prefix=ERR

// The tiny model's quantization chain is consistent: the pass leaves the IR unchanged.
// CHECK: func.func @forward
// CHECK: qtrain.reshape

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 1>} : tensor<1x4x4x8xi8> -> tensor<1x1x1x8xi8>
%d = qtrain.dequantize %g {input_q = #qtrain.quant<scales = [0.25], zp = 0>} : tensor<1x1x1x8xi8> -> tensor<1x1x1x8xf32>
// ERR: qtrain.dequantize: input_q #qtrain.quant<scales = [0.25], zp = 0> differs from the producer's output_q #qtrain.quant<scales = [0.25], zp = 1> (from qtrain.avgpool)

// -----

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%a = qtrain.avgpool %x {kernel = array<i64: 1, 1>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = 0>, output_q = #qtrain.quant<scales = [0.2], zp = 0>} : tensor<1x4x4x8xi8> -> tensor<1x4x4x8xi8>
%r = qtrain.reshape %a : tensor<1x4x4x8xi8> -> tensor<1x16x8xi8>
%s = qtrain.reshape %r : tensor<1x16x8xi8> -> tensor<1x4x4x8xi8>
%y = qtrain.add %a, %s {lhs_q = #qtrain.quant<scales = [0.2], zp = 0>, rhs_q = #qtrain.quant<scales = [0.3], zp = 0>, output_q = #qtrain.quant<scales = [0.09], zp = 0>} : (tensor<1x4x4x8xi8>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
// ERR: qtrain.add: rhs_q #qtrain.quant<scales = [0.3], zp = 0> differs from the producer's output_q #qtrain.quant<scales = [0.2], zp = 0> (from qtrain.reshape)
