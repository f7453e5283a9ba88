// A conv, a GroupNorm (two groups of four channels, fused ReLU), a global pool and a classifier: the smallest
// model holding qtrain.group_norm, for test/python/dialects/qtrain/test_group_norm.py and the firmware
// agreement test. gamma and beta are fp32 in the GroupNorm output's integer domain.
builtin.module {
  qtrain.param @conv0.weight = dense<[[[[40, -30, 12, 5]]], [[[-20, 50, -8, 33]]], [[[25, -35, 60, -4]]], [[[-15, 18, -27, 44]]], [[[7, 29, -51, 16]]], [[[-38, -9, 22, 61]]], [[[53, -17, 3, -26]]], [[[-6, 41, -33, 10]]]]> : tensor<8x1x1x4xi8>
  qtrain.param @conv0.bias = dense<[100, -50, 30, 0, -20, 75, 10, -5]> : tensor<8xi32>
  qtrain.param @gn0.gamma = dense<[30.0, 25.5, 40.0, 18.0, 35.0, 22.0, 28.5, 31.0]> : tensor<8xf32>
  qtrain.param @gn0.beta = dense<[5.0, -3.0, 12.0, 0.5, -8.0, 2.0, 20.0, -1.5]> : tensor<8xf32>
  qtrain.param @conv1.weight = dense<[[[[30, 20, -10, 5, 12, -40, 8, 3]]], [[[-40, 10, 25, -5, 6, 18, -22, 9]]], [[[25, -35, 14, 2, -9, 30, 11, -17]]]]> : tensor<3x1x1x8xi8>
  qtrain.param @conv1.bias = dense<[10, -20, 5]> : tensor<3xi32>
  func.func @forward(%x: tensor<1x3x4x4xi8>) -> tensor<1x3xi8> {
    %w0 = qtrain.get_param @conv0.weight : tensor<8x1x1x4xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<8xi32>
    %y0 = qtrain.conv2d %x, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.05], zp = 0>, weight_q = #qtrain.quant<scales = [0.01, 0.02, 0.015, 0.01, 0.012, 0.02, 0.01, 0.018], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.04], zp = -10>} : (tensor<1x3x4x4xi8>, tensor<8x1x1x4xi8>, tensor<8xi32>) -> tensor<1x3x4x8xi8>
    %g = qtrain.get_param @gn0.gamma : tensor<8xf32>
    %be = qtrain.get_param @gn0.beta : tensor<8xf32>
    %n = qtrain.group_norm %y0, %g, %be {groups = 2 : i64, epsilon = 1.0e-05 : f32, input_q = #qtrain.quant<scales = [0.04], zp = -10>, output_q = #qtrain.quant<scales = [0.03], zp = -128>, clamp = array<i64: -128, 127>} : (tensor<1x3x4x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x3x4x8xi8>
    %p = qtrain.avgpool %n {kernel = array<i64: 3, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.03], zp = -128>, output_q = #qtrain.quant<scales = [0.03], zp = -128>} : tensor<1x3x4x8xi8> -> tensor<1x1x1x8xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<3x1x1x8xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<3xi32>
    %y1 = qtrain.conv2d %p, %w1, %b1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.03], zp = -128>, weight_q = #qtrain.quant<scales = [0.02, 0.02, 0.02], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.1], zp = 0>} : (tensor<1x1x1x8xi8>, tensor<3x1x1x8xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %out = qtrain.reshape %y1 : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %out : tensor<1x3xi8>
  }
}
