// Bad input: one diagnostic line (plus the offending op) on stderr, a failing exit status (2: checked
// in test/python/tools/test_qtrain_opt.py), never a traceback.
// RUN: not qtrain-opt %S/../Inputs/invalid_conv.mlir 2>&1 | filecheck %s --check-prefix=VERIFY
// RUN: not qtrain-opt %s 2>&1 | filecheck %s --check-prefix=PARSE
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'no-such-pass' 2>&1 | filecheck %s --check-prefix=PASS
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-verify-quant-chain{bogus=1}' 2>&1 | filecheck %s --check-prefix=OPTION
// RUN: not qtrain-opt %S/does-not-exist.mlir 2>&1 | filecheck %s --check-prefix=MISSING

// No traceback before the error line nor after it.
// VERIFY-NOT: Traceback
// VERIFY: qtrain-opt: error: qtrain.conv2d: output must be tensor<1x4x4x4xi8> for this input, kernel, stride and padding, got tensor<1x5x5x4xi8>
// VERIFY-NEXT: at: %y = "qtrain.conv2d"(%x, %w)
// VERIFY-NOT: Traceback

// PARSE-NOT: Traceback
// PARSE: qtrain-opt: error: {{.*}}
// PARSE-NOT: Traceback
// PASS: qtrain-opt: error: bad pass pipeline 'no-such-pass': Unrecognized passes: ['no-such-pass']
// OPTION: qtrain-opt: error: {{.*}}bogus
// MISSING: qtrain-opt: error: {{.*}}does-not-exist.mlir

%x = "test.op"() : () -> tensor<1x4x4x8xi8>
%g = qtrain.avgpool %x {kernel = array<i64: 4, 4> : tensor<1x4x4x8xi8> -> tensor<1x1x1x8xi8>
