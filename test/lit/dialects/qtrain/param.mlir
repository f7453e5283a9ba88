// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

builtin.module {
  qtrain.param @conv0.weight = dense<[[[[1, -2]]], [[[3, 127]]]]> : tensor<2x1x1x2xi8>
  qtrain.param @conv0.bias trainable = dense<[-70000, 5]> : tensor<2xi32>
  qtrain.param @master.w trainable = dense<0.5> : tensor<4xf32>
}
// CHECK:      qtrain.param @conv0.weight = dense<{{\[\[\[\[}}1, -2]]], {{\[\[\[}}3, 127]]]]> : tensor<2x1x1x2xi8>
// CHECK-NEXT: qtrain.param @conv0.bias trainable = dense<[-70000, 5]> : tensor<2xi32>
// CHECK-NEXT: qtrain.param @master.w trainable = dense<5.000000e-01> : tensor<4xf32>

// GENERIC:      "qtrain.param"() <{sym_name = "conv0.weight", value = dense<{{.*}}> : tensor<2x1x1x2xi8>}> : () -> ()
// GENERIC-NEXT: "qtrain.param"() <{sym_name = "conv0.bias", trainable, value = dense<[-70000, 5]> : tensor<2xi32>}> : () -> ()
