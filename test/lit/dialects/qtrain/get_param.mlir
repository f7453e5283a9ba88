// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

builtin.module {
  qtrain.param @fc.bias trainable = dense<[1, 2, 3]> : tensor<3xi32>
  func.func @f() -> tensor<3xi32> {
    %b = qtrain.get_param @fc.bias : tensor<3xi32>
    func.return %b : tensor<3xi32>
  }
}
// CHECK:      %b = qtrain.get_param @fc.bias : tensor<3xi32>
// CHECK-NEXT: func.return %b : tensor<3xi32>
// GENERIC:    %b = "qtrain.get_param"() <{param = @fc.bias}> : () -> tensor<3xi32>
