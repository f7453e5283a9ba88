// An inverted-residual block at "high" resolution for qtrain-fuse-streaming: conv0 3x3, the 1x1 expansion
// conv1 (16x16x4 -> 16x16x16, 4 KB) read only by the depthwise conv2 (3x3/2), the 1x1 projection conv3,
// a global average pool and the classifier conv4. Used by test/lit/transforms/fuse_streaming.mlir and
// test/python/transforms/test_fuse_streaming.py.
builtin.module {
  qtrain.param @conv0.weight = dense<"0x71202F65144655BA8FCDC95F69820052A24C9FF851CED8C738C17DF2FA01150E027E4E4B331FD77DF7B758A95B1D9E8CF28AA50478F74F6A5221F104C4FFE1C07E8499B2783161B438DFFD811E542AA809C57761B002705935248B3EF998BF0A3A021D5F2FDD25199C9029E3"> : tensor<4x3x3x3xi8>
  qtrain.param @conv0.bias = dense<[393, -708, -1098, -1400]> : tensor<4xi32>
  qtrain.param @conv1.weight = dense<"0xF11BF2230C2D74A710F1DCBE8EE75399E87773B7822C84CDFF5F982908A25858FC711B677512C8A610B2406DBF0D8DAFE1627824151290E07BE9B7BE368A7860"> : tensor<16x1x1x4xi8>
  qtrain.param @conv1.bias = dense<[270, -130, 1045, 190, -92, -712, -214, 1005, -1780, -1900, 881, -512, 1214, -1879, 1628, -1509]> : tensor<16xi32>
  qtrain.param @conv2.weight = dense<"0x3E4F25A359EB595078845D21FC4B7303973ABBBAB2B369DD9CAEE5D9D0725D137CD7A4C69773B8F2B47BA90473056665443E141554ED7260E0E9376C9992C0EEAA050B733FC1494E2E2DD037A3216B78CDD51EE63BB4AC8DF8B7CD6A5057189D3F1A68FBAD18F529E0CFA07641F7BC21EA2298AF3C902DE981433350653B579D6B69314D3E606306516ACC8CAC88EF86"> : tensor<16x3x3x1xi8>
  qtrain.param @conv2.bias = dense<[-965, -989, 826, -1006, 1799, -1250, 1887, 268, -1025, -1845, -777, 361, -1564, -1336, -1541, 711]> : tensor<16xi32>
  qtrain.param @conv3.weight = dense<"0xA89DCD20A14CCED02A5DF04CCEA15444406200B31613E323C41C4B99F4298E2269532F4DDDD49639D15EF764A4AAD987FE2629B7AA10227165E1AAC161F57E28189A17E258A3B1292E5406E1CFDF2A0ACCB736C0B6D55AF51895D840461460CDAA94B34367A200A258A224953D683BC557CF4155FC1F5BB086EFAF625EE0CF36"> : tensor<8x1x1x16xi8>
  qtrain.param @conv3.bias = dense<[-187, -1613, 650, 909, -1720, 1105, 135, 1303]> : tensor<8xi32>
  qtrain.param @conv4.weight = dense<"0xB63F23650FA163AF8F4CF325A238E87F23704B5797471AE5"> : tensor<3x1x1x8xi8>
  qtrain.param @conv4.bias = dense<[-751, 564, -1209]> : tensor<3xi32>
  func.func @forward(%image: tensor<1x16x16x3xi8>) -> tensor<1x3xi8> {
    %w0 = qtrain.get_param @conv0.weight : tensor<4x3x3x3xi8>
    %b0 = qtrain.get_param @conv0.bias : tensor<4xi32>
    %x0 = qtrain.conv2d %image, %w0, %b0 {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.0078125], zp = 0>, weight_q = #qtrain.quant<scales = [0.008530705235898495, 0.005035569425672293, 0.009829983115196228, 0.006719933357089758], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.05000000074505806], zp = -128>} : (tensor<1x16x16x3xi8>, tensor<4x3x3x3xi8>, tensor<4xi32>) -> tensor<1x16x16x4xi8>
    %w1 = qtrain.get_param @conv1.weight : tensor<16x1x1x4xi8>
    %b1 = qtrain.get_param @conv1.bias : tensor<16xi32>
    %x1 = qtrain.conv2d %x0, %w1, %b1 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.05000000074505806], zp = -128>, weight_q = #qtrain.quant<scales = [0.009737186133861542, 0.007262086030095816, 0.005425761919468641, 0.0061899209395051, 0.008982473984360695, 0.0047536855563521385, 0.006722327787429094, 0.00746947480365634, 0.004843309987336397, 0.006152787711471319, 0.008121979422867298, 0.009273434057831764, 0.0032084982376545668, 0.009467354975640774, 0.002041430911049247, 0.008023819886147976], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.03999999910593033], zp = -128>} : (tensor<1x16x16x4xi8>, tensor<16x1x1x4xi8>, tensor<16xi32>) -> tensor<1x16x16x16xi8>
    %w2 = qtrain.get_param @conv2.weight : tensor<16x3x3x1xi8>
    %b2 = qtrain.get_param @conv2.bias : tensor<16xi32>
    %x2 = qtrain.conv2d %x1, %w2, %b2 {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, groups = 16 : i64, input_q = #qtrain.quant<scales = [0.03999999910593033], zp = -128>, weight_q = #qtrain.quant<scales = [0.0021686027757823467, 0.004484561737626791, 0.009506730362772942, 0.006307171192020178, 0.008492698892951012, 0.007264208514243364, 0.006886006332933903, 0.0035300215240567923, 0.006595158018171787, 0.002317491453140974, 0.008413314819335938, 0.009680567309260368, 0.008832072839140892, 0.0024056772235780954, 0.00470928056165576, 0.004544025752693415], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.029999999329447746], zp = -128>} : (tensor<1x16x16x16xi8>, tensor<16x3x3x1xi8>, tensor<16xi32>) -> tensor<1x8x8x16xi8>
    %w3 = qtrain.get_param @conv3.weight : tensor<8x1x1x16xi8>
    %b3 = qtrain.get_param @conv3.bias : tensor<8xi32>
    %x3 = qtrain.conv2d %x2, %w3, %b3 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.029999999329447746], zp = -128>, weight_q = #qtrain.quant<scales = [0.007393607869744301, 0.004965862259268761, 0.0025136959739029408, 0.0061502098105847836, 0.00805967953056097, 0.003526705550029874, 0.004129897803068161, 0.006288960110396147], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.05000000074505806], zp = 3>} : (tensor<1x8x8x16xi8>, tensor<8x1x1x16xi8>, tensor<8xi32>) -> tensor<1x8x8x8xi8>
    %p = qtrain.avgpool %x3 {kernel = array<i64: 8, 8>, strides = array<i64: 1, 1>, input_q = #qtrain.quant<scales = [0.05000000074505806], zp = 3>, output_q = #qtrain.quant<scales = [0.019999999552965164], zp = -10>} : tensor<1x8x8x8xi8> -> tensor<1x1x1x8xi8>
    %w4 = qtrain.get_param @conv4.weight : tensor<3x1x1x8xi8>
    %b4 = qtrain.get_param @conv4.bias : tensor<3xi32>
    %x4 = qtrain.conv2d %p, %w4, %b4 {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.019999999552965164], zp = -10>, weight_q = #qtrain.quant<scales = [0.00807595532387495, 0.008061525411903858, 0.007770361844450235], zp = 0, axis = 0>, output_q = #qtrain.quant<scales = [0.10000000149011612], zp = 0>} : (tensor<1x1x1x8xi8>, tensor<3x1x1x8xi8>, tensor<3xi32>) -> tensor<1x1x1x3xi8>
    %logits = qtrain.reshape %x4 : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %logits : tensor<1x3xi8>
  }
}
