// RUN: qtrain-opt --help | filecheck %s
// RUN: qtrain-opt --version | filecheck %s --check-prefix=VERSION

// `qtrain-opt --help` shows the usual xdsl-opt flags and lists every qtrain pass with its options.
// CHECK: --split-input-file
// CHECK: --verify-diagnostics
// CHECK: --print-op-generic
// CHECK: --debug
// CHECK: qtrain passes (use with -p 'name{option=value ...}'):
// CHECK: qtrain-verify-quant-chain
// CHECK-NEXT: Fails when a consumer's input quantization differs from its producer's output quantization.
// VERSION: qtrain-opt (xdsl 0.74.0)
