/*
 * qtrain_dequantize_s8_f32.c - numerics.dequantize: y = fp32(x - zp) * s (exact integer difference,
 * one fp32 multiply).
 */
#include "qtrain_kernels_support.h"

void qtrain_dequantize_s8_f32(const int8_t *input, int32_t count, float scale, int32_t zero_point, float *output) {
    for (int32_t i = 0; i < count; i++) {
        output[i] = (float)(input[i] - zero_point) * scale;
    }
}
