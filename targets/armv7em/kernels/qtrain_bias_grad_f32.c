/*
 * qtrain_bias_grad_f32.c - db[c] = sum over pixels of g[p, c]: fp32 adds from +0 in pixel order.
 */
#include "qtrain_kernels_support.h"

void qtrain_bias_grad_f32(const float *grad, int32_t pixels, int32_t channels, float *output) {
    for (int32_t c = 0; c < channels; c++) {
        output[c] = 0.0f;
    }
    for (int32_t p = 0; p < pixels; p++) {
        const float *row = grad + p * channels;
        for (int32_t c = 0; c < channels; c++) {
            output[c] = output[c] + row[c];
        }
    }
}
