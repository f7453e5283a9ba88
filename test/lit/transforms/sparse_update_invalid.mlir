// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=some-only}' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=last-k k=9}' 2>&1 | filecheck %s --check-prefix=KRANGE
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme=last-k}' 2>&1 | filecheck %s --check-prefix=KMISSING
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="%S/../Inputs/tiny_schemes.json#tiny/toolarge"}' 2>&1 | filecheck %s --check-prefix=TOOLARGE
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="%S/../Inputs/tiny_schemes.json#tiny/10kb"}' 2>&1 | filecheck %s --check-prefix=BUDGET
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-autodiff,qtrain-sparse-update{scheme="%S/../Inputs/nothere.json#tiny/half"}' 2>&1 | filecheck %s --check-prefix=NOFILE
// RUN: not qtrain-opt %S/../Inputs/tiny_model.mlir -p 'qtrain-sparse-update{scheme=full}' 2>&1 | filecheck %s --check-prefix=ORDER

// UNKNOWN: qtrain-opt: error: qtrain-sparse-update: unknown scheme 'some-only': expected full, bias-only, last-k=K, tinytl-b, tinytl-l, tinytl-l+b or FILE.json#MODEL/BUDGET
// KRANGE: qtrain-opt: error: qtrain-sparse-update: last-k=9: k must be between 1 and the number of conv layers (4)
// KMISSING: qtrain-opt: error: qtrain-sparse-update: last-k needs a layer count: last-k=K (or the option k=K)
// TOOLARGE: qtrain-opt: error: qtrain-sparse-update: {{.*}}tiny/toolarge: n_bias_update = 5 but the network has 3 backbone convs
// BUDGET: qtrain-opt: error: qtrain-sparse-update: {{.*}}: no budget '10kb' for tiny (it has: half, pointwise, toolarge)
// NOFILE: qtrain-opt: error: qtrain-sparse-update: {{.*}}: cannot read {{.*}}nothere.json: No such file or directory
// ORDER: qtrain-opt: error: qtrain-sparse-update: no func.func @train_step; run qtrain-autodiff first
