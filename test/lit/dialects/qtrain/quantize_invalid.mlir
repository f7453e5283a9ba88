// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%q = qtrain.quantize %x {output_q = #qtrain.quant<scales = [0.5], zp = 0>} : tensor<1x8x8x3xi8> -> tensor<1x8x8x3xi8>
// CHECK: qtrain.quantize: input must have element type f32, got tensor<1x8x8x3xi8>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xf32>
%q = qtrain.quantize %x {output_q = #qtrain.quant<scales = [0.5], zp = 0>} : tensor<1x8x8x3xf32> -> tensor<1x8x8x4xi8>
// CHECK: qtrain.quantize: input and output shapes differ: tensor<1x8x8x3xf32> vs tensor<1x8x8x4xi8>

// -----

%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%d = qtrain.dequantize %x {input_q = #qtrain.quant<scales = [0.5], zp = 0>} : tensor<1x8x8x3xi8> -> tensor<1x8x8x3xi32>
// CHECK: qtrain.dequantize: output must have element type f32, got tensor<1x8x8x3xi32>

// -----

%x = "test.op"() : () -> tensor<1x8x8x2xi8>
%d = qtrain.dequantize %x {input_q = #qtrain.quant<scales = [0.5, 0.25], zp = 0, axis = 3>} : tensor<1x8x8x2xi8> -> tensor<1x8x8x2xf32>
// CHECK: qtrain.dequantize: input_q must be per-tensor (one scale, no axis)
