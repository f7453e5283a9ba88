// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%s = "test.op"() : () -> tensor<1x1x1x8xi8>
%g = "test.op"() : () -> tensor<1x4x4x8xf32>
%h = qtrain.lut %x {function = "hardswish", input_q = #qtrain.quant<scales = [0.05], zp = -10>, output_q = #qtrain.quant<scales = [0.03], zp = -100>} : tensor<1x4x4x8xi8> -> tensor<1x4x4x8xi8>
%hs = qtrain.lut %x {function = "hardsigmoid", params = #qtrain.f32<[0.2, 0.5]>, input_q = #qtrain.quant<scales = [0.05], zp = -10>, output_q = #qtrain.quant<scales = [0.004], zp = -128>} : tensor<1x4x4x8xi8> -> tensor<1x4x4x8xi8>
%gh = qtrain.lut_grad %g, %x {function = "hardswish", input_q = #qtrain.quant<scales = [0.05], zp = -10>, output_q = #qtrain.quant<scales = [0.03], zp = -100>} : (tensor<1x4x4x8xf32>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xf32>
%m = qtrain.mul %h, %s {lhs_q = #qtrain.quant<scales = [0.03], zp = -100>, rhs_q = #qtrain.quant<scales = [0.004], zp = -128>, output_q = #qtrain.quant<scales = [0.02], zp = -90>} : (tensor<1x4x4x8xi8>, tensor<1x1x1x8xi8>) -> tensor<1x4x4x8xi8>
%gs = qtrain.mul_grad %g, %h {other_zero_point = -100 : i64} : (tensor<1x4x4x8xf32>, tensor<1x4x4x8xi8>) -> tensor<1x1x1x8xf32>
%p = qtrain.maxpool %m {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, q = #qtrain.quant<scales = [0.02], zp = -90>} : tensor<1x4x4x8xi8> -> tensor<1x2x2x8xi8>
%a = qtrain.gather_channels %p {indices = array<i64: 0, 4, 1, 5, 2, 6, 3, 7>, q = #qtrain.quant<scales = [0.02], zp = -90>} : tensor<1x2x2x8xi8> -> tensor<1x2x2x8xi8>
%c = qtrain.concat %a, %p {q = #qtrain.quant<scales = [0.02], zp = -90>} : tensor<1x2x2x8xi8>, tensor<1x2x2x8xi8> -> tensor<1x2x2x16xi8>
// CHECK:      %h = qtrain.lut %x {function = "hardswish", input_q = #qtrain.quant<scales = [0.05], zp = -10>, output_q = #qtrain.quant<scales = [0.03], zp = -100>} : tensor<1x4x4x8xi8> -> tensor<1x4x4x8xi8>
// CHECK-NEXT: %hs = qtrain.lut %x {function = "hardsigmoid", params = #qtrain.f32<[0.2, 0.5]>, {{.*}}} : tensor<1x4x4x8xi8> -> tensor<1x4x4x8xi8>
// CHECK-NEXT: %gh = qtrain.lut_grad %g, %x {function = "hardswish", {{.*}}} : (tensor<1x4x4x8xf32>, tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xf32>
// CHECK-NEXT: %m = qtrain.mul %h, %s {{{.*}}} : (tensor<1x4x4x8xi8>, tensor<1x1x1x8xi8>) -> tensor<1x4x4x8xi8>
// CHECK-NEXT: %gs = qtrain.mul_grad %g, %h {other_zero_point = -100 : i64} : (tensor<1x4x4x8xf32>, tensor<1x4x4x8xi8>) -> tensor<1x1x1x8xf32>
// CHECK-NEXT: %p = qtrain.maxpool %m {kernel = array<i64: 3, 3>, strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, q = #qtrain.quant<scales = [0.02], zp = -90>} : tensor<1x4x4x8xi8> -> tensor<1x2x2x8xi8>
// CHECK-NEXT: %a = qtrain.gather_channels %p {indices = array<i64: 0, 4, 1, 5, 2, 6, 3, 7>, {{.*}}} : tensor<1x2x2x8xi8> -> tensor<1x2x2x8xi8>
// CHECK-NEXT: %c = qtrain.concat %a, %p {{{.*}}} : tensor<1x2x2x8xi8>, tensor<1x2x2x8xi8> -> tensor<1x2x2x16xi8>
// GENERIC: %h = "qtrain.lut"(%x) <{function = "hardswish", input_q = #qtrain.quant<scales = [0.05], zp = -10>, output_q = #qtrain.quant<scales = [0.03], zp = -100>}> : (tensor<1x4x4x8xi8>) -> tensor<1x4x4x8xi8>
// GENERIC: "qtrain.concat"(%a, %p)
