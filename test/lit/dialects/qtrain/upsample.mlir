// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

// Bilinear resize (TinyTL's lite residual branch back to the block's size), with and without its mask,
// and its gradient.
%x = "test.op"() : () -> tensor<1x4x4x16xi8>
%u = qtrain.upsample %x {input_q = #qtrain.quant<scales = [0.05], zp = -3>, output_q = #qtrain.quant<scales = [0.04], zp = 2>} : tensor<1x4x4x16xi8> -> tensor<1x8x8x16xi8>
%m, %mask = qtrain.upsample %x {input_q = #qtrain.quant<scales = [0.05], zp = -3>, output_q = #qtrain.quant<scales = [0.04], zp = 2>} : tensor<1x4x4x16xi8> -> tensor<1x7x9x16xi8>, tensor<1x7x9x16xi1>
%g = "test.op"() : () -> tensor<1x8x8x16xf32>
%gx = qtrain.upsample_grad %g : tensor<1x8x8x16xf32> -> tensor<1x4x4x16xf32>
// CHECK:      %u = qtrain.upsample %x {input_q = #qtrain.quant<scales = [0.05], zp = -3>, output_q = #qtrain.quant<scales = [0.04], zp = 2>} : tensor<1x4x4x16xi8> -> tensor<1x8x8x16xi8>
// CHECK-NEXT: %m, %mask = qtrain.upsample %x {{{.*}}} : tensor<1x4x4x16xi8> -> tensor<1x7x9x16xi8>, tensor<1x7x9x16xi1>
// CHECK:      %gx = qtrain.upsample_grad %g : tensor<1x8x8x16xf32> -> tensor<1x4x4x16xf32>
// GENERIC: %u = "qtrain.upsample"(%x) <{input_q = #qtrain.quant<scales = [0.05], zp = -3>, output_q = #qtrain.quant<scales = [0.04], zp = 2>}> : (tensor<1x4x4x16xi8>) -> tensor<1x8x8x16xi8>
// GENERIC: %gx = "qtrain.upsample_grad"(%g) : (tensor<1x8x8x16xf32>) -> tensor<1x4x4x16xf32>
