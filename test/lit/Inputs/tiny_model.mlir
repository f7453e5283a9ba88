// A 3-layer int8 CNN in the qtrain dialect: first conv 3x3/2, depthwise 3x3, pointwise 1x1 with a
// residual add, global average pool and a 1x1-conv classifier. Used by several tests.
builtin.module {
  qtrain.param @conv0.weight = dense<"0x592303C5CF8B9485AD502669011B783B220B0F6FC7512C81E55B0E89443B58AD975D860B95CDFBECE78882A0832C0726C21D43E2F67F4E7BE12F7326573034E460A314385806E0D0ECFC3863936F08DC2C12C1D3381801D742E4D464C4BA371F8D96E155E749D1BE4A60958F"> : tensor<4x3x3x3xi8>
  qtrain.param @conv0.bias = dense<[10, -20, 30, -40]> : tensor<4xi32>
  qtrain.param @conv1.weight = dense<"0x2CD613A75CF3654C34BB448E12E87FB372981F1466CD672C64B342718DDE239B0321436D"> : tensor<4x3x3x1xi8>
  qtrain.param @conv1.bias = dense<[1, 2, 3, 4]> : tensor<4xi32>
  qtrain.param @conv2.weight = dense<[[[[1, -1, 2, -2]]], [[[3, 0, -3, 1]]], [[[-1, 1, 1, -1]]], [[[2, 2, -2, -2]]]]> : tensor<4x1x1x4xi8>
  qtrain.param @conv2.bias = dense<[5, -5, 0, 7]> : tensor<4xi32>
  qtrain.param @conv3.weight = dense<[[[[1, 2, 3, 4]]], [[[-4, -3, -2, -1]]], [[[0, 1, 0, -1]]]]> : tensor<3x1x1x4xi8>
  qtrain.param @conv3.bias = dense<[100, -100, 0]> : tensor<3xi32>
  func.func @forward(%image: tensor<1x8x8x3xi8>) -> tensor<1x3xi8> attributes {qtrain.input_q = #qtrain.quant<scales = [0.0078125], zp = 0>} {
    %w0 = qtrain.get_param @conv0.weight : tensor<4x3x3x3xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<4xi32>
    %x1 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.0078125], zp = 0>, weight_q = #qtrain.quant<scales = [0.01, 0.02, 0.015, 0.03], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.0235], zp = -128>} : (tensor<1x8x8x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<4x3x3x1xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<4xi32>
    %x2 = qtrain.conv2d %x1, %w1, %b1 {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 4 : i64, input_q = #qtrain.quant<scales = [0.0235], zp = -128>, weight_q = #qtrain.quant<scales = [0.02, 0.02, 0.02, 0.02], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.0235], zp = -128>} : (tensor<1x4x4x4xi8>, tensor<4x3x3x1xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
    %w2 = qtrain.get_param @conv2.weight : tensor<4x1x1x4xi8>
    %b2 = qtrain.get_param @conv2.bias : tensor<4xi32>
    %x3 = qtrain.conv2d %x2, %w2, %b2 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.0235], zp = -128>, weight_q = #qtrain.quant<scales = [0.05, 0.04, 0.03, 0.02], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.0235], zp = -128>} : (tensor<1x4x4x4xi8>, tensor<4x1x1x4xi8>, tensor<4xi32>) -> tensor<1x4x4x4xi8>
    %x4 = qtrain.add %x3, %x1 {lhs_q = #qtrain.quant<scales = [0.0235], zp = -128>, rhs_q = #qtrain.quant<scales = [0.0235], zp = -128>, output_q = #qtrain.quant<scales = [0.04], zp = -128>} : (tensor<1x4x4x4xi8>, tensor<1x4x4x4xi8>) -> tensor<1x4x4x4xi8>
    %x5 = qtrain.avgpool %x4 {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.04], zp = -128>, output_q = #qtrain.quant<scales = [0.04], zp = -128>} : tensor<1x4x4x4xi8> -> tensor<1x1x1x4xi8>
    %w3 = qtrain.get_param @conv3.weight : tensor<3x1x1x4xi8>
    %b3 = qtrain.get_param @conv3.bias : tensor<3xi32>
    %x6 = qtrain.conv2d %x5, %w3, %b3 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.04], zp = -128>, weight_q = #qtrain.quant<scales = [0.01, 0.01, 0.01], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.1], zp = 0>} : (tensor<1x1x1x4xi8>, tensor<3x1x1x4xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %logits = qtrain.reshape %x6 : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %logits : tensor<1x3xi8>
  }
}
