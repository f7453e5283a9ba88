/*
 * qtrain_quantize_f32_s8.c - numerics.quantize: y = clamp(rint(fp32(x / s)) + zp, -128, 127), one fp32
 * division (not a multiplication by 1/s, which rounds differently); NaN gives -128.
 */
#include "qtrain_kernels_support.h"

void qtrain_quantize_f32_s8(const float *input, int32_t count, float scale, int32_t zero_point, int8_t *output) {
    const qtrain_requant_t q = qtrain_requant_make(zero_point, -128, 127);
    for (int32_t i = 0; i < count; i++) {
        output[i] = (int8_t)qtrain_requant_scaled(input[i] / scale, &q);
    }
}
