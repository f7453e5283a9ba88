// A conv, a bilinear upsample 2x3 -> 4x5 (qtrain.upsample), a global pool and a classifier: the smallest model
// holding the op, for test/python/dialects/qtrain/test_upsample.py and the firmware agreement test.
builtin.module {
  qtrain.param @conv0.weight = dense<[[[[40, -30]]], [[[-20, 50]]]]> : tensor<2x1x1x2xi8>
  qtrain.param @conv0.bias = dense<[100, -50]> : tensor<2xi32>
  qtrain.param @conv1.weight = dense<[[[[30, 20]]], [[[-40, 10]]], [[[25, -35]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @conv1.bias = dense<[10, -20, 5]> : tensor<3xi32>
  func.func @forward(%x: tensor<1x2x3x2xi8>) -> tensor<1x3xi8> {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x1x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %y0 = qtrain.conv2d %x, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.05], zp = 0>, weight_q = #qtrain.quant<scales = [0.01, 0.02], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.04], zp = -10>} : (tensor<1x2x3x2xi8>, tensor<2x1x1x2xi8>, tensor<2xi32>) -> tensor<1x2x3x2xi8>
    %u = qtrain.upsample %y0 {input_q = #qtrain.quant<scales = [0.04], zp = -10>, output_q = #qtrain.quant<scales = [0.03], zp = -5>} : tensor<1x2x3x2xi8> -> tensor<1x4x5x2xi8>
    %p = qtrain.avgpool %u {kernel = array<i64: 4, 5>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.03], zp = -5>, output_q = #qtrain.quant<scales = [0.03], zp = -5>} : tensor<1x4x5x2xi8> -> tensor<1x1x1x2xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<3x1x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<3xi32>
    %y1 = qtrain.conv2d %p, %w1, %b1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.03], zp = -5>, weight_q = #qtrain.quant<scales = [0.02, 0.02, 0.02], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.1], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %out = qtrain.reshape %y1 : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %out : tensor<1x3xi8>
  }
}
