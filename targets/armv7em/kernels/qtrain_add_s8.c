/*
 * qtrain_add_s8.c - requantizing add in onnxruntime's folded-offset form (numerics.add_with_mask):
 *   t = fmaf(fp32(b), r_b, c);  t = fmaf(fp32(a), r_a, t);  y = clamp(rint(t), lo, hi)
 * Two VFMA.F32 per element on the Cortex-M7 (`__builtin_fmaf`; the build's -fno-math-errno keeps it
 * an instruction), the correctly rounded fmaf of libm on the host: the same bits.
 */
#include "qtrain_kernels_support.h"

void qtrain_add_s8(const int8_t *lhs, const int8_t *rhs, int32_t count, float lhs_multiplier,
                   float rhs_multiplier, float offset, int32_t clamp_min, int32_t clamp_max, int8_t *output,
                   uint8_t *mask) {
    /* The zero points live in `offset`, so the requantization is a plain round and clamp (zp = 0). */
    const qtrain_requant_t q = qtrain_requant_make(0, clamp_min, clamp_max);
    if (mask == NULL) {
        for (int32_t i = 0; i < count; i++) {
            float t = __builtin_fmaf((float)rhs[i], rhs_multiplier, offset);
            t = __builtin_fmaf((float)lhs[i], lhs_multiplier, t);
            output[i] = (int8_t)qtrain_requant_scaled(t, &q);
        }
        return;
    }
    for (int32_t i = 0; i < count; i += 8) {
        const int32_t n = count - i < 8 ? count - i : 8;
        uint32_t bits = 0;
        for (int32_t j = 0; j < n; j++) {
            float t = __builtin_fmaf((float)rhs[i + j], rhs_multiplier, offset);
            t = __builtin_fmaf((float)lhs[i + j], lhs_multiplier, t);
            uint32_t inside;
            output[i + j] = (int8_t)qtrain_requant_scaled_mask(t, &q, &inside);
            bits |= inside << j;
        }
        mask[i >> 3] = (uint8_t)bits;
    }
}
