// RUN: qtrain-opt %s --split-input-file --verify-diagnostics --allow-unregistered-dialect | filecheck %s

"test.op"() {q = #qtrain.quant<scales = [-0.5], zp = 0>} : () -> ()
// CHECK: #qtrain.quant scales must be positive and finite, got -0.5

// -----

"test.op"() {q = #qtrain.quant<scales = [0.0], zp = 0>} : () -> ()
// CHECK: #qtrain.quant scales must be positive and finite, got 0.0

// -----

"test.op"() {q = #qtrain.quant<scales = [0.1, 0.2], zp = 0>} : () -> ()
// CHECK: a per-tensor #qtrain.quant (no axis) has exactly one scale, got 2

// -----

"test.op"() {q = #qtrain.quant<scales = [0.1], zp = 200>} : () -> ()
// CHECK: #qtrain.quant zero point 200 is outside the int8 range

// -----

"test.op"() {q = #qtrain.quant<scales = [0.1], zp = 0, axis = -2>} : () -> ()
// CHECK: #qtrain.quant axis must be -1 (per-tensor) or >= 0, got -2

// -----

"test.op"() {q = #qtrain.quant<scales = [], zp = 0>} : () -> ()
// CHECK: #qtrain.quant needs at least one scale
