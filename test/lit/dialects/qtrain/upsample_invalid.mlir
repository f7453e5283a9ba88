// RUN: qtrain-opt %s --split-input-file --verify-diagnostics | filecheck %s

%x = "test.op"() : () -> tensor<1x4x4x16xi8>
%u = qtrain.upsample %x {input_q = #qtrain.quant<scales = [0.05], zp = -3>, output_q = #qtrain.quant<scales = [0.04], zp = 2>} : tensor<1x4x4x16xi8> -> tensor<1x8x8x8xi8>
// CHECK: qtrain.upsample: output must keep the input's batch and channels (1, 16), got tensor<1x8x8x8xi8>

// -----

%g = "test.op"() : () -> tensor<1x8x8x16xf32>
%gx = qtrain.upsample_grad %g : tensor<1x8x8x16xf32> -> tensor<1x4x4x8xf32>
// CHECK: qtrain.upsample_grad: grad tensor<1x8x8x16xf32> and result tensor<1x4x4x8xf32> differ in batch or channels
