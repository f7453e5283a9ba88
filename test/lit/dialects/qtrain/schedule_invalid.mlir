// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%f = qtrain.lr_schedule {warmup_steps = -1 : i64, steps = 0 : i64, final_ratio = 0.1 : f32} : f32
// CHECK: qtrain.lr_schedule: warmup_steps must be within [0, 2^24], got -1

// -----

%f = qtrain.lr_schedule {warmup_steps = 100 : i64, steps = 100 : i64, final_ratio = 0.1 : f32} : f32
// CHECK: qtrain.lr_schedule: steps (the horizon) must be 0 (no decay) or within (warmup_steps, 2^24] = (100, 16777216], got 100

// -----

%f = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 16777217 : i64, final_ratio = 0.1 : f32} : f32
// CHECK: qtrain.lr_schedule: steps (the horizon) must be 0 (no decay) or within (warmup_steps, 2^24] = (0, 16777216], got 16777217

// -----

%f = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 10 : i64, final_ratio = 1.5 : f32} : f32
// CHECK: qtrain.lr_schedule: final_ratio must be within [0, 1], got 1.5

// -----

%f = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 10 : i64, final_ratio = 0.5 : f32} : i32
// CHECK: Expected attribute f32 but got i32

// -----

// One step counter per function.
func.func @train_step() {
  %f = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 10 : i64, final_ratio = 0.5 : f32} : f32
  %g = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 10 : i64, final_ratio = 0.5 : f32} : f32
  func.return
}
// CHECK: qtrain.lr_schedule: a function has at most one schedule (one step counter)

// -----

builtin.module {
  qtrain.param @b trainable = dense<[1, 2, 3]> : tensor<3xi32>
  func.func @f(%g: tensor<3xf32>) {
    qtrain.sgd_update @b, %g {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 1.0 : f32} : tensor<3xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: momentum must be within (0, 1) (omit it for plain SGD), got 1.0


// -----

builtin.module {
  qtrain.param @b trainable = dense<[1, 2, 3]> : tensor<3xi32>
  func.func @f(%g: tensor<3xf32>) {
    qtrain.sgd_update @b, %g {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 0.0 : f32} : tensor<3xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: momentum must be within (0, 1) (omit it for plain SGD), got 0.0
