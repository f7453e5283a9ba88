/*
 * qtrain_kernels_support.c - helpers shared by the kernels: mask clearing, trained-slice conversion
 * and merging, and qtrain_master_to_s8.
 */
#include "qtrain_kernels_support.h"

void qtrain_mask_clear(uint8_t *mask, int32_t count) {
    int32_t bytes = (count + 7) >> 3;
    for (int32_t i = 0; i < bytes; i++) {
        mask[i] = 0;
    }
}

void qtrain_master_to_s8(const float *master, int32_t count, int8_t *output) {
    for (int32_t i = 0; i < count; i++) {
        /* numerics.master_to_param: saturate(rint(m)); fmaxf maps NaN to -128. Clamping before
         * rounding is the same function (integer bounds). */
        float m = __builtin_fminf(__builtin_fmaxf(master[i], -128.0f), 127.0f);
        output[i] = (int8_t)__builtin_rintf(m);
    }
}

int qtrain_weight_valid(const qtrain_weight_t *weight, int32_t channels) {
    if (weight == NULL || weight->data == NULL) {
        return 0;
    }
    if (!qtrain_weight_has_slice(weight)) {
        return 1;
    }
    if (weight->master != NULL && weight->slice != NULL) {
        return 0;
    }
    return 0 <= weight->slice_start && weight->slice_start < weight->slice_stop && weight->slice_stop <= channels;
}

int32_t qtrain_weight_slice_bytes(const qtrain_weight_t *weight, int32_t count) {
    return weight != NULL && weight->master != NULL ? qtrain_align4(count) : 0;
}

const int8_t *qtrain_weight_slice_s8(const qtrain_weight_t *weight, int32_t count, void *scratch) {
    if (weight->master != NULL) {
        qtrain_master_to_s8(weight->master, count, (int8_t *)scratch);
        return (const int8_t *)scratch;
    }
    return weight->slice;
}

int32_t qtrain_weight_segments(const qtrain_weight_t *weight, const int8_t *slice_s8, int32_t channels,
                               qtrain_weight_segment_t segments[3]) {
    if (slice_s8 == NULL) {
        segments[0] = (qtrain_weight_segment_t){0, channels, weight->data, channels};
        return 1;
    }
    int32_t start = weight->slice_start, stop = weight->slice_stop, k = stop - start, n = 0;
    if (start > 0) {
        segments[n++] = (qtrain_weight_segment_t){0, start, weight->data, channels};
    }
    segments[n++] = (qtrain_weight_segment_t){start, stop, slice_s8, k};
    if (stop < channels) {
        segments[n++] = (qtrain_weight_segment_t){stop, channels, weight->data + stop, channels};
    }
    return n;
}

void qtrain_weight_merge(const qtrain_weight_t *weight, const int8_t *slice_s8, const qtrain_dims_t *filter_dims,
                         int8_t *output) {
    int32_t cin = filter_dims->c;
    int32_t rows = filter_dims->n * filter_dims->h * filter_dims->w;
    int32_t start = weight->slice_start, stop = weight->slice_stop, k = stop - start;
    const int8_t *data = weight->data;
    for (int32_t r = 0; r < rows; r++) {
        for (int32_t c = 0; c < cin; c++) {
            output[r * cin + c] = (c >= start && c < stop) ? slice_s8[r * k + (c - start)] : data[r * cin + c];
        }
    }
}

int qtrain_conv_geometry_valid(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                               const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims) {
    if (params == NULL || input_dims == NULL || filter_dims == NULL || output_dims == NULL) {
        return 0;
    }
    const qtrain_dims_t *all[3] = {input_dims, filter_dims, output_dims};
    for (int i = 0; i < 3; i++) {
        if (all[i]->n < 1 || all[i]->h < 1 || all[i]->w < 1 || all[i]->c < 1) {
            return 0;
        }
    }
    int32_t groups = params->groups;
    if (groups < 1 || input_dims->c % groups != 0 || filter_dims->n % groups != 0 ||
        filter_dims->c * groups != input_dims->c) {
        return 0;
    }
    if (output_dims->n != input_dims->n || output_dims->c != filter_dims->n) {
        return 0;
    }
    return params->stride_h >= 1 && params->stride_w >= 1 && params->pad_top >= 0 && params->pad_left >= 0;
}

int qtrain_conv_args_valid(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                           const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, output_dims)) {
        return 0;
    }
    return -128 <= params->clamp_min && params->clamp_min <= params->clamp_max && params->clamp_max <= 127;
}

int qtrain_conv_placement_ok(qtrain_in_place_t allowed, const qtrain_conv_params_t *params,
                             const qtrain_dims_t *input_dims, const int8_t *input, const qtrain_dims_t *filter_dims,
                             const qtrain_dims_t *output_dims, const int8_t *output) {
    const qtrain_overlap_t overlap =
        qtrain_overlap(input, qtrain_dims_count(input_dims), output, qtrain_dims_count(output_dims));
    if (overlap == QTRAIN_OVERLAP_NONE) {
        return 1;
    }
    if (allowed == QTRAIN_IN_PLACE_1X1) {
        /* head-aligned: C_out <= C_in, any stride; tail-aligned: C_out >= C_in, stride 1 */
        return (overlap == QTRAIN_OVERLAP_HEAD && output_dims->c <= input_dims->c) ||
               (overlap == QTRAIN_OVERLAP_TAIL && output_dims->c >= input_dims->c && params->stride_h == 1 &&
                params->stride_w == 1);
    }
    if (allowed == QTRAIN_IN_PLACE_DEPTHWISE) {
        /* head-aligned: OH <= H, OW <= W, pad_top < KH */
        return overlap == QTRAIN_OVERLAP_HEAD && output_dims->h <= input_dims->h && output_dims->w <= input_dims->w &&
               params->pad_top < filter_dims->h;
    }
    if (allowed == QTRAIN_IN_PLACE_SMALL_K) {
        /* the output starts at least the gap before the input (compared as integers) */
        const intptr_t gap = (intptr_t)input - (intptr_t)output;
        return gap >= (intptr_t)qtrain_conv2d_small_k_s8_in_place_gap(params, input_dims, output_dims);
    }
    return 0;
}

int qtrain_input_grad_placement_ok(qtrain_grad_in_place_t allowed, const qtrain_conv_params_t *params,
                                   const qtrain_dims_t *grad_dims, const float *grad,
                                   const qtrain_dims_t *input_dims, const float *input_grad) {
    const qtrain_overlap_t overlap =
        qtrain_overlap((const int8_t *)(const void *)grad, qtrain_dims_bytes_f32(grad_dims),
                       (const int8_t *)(const void *)input_grad, qtrain_dims_bytes_f32(input_dims));
    if (overlap == QTRAIN_OVERLAP_NONE) {
        return 1;
    }
    if (allowed == QTRAIN_GRAD_IN_PLACE_1X1) {
        /* stride 1 only: head-aligned when C_in <= C_out, tail-aligned when C_in >= C_out */
        return params->stride_h == 1 && params->stride_w == 1 &&
               ((overlap == QTRAIN_OVERLAP_HEAD && input_dims->c <= grad_dims->c) ||
                (overlap == QTRAIN_OVERLAP_TAIL && input_dims->c >= grad_dims->c));
    }
    if (allowed == QTRAIN_GRAD_IN_PLACE_DEPTHWISE) {
        /* head-aligned when grad_dims == input_dims */
        return overlap == QTRAIN_OVERLAP_HEAD && grad_dims->n == input_dims->n && grad_dims->h == input_dims->h &&
               grad_dims->w == input_dims->w && grad_dims->c == input_dims->c;
    }
    return 0;
}

#if QTRAIN_USE_DSP
void qtrain_pair_outputs(const int32_t *x, const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin,
                         int32_t o_end, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                         int8_t *out0, int8_t *out1, uint8_t *mask, uint32_t e0, uint32_t e1) {
    /* A local copy: the int8 stores may alias anything read through a pointer. */
    const qtrain_requant_t rq = *q;
    if (count == 1) {
        /* One weight segment (no trained slice): the common case, with its loop invariants in registers. */
        const int8_t *base = segments[0].base;
        const int32_t stride = segments[0].stride, len = segments[0].end - segments[0].begin;
        for (int32_t o = o_begin; o < o_end; o += 2) {
            const int32_t o1 = o + 1 < o_end ? o + 1 : o;
            int32_t s00 = 0, s01 = 0;
            if (bias != NULL) {
                s00 = bias[o];
                s01 = bias[o1];
            }
            int32_t s10 = s00, s11 = s01;
            qtrain_dot_pair(x, base + o * stride, (o1 - o) * stride, len, &s00, &s01, &s10, &s11);
            qtrain_put_block(s00, s01, s10, s11, o, o1, multiplier, &rq, out0, out1, mask, e0, e1);
        }
        return;
    }
    for (int32_t o = o_begin; o < o_end; o += 2) {
        const int32_t o1 = o + 1 < o_end ? o + 1 : o;
        const int32_t b0 = bias != NULL ? bias[o] : 0, b1 = bias != NULL ? bias[o1] : 0;
        int32_t s00 = b0, s01 = b1, s10 = b0, s11 = b1;
        const int32_t *xs = x;
        for (int32_t s = 0; s < count; s++) {
            const int32_t len = segments[s].end - segments[s].begin;
            qtrain_dot_pair(xs, segments[s].base + o * segments[s].stride, (o1 - o) * segments[s].stride, len, &s00,
                            &s01, &s10, &s11);
            xs += len;
        }
        qtrain_put_block(s00, s01, s10, s11, o, o1, multiplier, &rq, out0, out1, mask, e0, e1);
    }
}
#endif

#if QTRAIN_USE_DSP
void qtrain_unpack_quad(const int8_t *const rows[4], const qtrain_weight_segment_t *segments, int32_t count,
                        int32_t zero_point, int32_t *dst) {
    const int32_t offset = (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u);
    for (int32_t s = 0; s < count; s++) {
        const int32_t begin = segments[s].begin, len = segments[s].end - begin;
        const int8_t *r0 = rows[0] + begin, *r1 = rows[1] + begin, *r2 = rows[2] + begin, *r3 = rows[3] + begin;
        for (int32_t i = len >> 2; i > 0; i--) {
            const int32_t v0 = qtrain_read_s32(r0), v1 = qtrain_read_s32(r1);
            const int32_t v2 = qtrain_read_s32(r2), v3 = qtrain_read_s32(r3);
            dst[0] = qtrain_sxtab16(offset, v0);
            dst[1] = qtrain_sxtab16_ror8(offset, v0);
            dst[2] = qtrain_sxtab16(offset, v1);
            dst[3] = qtrain_sxtab16_ror8(offset, v1);
            dst[4] = qtrain_sxtab16(offset, v2);
            dst[5] = qtrain_sxtab16_ror8(offset, v2);
            dst[6] = qtrain_sxtab16(offset, v3);
            dst[7] = qtrain_sxtab16_ror8(offset, v3);
            r0 += 4;
            r1 += 4;
            r2 += 4;
            r3 += 4;
            dst += 8;
        }
        for (int32_t i = len & 3; i > 0; i--) {
            dst[0] = (int32_t)(((uint32_t)(*r0++ - zero_point) & 0xFFFFu) | ((uint32_t)(*r1++ - zero_point) << 16));
            dst[1] = (int32_t)(((uint32_t)(*r2++ - zero_point) & 0xFFFFu) | ((uint32_t)(*r3++ - zero_point) << 16));
            dst += 2;
        }
    }
}

/* The four pixels' dot products of the unpacked quad `x` (len elements) with weight row w, added to a. */
QTRAIN_INLINE void quad_dot(const int32_t *x, const int8_t *w, int32_t len, int32_t a[4]) {
    int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    uint32_t n = (uint32_t)len >> 2;
#if QTRAIN_DSP_ASM
    /* 15 instructions per 16 MACs. LDM loads the four words of two pixels into r8-r11 (a register list is
     * in ascending order, so the four are bound to fixed registers); x is word aligned (scratch). */
    if (n != 0u) {
        register int32_t x0 __asm__("r8");
        register int32_t x1 __asm__("r9");
        register int32_t x2 __asm__("r10");
        register int32_t x3 __asm__("r11");
        int32_t v, wa;
        __asm__("1:\n\t"
                "ldr     %[v], [%[w]], #4\n\t"
                "ldm     %[x]!, {%[x0], %[x1], %[x2], %[x3]}\n\t"
                "sxtb16  %[wa], %[v]\n\t"
                "sxtb16  %[v], %[v], ror #8\n\t"
                "smlad   %[a0], %[x0], %[wa], %[a0]\n\t"
                "smlad   %[a0], %[x1], %[v], %[a0]\n\t"
                "smlad   %[a1], %[x2], %[wa], %[a1]\n\t"
                "smlad   %[a1], %[x3], %[v], %[a1]\n\t"
                "ldm     %[x]!, {%[x0], %[x1], %[x2], %[x3]}\n\t"
                "smlad   %[a2], %[x0], %[wa], %[a2]\n\t"
                "smlad   %[a2], %[x1], %[v], %[a2]\n\t"
                "smlad   %[a3], %[x2], %[wa], %[a3]\n\t"
                "smlad   %[a3], %[x3], %[v], %[a3]\n\t"
                "subs    %[n], %[n], #1\n\t"
                "bne     1b"
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [w] "+r"(w), [x] "+r"(x),
                  [n] "+r"(n), [v] "=&r"(v), [wa] "=&r"(wa), [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2),
                  [x3] "=&r"(x3)
                :
                : "cc", "memory");
    }
#else
#pragma clang loop unroll(disable)
    for (; n != 0u; n--) {
        const int32_t v = qtrain_read_s32(w);
        w += 4;
        const int32_t wa = qtrain_sxtb16(v), wb = qtrain_sxtb16_ror8(v);
        a0 = qtrain_smlad(x[0], wa, a0);
        a0 = qtrain_smlad(x[1], wb, a0);
        a1 = qtrain_smlad(x[2], wa, a1);
        a1 = qtrain_smlad(x[3], wb, a1);
        a2 = qtrain_smlad(x[4], wa, a2);
        a2 = qtrain_smlad(x[5], wb, a2);
        a3 = qtrain_smlad(x[6], wa, a3);
        a3 = qtrain_smlad(x[7], wb, a3);
        x += 8;
    }
#endif
    for (int32_t i = len & 3; i > 0; i--) {
        const int32_t wv = *w++;
        a0 = qtrain_smlabb(x[0], wv, a0);
        a1 = qtrain_smlatb(x[0], wv, a1);
        a2 = qtrain_smlabb(x[1], wv, a2);
        a3 = qtrain_smlatb(x[1], wv, a3);
        x += 2;
    }
    a[0] = a0;
    a[1] = a1;
    a[2] = a2;
    a[3] = a3;
}

#if QTRAIN_DSP_ASM
/* The common case in one assembly loop: one weight segment whose length (= row stride) is a multiple of 4,
 * a bias, no mask. Per output channel: the dot products (15 instructions per 16 MACs), then the four
 * requantizations two at a time through the FPU (qtrain_requant's operations: VCVT, VMUL, VMAXNM,
 * VMINNM, VADD of the rounding shifter, then the integer add of bias_bits), stored with post-increment.
 * The values that do not fit in registers live in the job below; the loop keeps them up to date. */
typedef struct {
    int8_t *out[4];       /* 0: each pixel's next output byte */
    const int32_t *x;     /* 16: the unpacked quad */
    const int8_t *w;      /* 20: the next weight row */
    uint32_t groups;      /* 24: len / 4 */
    uint32_t channels;    /* 28: output channels left */
    const int32_t *bias;  /* 32: the next bias */
    const float *mult;    /* 36: the next multiplier */
    int32_t bias_bits;    /* 40 */
    float lo, hi, shift;  /* 44, 48, 52 */
} quad_job_t;
_Static_assert(offsetof(quad_job_t, x) == 16 && offsetof(quad_job_t, w) == 20 && offsetof(quad_job_t, groups) == 24 &&
                   offsetof(quad_job_t, channels) == 28 && offsetof(quad_job_t, bias) == 32 &&
                   offsetof(quad_job_t, mult) == 36 && offsetof(quad_job_t, bias_bits) == 40 &&
                   offsetof(quad_job_t, lo) == 44 && offsetof(quad_job_t, shift) == 52,
               "quad_job_t offsets used by quad_rows_asm");

__attribute__((naked, noinline)) static void quad_rows_asm(quad_job_t *job) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "mov     r12, r0\n\t"
        "ldr     r0, [r12, #20]\n\t"          /* w */
        "vldr    s0, [r12, #44]\n\t"          /* lo */
        "vldr    s1, [r12, #48]\n\t"          /* hi */
        "vldr    s2, [r12, #52]\n\t"          /* shifter */
        "2:\n\t"
        "ldr     r2, [r12, #32]\n\t"
        "ldr     r3, [r2], #4\n\t"            /* acc = bias[o] */
        "str     r2, [r12, #32]\n\t"
        "mov     r4, r3\n\t"
        "mov     r5, r3\n\t"
        "mov     r6, r3\n\t"
        "ldr     r1, [r12, #16]\n\t"          /* x */
        "ldr     r2, [r12, #24]\n\t"          /* groups */
        "1:\n\t"
        "ldr     r7, [r0], #4\n\t"
        "ldm     r1!, {r8, r9, r10, r11}\n\t"
        "sxtb16  lr, r7\n\t"
        "sxtb16  r7, r7, ror #8\n\t"
        "smlad   r3, r8, lr, r3\n\t"
        "smlad   r3, r9, r7, r3\n\t"
        "smlad   r4, r10, lr, r4\n\t"
        "smlad   r4, r11, r7, r4\n\t"
        "ldm     r1!, {r8, r9, r10, r11}\n\t"
        "smlad   r5, r8, lr, r5\n\t"
        "smlad   r5, r9, r7, r5\n\t"
        "smlad   r6, r10, lr, r6\n\t"
        "smlad   r6, r11, r7, r6\n\t"
        "subs    r2, r2, #1\n\t"
        "bne     1b\n\t"
        "vmov    s4, s5, r3, r4\n\t"
        "vmov    s6, s7, r5, r6\n\t"
        "ldr     r2, [r12, #36]\n\t"
        "vldmia  r2!, {s3}\n\t"                 /* m */
        "str     r2, [r12, #36]\n\t"
        "vcvt.f32.s32 s4, s4\n\t"
        "vcvt.f32.s32 s5, s5\n\t"
        "vcvt.f32.s32 s6, s6\n\t"
        "vcvt.f32.s32 s7, s7\n\t"
        "vmul.f32 s4, s4, s3\n\t"
        "vmul.f32 s5, s5, s3\n\t"
        "vmul.f32 s6, s6, s3\n\t"
        "vmul.f32 s7, s7, s3\n\t"
        "vmaxnm.f32 s4, s4, s0\n\t"
        "vmaxnm.f32 s5, s5, s0\n\t"
        "vmaxnm.f32 s6, s6, s0\n\t"
        "vmaxnm.f32 s7, s7, s0\n\t"
        "vminnm.f32 s4, s4, s1\n\t"
        "vminnm.f32 s5, s5, s1\n\t"
        "vminnm.f32 s6, s6, s1\n\t"
        "vminnm.f32 s7, s7, s1\n\t"
        "vadd.f32 s4, s4, s2\n\t"
        "vadd.f32 s5, s5, s2\n\t"
        "vadd.f32 s6, s6, s2\n\t"
        "vadd.f32 s7, s7, s2\n\t"
        "vmov    r3, r4, s4, s5\n\t"
        "vmov    r5, r6, s6, s7\n\t"
        "ldr     r7, [r12, #40]\n\t"          /* bias_bits */
        "add     r3, r7\n\t"
        "add     r4, r7\n\t"
        "add     r5, r7\n\t"
        "add     r6, r7\n\t"
        "ldm     r12, {r8, r9, r10, r11}\n\t"
        "strb    r3, [r8], #1\n\t"
        "strb    r4, [r9], #1\n\t"
        "strb    r5, [r10], #1\n\t"
        "strb    r6, [r11], #1\n\t"
        "stm     r12, {r8, r9, r10, r11}\n\t"
        "ldr     r2, [r12, #28]\n\t"
        "subs    r2, r2, #1\n\t"
        "str     r2, [r12, #28]\n\t"
        "bne     2b\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
#endif

void qtrain_quad_outputs(const int32_t *x, const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin,
                         int32_t o_end, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                         int8_t *const out[4], uint8_t *mask, const uint32_t e[4]) {
#if QTRAIN_DSP_ASM
    if (count == 1 && mask == NULL && bias != NULL && o_begin < o_end && segments[0].end - segments[0].begin >= 4 &&
        ((segments[0].end - segments[0].begin) & 3) == 0) {
        quad_job_t job = {{out[0] + o_begin, out[1] + o_begin, out[2] + o_begin, out[3] + o_begin},
                          x,
                          segments[0].base + o_begin * segments[0].stride,
                          (uint32_t)(segments[0].end - segments[0].begin) >> 2,
                          (uint32_t)(o_end - o_begin),
                          bias + o_begin,
                          multiplier + o_begin,
                          q->bias_bits,
                          q->lo,
                          q->hi,
                          QTRAIN_ROUND_SHIFTER};
        quad_rows_asm(&job);
        return;
    }
#endif
    /* Local copies: the int8 stores may alias anything read through a pointer. */
    const qtrain_requant_t rq = *q;
    int8_t *const out0 = out[0], *const out1 = out[1], *const out2 = out[2], *const out3 = out[3];
    for (int32_t o = o_begin; o < o_end; o++) {
        const int32_t b = bias != NULL ? bias[o] : 0;
        int32_t acc[4] = {b, b, b, b};
        const int32_t *xs = x;
        for (int32_t s = 0; s < count; s++) {
            const int32_t len = segments[s].end - segments[s].begin;
            quad_dot(xs, segments[s].base + o * segments[s].stride, len, acc);
            xs += 2 * len;
        }
        const float m = multiplier[o];
        if (mask == NULL) {
            out0[o] = (int8_t)qtrain_requant(acc[0], m, &rq);
            out1[o] = (int8_t)qtrain_requant(acc[1], m, &rq);
            out2[o] = (int8_t)qtrain_requant(acc[2], m, &rq);
            out3[o] = (int8_t)qtrain_requant(acc[3], m, &rq);
        } else {
            int8_t *const rows[4] = {out0, out1, out2, out3};
            for (int32_t j = 0; j < 4; j++) {
                uint32_t inside;
                rows[j][o] = (int8_t)qtrain_requant_mask(acc[j], m, &rq, &inside);
                qtrain_mask_put(mask, e[j] + (uint32_t)o, inside);
            }
        }
    }
}
#endif
