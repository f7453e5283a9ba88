// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

%x = "test.op"() : () -> tensor<1x8x8x3xf32>
%q = qtrain.quantize %x {output_q = #qtrain.quant<scales = [0.0078125], zp = 0>} : tensor<1x8x8x3xf32> -> tensor<1x8x8x3xi8>
%d = qtrain.dequantize %q {input_q = #qtrain.quant<scales = [0.0078125], zp = 0>} : tensor<1x8x8x3xi8> -> tensor<1x8x8x3xf32>
// CHECK:      %q = qtrain.quantize %x {output_q = #qtrain.quant<scales = [0.0078125], zp = 0>} : tensor<1x8x8x3xf32> -> tensor<1x8x8x3xi8>
// CHECK-NEXT: %d = qtrain.dequantize %q {input_q = #qtrain.quant<scales = [0.0078125], zp = 0>} : tensor<1x8x8x3xi8> -> tensor<1x8x8x3xf32>
// GENERIC:      %q = "qtrain.quantize"(%x) <{output_q = #qtrain.quant<scales = [0.0078125], zp = 0>}> : (tensor<1x8x8x3xf32>) -> tensor<1x8x8x3xi8>
// GENERIC-NEXT: %d = "qtrain.dequantize"(%q) <{input_q = #qtrain.quant<scales = [0.0078125], zp = 0>}> : (tensor<1x8x8x3xi8>) -> tensor<1x8x8x3xf32>
