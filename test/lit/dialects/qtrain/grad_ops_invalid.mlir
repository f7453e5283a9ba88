// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

builtin.module {
  qtrain.param @w trainable = dense<1> : tensor<3x1x1x4xi8>
  func.func @f(%g: tensor<1x4x4x3xf32>, %x: tensor<1x4x4x4xi8>) {
    %w = qtrain.get_param @w : tensor<3x1x1x4xi8>
    %g2 = "test.op"() : () -> tensor<3x1x1x4xf32>
    qtrain.sgd_update @w, %g2 {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3x1x1x4xf32>
    %gx = qtrain.conv2d_input_grad %g, %w {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64} : (tensor<1x4x4x3xf32>, tensor<3x1x1x4xi8>) -> tensor<1x4x4x4xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: @w is read by qtrain.conv2d_input_grad after this in-place update; updates must follow every use of the parameter's value

// -----

builtin.module {
  qtrain.param @w = dense<1> : tensor<3x1x1x4xi8>
  func.func @f(%g: tensor<3x1x1x4xf32>) {
    qtrain.sgd_update @w, %g {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3x1x1x4xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: @w is not marked trainable

// -----

builtin.module {
  qtrain.param @w trainable channels [0, 2] = dense<1> : tensor<3x1x1x4xi8>
  func.func @f(%g: tensor<3x1x1x4xf32>) {
    qtrain.sgd_update @w, %g {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3x1x1x4xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: grad must have the trainable shape of @w, 3x1x1x2, got tensor<3x1x1x4xf32>

// -----

builtin.module {
  qtrain.param @w trainable = dense<1> : tensor<3x1x1x4xi8>
  func.func @f(%g: tensor<3x1x1x4xf32>) {
    qtrain.sgd_update @w, %g {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0, 2.0]>} : tensor<3x1x1x4xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: grad_scale has 2 values, need 1 or one per output channel (3)

// -----

builtin.module {
  qtrain.param @b trainable = dense<1> : tensor<3xi32>
  func.func @f(%g: tensor<3xf32>, %k: f32) {
    qtrain.sgd_update @b, %g factor %k {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>, stochastic} : tensor<3xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: stochastic rounding applies to i8 or i16 storage, @b is stored as i32

// -----

builtin.module {
  qtrain.param @w trainable storage(i16) = dense<1> : tensor<3x1x1x4xi8>
  func.func @f(%g: tensor<3x1x1x4xf32>, %k: f32) {
    qtrain.sgd_update @w, %g factor %k {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>} : tensor<3x1x1x4xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: the i16 master of @w is updated with stochastic rounding

// -----

builtin.module {
  qtrain.param @w trainable = dense<1> : tensor<3x1x1x4xi8>
  func.func @f(%g: tensor<3x1x1x4xf32>) {
    qtrain.sgd_update @w, %g {lr = 0.05 : f32, grad_scale = #qtrain.f32<[1.0]>, stochastic} : tensor<3x1x1x4xf32>
    func.return
  }
}
// CHECK: qtrain.sgd_update: stochastic rounding needs the step counter (a `factor` from qtrain.lr_schedule) and no momentum

// -----

builtin.module {
  qtrain.param @w storage(f32) = dense<1> : tensor<3x1x1x4xi8>
}
// CHECK: qtrain.param @w: storage and channels only apply to a trainable parameter

// -----

builtin.module {
  qtrain.param @w trainable storage(i32) = dense<1> : tensor<3x1x1x4xi8>
}
// CHECK: qtrain.param @w: storage must be the parameter's element type (i8), f32 or (an i8 weight) i16, got i32

// -----

%g = "test.op"() : () -> tensor<1x4x4x3xf32>
%m = "test.op"() : () -> tensor<1x4x4x2xi1>
%a = qtrain.requant_grad %g mask %m {multiplier = #qtrain.f32<[0.5]>} : tensor<1x4x4x3xf32>, tensor<1x4x4x2xi1> -> tensor<1x4x4x3xf32>
// CHECK: qtrain.requant_grad: grad and mask must have the same shape, got tensor<1x4x4x3xf32> and tensor<1x4x4x2xi1>

// -----

%g = "test.op"() : () -> tensor<1x4x4x3xf32>
%a = qtrain.requant_grad %g {multiplier = #qtrain.f32<[0.5, 0.25]>} : tensor<1x4x4x3xf32> -> tensor<1x4x4x3xf32>
// CHECK: qtrain.requant_grad: multiplier has 2 values, need 1 or one per channel of the last axis (3)

// -----

%g = "test.op"() : () -> tensor<1x4x4x3xf32>
%w = "test.op"() : () -> tensor<3x3x3x4xi8>
%gx = qtrain.conv2d_input_grad %g, %w {strides = array<i64: 2, 2>, padding = array<i64: 1, 1, 1, 1>, groups = 1 : i64} : (tensor<1x4x4x3xf32>, tensor<3x3x3x4xi8>) -> tensor<1x4x4x4xf32>
// CHECK: qtrain.conv2d_input_grad: grad must be tensor<1x2x2x3xf32> for this result, weight, stride and padding, got tensor<1x4x4x3xf32>

// -----

%x = "test.op"() : () -> tensor<1x4x4x2xi8>
%g = "test.op"() : () -> tensor<1x4x4x3xf32>
%gw = qtrain.conv2d_weight_grad %x, %g {strides = array<i64: 1, 1>, padding = array<i64: 0, 0, 0, 0>, groups = 1 : i64, input_q = #qtrain.quant<scales = [0.5], zp = 0>} : (tensor<1x4x4x2xi8>, tensor<1x4x4x3xf32>) -> tensor<3x1x1x4xf32>
// CHECK: qtrain.conv2d_weight_grad: result must be tensor<3x1x1x2xf32> (output channels x kernel x saved input channels), got tensor<3x1x1x4xf32>

// -----

%x = "test.op"() : () -> tensor<1x4x4x4xi8>
%s = qtrain.channel_slice %x {start = 3 : i64, stop = 6 : i64} : tensor<1x4x4x4xi8> -> tensor<1x4x4x3xi8>
// CHECK: qtrain.channel_slice: [3, 6) must be a non-empty range within 4 channels

// -----

%g = "test.op"() : () -> tensor<1x4x4x3xf32>
%b = qtrain.bias_grad %g : tensor<1x4x4x3xf32> -> tensor<4xf32>
// CHECK: qtrain.bias_grad: result must be tensor<3xf32>, got tensor<4xf32>

// -----

builtin.module {
  qtrain.param @w trainable depthwise = dense<1> : tensor<4x3x3x1xi8>
}
// CHECK: qtrain.param @w: depthwise marks the channel slice of a [C, KH, KW, 1] weight
