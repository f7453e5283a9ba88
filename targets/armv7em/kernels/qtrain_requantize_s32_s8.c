/*
 * qtrain_requantize_s32_s8.c - numerics.requantize_with_mask on an int32 tensor:
 * y = clamp(rint(fp32(acc) * m[c]) + zp, lo, hi), per tensor or per channel (last axis).
 */
#include "qtrain_kernels_support.h"

void qtrain_requantize_s32_s8(const int32_t *input, int32_t count, int32_t channels, const float *multiplier,
                              int32_t num_multipliers, int32_t zero_point, int32_t clamp_min, int32_t clamp_max,
                              int8_t *output, uint8_t *mask) {
    const qtrain_requant_t q = qtrain_requant_make(zero_point, clamp_min, clamp_max);
    if (mask != NULL) {
        qtrain_mask_clear(mask, count);
    }
    const int per_channel = num_multipliers > 1;
    for (int32_t i = 0, c = 0; i < count; i++) {
        qtrain_store_output(input[i], multiplier[per_channel ? c : 0], &q, output, (uint32_t)i, mask);
        if (++c == channels) {
            c = 0;
        }
    }
}
