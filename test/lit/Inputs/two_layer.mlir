// Two convs (3x3 stride 2, then a 1x1 classifier on the 1x1 map): small enough to pin every op of
// its backward graph in test/lit/transforms/autodiff.mlir.
builtin.module {
  qtrain.param @conv0.weight = dense<[[[[1, -2]], [[3, 0]]], [[[-1, 2]], [[0, 1]]]]> : tensor<2x2x1x2xi8>
  qtrain.param @conv0.bias = dense<[100, -50]> : tensor<2xi32>
  qtrain.param @conv1.weight = dense<[[[[5, -3]]], [[[-2, 4]]], [[[1, 1]]]]> : tensor<3x1x1x2xi8>
  qtrain.param @conv1.bias = dense<[7, -7, 0]> : tensor<3xi32>
  func.func @forward(%image: tensor<1x2x2x2xi8>) -> tensor<1x3xi8> {
    %w0 = qtrain.get_param @conv0.weight : tensor<2x2x1x2xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<2xi32>
    %h = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 2, 2>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>, weight_q = #qtrain.quant<scales = [0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.5], zp = -128>} : (tensor<1x2x2x2xi8>, tensor<2x2x1x2xi8>, tensor<2xi32>) -> tensor<1x1x1x2xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<3x1x1x2xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<3xi32>
    %y = qtrain.conv2d %h, %w1, %b1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = -128>, weight_q = #qtrain.quant<scales = [0.5, 0.25, 0.125], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.25], zp = 0>} : (tensor<1x1x1x2xi8>, tensor<3x1x1x2xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %logits = qtrain.reshape %y : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %logits : tensor<1x3xi8>
  }
}
