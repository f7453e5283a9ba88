/*
 * qtrain_requant_grad_f32.c - gradient through a requantization (numerics.requant_grad):
 * out[e] = mask bit e ? fp32(g[e] * m[c]) : +0.0, c = e mod channels (or one multiplier).
 * In place allowed. Four loop variants (mask or not, per-channel or single multiplier) keep the
 * element loop to two loads, a multiply, the mask bit test, a select and a store.
 *
 * On the Cortex-M7, per-channel multipliers and a channel count that is a multiple of 8 (so every mask
 * byte is 8 elements of one row): one assembly loop does 8 elements per mask byte with VLDM / VSTM of 8,
 * 8 VMUL and, per element, TST of its bit and VSELEQ between the product and +0.0.
 */
#include "qtrain_kernels_support.h"

#if QTRAIN_DSP_ASM
/* rows x channels elements; channels a multiple of 8. */
__attribute__((naked, noinline)) static void requant_grad8_asm(const float *grad, const uint8_t *mask,
                                                               const float *multiplier, float *output, int32_t rows,
                                                               int32_t blocks) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, lr}\n\t"
        "vpush   {s16-s23}\n\t"
        "ldr     r4, [sp, #52]\n\t"      /* rows (stack: 5 registers + 8 floats = 52 bytes) */
        "ldr     r5, [sp, #56]\n\t"      /* blocks of 8 per row */
        "movs    r6, #0\n\t"
        "vmov    s0, r6\n\t"             /* +0.0 */
        "2:\n\t"
        "mov     r6, r2\n\t"             /* the row's multipliers */
        "mov     r7, r5\n\t"
        "1:\n\t"
        "ldrb    r12, [r1], #1\n\t"
        "vldmia  r0!, {s8-s15}\n\t"
        "vldmia  r6!, {s16-s23}\n\t"
        "vmul.f32 s8, s8, s16\n\t"
        "vmul.f32 s9, s9, s17\n\t"
        "vmul.f32 s10, s10, s18\n\t"
        "vmul.f32 s11, s11, s19\n\t"
        "vmul.f32 s12, s12, s20\n\t"
        "vmul.f32 s13, s13, s21\n\t"
        "vmul.f32 s14, s14, s22\n\t"
        "vmul.f32 s15, s15, s23\n\t"
        "tst     r12, #1\n\t"
        "vseleq.f32 s8, s0, s8\n\t"
        "tst     r12, #2\n\t"
        "vseleq.f32 s9, s0, s9\n\t"
        "tst     r12, #4\n\t"
        "vseleq.f32 s10, s0, s10\n\t"
        "tst     r12, #8\n\t"
        "vseleq.f32 s11, s0, s11\n\t"
        "tst     r12, #16\n\t"
        "vseleq.f32 s12, s0, s12\n\t"
        "tst     r12, #32\n\t"
        "vseleq.f32 s13, s0, s13\n\t"
        "tst     r12, #64\n\t"
        "vseleq.f32 s14, s0, s14\n\t"
        "tst     r12, #128\n\t"
        "vseleq.f32 s15, s0, s15\n\t"
        "vstmia  r3!, {s8-s15}\n\t"
        "subs    r7, r7, #1\n\t"
        "bne     1b\n\t"
        "subs    r4, r4, #1\n\t"
        "bne     2b\n\t"
        "vpop    {s16-s23}\n\t"
        "pop     {r4, r5, r6, r7, pc}\n\t");
}
#endif

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
#if QTRAIN_DSP_ASM
    if (mask != NULL && per_channel && channels % 8 == 0 && count > 0 && count % channels == 0) {
        requant_grad8_asm(grad, mask, multiplier, output, count / channels, channels / 8);
        return;
    }
#endif
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
