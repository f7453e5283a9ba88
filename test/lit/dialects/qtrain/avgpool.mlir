// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

// Global average pool (kernel = H x W) and a 2x2 stride-2 pool (TinyTL's lite residual branch).
%x = "test.op"() : () -> tensor<1x4x4x160xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = -128>, output_q = #qtrain.quant<scales = [0.15], zp = -1>} : tensor<1x4x4x160xi8> -> tensor<1x1x1x160xi8>
%p = qtrain.avgpool %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, input_q = #qtrain.quant<scales = [0.2], zp = -128>, output_q = #qtrain.quant<scales = [0.2], zp = -128>} : tensor<1x4x4x160xi8> -> tensor<1x2x2x160xi8>
// CHECK:      %g = qtrain.avgpool %x {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.2], zp = -128>, output_q = #qtrain.quant<scales = [0.15], zp = -1>} : tensor<1x4x4x160xi8> -> tensor<1x1x1x160xi8>
// CHECK-NEXT: %p = qtrain.avgpool %x {kernel = array<i64: 2, 2>, strides = array<i64: 2, 2>, {{.*}}} : tensor<1x4x4x160xi8> -> tensor<1x2x2x160xi8>
// GENERIC: %g = "qtrain.avgpool"(%x) <{kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, {{.*}}}> : (tensor<1x4x4x160xi8>) -> tensor<1x1x1x160xi8>
