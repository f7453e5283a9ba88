// RUN: QTRAIN_ROUNDTRIP

// The classifier (fully connected) is a 1x1 conv on the pooled 1x1xC tensor, reshaped to [1, K].
// Scales are float32: the double 0.16980317807665057 prints as 0.16980319, its shortest float32 spelling.
%x = "test.op"() : () -> tensor<1x1x1x160xi8>
%w = "test.op"() : () -> tensor<10x1x1x160xi8>
%b = "test.op"() : () -> tensor<10xi32>
%y = qtrain.conv2d %x, %w, %b {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.14714308], zp = -1>, weight_q = #qtrain.quant<scales = [0.0025], zp = 0>, output_q = #qtrain.quant<scales = [0.16980319], zp = -34>} : (tensor<1x1x1x160xi8>, tensor<10x1x1x160xi8>, tensor<10xi32>) -> tensor<1x1x1x10xi8>
%l = qtrain.reshape %y : tensor<1x1x1x10xi8> -> tensor<1x10xi8>
// CHECK: %y = qtrain.conv2d %x, %w, %b {{{.*}}input_q = #qtrain.quant<scales = [0.14714308], zp = -1>, weight_q = #qtrain.quant<scales = [0.0025], zp = 0>, output_q = #qtrain.quant<scales = [0.16980319], zp = -34>} : (tensor<1x1x1x160xi8>, tensor<10x1x1x160xi8>, tensor<10xi32>) -> tensor<1x1x1x10xi8>
// CHECK-NEXT: %l = qtrain.reshape %y : tensor<1x1x1x10xi8> -> tensor<1x10xi8>
