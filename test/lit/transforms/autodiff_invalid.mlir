// RUN: qtrain-opt %s --split-input-file --verify-diagnostics -p qtrain-autodiff | filecheck %s
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{lr=-1.0}' 2>&1 | filecheck %s --check-prefix=LR
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{loss=mse}' 2>&1 | filecheck %s --check-prefix=LOSS
// RUN: qtrain-opt %S/../Inputs/two_layer.mlir -p qtrain-autodiff,qtrain-autodiff --verify-diagnostics | filecheck %s --check-prefix=TWICE
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{warmup-steps=-1}' 2>&1 | filecheck %s --check-prefix=WARMUP
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{warmup-steps=100 steps=50}' 2>&1 | filecheck %s --check-prefix=HORIZON
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{final-lr-ratio=2.0}' 2>&1 | filecheck %s --check-prefix=RATIO
// RUN: not qtrain-opt %S/../Inputs/two_layer.mlir -p 'qtrain-autodiff{momentum=1.0}' 2>&1 | filecheck %s --check-prefix=MOMENTUM

builtin.module {
  func.func @main() {
    func.return
  }
}
// CHECK: qtrain-autodiff: the module has no func.func @forward to differentiate

// LR: qtrain-opt: error: qtrain-autodiff: lr = -1 is not a usable learning rate (a positive float32: between 1.4e-45 and 3.4e38)
// LOSS: qtrain-opt: error: {{.*}}mse
// TWICE: qtrain-autodiff: the module already has a func.func @train_step
// WARMUP: qtrain-opt: error: qtrain-autodiff: warmup-steps must be within [0, 16777216], got -1
// HORIZON: qtrain-opt: error: qtrain-autodiff: steps (the decay horizon) must be 0 (no decay) or more than warmup-steps (100) and at most 16777216, got 50
// RATIO: qtrain-opt: error: qtrain-autodiff: final-lr-ratio must be within [0, 1], got 2.0
// MOMENTUM: qtrain-opt: error: qtrain-autodiff: momentum must be within [0, 1), got 1.0
