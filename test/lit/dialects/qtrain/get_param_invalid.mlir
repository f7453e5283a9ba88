// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

builtin.module {
  func.func @f() {
    %b = qtrain.get_param @missing : tensor<3xi32>
    func.return
  }
}
// CHECK: qtrain.get_param: no qtrain.param named @missing

// -----

builtin.module {
  qtrain.param @b = dense<[1, 2, 3]> : tensor<3xi32>
  func.func @f() {
    %b = qtrain.get_param @b : tensor<4xi32>
    func.return
  }
}
// CHECK: qtrain.get_param: @b has type tensor<3xi32>, but the result is tensor<4xi32>

// -----

builtin.module {
  func.func @g() {
    func.return
  }
  func.func @f() {
    %b = qtrain.get_param @g : tensor<4xi32>
    func.return
  }
}
// CHECK: qtrain.get_param: @g is a func.func, not a qtrain.param
