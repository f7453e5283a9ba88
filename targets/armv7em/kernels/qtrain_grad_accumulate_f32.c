/*
 * qtrain_grad_accumulate_f32.c - the gradient of a value with two uses: out = fp32(lhs + rhs).
 */
#include "qtrain_kernels_support.h"

void qtrain_grad_accumulate_f32(const float *lhs, const float *rhs, int32_t count, float *output) {
    for (int32_t i = 0; i < count; i++) {
        output[i] = lhs[i] + rhs[i];
    }
}
