// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

%x = "test.op"() : () -> tensor<1x1x1x10xi8>
%label = "test.op"() : () -> i32
%r = qtrain.reshape %x : tensor<1x1x1x10xi8> -> tensor<1x10xi8>
%l = qtrain.dequantize %r {input_q = #qtrain.quant<scales = [0.17], zp = -34>} : tensor<1x10xi8> -> tensor<1x10xf32>
%loss = qtrain.cross_entropy %l, %label : tensor<1x10xf32> -> f32
// CHECK:      %r = qtrain.reshape %x : tensor<1x1x1x10xi8> -> tensor<1x10xi8>
// CHECK:      %loss = qtrain.cross_entropy %l, %label : tensor<1x10xf32> -> f32
// GENERIC:    %r = "qtrain.reshape"(%x) : (tensor<1x1x1x10xi8>) -> tensor<1x10xi8>
// GENERIC:    %loss = "qtrain.cross_entropy"(%l, %label) : (tensor<1x10xf32>, i32) -> f32
