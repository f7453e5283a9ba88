// RUN: qtrain-opt %S/../Inputs/tiny_model.mlir -p qtrain-autodiff | filecheck %s

// A residual block: %x1 feeds both the depthwise conv and the add, so its two gradients are summed.
// The global pool cannot saturate with these scales, so it saves no mask; the add can, so it does.
// CHECK:      %x4, %[[ADDMASK:.*]] = qtrain.add %x3, %x1
// CHECK:      %x5 = qtrain.avgpool %x4 {{.*}} -> tensor<1x1x1x4xi8>{{$}}
// CHECK:      %[[POOLG:.*]] = qtrain.requant_grad %{{.*}} {multiplier = #qtrain.f32<[0.0625]>} : tensor<1x1x1x4xf32> -> tensor<1x1x1x4xf32>
// CHECK-NEXT: %[[SUMG:.*]] = qtrain.avgpool_grad %[[POOLG]] {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>} : tensor<1x1x1x4xf32> -> tensor<1x4x4x4xf32>
// CHECK-NEXT: %[[LHS:.*]] = qtrain.requant_grad %[[SUMG]] mask %[[ADDMASK]] {multiplier = #qtrain.f32<[0.5875]>}
// CHECK-NEXT: %[[RHS:.*]] = qtrain.requant_grad %[[SUMG]] mask %[[ADDMASK]] {multiplier = #qtrain.f32<[0.5875]>}
// CHECK:      %[[DW:.*]] = qtrain.conv2d_input_grad %g_acc_2, %w1 {{.*}}groups = 4 : i64
// CHECK-NEXT: %[[ACC:.*]] = qtrain.grad_accumulate %[[RHS]], %[[DW]]
// CHECK-NEXT: %g_acc_3 = qtrain.requant_grad %[[ACC]] mask
