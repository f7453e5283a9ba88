// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x1x1x10xi8>
%r = qtrain.reshape %x : tensor<1x1x1x10xi8> -> tensor<1x12xi8>
// CHECK: qtrain.reshape: element counts differ (10 vs 12)

// -----

%x = "test.op"() : () -> tensor<1x1x1x10xi8>
%r = qtrain.reshape %x : tensor<1x1x1x10xi8> -> tensor<1x10xf32>
// CHECK: qtrain.reshape: element types differ: tensor<1x1x1x10xi8> vs tensor<1x10xf32>

// -----

%l = "test.op"() : () -> tensor<2x10xf32>
%label = "test.op"() : () -> i32
%loss = qtrain.cross_entropy %l, %label : tensor<2x10xf32> -> f32
// CHECK: qtrain.cross_entropy: logits must have every dimension but the last equal to 1 (batch 1), got tensor<2x10xf32>

// -----

%l = "test.op"() : () -> tensor<1x10xi8>
%label = "test.op"() : () -> i32
%loss = qtrain.cross_entropy %l, %label : tensor<1x10xi8> -> f32
// CHECK: qtrain.cross_entropy: logits must have element type f32, got tensor<1x10xi8>

// -----

%l = "test.op"() : () -> tensor<1x10xf32>
%label = "test.op"() : () -> i64
%loss = "qtrain.cross_entropy"(%l, %label) : (tensor<1x10xf32>, i64) -> f32
// CHECK: operand 'label' at position 1 does not verify
