// RUN: qtrain-opt %S/../../Inputs/tiny_model.mlir | filecheck %s
// RUN: qtrain-opt %S/../../Inputs/tiny_model.mlir --print-op-generic | qtrain-opt | filecheck %s

// A whole forward network parses, verifies and round-trips through the generic form.
// CHECK:      qtrain.param @conv0.weight = dense<"0x{{[0-9A-F]+}}"> : tensor<4x3x3x3xi8>
// CHECK:      qtrain.param @conv3.bias = dense<[100, -100, 0]> : tensor<3xi32>
// CHECK:      func.func @forward(%image: tensor<1x8x8x3xi8>) -> tensor<1x3xi8> attributes {qtrain.input_q = #qtrain.quant<scales = [0.0078125], zp = 0>} {
// CHECK:        %x1 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 2, 2>
// CHECK:        %x2 = qtrain.conv2d %x1, %w1, %b1 {{{.*}}groups = 4 : i64
// CHECK:        %x4 = qtrain.add %x3, %x1
// CHECK:        %x5 = qtrain.avgpool %x4 {kernel = array<i64: 4, 4>
// CHECK:        %x6 = qtrain.conv2d %x5, %w3, %b3
// CHECK:        %logits = qtrain.reshape %x6 : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
// CHECK-NEXT:   func.return %logits : tensor<1x3xi8>
