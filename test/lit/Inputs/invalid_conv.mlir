%x = "test.op"() : () -> tensor<1x8x8x3xi8>
%w = "test.op"() : () -> tensor<4x3x3x3xi8>
%y = qtrain.conv2d %x, %w {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.1], zp = 0>, weight_q = #qtrain.quant<scales = [0.1], zp = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>) -> tensor<1x5x5x4xi8>
