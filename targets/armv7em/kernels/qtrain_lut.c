/*
 * qtrain_lut.c - qtrain.lut (int8 -> int8 through a 256-entry table) and its gradient qtrain.lut_grad, as
 * dialects/qtrain/activations.py states them. The tables are computed at compile time (HardSwish,
 * HardSigmoid, Sigmoid, SiLU, a requantization) and live in Flash; element x reads entry x + 128.
 */
#include "qtrain_kernels_support.h"

void qtrain_lut_s8(const int8_t *input, int32_t count, const int8_t *table, int8_t *output) {
    for (int32_t i = 0; i < count; i++) {
        output[i] = table[(int32_t)input[i] + 128];
    }
}

void qtrain_lut_grad_f32(const float *grad, const int8_t *input, int32_t count, const float *slope,
                         float *input_grad) {
    for (int32_t i = 0; i < count; i++) {
        input_grad[i] = grad[i] * slope[(int32_t)input[i] + 128];
    }
}
