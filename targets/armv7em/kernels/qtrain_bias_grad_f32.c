/*
 * qtrain_bias_grad_f32.c - db[c] = sum over pixels of g[p, c]: fp32 adds from +0 in pixel order.
 */
#include "qtrain_kernels_support.h"

#if QTRAIN_DSP_ASM
/* Eight channels at a time in s0-s7: per pixel one VLDM of their eight gradients and eight VADD, the
 * same additions in the same order as the C below. */
__attribute__((naked, noinline)) static void bias_grad8_asm(const float *grad, int32_t pixels, int32_t row_bytes,
                                                            float *output, int32_t blocks) {
    __asm__ volatile(
        "push    {r4, r5, r6, lr}\n\t"
        "ldr     r4, [sp, #16]\n\t"      /* blocks */
        "movs    r5, #0\n\t"
        "2:\n\t"
        "vmov    s0, r5\n\t"
        "vmov    s1, s2, r5, r5\n\t"
        "vmov    s3, s4, r5, r5\n\t"
        "vmov    s5, s6, r5, r5\n\t"
        "vmov    s7, r5\n\t"
        "mov     r12, r0\n\t"
        "mov     r6, r1\n\t"
        "1:\n\t"
        "vldmia  r12, {s8-s15}\n\t"
        "add     r12, r2\n\t"
        "vadd.f32 s0, s0, s8\n\t"
        "vadd.f32 s1, s1, s9\n\t"
        "vadd.f32 s2, s2, s10\n\t"
        "vadd.f32 s3, s3, s11\n\t"
        "vadd.f32 s4, s4, s12\n\t"
        "vadd.f32 s5, s5, s13\n\t"
        "vadd.f32 s6, s6, s14\n\t"
        "vadd.f32 s7, s7, s15\n\t"
        "subs    r6, r6, #1\n\t"
        "bne     1b\n\t"
        "vstmia  r3!, {s0-s7}\n\t"
        "add     r0, r0, #32\n\t"
        "subs    r4, r4, #1\n\t"
        "bne     2b\n\t"
        "pop     {r4, r5, r6, pc}\n\t");
}
#endif

void qtrain_bias_grad_f32(const float *grad, int32_t pixels, int32_t channels, float *output) {
#if QTRAIN_DSP_ASM
    if (channels % 8 == 0 && channels > 0 && pixels > 0) {
        bias_grad8_asm(grad, pixels, 4 * channels, output, channels / 8);
        return;
    }
#endif
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
