/*
 * qtrain_requant_grad_f32.c - gradient through a requantization (numerics.requant_grad):
 * out[e] = mask bit e ? fp32(g[e] * m[c]) : +0.0, c = e mod channels (or one multiplier).
 * In place allowed. Four loop variants (mask or not, per-channel or single multiplier) keep the
 * element loop to two loads, a multiply, the mask bit test, a select and a store.
 */
#include "qtrain_kernels_support.h"

QTRAIN_INLINE void requant_grad(const float *grad, const uint8_t *mask, int32_t count, int32_t channels,
                                const float *multiplier, float *output, const int with_mask, const int per_channel) {
    const int32_t rows = per_channel ? count / channels : 1, row = per_channel ? channels : count;
    const float single = multiplier[0];
    uint32_t e = 0;
    for (int32_t r = 0; r < rows; r++) {
        const float *m = multiplier;
#pragma clang loop unroll(disable)
        for (int32_t c = 0; c < row; c++, e++) {
            const float v = grad[e] * (per_channel ? *m++ : single);
            if (with_mask) {
                /* A masked element is +0.0, never the product with 0 (which could be -0.0 or NaN). */
                output[e] = ((mask[e >> 3] >> (e & 7u)) & 1u) ? v : 0.0f;
            } else {
                output[e] = v;
            }
        }
    }
}

void qtrain_requant_grad_f32(const float *grad, const uint8_t *mask, int32_t count, int32_t channels,
                             const float *multiplier, int32_t num_multipliers, float *output) {
    const int per_channel = num_multipliers > 1;
    if (mask != NULL) {
        if (per_channel) {
            requant_grad(grad, mask, count, channels, multiplier, output, 1, 1);
        } else {
            requant_grad(grad, mask, count, channels, multiplier, output, 1, 0);
        }
    } else {
        if (per_channel) {
            requant_grad(grad, mask, count, channels, multiplier, output, 0, 1);
        } else {
            requant_grad(grad, mask, count, channels, multiplier, output, 0, 0);
        }
    }
}
