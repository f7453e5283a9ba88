// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -p qtrain-autodiff | filecheck %s
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{lr=-1.0}' 2>&1 | filecheck %s --check-prefix=LR
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{loss=mse}' 2>&1 | filecheck %s --check-prefix=LOSS
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p qtrain-autodiff,qtrain-autodiff --verify-diagnostics | filecheck %s --check-prefix=TWICE

builtin.module {
  func.func @main() {
    func.return
  }
}
// CHECK: qtrain-autodiff: the module has no func.func @forward to differentiate

// LR: qtrain-opt: error: qtrain-autodiff: lr = -1 is not a usable learning rate (a positive float32: between 1.4e-45 and 3.4e38)
// LOSS: qtrain-opt: error: {{.*}}mse
// TWICE: qtrain-autodiff: the module already has a func.func @train_step
