// RUN: QTRAIN_ROUNDTRIP
// RUN: QTRAIN_GENERIC_ROUNDTRIP

// Per-tensor and per-channel #qtrain.quant; scales are float32 and print as the shortest decimal
// that reads back to the same float32.
"test.op"() {q = #qtrain.quant<scales = [0.1], zp = -128>} : () -> ()
// CHECK: "test.op"() {q = #qtrain.quant<scales = [0.1], zp = -128>} : () -> ()
// GENERIC: "test.op"() {q = #qtrain.quant<scales = [0.1], zp = -128>} : () -> ()

"test.op"() {q = #qtrain.quant<scales = [0.0235294117647, 1.0e-05, 3.0], zp = 0, axis = 0>} : () -> ()
// CHECK-NEXT: "test.op"() {q = #qtrain.quant<scales = [0.023529412, 1.0e-05, 3.0], zp = 0, axis = 0>} : () -> ()

"test.op"() {q = #qtrain.quant<scales = [12345678.0], zp = 127, axis = -1>} : () -> ()
// CHECK-NEXT: "test.op"() {q = #qtrain.quant<scales = [1.2345678e+07], zp = 127>} : () -> ()
