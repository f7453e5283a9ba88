// RUN: qtrain-opt %s --split-input-file --parsing-diagnostics | filecheck %s

"test.op"() {q = #qtrain.quant<scales = [0.1]>} : () -> ()
// CHECK: Expected ','

// -----

"test.op"() {q = #qtrain.quant<scale = [0.1], zp = 0>} : () -> ()
// CHECK: Expected 'scales'

// -----

%x = "test.op"() : () -> tensor<1x4xi8>
%y = qtrain.frobnicate %x : tensor<1x4xi8> -> tensor<1x4xi8>
// CHECK: Operation qtrain.frobnicate is not registered
