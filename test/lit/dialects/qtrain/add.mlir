// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

%a = "test.op"() : () -> tensor<1x4x4x8xi8>
%b = "test.op"() : () -> tensor<1x4x4x8xi8>
%y = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07], zp = -6>, rhs_q = #qtrain.quant<scales = [0.05], zp = 2>, output_q = #qtrain.quant<scales = [0.09], zp = -1>} : (tensor<1x4x4x8xi8>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
%r = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07], zp = -6>, rhs_q = #qtrain.quant<scales = [0.05], zp = 2>, output_q = #qtrain.quant<scales = [0.09], zp = -128>, clamp = array<i64: -128, 60>} : (tensor<1x4x4x8xi8>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
// CHECK:      %y = qtrain.add %a, %b {lhs_q = #qtrain.quant<scales = [0.07], zp = -6>, rhs_q = #qtrain.quant<scales = [0.05], zp = 2>, output_q = #qtrain.quant<scales = [0.09], zp = -1>} : (tensor<1x4x4x8xi8>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
// CHECK-NEXT: %r = qtrain.add %a, %b {{{.*}}clamp = array<i64: -128, 60>} : (tensor<1x4x4x8xi8>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
// GENERIC: %y = "qtrain.add"(%a, %b) <{lhs_q = #qtrain.quant<scales = [0.07], zp = -6>, rhs_q = #qtrain.quant<scales = [0.05], zp = 2>, output_q = #qtrain.quant<scales = [0.09], zp = -1>}> : (tensor<1x4x4x8xi8>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
