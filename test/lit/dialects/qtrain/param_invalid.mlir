// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

builtin.module {
  qtrain.param @w = dense<1> : tensor<4xi16>
}
// CHECK: qtrain.param @w: element type must be i8, i32 or f32, got i16

// -----

builtin.module {
  func.func @f() {
    qtrain.param @w = dense<1> : tensor<4xi8>
    func.return
  }
}
// CHECK: qtrain.param @w: must be at module level

// -----

builtin.module {
  qtrain.param @w = dense<1> : tensor<4xi8>
  qtrain.param @w = dense<2> : tensor<4xi8>
}
// CHECK: Redefinition of symbol "w"
