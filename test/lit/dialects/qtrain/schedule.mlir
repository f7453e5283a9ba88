// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

// The learning-rate factor of this step (warm-up, cosine decay, held), consumed by scheduled updates,
// one of them with SGD momentum; a constant schedule (no warm-up, no decay) and an unscheduled update.
qtrain.param @w trainable storage(f32) = dense<1> : tensor<3x1x1x4xi8>
qtrain.param @b trainable = dense<[1, 2, 3]> : tensor<3xi32>
func.func @train_step(%gw: tensor<3x1x1x4xf32>, %gb: tensor<3xf32>) {
  %f = qtrain.lr_schedule {warmup_steps = 50 : i64, steps = 1000 : i64, final_ratio = 0.1 : f32} : f32
  qtrain.sgd_update @w, %gw factor %f {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3x1x1x4xf32>
  qtrain.sgd_update @b, %gb factor %f {lr = 0.005 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 0.9 : f32} : tensor<3xf32>
  func.return
}
func.func @forward(%gb: tensor<3xf32>) {
  %c = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 0 : i64, final_ratio = 1.0 : f32} : f32
  qtrain.sgd_update @b, %gb {lr = 0.005 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3xf32>
  func.return
}
// CHECK:      %f = qtrain.lr_schedule {warmup_steps = 50 : i64, steps = 1000 : i64, final_ratio = 1.000000e-01 : f32} : f32
// CHECK-NEXT: qtrain.sgd_update @w, %gw factor %f {lr = 5.000000e-02 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3x1x1x4xf32>
// CHECK-NEXT: qtrain.sgd_update @b, %gb factor %f {lr = 5.000000e-03 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 9.000000e-01 : f32} : tensor<3xf32>
// CHECK:      %c = qtrain.lr_schedule {warmup_steps = 0 : i64, steps = 0 : i64, final_ratio = 1.000000e+00 : f32} : f32
// CHECK-NEXT: qtrain.sgd_update @b, %gb {lr = 5.000000e-03 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3xf32>
// GENERIC:      %f = "qtrain.lr_schedule"() <{warmup_steps = 50 : i64, steps = 1000 : i64, final_ratio = 1.000000e-01 : f32}> : () -> f32
// GENERIC:      "qtrain.sgd_update"(%gb, %f) <{param = @b, lr = 5.000000e-03 : f32, grad_scale = #qtrain.f32<[1.0]>, momentum = 9.000000e-01 : f32}> : (tensor<3xf32>, f32) -> ()
