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
        if (!qtrain_dims_fit(all[i])) {
            return 0;
        }
    }
    int32_t groups = params->groups;
    /* C_in / groups == filter C (after the divisibility check) rather than filter C * groups == C_in:
     * the product can overflow. */
    if (groups < 1 || input_dims->c % groups != 0 || filter_dims->n % groups != 0 ||
        input_dims->c / groups != filter_dims->c) {
        return 0;
    }
    if (output_dims->n != input_dims->n || output_dims->c != filter_dims->n) {
        return 0;
    }
    if (params->stride_h < 1 || params->stride_w < 1 || params->pad_top < 0 || params->pad_left < 0) {
        return 0;
    }
    /* The rows (columns) the outputs' windows span, (O - 1) * stride + K, and the padding before them,
     * bounded like a tensor: the kernels' int32 index arithmetic (o * stride - pad + k) cannot overflow. */
    const int64_t span_h = (int64_t)(output_dims->h - 1) * params->stride_h + filter_dims->h;
    const int64_t span_w = (int64_t)(output_dims->w - 1) * params->stride_w + filter_dims->w;
    return span_h <= QTRAIN_MAX_TENSOR_ELEMENTS && span_w <= QTRAIN_MAX_TENSOR_ELEMENTS &&
           params->pad_top <= span_h && params->pad_left <= span_w;
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
#if QTRAIN_DSP_ASM
/* n blocks of four channels of four rows, unpacked: 16 instructions per block (clang 14 spills in the C
 * loop of qtrain_unpack_quad). Returns dst past the words written (dst word aligned). */
QTRAIN_INLINE int32_t *unpack_quad_blocks(const int8_t *r0, const int8_t *r1, const int8_t *r2, const int8_t *r3,
                                          uint32_t n, int32_t offset, int32_t *dst) {
    /* STM's register list is in ascending order: the four outputs bound to r8-r11 */
    register int32_t o0 __asm__("r8");
    register int32_t o1 __asm__("r9");
    register int32_t o2 __asm__("r10");
    register int32_t o3 __asm__("r11");
    int32_t va, vb;
    __asm__ volatile("1:\n\t"
                     "ldr     %[va], [%[r0]], #4\n\t"
                     "ldr     %[vb], [%[r1]], #4\n\t"
                     "sxtab16 %[o0], %[off], %[va]\n\t"
                     "sxtab16 %[o1], %[off], %[va], ror #8\n\t"
                     "sxtab16 %[o2], %[off], %[vb]\n\t"
                     "sxtab16 %[o3], %[off], %[vb], ror #8\n\t"
                     "stm     %[dst]!, {%[o0], %[o1], %[o2], %[o3]}\n\t"
                     "ldr     %[va], [%[r2]], #4\n\t"
                     "ldr     %[vb], [%[r3]], #4\n\t"
                     "sxtab16 %[o0], %[off], %[va]\n\t"
                     "sxtab16 %[o1], %[off], %[va], ror #8\n\t"
                     "sxtab16 %[o2], %[off], %[vb]\n\t"
                     "sxtab16 %[o3], %[off], %[vb], ror #8\n\t"
                     "stm     %[dst]!, {%[o0], %[o1], %[o2], %[o3]}\n\t"
                     "subs    %[n], %[n], #1\n\t"
                     "bne     1b"
                     : [r0] "+r"(r0), [r1] "+r"(r1), [r2] "+r"(r2), [r3] "+r"(r3), [dst] "+r"(dst), [n] "+r"(n),
                       [va] "=&r"(va), [vb] "=&r"(vb), [o0] "=&r"(o0), [o1] "=&r"(o1), [o2] "=&r"(o2), [o3] "=&r"(o3)
                     : [off] "r"(offset)
                     : "cc", "memory");
    return dst;
}
#endif

void qtrain_unpack_quad(const int8_t *const rows[4], const qtrain_weight_segment_t *segments, int32_t count,
                        int32_t zero_point, int32_t *dst) {
    const int32_t offset = (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u);
    for (int32_t s = 0; s < count; s++) {
        const int32_t begin = segments[s].begin, len = segments[s].end - begin;
        const int8_t *r0 = rows[0] + begin, *r1 = rows[1] + begin, *r2 = rows[2] + begin, *r3 = rows[3] + begin;
#if QTRAIN_DSP_ASM
        if ((len >> 2) != 0) {
            dst = unpack_quad_blocks(r0, r1, r2, r3, (uint32_t)len >> 2, offset, dst);
            r0 += len & ~3;
            r1 += len & ~3;
            r2 += len & ~3;
            r3 += len & ~3;
        }
#else
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
#endif
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
 * a bias. Per output channel: the dot products (15 instructions per 16 MACs), then the four
 * requantizations two at a time through the FPU (qtrain_requant's operations: VCVT, VMUL, VMAXNM,
 * VMINNM, VADD of the rounding shifter, then the integer add of bias_bits, which an even zero point
 * folds into the shifter: see quad_outputs_asm), stored with post-increment. With a mask (C_out a
 * multiple of 8, so each pixel's bits of 8 consecutive channels are one byte): each value rounded
 * first (VRINTX) and compared with its clamp (qtrain_requant_scaled_mask), the four pixels' bits
 * gathered a byte each in one word (shifted right a bit per channel) and stored every 8 channels.
 * The job is copied onto the stack; r12 counts the channels. */
typedef struct {
    int8_t *out[4];       /* 0: each pixel's next output byte */
    const int32_t *x;     /* 16: the unpacked quad */
    const int8_t *w;      /* 20: the next weight row */
    uint32_t groups;      /* 24: len / 4 */
    uint32_t channels;    /* 28: output channels */
    const int32_t *bias;  /* 32: the next bias */
    const float *mult;    /* 36: the next multiplier */
    int32_t bias_bits;    /* 40 */
    float lo, hi, shift;  /* 44, 48, 52 */
    uint8_t *mask[4];     /* 56: each pixel's next mask byte (masked loop) */
    uint32_t bits;        /* 72: the masked loop's bits gathered so far */
    uint32_t segments;    /* 76: weight segments (segmented loops) */
    const uint32_t *seg;  /* 80: the segment being run (segmented loops) */
    uint32_t seg_left;    /* 84 */
    /* 88: per segment: the next channel's weight row, its groups (len / 4), its row stride */
    uint32_t table[3][3];
} quad_job_t;
_Static_assert(offsetof(quad_job_t, x) == 16 && offsetof(quad_job_t, w) == 20 && offsetof(quad_job_t, groups) == 24 &&
                   offsetof(quad_job_t, channels) == 28 && offsetof(quad_job_t, bias) == 32 &&
                   offsetof(quad_job_t, mult) == 36 && offsetof(quad_job_t, bias_bits) == 40 &&
                   offsetof(quad_job_t, lo) == 44 && offsetof(quad_job_t, shift) == 52 &&
                   offsetof(quad_job_t, mask) == 56 && offsetof(quad_job_t, table) == 88 &&
                   sizeof(quad_job_t) == 124,
               "quad_job_t offsets used by the quad assembly");

#define QTRAIN_QUAD_HEAD(dot)                                                                                       \
    "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"                                                          \
    "sub     sp, #128\n\t"                                                                                        \
    "mov     r12, sp\n\t"                                                                                         \
    "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10}\n\t"                                                  \
    "stm     r12!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10}\n\t"                                                 \
    "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10}\n\t"                                                  \
    "stm     r12!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10}\n\t"                                                 \
    "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11}\n\t"                                             \
    "stm     r12!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11}\n\t"                                            \
    "vldr    s0, [sp, #44]\n\t"                                                                                   \
    "vldr    s1, [sp, #48]\n\t"                                                                                   \
    "vldr    s2, [sp, #52]\n\t"                                                                                   \
    "ldr     r0, [sp, #20]\n\t"                                                                                   \
    "ldr     r12, [sp, #28]\n\t"                                                                                  \
    "2:\n\t"                                                                                                      \
    "ldr     r2, [sp, #32]\n\t"                                                                                   \
    "ldr     r3, [r2], #4\n\t"                                                                                    \
    "str     r2, [sp, #32]\n\t"                                                                                   \
    "mov     r4, r3\n\t"                                                                                          \
    "mov     r5, r3\n\t"                                                                                          \
    "mov     r6, r3\n\t"                                                                                          \
    "ldr     r1, [sp, #16]\n\t"                                                                                   \
    dot                                                                                                           \
    "vmov    s4, s5, r3, r4\n\t"                                                                                  \
    "vmov    s6, s7, r5, r6\n\t"                                                                                  \
    "ldr     r2, [sp, #36]\n\t"                                                                                   \
    "vldmia  r2!, {s3}\n\t"                                                                                       \
    "str     r2, [sp, #36]\n\t"                                                                                   \
    "vcvt.f32.s32 s4, s4\n\t"                                                                                     \
    "vcvt.f32.s32 s5, s5\n\t"                                                                                     \
    "vcvt.f32.s32 s6, s6\n\t"                                                                                     \
    "vcvt.f32.s32 s7, s7\n\t"                                                                                     \
    "vmul.f32 s4, s4, s3\n\t"                                                                                     \
    "vmul.f32 s5, s5, s3\n\t"                                                                                     \
    "vmul.f32 s6, s6, s3\n\t"                                                                                     \
    "vmul.f32 s7, s7, s3\n\t"
/* the dot products over groups r2 of weight words from r0 (advancing) and the quad from r1 (advancing) */
#define QTRAIN_QUAD_LOOP(label)                                                                                     \
    label ":\n\t"                                                                                                 \
    "ldr     r7, [r0], #4\n\t"                                                                                    \
    "ldm     r1!, {r8, r9, r10, r11}\n\t"                                                                         \
    "sxtb16  lr, r7\n\t"                                                                                          \
    "sxtb16  r7, r7, ror #8\n\t"                                                                                  \
    "smlad   r3, r8, lr, r3\n\t"                                                                                  \
    "smlad   r3, r9, r7, r3\n\t"                                                                                  \
    "smlad   r4, r10, lr, r4\n\t"                                                                                 \
    "smlad   r4, r11, r7, r4\n\t"                                                                                 \
    "ldm     r1!, {r8, r9, r10, r11}\n\t"                                                                         \
    "smlad   r5, r8, lr, r5\n\t"                                                                                  \
    "smlad   r5, r9, r7, r5\n\t"                                                                                  \
    "smlad   r6, r10, lr, r6\n\t"                                                                                 \
    "smlad   r6, r11, r7, r6\n\t"                                                                                 \
    "subs    r2, r2, #1\n\t"                                                                                      \
    "bne     " label "b\n\t"
/* one segment (its weight rows consecutive: the pointer runs on from row to row) */
#define QTRAIN_QUAD_DOT                                                                                             \
    "ldr     r2, [sp, #24]\n\t"                                                                                   \
    QTRAIN_QUAD_LOOP("1")
/* up to three segments: each one's row pointer, groups and stride from the table, the pointer then
 * moved on to its next row (the quad's segments follow each other in r1) */
#define QTRAIN_QUAD_DOT_SEGMENTS                                                                                    \
    "add     r7, sp, #88\n\t"                                                                                     \
    "str     r7, [sp, #80]\n\t"                                                                                   \
    "ldr     r7, [sp, #76]\n\t"                                                                                   \
    "str     r7, [sp, #84]\n\t"                                                                                   \
    "5:\n\t"                                                                                                      \
    "ldr     r7, [sp, #80]\n\t"                                                                                   \
    "ldm     r7, {r0, r2, r8}\n\t"                                                                                \
    "add     r8, r0\n\t"                                                                                          \
    "str     r8, [r7], #12\n\t"                                                                                   \
    "str     r7, [sp, #80]\n\t"                                                                                   \
    QTRAIN_QUAD_LOOP("1")                                                                                         \
    "ldr     r7, [sp, #84]\n\t"                                                                                   \
    "subs    r7, r7, #1\n\t"                                                                                      \
    "str     r7, [sp, #84]\n\t"                                                                                   \
    "bne     5b\n\t"
#define QTRAIN_QUAD_CLAMP                                                                                           \
    "vmaxnm.f32 s4, s4, s0\n\t"                                                                                   \
    "vmaxnm.f32 s5, s5, s0\n\t"                                                                                   \
    "vmaxnm.f32 s6, s6, s0\n\t"                                                                                   \
    "vmaxnm.f32 s7, s7, s0\n\t"                                                                                   \
    "vminnm.f32 s4, s4, s1\n\t"                                                                                   \
    "vminnm.f32 s5, s5, s1\n\t"                                                                                   \
    "vminnm.f32 s6, s6, s1\n\t"                                                                                   \
    "vminnm.f32 s7, s7, s1\n\t"
/* one value: rounded, clamped, its bit (in byte `byte` of the gathered word r7) set when unchanged */
#define QTRAIN_QUAD_MASK_ONE(s, bit)                                                                                \
    "vrintx.f32 s8, " s "\n\t"                                                                                    \
    "vmaxnm.f32 " s ", s8, s0\n\t"                                                                                \
    "vminnm.f32 " s ", " s ", s1\n\t"                                                                             \
    "vcmp.f32 s8, " s "\n\t"                                                                                      \
    "vmrs    APSR_nzcv, fpscr\n\t"                                                                                \
    "it      eq\n\t"                                                                                              \
    "orreq   r7, r7, #" bit "\n\t"
#define QTRAIN_QUAD_STORE_TAIL(adds)                                                                                \
    "vadd.f32 s4, s4, s2\n\t"                                                                                     \
    "vadd.f32 s5, s5, s2\n\t"                                                                                     \
    "vadd.f32 s6, s6, s2\n\t"                                                                                     \
    "vadd.f32 s7, s7, s2\n\t"                                                                                     \
    "vmov    r3, r4, s4, s5\n\t"                                                                                  \
    "vmov    r5, r6, s6, s7\n\t"                                                                                  \
    adds                                                                                                          \
    "ldm     sp, {r8, r9, r10, r11}\n\t"                                                                          \
    "strb    r3, [r8], #1\n\t"                                                                                    \
    "strb    r4, [r9], #1\n\t"                                                                                    \
    "strb    r5, [r10], #1\n\t"                                                                                   \
    "strb    r6, [r11], #1\n\t"                                                                                   \
    "stm     sp, {r8, r9, r10, r11}\n\t"
#define QTRAIN_QUAD_ADDS                                                                                            \
    "ldr     r7, [sp, #40]\n\t"                                                                                   \
    "add     r3, r7\n\t"                                                                                          \
    "add     r4, r7\n\t"                                                                                          \
    "add     r5, r7\n\t"                                                                                          \
    "add     r6, r7\n\t"
#define QTRAIN_QUAD_END                                                                                             \
    "subs    r12, r12, #1\n\t"                                                                                    \
    "bne     2b\n\t"                                                                                              \
    "add     sp, #128\n\t"                                                                                        \
    "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t"

/* with the mask (C_out a multiple of 8; the shifter as for an odd zero point, bias_bits added) */
#define QTRAIN_QUAD_MASKED(dot, adds)                                                                               \
    QTRAIN_QUAD_HEAD(dot)                                                                                         \
    "ldr     r7, [sp, #72]\n\t"                                                                                   \
    "lsr     r7, r7, #1\n\t"                                                                                      \
    "bic     r7, r7, #0x80808080\n\t" /* each pixel's byte: the channels so far, one bit lower */                 \
    QTRAIN_QUAD_MASK_ONE("s4", "0x80")                                                                            \
    QTRAIN_QUAD_MASK_ONE("s5", "0x8000")                                                                          \
    QTRAIN_QUAD_MASK_ONE("s6", "0x800000")                                                                        \
    QTRAIN_QUAD_MASK_ONE("s7", "0x80000000")                                                                      \
    "str     r7, [sp, #72]\n\t"                                                                                   \
    QTRAIN_QUAD_STORE_TAIL(adds)                                                                                  \
    "sub     r3, r12, #1\n\t" /* channels left after this one */                                                  \
    "tst     r3, #7\n\t"      /* a multiple of 8: the eighth channel of a byte is done */                         \
    "bne     3f\n\t"                                                                                              \
    "add     r3, sp, #56\n\t"                                                                                     \
    "ldm     r3, {r4, r5, r6, r7}\n\t"                                                                            \
    "ldr     r8, [sp, #72]\n\t"                                                                                   \
    "strb    r8, [r4], #1\n\t"                                                                                    \
    "lsr     r8, r8, #8\n\t"                                                                                      \
    "strb    r8, [r5], #1\n\t"                                                                                    \
    "lsr     r8, r8, #8\n\t"                                                                                      \
    "strb    r8, [r6], #1\n\t"                                                                                    \
    "lsr     r8, r8, #8\n\t"                                                                                      \
    "strb    r8, [r7], #1\n\t"                                                                                    \
    "stm     r3, {r4, r5, r6, r7}\n\t"                                                                            \
    "3:\n\t"                                                                                                      \
    QTRAIN_QUAD_END

/* an odd output zero point: bias_bits added to each value */
__attribute__((naked, noinline)) static void quad_rows_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_HEAD(QTRAIN_QUAD_DOT) QTRAIN_QUAD_CLAMP QTRAIN_QUAD_STORE_TAIL(QTRAIN_QUAD_ADDS)
                         QTRAIN_QUAD_END);
}

/* an even output zero point, folded into the shifter: the low byte of the sum's bits is the output */
__attribute__((naked, noinline)) static void quad_rows_even_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_HEAD(QTRAIN_QUAD_DOT) QTRAIN_QUAD_CLAMP QTRAIN_QUAD_STORE_TAIL("") QTRAIN_QUAD_END);
}

__attribute__((naked, noinline)) static void quad_rows_mask_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_MASKED(QTRAIN_QUAD_DOT, QTRAIN_QUAD_ADDS));
}
__attribute__((naked, noinline)) static void quad_rows_mask_even_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_MASKED(QTRAIN_QUAD_DOT, ""));
}

/* the same three over weight segments (a trained slice) */
__attribute__((naked, noinline)) static void quad_seg_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_HEAD(QTRAIN_QUAD_DOT_SEGMENTS) QTRAIN_QUAD_CLAMP
                         QTRAIN_QUAD_STORE_TAIL(QTRAIN_QUAD_ADDS) QTRAIN_QUAD_END);
}
__attribute__((naked, noinline)) static void quad_seg_even_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_HEAD(QTRAIN_QUAD_DOT_SEGMENTS) QTRAIN_QUAD_CLAMP QTRAIN_QUAD_STORE_TAIL("")
                         QTRAIN_QUAD_END);
}
__attribute__((naked, noinline)) static void quad_seg_mask_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_MASKED(QTRAIN_QUAD_DOT_SEGMENTS, QTRAIN_QUAD_ADDS));
}
__attribute__((naked, noinline)) static void quad_seg_mask_even_asm(quad_job_t *job) {
    __asm__ volatile(QTRAIN_QUAD_MASKED(QTRAIN_QUAD_DOT_SEGMENTS, ""));
}

/* ---- the widened pixel-quad loop (qtrain_quad_widen) ----
 * One pointer (r0) walks the widened rows: per output channel, LDM of its four bias copies into the
 * accumulators and VLDM of its multiplier, then its weights eight input channels at a time (one LDM of
 * four words into r2, r7, r12, lr; four LDM of the quad; 16 SMLAD: 21 instructions per 32 MACs) in one
 * unrolled chain entered at the block that leaves C_in / 8 of them, then the requantization as above.
 * The loop ends when pixel 0's output pointer reaches `end`. The job is copied onto the stack. */
typedef struct {
    int8_t *out[4];      /* 0: each pixel's next output byte */
    int8_t *end;         /* 16: pixel 0's output pointer after the last channel */
    const int32_t *x;    /* 20: the unpacked quad */
    const int32_t *rows; /* 24: the first channel's widened row */
    uint32_t entry;      /* 28: bytes of the chain to skip (the head turns it into the entry address) */
    int32_t bias_bits;   /* 32 */
    float lo, hi, shift; /* 36, 40, 44 */
    uint8_t *mask[4];    /* 48: each pixel's next mask byte (masked loop) */
    uint32_t bits;       /* 64: the masked loop's bits gathered so far */
    uint32_t pad;        /* 68 */
} quad_wide_job_t;
_Static_assert(offsetof(quad_wide_job_t, end) == 16 && offsetof(quad_wide_job_t, entry) == 28 &&
                   offsetof(quad_wide_job_t, lo) == 36 && offsetof(quad_wide_job_t, mask) == 48 &&
                   offsetof(quad_wide_job_t, bits) == 64 && sizeof(quad_wide_job_t) == 72,
               "quad_wide_job_t offsets used by the wide quad assembly");
#define QTRAIN_QUAD_CHAIN_BLOCKS 72 /* the most C_in / 8 the chain covers (its .rept count) */
#define QTRAIN_QUAD_CHAIN_BLOCK_BYTES 84 /* 21 instructions of 4 bytes (.w forced) */

#define QTRAIN_WIDE_BLOCK8                                                                                          \
    "ldm.w   r0!, {r2, r7, r12, lr}\n\t"                                                                          \
    "ldm.w   r1!, {r8, r9, r10, r11}\n\t"                                                                         \
    "smlad   r3, r8, r2, r3\n\t"                                                                                  \
    "smlad   r3, r9, r7, r3\n\t"                                                                                  \
    "smlad   r4, r10, r2, r4\n\t"                                                                                 \
    "smlad   r4, r11, r7, r4\n\t"                                                                                 \
    "ldm.w   r1!, {r8, r9, r10, r11}\n\t"                                                                         \
    "smlad   r5, r8, r2, r5\n\t"                                                                                  \
    "smlad   r5, r9, r7, r5\n\t"                                                                                  \
    "smlad   r6, r10, r2, r6\n\t"                                                                                 \
    "smlad   r6, r11, r7, r6\n\t"                                                                                 \
    "ldm.w   r1!, {r8, r9, r10, r11}\n\t"                                                                         \
    "smlad   r3, r8, r12, r3\n\t"                                                                                 \
    "smlad   r3, r9, lr, r3\n\t"                                                                                  \
    "smlad   r4, r10, r12, r4\n\t"                                                                                \
    "smlad   r4, r11, lr, r4\n\t"                                                                                 \
    "ldm.w   r1!, {r8, r9, r10, r11}\n\t"                                                                         \
    "smlad   r5, r8, r12, r5\n\t"                                                                                 \
    "smlad   r5, r9, lr, r5\n\t"                                                                                  \
    "smlad   r6, r10, r12, r6\n\t"                                                                                \
    "smlad   r6, r11, lr, r6\n\t"
#define QTRAIN_WIDE_HEAD                                                                                            \
    "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"                                                          \
    "sub     sp, #72\n\t"                                                                                         \
    "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12}\n\t"                                        \
    "stm     sp, {r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12}\n\t"                                         \
    "ldm     r0, {r1, r2, r3, r4, r5, r6}\n\t"                                                                    \
    "add     r7, sp, #48\n\t"                                                                                     \
    "stm     r7, {r1, r2, r3, r4, r5, r6}\n\t"                                                                    \
    "vldr    s0, [sp, #36]\n\t"                                                                                   \
    "vldr    s1, [sp, #40]\n\t"                                                                                   \
    "vldr    s2, [sp, #44]\n\t"                                                                                   \
    "adr.w   r2, 6f\n\t"                                                                                          \
    "ldr     r3, [sp, #28]\n\t"                                                                                   \
    "add     r2, r3\n\t"                                                                                          \
    "orr     r2, r2, #1\n\t" /* Thumb */                                                                          \
    "str     r2, [sp, #28]\n\t"                                                                                   \
    "ldr     r0, [sp, #24]\n\t"                                                                                   \
    "2:\n\t"                                                                                                      \
    "ldm     r0!, {r3, r4, r5, r6}\n\t"                                                                           \
    "vldmia  r0!, {s3}\n\t"                                                                                       \
    "ldr     r1, [sp, #20]\n\t"                                                                                   \
    "ldr     r2, [sp, #28]\n\t"                                                                                   \
    "bx      r2\n\t"                                                                                              \
    ".p2align 2\n\t"                                                                                              \
    "6:\n\t"                                                                                                      \
    ".rept 72\n\t" QTRAIN_WIDE_BLOCK8 ".endr\n\t"                                                                 \
    "vmov    s4, s5, r3, r4\n\t"                                                                                  \
    "vmov    s6, s7, r5, r6\n\t"                                                                                  \
    "vcvt.f32.s32 s4, s4\n\t"                                                                                     \
    "vcvt.f32.s32 s5, s5\n\t"                                                                                     \
    "vcvt.f32.s32 s6, s6\n\t"                                                                                     \
    "vcvt.f32.s32 s7, s7\n\t"                                                                                     \
    "vmul.f32 s4, s4, s3\n\t"                                                                                     \
    "vmul.f32 s5, s5, s3\n\t"                                                                                     \
    "vmul.f32 s6, s6, s3\n\t"                                                                                     \
    "vmul.f32 s7, s7, s3\n\t"
#define QTRAIN_WIDE_STORE(adds)                                                                                     \
    "vadd.f32 s4, s4, s2\n\t"                                                                                     \
    "vadd.f32 s5, s5, s2\n\t"                                                                                     \
    "vadd.f32 s6, s6, s2\n\t"                                                                                     \
    "vadd.f32 s7, s7, s2\n\t"                                                                                     \
    "vmov    r3, r4, s4, s5\n\t"                                                                                  \
    "vmov    r5, r6, s6, s7\n\t"                                                                                  \
    adds                                                                                                          \
    "ldm     sp, {r7, r8, r9, r10, r11}\n\t" /* the four output pointers and the end */                           \
    "strb    r3, [r7], #1\n\t"                                                                                    \
    "strb    r4, [r8], #1\n\t"                                                                                    \
    "strb    r5, [r9], #1\n\t"                                                                                    \
    "strb    r6, [r10], #1\n\t"                                                                                   \
    "stm     sp, {r7, r8, r9, r10}\n\t"
#define QTRAIN_WIDE_ADDS                                                                                            \
    "ldr     r7, [sp, #32]\n\t"                                                                                   \
    "add     r3, r7\n\t"                                                                                          \
    "add     r4, r7\n\t"                                                                                          \
    "add     r5, r7\n\t"                                                                                          \
    "add     r6, r7\n\t"
#define QTRAIN_WIDE_END                                                                                             \
    "cmp     r7, r11\n\t"                                                                                         \
    "bne     2b\n\t"                                                                                              \
    "add     sp, #72\n\t"                                                                                         \
    "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t"
/* with the mask (as QTRAIN_QUAD_MASKED: the bits gathered a byte per pixel, stored every 8 channels) */
#define QTRAIN_WIDE_MASKED(adds)                                                                                    \
    QTRAIN_WIDE_HEAD                                                                                              \
    "ldr     r7, [sp, #64]\n\t"                                                                                   \
    "lsr     r7, r7, #1\n\t"                                                                                      \
    "bic     r7, r7, #0x80808080\n\t"                                                                             \
    QTRAIN_QUAD_MASK_ONE("s4", "0x80")                                                                            \
    QTRAIN_QUAD_MASK_ONE("s5", "0x8000")                                                                          \
    QTRAIN_QUAD_MASK_ONE("s6", "0x800000")                                                                        \
    QTRAIN_QUAD_MASK_ONE("s7", "0x80000000")                                                                      \
    "str     r7, [sp, #64]\n\t"                                                                                   \
    QTRAIN_WIDE_STORE(adds)                                                                                       \
    "sub     r3, r11, r7\n\t" /* channels left after this one */                                                 \
    "tst     r3, #7\n\t"                                                                                          \
    "bne     3f\n\t"                                                                                              \
    "add     r3, sp, #48\n\t"                                                                                     \
    "ldm     r3, {r4, r5, r6, r8}\n\t"                                                                            \
    "ldr     r9, [sp, #64]\n\t"                                                                                   \
    "strb    r9, [r4], #1\n\t"                                                                                    \
    "lsr     r9, r9, #8\n\t"                                                                                      \
    "strb    r9, [r5], #1\n\t"                                                                                    \
    "lsr     r9, r9, #8\n\t"                                                                                      \
    "strb    r9, [r6], #1\n\t"                                                                                    \
    "lsr     r9, r9, #8\n\t"                                                                                      \
    "strb    r9, [r8], #1\n\t"                                                                                    \
    "stm     r3, {r4, r5, r6, r8}\n\t"                                                                            \
    "3:\n\t"                                                                                                      \
    QTRAIN_WIDE_END

__attribute__((naked, noinline)) static void quad_wide_asm(quad_wide_job_t *job) {
    __asm__ volatile(QTRAIN_WIDE_HEAD QTRAIN_QUAD_CLAMP QTRAIN_WIDE_STORE(QTRAIN_WIDE_ADDS) QTRAIN_WIDE_END);
}
__attribute__((naked, noinline)) static void quad_wide_even_asm(quad_wide_job_t *job) {
    __asm__ volatile(QTRAIN_WIDE_HEAD QTRAIN_QUAD_CLAMP QTRAIN_WIDE_STORE("") QTRAIN_WIDE_END);
}
__attribute__((naked, noinline)) static void quad_wide_mask_asm(quad_wide_job_t *job) {
    __asm__ volatile(QTRAIN_WIDE_MASKED(QTRAIN_WIDE_ADDS));
}
__attribute__((naked, noinline)) static void quad_wide_mask_even_asm(quad_wide_job_t *job) {
    __asm__ volatile(QTRAIN_WIDE_MASKED(""));
}
#undef QTRAIN_WIDE_BLOCK8
#undef QTRAIN_WIDE_HEAD
#undef QTRAIN_WIDE_STORE
#undef QTRAIN_WIDE_ADDS
#undef QTRAIN_WIDE_END
#undef QTRAIN_WIDE_MASKED

#undef QTRAIN_QUAD_HEAD
#undef QTRAIN_QUAD_LOOP
#undef QTRAIN_QUAD_DOT
#undef QTRAIN_QUAD_DOT_SEGMENTS
#undef QTRAIN_QUAD_MASKED
#undef QTRAIN_QUAD_CLAMP
#undef QTRAIN_QUAD_MASK_ONE
#undef QTRAIN_QUAD_STORE_TAIL
#undef QTRAIN_QUAD_ADDS
#undef QTRAIN_QUAD_END
#endif

#if QTRAIN_DSP_ASM
/* The assembly loop a quad takes (0: none, the C below), and its job: everything but the output and
 * mask pointers is the same for every quad of a call. */
typedef void (*quad_loop_t)(quad_job_t *);

static quad_loop_t quad_prepare(quad_job_t *job, const int32_t *x, const qtrain_weight_segment_t *segments,
                                int32_t count, int32_t o_begin, int32_t o_end, const int32_t *bias,
                                const float *multiplier, const qtrain_requant_t *q, int masked) {
    int segments_ok = count >= 1 && count <= 3;
    for (int32_t i = 0; i < count && segments_ok; i++) {
        const int32_t n = segments[i].end - segments[i].begin;
        segments_ok = n >= 4 && (n & 3) == 0;
    }
    if (!segments_ok || bias == NULL || o_begin >= o_end ||
        (masked && ((o_end - o_begin) % 8 != 0 || o_begin % 8 != 0))) {
        return NULL;
    }
    const int even = (q->zp & 1) == 0;
    *job = (quad_job_t){{NULL, NULL, NULL, NULL},
                        x,
                        segments[0].base + o_begin * segments[0].stride,
                        (uint32_t)(segments[0].end - segments[0].begin) >> 2,
                        (uint32_t)(o_end - o_begin),
                        bias + o_begin,
                        multiplier + o_begin,
                        q->bias_bits,
                        q->lo,
                        q->hi,
                        even ? QTRAIN_ROUND_SHIFTER + (float)q->zp : QTRAIN_ROUND_SHIFTER,
                        {NULL, NULL, NULL, NULL},
                        0u,
                        (uint32_t)count,
                        NULL,
                        0u,
                        {{0u, 0u, 0u}, {0u, 0u, 0u}, {0u, 0u, 0u}}};
    for (int32_t i = 0; i < count; i++) {
        job->table[i][0] = (uint32_t)(uintptr_t)(segments[i].base + o_begin * segments[i].stride);
        job->table[i][1] = (uint32_t)(segments[i].end - segments[i].begin) >> 2;
        job->table[i][2] = (uint32_t)segments[i].stride;
    }
    if (count > 1) {
        return masked ? (even ? quad_seg_mask_even_asm : quad_seg_mask_asm) : even ? quad_seg_even_asm : quad_seg_asm;
    }
    return masked ? (even ? quad_rows_mask_even_asm : quad_rows_mask_asm) : even ? quad_rows_even_asm : quad_rows_asm;
}

/* Run a prepared job on one quad; false when its mask bits are not byte aligned (then the C runs). */
QTRAIN_INLINE int quad_run(quad_loop_t loop, quad_job_t *job, int8_t *const out[4], int32_t o_begin, uint8_t *mask,
                           const uint32_t e[4]) {
    if (mask != NULL) {
        for (int32_t j = 0; j < 4; j++) {
            if (((e[j] + (uint32_t)o_begin) & 7u) != 0u) {
                return 0;
            }
            job->mask[j] = mask + ((e[j] + (uint32_t)o_begin) >> 3);
        }
    }
    for (int32_t j = 0; j < 4; j++) {
        job->out[j] = out[j] + o_begin;
    }
    loop(job);
    return 1;
}
#endif

int32_t qtrain_quad_widen_bytes(const qtrain_weight_segment_t *segments, int32_t count, int32_t rows) {
#if QTRAIN_DSP_ASM
    const int32_t channels = segments[count - 1].end - segments[0].begin;
    for (int32_t s = 0; s < count; s++) {
        if (((segments[s].end - segments[s].begin) & 3) != 0) {
            return 0; /* a block of four must not straddle two segments */
        }
    }
    if (channels % 8 != 0 || channels / 8 > QTRAIN_QUAD_CHAIN_BLOCKS) {
        return 0;
    }
    return qtrain_size_saturate(4 * (int64_t)rows * qtrain_quad_widened_words(channels));
#else
    (void)segments;
    (void)count;
    (void)rows;
    return 0;
#endif
}

void qtrain_quad_widen(const qtrain_weight_segment_t *segments, int32_t count, int32_t rows, const int32_t *bias,
                       const float *multiplier, int32_t *dst) {
    for (int32_t o = 0; o < rows; o++) {
        const int32_t b = bias != NULL ? bias[o] : 0;
        dst[0] = dst[1] = dst[2] = dst[3] = b;
        dst[4] = (int32_t)qtrain_float_bits(multiplier[o]);
        dst += 5;
        for (int32_t s = 0; s < count; s++) {
            const int8_t *w = segments[s].base + o * segments[s].stride;
            int32_t len = segments[s].end - segments[s].begin;
#if QTRAIN_DSP_ASM
            /* sixteen weights per loop: 4 LDR, 8 SXTB16, 2 STM (clang 14: 28 instructions with STR each) */
            uint32_t n = (uint32_t)len >> 4;
            if (n != 0u) {
                register int32_t d0 __asm__("r8");
                register int32_t d1 __asm__("r9");
                register int32_t d2 __asm__("r10");
                register int32_t d3 __asm__("r11");
                int32_t v0, v1;
                __asm__ volatile("1:\n\t"
                                 "ldr     %[v0], [%[w]], #4\n\t"
                                 "ldr     %[v1], [%[w]], #4\n\t"
                                 "sxtb16  %[d0], %[v0]\n\t"
                                 "sxtb16  %[d1], %[v0], ror #8\n\t"
                                 "sxtb16  %[d2], %[v1]\n\t"
                                 "sxtb16  %[d3], %[v1], ror #8\n\t"
                                 "stm     %[dst]!, {%[d0], %[d1], %[d2], %[d3]}\n\t"
                                 "ldr     %[v0], [%[w]], #4\n\t"
                                 "ldr     %[v1], [%[w]], #4\n\t"
                                 "sxtb16  %[d0], %[v0]\n\t"
                                 "sxtb16  %[d1], %[v0], ror #8\n\t"
                                 "sxtb16  %[d2], %[v1]\n\t"
                                 "sxtb16  %[d3], %[v1], ror #8\n\t"
                                 "stm     %[dst]!, {%[d0], %[d1], %[d2], %[d3]}\n\t"
                                 "subs    %[n], %[n], #1\n\t"
                                 "bne     1b"
                                 : [w] "+r"(w), [dst] "+r"(dst), [n] "+r"(n), [v0] "=&r"(v0), [v1] "=&r"(v1),
                                   [d0] "=&r"(d0), [d1] "=&r"(d1), [d2] "=&r"(d2), [d3] "=&r"(d3)
                                 :
                                 : "cc", "memory");
                len &= 15;
            }
#endif
#pragma clang loop unroll(disable) vectorize(disable)
            for (int32_t i = len >> 3; i > 0; i--, w += 8, dst += 4) {
                const int32_t v0 = qtrain_read_s32(w), v1 = qtrain_read_s32(w + 4);
                dst[0] = qtrain_sxtb16(v0);
                dst[1] = qtrain_sxtb16_ror8(v0);
                dst[2] = qtrain_sxtb16(v1);
                dst[3] = qtrain_sxtb16_ror8(v1);
            }
            if ((len & 4) != 0) {
                const int32_t v = qtrain_read_s32(w);
                dst[0] = qtrain_sxtb16(v);
                dst[1] = qtrain_sxtb16_ror8(v);
                dst += 2;
            }
        }
    }
}

#if QTRAIN_DSP_ASM
/* The widened loop's job for channels [o_begin, o_end) of rows `wide` (the row of o_begin first) and
 * the loop that runs it, or NULL when the loop does not apply. */
typedef void (*quad_wide_loop_t)(quad_wide_job_t *);
static quad_wide_loop_t quad_wide_prepare(quad_wide_job_t *job, const qtrain_weight_segment_t *segments,
                                          int32_t count, int32_t o_begin, int32_t o_end, const qtrain_requant_t *q,
                                          const uint8_t *mask, const int32_t *wide) {
    const int32_t channels = segments[count - 1].end - segments[0].begin;
    if (wide == NULL || o_begin >= o_end || qtrain_quad_widen_bytes(segments, count, 1) == 0 ||
        (mask != NULL && ((o_end - o_begin) % 8 != 0 || o_begin % 8 != 0))) {
        return NULL;
    }
    const int even = (q->zp & 1) == 0;
    *job = (quad_wide_job_t){{NULL, NULL, NULL, NULL},
                             NULL,
                             NULL,
                             wide,
                             QTRAIN_QUAD_CHAIN_BLOCK_BYTES * (uint32_t)(QTRAIN_QUAD_CHAIN_BLOCKS - channels / 8),
                             q->bias_bits,
                             q->lo,
                             q->hi,
                             even ? QTRAIN_ROUND_SHIFTER + (float)q->zp : QTRAIN_ROUND_SHIFTER,
                             {NULL, NULL, NULL, NULL},
                             0u,
                             0u};
    return mask != NULL ? (even ? quad_wide_mask_even_asm : quad_wide_mask_asm)
                        : (even ? quad_wide_even_asm : quad_wide_asm);
}

/* One unpacked quad `x` through a prepared job (pixel j's output row out[j], first mask element e[j]); a
 * quad whose mask bits are not byte aligned takes the C loop. */
static void quad_wide_run(quad_wide_loop_t loop, quad_wide_job_t *job, const int32_t *x,
                          const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin, int32_t o_end,
                          const int32_t *bias, const float *multiplier, const qtrain_requant_t *q, int8_t *const out[4],
                          uint8_t *mask, const uint32_t e[4]) {
    for (int32_t j = 0; j < 4; j++) {
        if (mask != NULL && ((e[j] + (uint32_t)o_begin) & 7u) != 0u) {
            qtrain_quad_outputs(x, segments, count, o_begin, o_end, bias, multiplier, q, out, mask, e);
            return;
        }
        job->out[j] = out[j] + o_begin;
        job->mask[j] = mask != NULL ? mask + ((e[j] + (uint32_t)o_begin) >> 3) : NULL;
    }
    job->end = job->out[0] + (o_end - o_begin);
    job->x = x;
    job->bits = 0u;
    loop(job);
}

/* A line of quads through the widened loop; false when it does not apply (then the caller runs the
 * usual one). */
static int quad_wide_line(const int8_t *in, int32_t in_step, int32_t pixels, const qtrain_weight_segment_t *segments,
                          int32_t count, int32_t zero_point, int32_t o_begin, int32_t o_end, const int32_t *bias,
                          const float *multiplier, const qtrain_requant_t *q, int8_t *out, int32_t out_step,
                          uint8_t *mask, uint32_t e0, uint32_t e_step, int32_t *unpacked, const int32_t *wide) {
    quad_wide_job_t job;
    const quad_wide_loop_t loop = quad_wide_prepare(&job, segments, count, o_begin, o_end, q, mask, wide);
    if (loop == NULL) {
        return 0;
    }
    if (count == 1 && mask == NULL) {
        /* the common case with its bookkeeping cut down: one segment (C_in a multiple of 8), no mask */
        const int32_t offset = (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u);
        const uint32_t blocks = (uint32_t)(segments[0].end - segments[0].begin) >> 2;
        const int8_t *r = in + segments[0].begin;
        int8_t *o = out + o_begin;
        const int32_t span = o_end - o_begin;
        job.x = unpacked;
        int32_t p = 0;
        for (; p + 4 <= pixels; p += 4, r += 4 * in_step, o += 4 * out_step) {
            unpack_quad_blocks(r, r + in_step, r + 2 * in_step, r + 3 * in_step, blocks, offset, unpacked);
            job.out[0] = o;
            job.out[1] = o + out_step;
            job.out[2] = o + 2 * out_step;
            job.out[3] = o + 3 * out_step;
            job.end = o + span;
            loop(&job);
        }
        if (p < pixels) { /* a short last quad repeats its last pixel */
            const int32_t left = pixels - p;
            const int32_t s2 = left > 2 ? 2 * in_step : in_step * (left - 1), t2 = left > 2 ? 2 * out_step : out_step * (left - 1);
            const int32_t s1 = left > 1 ? in_step : 0, t1 = left > 1 ? out_step : 0;
            unpack_quad_blocks(r, r + s1, r + s2, r + s2, blocks, offset, unpacked);
            job.out[0] = o;
            job.out[1] = o + t1;
            job.out[2] = o + t2;
            job.out[3] = o + t2;
            job.end = o + span;
            loop(&job);
        }
        return 1;
    }
    for (int32_t p = 0; p < pixels; p += 4) {
        const int8_t *rows[4];
        int8_t *outs[4];
        uint32_t e[4];
        for (int32_t j = 0; j < 4; j++) {
            const int32_t pj = p + j < pixels ? p + j : pixels - 1; /* a short last quad repeats its last pixel */
            rows[j] = in + pj * in_step;
            outs[j] = out + pj * out_step;
            e[j] = e0 + (uint32_t)pj * e_step;
        }
        qtrain_unpack_quad(rows, segments, count, zero_point, unpacked);
        quad_wide_run(loop, &job, unpacked, segments, count, o_begin, o_end, bias, multiplier, q, outs, mask, e);
    }
    return 1;
}
#endif

int qtrain_quad_blocked(const int8_t *in, int32_t pixels, const qtrain_weight_segment_t *segments, int32_t count,
                        int32_t zero_point, int32_t cout, const int32_t *bias, const float *multiplier,
                        const qtrain_requant_t *q, int8_t *out, uint8_t *mask, int32_t *buf, int32_t buf_bytes) {
#if QTRAIN_DSP_ASM
    const int32_t cin = segments[count - 1].end - segments[0].begin, quads = (pixels + 3) / 4;
    const int32_t row_bytes = qtrain_quad_widen_bytes(segments, count, 1);
    const int64_t unpacked_bytes = 4 * (int64_t)quads * qtrain_quad_words(cin);
    if (row_bytes == 0 || bias == NULL || unpacked_bytes > buf_bytes) {
        return 0;
    }
    int32_t block = (buf_bytes - (int32_t)unpacked_bytes) / row_bytes; /* no 64-bit division on the target */
    block = block < cout ? block & ~7 : cout; /* whole mask bytes per block */
    if (block < 8) {
        return 0;
    }
    int32_t *wide = buf + quads * qtrain_quad_words(cin);
    for (int32_t k = 0; k < quads; k++) { /* every input pixel read before any output is written */
        const int8_t *rows[4];
        for (int32_t j = 0; j < 4; j++) {
            const int32_t pj = 4 * k + j < pixels ? 4 * k + j : pixels - 1;
            rows[j] = in + pj * cin;
        }
        qtrain_unpack_quad(rows, segments, count, zero_point, buf + k * qtrain_quad_words(cin));
    }
    for (int32_t o0 = 0; o0 < cout; o0 += block) {
        const int32_t o1 = cout - o0 < block ? cout : o0 + block;
        qtrain_weight_segment_t shifted[3];
        for (int32_t i = 0; i < count; i++) {
            shifted[i] = segments[i];
            shifted[i].base += o0 * segments[i].stride;
        }
        qtrain_quad_widen(shifted, count, o1 - o0, bias + o0, multiplier + o0, wide);
        quad_wide_job_t job;
        const quad_wide_loop_t loop = quad_wide_prepare(&job, segments, count, o0, o1, q, mask, wide);
        for (int32_t k = 0; k < quads; k++) {
            int8_t *outs[4];
            uint32_t e[4];
            for (int32_t j = 0; j < 4; j++) {
                const int32_t pj = 4 * k + j < pixels ? 4 * k + j : pixels - 1;
                outs[j] = out + pj * cout;
                e[j] = (uint32_t)(pj * cout);
            }
            const int32_t *x = buf + k * qtrain_quad_words(cin);
            if (loop != NULL) {
                quad_wide_run(loop, &job, x, segments, count, o0, o1, bias, multiplier, q, outs, mask, e);
            } else {
                qtrain_quad_outputs(x, segments, count, o0, o1, bias, multiplier, q, outs, mask, e);
            }
        }
    }
    return 1;
#else
    (void)in;
    (void)pixels;
    (void)segments;
    (void)count;
    (void)zero_point;
    (void)cout;
    (void)bias;
    (void)multiplier;
    (void)q;
    (void)out;
    (void)mask;
    (void)buf;
    (void)buf_bytes;
    return 0;
#endif
}

void qtrain_quad_line(const int8_t *in, int32_t in_step, int32_t pixels, const qtrain_weight_segment_t *segments,
                      int32_t count, int32_t zero_point, int32_t o_begin, int32_t o_end, const int32_t *bias,
                      const float *multiplier, const qtrain_requant_t *q, int8_t *out, int32_t out_step,
                      uint8_t *mask, uint32_t e0, uint32_t e_step, int32_t *unpacked, const int32_t *wide) {
#if QTRAIN_DSP_ASM
    if (quad_wide_line(in, in_step, pixels, segments, count, zero_point, o_begin, o_end, bias, multiplier, q, out,
                       out_step, mask, e0, e_step, unpacked, wide)) {
        return;
    }
    quad_job_t job;
    const quad_loop_t loop = quad_prepare(&job, unpacked, segments, count, o_begin, o_end, bias, multiplier, q,
                                          mask != NULL);
#else
    (void)wide;
#endif
    for (int32_t p = 0; p < pixels; p += 4) {
        const int8_t *rows[4];
        int8_t *outs[4];
        uint32_t e[4];
        for (int32_t j = 0; j < 4; j++) {
            const int32_t pj = p + j < pixels ? p + j : pixels - 1; /* a short last quad repeats its last pixel */
            rows[j] = in + pj * in_step;
            outs[j] = out + pj * out_step;
            e[j] = e0 + (uint32_t)pj * e_step;
        }
        qtrain_unpack_quad(rows, segments, count, zero_point, unpacked);
#if QTRAIN_DSP_ASM
        if (loop != NULL && quad_run(loop, &job, outs, o_begin, mask, e)) {
            continue;
        }
#endif
        qtrain_quad_outputs(unpacked, segments, count, o_begin, o_end, bias, multiplier, q, outs, mask, e);
    }
}

void qtrain_quad_outputs(const int32_t *x, const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin,
                         int32_t o_end, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                         int8_t *const out[4], uint8_t *mask, const uint32_t e[4]) {
#if QTRAIN_DSP_ASM
    quad_job_t job;
    const quad_loop_t loop = quad_prepare(&job, x, segments, count, o_begin, o_end, bias, multiplier, q, mask != NULL);
    if (loop != NULL && quad_run(loop, &job, out, o_begin, mask, e)) {
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

#if QTRAIN_USE_DSP
/* ---- the depthwise pair-row engine (qtrain_kernels_support.h) ---- */

void qtrain_dw_weight_pairs(const int8_t *w, int32_t kernel_h, int32_t kernel_w, int32_t *wp) {
    const int32_t npairs = (kernel_h + 1) / 2;
    #pragma clang loop unroll(disable) vectorize(disable)
    for (int32_t i = 0; i < npairs; i++) {
        #pragma clang loop unroll(disable) vectorize(disable)
        for (int32_t j = 0; j < kernel_w; j++) {
            const int32_t lo = w[(2 * i) * kernel_w + j];
            const int32_t hi = 2 * i + 1 < kernel_h ? w[(2 * i + 1) * kernel_w + j] : 0;
            wp[i * kernel_w + j] = (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
        }
    }
}

/* Columns [first, last) of padded row r hold image pixels (the others are padding); `src` points at
 * column `first`'s pixel, channel c0. Each channel's value goes to the halfword at dst[g * half + 2 * j]
 * for the destinations given (the low halves of one pair row, the high halves of another). */
QTRAIN_INLINE void dw_store4(const int8_t *src, int32_t channels, int32_t first, int32_t last, int32_t offset,
                             int16_t *a, int16_t *b, int32_t half) {
    int16_t *a1 = a + half, *a2 = a + 2 * half, *a3 = a + 3 * half;
    int16_t *b1 = b + half, *b2 = b + 2 * half, *b3 = b + 3 * half;
    #pragma clang loop unroll(disable) vectorize(disable)
    for (int32_t j = first; j < last; j++, src += channels) {
        const int32_t v = qtrain_read_s32(src);
        const int32_t even = qtrain_sxtab16(offset, v), odd = qtrain_sxtab16_ror8(offset, v);
        const int16_t v0 = (int16_t)even, v1 = (int16_t)odd;
        const int16_t v2 = (int16_t)((uint32_t)even >> 16), v3 = (int16_t)((uint32_t)odd >> 16);
        a[2 * j] = v0;
        a1[2 * j] = v1;
        a2[2 * j] = v2;
        a3[2 * j] = v3;
        b[2 * j] = v0;
        b1[2 * j] = v1;
        b2[2 * j] = v2;
        b3[2 * j] = v3;
    }
}

QTRAIN_INLINE void dw_store1(const int8_t *src, int32_t channels, int32_t first, int32_t last, int32_t zero_point,
                             int16_t *a, int16_t *b) {
    #pragma clang loop unroll(disable) vectorize(disable)
    for (int32_t j = first; j < last; j++, src += channels) {
        const int16_t v = (int16_t)(*src - zero_point);
        a[2 * j] = v;
        b[2 * j] = v;
    }
}

/* Zero halfwords [2 * first, 2 * last) step 2 of `count` channels' rows. */
QTRAIN_INLINE void dw_zero(int16_t *a, int32_t count, int32_t half, int32_t first, int32_t last) {
    #pragma clang loop unroll(disable) vectorize(disable)
    for (int32_t g = 0; g < count; g++, a += half) {
        #pragma clang loop unroll(disable) vectorize(disable)
        for (int32_t j = first; j < last; j++) {
            a[2 * j] = 0;
        }
    }
}

void qtrain_dw_load_row(const int8_t *input, const qtrain_dims_t *input_dims, int32_t b, int32_t c0, int32_t count,
                        int32_t r, int32_t pad_top, int32_t pad_left, int32_t zero_point, int32_t columns, int32_t rows,
                        int32_t parity, int32_t *rings, int32_t ring_words) {
    const int with_lo = parity < 0 || (r & 1) == parity;
    const int with_hi = r >= 1 && (parity < 0 || ((r - 1) & 1) == parity);
    if (!with_lo && !with_hi) {
        return;
    }
    int16_t *lo = (int16_t *)(void *)(rings + (r % rows) * columns);
    int16_t *hi = (int16_t *)(void *)(rings + ((r + rows - 1) % rows) * columns) + 1;
    /* one destination only: write it twice (the stores are the same) */
    int16_t *a = with_lo ? lo : hi, *bdst = with_hi ? hi : lo;
    const int32_t iy = r - pad_top, half = 2 * ring_words;
    if (iy < 0 || iy >= input_dims->h) {
        dw_zero(a, count, half, 0, columns);
        dw_zero(bdst, count, half, 0, columns);
        return;
    }
    const int32_t first = pad_left < columns ? pad_left : columns;
    const int32_t last = pad_left + input_dims->w < columns ? pad_left + input_dims->w : columns;
    dw_zero(a, count, half, 0, first);
    dw_zero(bdst, count, half, 0, first);
    if (first < last) {
        const int32_t channels = input_dims->c;
        const int8_t *src = input + ((b * input_dims->h + iy) * input_dims->w + (first - pad_left)) * channels + c0;
        if (count == 4) {
            dw_store4(src, channels, first, last, (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u), a, bdst,
                      half);
        } else {
            #pragma clang loop unroll(disable) vectorize(disable)
            for (int32_t g = 0; g < count; g++) {
                dw_store1(src + g, channels, first, last, zero_point, a + g * half, bdst + g * half);
            }
        }
    }
    dw_zero(a, count, half, last, columns);
    dw_zero(bdst, count, half, last, columns);
}

#if QTRAIN_DSP_ASM
/* The output loops of the common kernels, no mask: `rows` output rows of `count` outputs each (window
 * base advancing `step` bytes per output and `row_step` per row; the outputs of consecutive rows are
 * consecutive, `out_step` bytes apart). Per output: the bias, the window's pair rows (LDM) against the
 * weight pair rows, qtrain_requant's operations through the FPU, one store. */
typedef struct {
    const int32_t *base;   /* 0: pair row 0 of the window of output (0, 0) */
    const int32_t *wp;     /* 4: weight pair rows */
    int8_t *out;           /* 8 */
    uint32_t count;        /* 12: outputs per row */
    int32_t out_step;      /* 16: bytes between outputs (the channel count) */
    int32_t step;          /* 20: bytes between windows (4 * sw) */
    int32_t bias_bits;     /* 24 */
    int32_t bias;          /* 28 */
    float multiplier, lo, hi, shift; /* 32, 36, 40, 44 */
    int32_t row_offset[4]; /* 48: bytes from pair row 0 to pair row i */
    uint32_t rows;         /* 64 */
    int32_t row_step;      /* 68: bytes between the windows of output (r, 0) and (r + 1, 0) */
} dw_job_t;
_Static_assert(offsetof(dw_job_t, bias) == 28 && offsetof(dw_job_t, shift) == 44 &&
                   offsetof(dw_job_t, row_offset) == 48 && offsetof(dw_job_t, row_step) == 68,
               "dw_job_t layout used by the dw_rows assembly");

/* The stack frame of the loops: [sp] out_step, step, bias_bits, bias, row_offset[4] (16..28), base of
 * the current row (32), rows left (36), count (40), row_step (44). */
#define QTRAIN_DW_PROLOGUE                                                                                          \
    "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"                                                          \
    "sub     sp, #48\n\t"                                                                                         \
    "mov     lr, r0\n\t"                                                                                          \
    "add     r0, lr, #16\n\t"                                                                                     \
    "ldm     r0, {r1, r2, r3, r4}\n\t"                                                                            \
    "stm     sp, {r1, r2, r3, r4}\n\t"                                                                            \
    "add     r0, lr, #48\n\t"                                                                                     \
    "ldm     r0, {r1, r2, r3, r4}\n\t"                                                                            \
    "add     r0, sp, #16\n\t"                                                                                     \
    "stm     r0, {r1, r2, r3, r4}\n\t"                                                                            \
    "ldr     r1, [lr, #0]\n\t"                                                                                    \
    "ldr     r2, [lr, #64]\n\t"                                                                                   \
    "ldr     r3, [lr, #12]\n\t"                                                                                   \
    "ldr     r4, [lr, #68]\n\t"                                                                                   \
    "add     r0, sp, #32\n\t"                                                                                     \
    "stm     r0, {r1, r2, r3, r4}\n\t"                                                                            \
    "vldr    s3, [lr, #32]\n\t"                                                                                   \
    "vldr    s0, [lr, #36]\n\t"                                                                                   \
    "vldr    s1, [lr, #40]\n\t"                                                                                   \
    "vldr    s2, [lr, #44]\n\t"
#define QTRAIN_DW_REQUANT(acc)                                                                                      \
    "vmov    s4, " acc "\n\t"                                                                                     \
    "vcvt.f32.s32 s4, s4\n\t"                                                                                     \
    "vmul.f32 s4, s4, s3\n\t"                                                                                     \
    "vmaxnm.f32 s4, s4, s0\n\t"                                                                                   \
    "vminnm.f32 s4, s4, s1\n\t"                                                                                   \
    "vadd.f32 s4, s4, s2\n\t"                                                                                     \
    "vmov    " acc ", s4\n\t"
#define QTRAIN_DW_NEXT_ROW                                                                                          \
    "ldr     r0, [sp, #32]\n\t"                                                                                   \
    "ldr     r1, [sp, #44]\n\t"                                                                                   \
    "add     r0, r1\n\t"                                                                                          \
    "str     r0, [sp, #32]\n\t"                                                                                   \
    "ldr     r0, [sp, #36]\n\t"                                                                                   \
    "subs    r0, r0, #1\n\t"                                                                                      \
    "str     r0, [sp, #36]\n\t"                                                                                   \
    "bne     2b\n\t"                                                                                              \
    "add     sp, #48\n\t"                                                                                         \
    "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t"

/* 3x3: the six weight words in r3-r8, window pair rows r9 / r10, out r11, count r12, acc lr. */
__attribute__((naked, noinline)) static void dw_rows3_asm(const dw_job_t *job) {
    __asm__ volatile(
        QTRAIN_DW_PROLOGUE
        "ldr     r11, [lr, #8]\n\t"                  /* out */
        "ldr     r0, [lr, #4]\n\t"
        "ldm     r0, {r3, r4, r5, r6, r7, r8}\n\t"   /* weights */
        "2:\n\t"
        "ldr     r9, [sp, #32]\n\t"                  /* pair row 0 */
        "ldr     r10, [sp, #20]\n\t"
        "add     r10, r9\n\t"                        /* pair row 1 */
        "ldr     r12, [sp, #40]\n\t"                 /* count */
        "1:\n\t"
        "ldr     lr, [sp, #12]\n\t"                  /* acc = bias */
        "ldm     r9, {r0, r1, r2}\n\t"
        "smlad   lr, r0, r3, lr\n\t"
        "smlad   lr, r1, r4, lr\n\t"
        "smlad   lr, r2, r5, lr\n\t"
        "ldm     r10, {r0, r1, r2}\n\t"
        "smlad   lr, r0, r6, lr\n\t"
        "smlad   lr, r1, r7, lr\n\t"
        "smlad   lr, r2, r8, lr\n\t"
        QTRAIN_DW_REQUANT("lr")
        "ldm     sp, {r0, r1, r2}\n\t"               /* out_step, step, bias_bits */
        "add     lr, r2\n\t"
        "strb    lr, [r11]\n\t"
        "add     r11, r0\n\t"
        "add     r9, r1\n\t"
        "add     r10, r1\n\t"
        "subs    r12, r12, #1\n\t"
        "bne     1b\n\t"
        QTRAIN_DW_NEXT_ROW);
}

/* 5x5 (3 pair rows) and 7x7 (4): per pair row, its offset from the stack, the window's words in two
 * LDMs (the pointer advancing), the weights by LDM with writeback. Registers: r0 pair-row pointer,
 * r1-r4 window words, r5-r8 weights, r9 acc, r10 window base, r11 weight pointer, r12 out, lr count. */
#define QTRAIN_DW_PAIR_ROW5(offset)                                                                                 \
    "ldr     r0, [sp, #" offset "]\n\t"                                                                           \
    "add     r0, r10\n\t"                                                                                         \
    "ldm     r0!, {r1, r2, r3}\n\t"                                                                               \
    "ldm     r11!, {r5, r6, r7}\n\t"                                                                              \
    "smlad   r9, r1, r5, r9\n\t"                                                                                  \
    "smlad   r9, r2, r6, r9\n\t"                                                                                  \
    "smlad   r9, r3, r7, r9\n\t"                                                                                  \
    "ldm     r0, {r1, r2}\n\t"                                                                                    \
    "ldm     r11!, {r5, r6}\n\t"                                                                                  \
    "smlad   r9, r1, r5, r9\n\t"                                                                                  \
    "smlad   r9, r2, r6, r9\n\t"
#define QTRAIN_DW_PAIR_ROW7(offset)                                                                                 \
    "ldr     r0, [sp, #" offset "]\n\t"                                                                           \
    "add     r0, r10\n\t"                                                                                         \
    "ldm     r0!, {r1, r2, r3, r4}\n\t"                                                                           \
    "ldm     r11!, {r5, r6, r7, r8}\n\t"                                                                          \
    "smlad   r9, r1, r5, r9\n\t"                                                                                  \
    "smlad   r9, r2, r6, r9\n\t"                                                                                  \
    "smlad   r9, r3, r7, r9\n\t"                                                                                  \
    "smlad   r9, r4, r8, r9\n\t"                                                                                  \
    "ldm     r0, {r1, r2, r3}\n\t"                                                                                \
    "ldm     r11!, {r5, r6, r7}\n\t"                                                                              \
    "smlad   r9, r1, r5, r9\n\t"                                                                                  \
    "smlad   r9, r2, r6, r9\n\t"                                                                                  \
    "smlad   r9, r3, r7, r9\n\t"
#define QTRAIN_DW_ROWS_BIG(pair_rows, weight_bytes)                                                                 \
    QTRAIN_DW_PROLOGUE                                                                                            \
    "ldr     r12, [lr, #8]\n\t"                                                                                   \
    "ldr     r11, [lr, #4]\n\t"                                                                                   \
    "2:\n\t"                                                                                                      \
    "ldr     r10, [sp, #32]\n\t"                                                                                  \
    "ldr     lr, [sp, #40]\n\t"                                                                                   \
    "1:\n\t"                                                                                                      \
    "ldr     r9, [sp, #12]\n\t"                                                                                   \
    pair_rows                                                                                                     \
    "sub     r11, r11, #" weight_bytes "\n\t"                                                                     \
    QTRAIN_DW_REQUANT("r9")                                                                                       \
    "ldm     sp, {r0, r1, r2}\n\t"                                                                                \
    "add     r9, r2\n\t"                                                                                          \
    "strb    r9, [r12]\n\t"                                                                                       \
    "add     r12, r0\n\t"                                                                                         \
    "add     r10, r1\n\t"                                                                                         \
    "subs    lr, lr, #1\n\t"                                                                                      \
    "bne     1b\n\t"                                                                                              \
    QTRAIN_DW_NEXT_ROW

__attribute__((naked, noinline)) static void dw_rows5_asm(const dw_job_t *job) {
    __asm__ volatile(QTRAIN_DW_ROWS_BIG(QTRAIN_DW_PAIR_ROW5("16") QTRAIN_DW_PAIR_ROW5("20") QTRAIN_DW_PAIR_ROW5("24"),
                                        "60"));
}

__attribute__((naked, noinline)) static void dw_rows7_asm(const dw_job_t *job) {
    __asm__ volatile(QTRAIN_DW_ROWS_BIG(QTRAIN_DW_PAIR_ROW7("16") QTRAIN_DW_PAIR_ROW7("20") QTRAIN_DW_PAIR_ROW7("24")
                                            QTRAIN_DW_PAIR_ROW7("28"),
                                        "112"));
}
#undef QTRAIN_DW_PAIR_ROW5
#undef QTRAIN_DW_PAIR_ROW7
#undef QTRAIN_DW_ROWS_BIG
#undef QTRAIN_DW_PROLOGUE
#undef QTRAIN_DW_REQUANT
#undef QTRAIN_DW_NEXT_ROW
#endif

void qtrain_dw_output_rows(const int32_t *const rows[], int32_t kernel_h, int32_t kernel_w, const int32_t *wp,
                           int32_t out_rows, int32_t row_step, int32_t out_w, int32_t sw, int32_t bias,
                           float multiplier, const qtrain_requant_t *q, int8_t *out, int32_t channels, uint8_t *mask,
                           uint32_t e) {
    const int32_t npairs = (kernel_h + 1) / 2;
#if QTRAIN_DSP_ASM
    if (mask == NULL && kernel_h == kernel_w && (kernel_h == 3 || kernel_h == 5 || kernel_h == 7)) {
        dw_job_t job = {rows[0], wp, out, (uint32_t)out_w, channels, 4 * sw, q->bias_bits, bias, multiplier, q->lo,
                        q->hi, QTRAIN_ROUND_SHIFTER, {0, 0, 0, 0}, (uint32_t)out_rows, 4 * row_step};
        for (int32_t i = 0; i < npairs; i++) {
            job.row_offset[i] = 4 * (int32_t)(rows[i] - rows[0]);
        }
        if (kernel_h == 3) {
            dw_rows3_asm(&job);
        } else if (kernel_h == 5) {
            dw_rows5_asm(&job);
        } else {
            dw_rows7_asm(&job);
        }
        return;
    }
#endif
    const qtrain_requant_t rq = *q;
    for (int32_t oy = 0; oy < out_rows; oy++) {
        for (int32_t ox = 0; ox < out_w; ox++) {
            int32_t acc = bias;
            for (int32_t i = 0; i < npairs; i++) {
                const int32_t *d = rows[i] + oy * row_step + ox * sw, *w = wp + i * kernel_w;
                for (int32_t j = 0; j < kernel_w; j++) {
                    acc = qtrain_smlad(d[j], w[j], acc);
                }
            }
            const int32_t o = (oy * out_w + ox) * channels;
            if (mask == NULL) {
                out[o] = (int8_t)qtrain_requant(acc, multiplier, &rq);
            } else {
                uint32_t inside;
                out[o] = (int8_t)qtrain_requant_mask(acc, multiplier, &rq, &inside);
                qtrain_mask_put(mask, e + (uint32_t)o, inside);
            }
        }
    }
}
#endif

#if QTRAIN_USE_DSP
/* ---- the depthwise four-channel engine (qtrain_kernels_support.h) ---- */

void qtrain_dw4_weights(const int8_t *const w[4], int32_t kernel_h, int32_t kernel_w, int32_t *wp) {
    /* the tap rows' offsets hoisted and the pair rows with both rows split from the odd last one (this runs
     * per group of four channels and call: 3% of an inference when it tested the row per word) */
    const int8_t *const w0 = w[0], *const w1 = w[1], *const w2 = w[2], *const w3 = w[3];
    int32_t i = 0;
    for (; 2 * i + 1 < kernel_h; i++) {
        const int32_t lo = 2 * i * kernel_w, hi = lo + kernel_w;
#pragma clang loop unroll(disable) vectorize(disable)
        for (int32_t j = 0; j < kernel_w; j++, wp += 4) {
            wp[0] = (int32_t)(((uint32_t)w0[lo + j] & 0xFFFFu) | ((uint32_t)w0[hi + j] << 16));
            wp[1] = (int32_t)(((uint32_t)w1[lo + j] & 0xFFFFu) | ((uint32_t)w1[hi + j] << 16));
            wp[2] = (int32_t)(((uint32_t)w2[lo + j] & 0xFFFFu) | ((uint32_t)w2[hi + j] << 16));
            wp[3] = (int32_t)(((uint32_t)w3[lo + j] & 0xFFFFu) | ((uint32_t)w3[hi + j] << 16));
        }
    }
    if (2 * i < kernel_h) { /* an odd KH: the last row paired with weight 0 */
        const int32_t lo = 2 * i * kernel_w;
#pragma clang loop unroll(disable) vectorize(disable)
        for (int32_t j = 0; j < kernel_w; j++, wp += 4) {
            wp[0] = (int32_t)((uint32_t)w0[lo + j] & 0xFFFFu);
            wp[1] = (int32_t)((uint32_t)w1[lo + j] & 0xFFFFu);
            wp[2] = (int32_t)((uint32_t)w2[lo + j] & 0xFFFFu);
            wp[3] = (int32_t)((uint32_t)w3[lo + j] & 0xFFFFu);
        }
    }
}

void qtrain_dw4_pair_row(const int8_t *a, const int8_t *b, int32_t pixel_stride, int32_t first, int32_t last,
                         int32_t columns, int32_t zero_point, int32_t *dst) {
    const int32_t offset = (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u);
    int32_t j = 0;
#pragma clang loop unroll(disable) vectorize(disable)
    for (; j < first; j++, dst += 4) {
        dst[0] = dst[1] = dst[2] = dst[3] = 0;
    }
    if (a != NULL && b != NULL) {
#if QTRAIN_DSP_ASM
        /* the loop below by hand: 14 instructions per column (clang 14: 17); dst word aligned, b read at
         * a fixed distance from a */
        uint32_t n = (uint32_t)(last - j);
        if (n != 0u && j < last) {
            register int32_t w0 __asm__("r8");
            register int32_t w1 __asm__("r9");
            register int32_t w2 __asm__("r10");
            register int32_t w3 __asm__("r11");
            int32_t va, vb, ea, eb;
            const int32_t delta = (int32_t)(b - a);
            __asm__ volatile("1:\n\t"
                             "ldr     %[va], [%[a]]\n\t"
                             "ldr     %[vb], [%[a], %[delta]]\n\t"
                             "add     %[a], %[stride]\n\t"
                             "sxtab16 %[ea], %[off], %[va]\n\t"
                             "sxtab16 %[va], %[off], %[va], ror #8\n\t"
                             "sxtab16 %[eb], %[off], %[vb]\n\t"
                             "sxtab16 %[vb], %[off], %[vb], ror #8\n\t"
                             "pkhbt   %[w0], %[ea], %[eb], lsl #16\n\t"
                             "pkhbt   %[w1], %[va], %[vb], lsl #16\n\t"
                             "pkhtb   %[w2], %[eb], %[ea], asr #16\n\t"
                             "pkhtb   %[w3], %[vb], %[va], asr #16\n\t"
                             "stm     %[dst]!, {%[w0], %[w1], %[w2], %[w3]}\n\t"
                             "subs    %[n], %[n], #1\n\t"
                             "bne     1b"
                             : [a] "+r"(a), [dst] "+r"(dst), [n] "+r"(n), [va] "=&r"(va), [vb] "=&r"(vb),
                               [ea] "=&r"(ea), [eb] "=&r"(eb), [w0] "=&r"(w0), [w1] "=&r"(w1), [w2] "=&r"(w2),
                               [w3] "=&r"(w3)
                             : [delta] "r"(delta), [stride] "r"(pixel_stride), [off] "r"(offset)
                             : "cc", "memory");
            j = last;
        }
#else
#pragma clang loop unroll(disable) vectorize(disable)
        for (; j < last; j++, dst += 4, a += pixel_stride, b += pixel_stride) {
            const uint32_t va = (uint32_t)qtrain_read_s32(a), vb = (uint32_t)qtrain_read_s32(b);
            const uint32_t ea = (uint32_t)qtrain_sxtab16(offset, (int32_t)va);
            const uint32_t oa = (uint32_t)qtrain_sxtab16_ror8(offset, (int32_t)va);
            const uint32_t eb = (uint32_t)qtrain_sxtab16(offset, (int32_t)vb);
            const uint32_t ob = (uint32_t)qtrain_sxtab16_ror8(offset, (int32_t)vb);
            dst[0] = (int32_t)((ea & 0xFFFFu) | (eb << 16));
            dst[1] = (int32_t)((oa & 0xFFFFu) | (ob << 16));
            dst[2] = (int32_t)((eb & 0xFFFF0000u) | (ea >> 16));
            dst[3] = (int32_t)((ob & 0xFFFF0000u) | (oa >> 16));
        }
#endif
    } else if (a != NULL || b != NULL) {
        /* one row inside the image: its values in the low (a) or high (b) halves */
        const int shift = a != NULL ? 0 : 16;
        const int8_t *src = a != NULL ? a : b;
#if QTRAIN_DSP_ASM
        /* by hand, 11 instructions per column (clang 14: 19) */
        uint32_t n = (uint32_t)(last - j);
        if (j < last) {
            register int32_t w0 __asm__("r8");
            register int32_t w1 __asm__("r9");
            register int32_t w2 __asm__("r10");
            register int32_t w3 __asm__("r11");
            int32_t v;
            if (shift == 0) {
                __asm__ volatile("1:\n\t"
                                 "ldr     %[v], [%[src]]\n\t"
                                 "add     %[src], %[stride]\n\t"
                                 "sxtab16 %[w0], %[off], %[v]\n\t"
                                 "sxtab16 %[w1], %[off], %[v], ror #8\n\t"
                                 "lsr     %[w2], %[w0], #16\n\t"
                                 "lsr     %[w3], %[w1], #16\n\t"
                                 "uxth    %[w0], %[w0]\n\t"
                                 "uxth    %[w1], %[w1]\n\t"
                                 "stm     %[dst]!, {%[w0], %[w1], %[w2], %[w3]}\n\t"
                                 "subs    %[n], %[n], #1\n\t"
                                 "bne     1b"
                                 : [src] "+r"(src), [dst] "+r"(dst), [n] "+r"(n), [v] "=&r"(v), [w0] "=&r"(w0),
                                   [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3)
                                 : [stride] "r"(pixel_stride), [off] "r"(offset)
                                 : "cc", "memory");
            } else {
                __asm__ volatile("1:\n\t"
                                 "ldr     %[v], [%[src]]\n\t"
                                 "add     %[src], %[stride]\n\t"
                                 "sxtab16 %[w2], %[off], %[v]\n\t"
                                 "sxtab16 %[w3], %[off], %[v], ror #8\n\t"
                                 "lsl     %[w0], %[w2], #16\n\t"
                                 "lsl     %[w1], %[w3], #16\n\t"
                                 "bfc     %[w2], #0, #16\n\t"
                                 "bfc     %[w3], #0, #16\n\t"
                                 "stm     %[dst]!, {%[w0], %[w1], %[w2], %[w3]}\n\t"
                                 "subs    %[n], %[n], #1\n\t"
                                 "bne     1b"
                                 : [src] "+r"(src), [dst] "+r"(dst), [n] "+r"(n), [v] "=&r"(v), [w0] "=&r"(w0),
                                   [w1] "=&r"(w1), [w2] "=&r"(w2), [w3] "=&r"(w3)
                                 : [stride] "r"(pixel_stride), [off] "r"(offset)
                                 : "cc", "memory");
            }
            j = last;
        }
#endif
#pragma clang loop unroll(disable) vectorize(disable)
        for (; j < last; j++, dst += 4, src += pixel_stride) {
            const uint32_t v = (uint32_t)qtrain_read_s32(src);
            const uint32_t e = (uint32_t)qtrain_sxtab16(offset, (int32_t)v);
            const uint32_t o = (uint32_t)qtrain_sxtab16_ror8(offset, (int32_t)v);
            dst[0] = (int32_t)((e & 0xFFFFu) << shift);
            dst[1] = (int32_t)((o & 0xFFFFu) << shift);
            dst[2] = (int32_t)((e >> 16) << shift);
            dst[3] = (int32_t)((o >> 16) << shift);
        }
    }
#pragma clang loop unroll(disable) vectorize(disable)
    for (; j < columns; j++, dst += 4) {
        dst[0] = dst[1] = dst[2] = dst[3] = 0;
    }
}

#if QTRAIN_DSP_ASM
/* The output loops of the common square kernels, no mask. The job's first twelve words are the loop's
 * stack frame. Registers: r0-r3 the four accumulators, r4-r7 a tap pair of the four channels (LDM),
 * r8-r11 their weights (LDM), r12 the window pointer, lr the weight pointer. */
typedef struct {
    int32_t row_skip;       /* 0: bytes from the end of a window's pair row to the next pair row */
    int32_t back;           /* 4: bytes from the end of a window to the next window */
    const int32_t *bias;    /* 8: the four biases */
    int8_t *out;            /* 12: the next output pixel, channel c0 */
    int32_t channels;       /* 16: bytes between output pixels */
    uint32_t zero_points;   /* 20: the output zero point in each byte */
    uint32_t count;         /* 24: outputs left in the row (starts at out_w) */
    uint32_t out_w;         /* 28 */
    uint32_t rows;          /* 32: output rows left */
    const int32_t *row;     /* 36: the window of the row's first output */
    int32_t row_step;       /* 40: bytes between the windows of two rows' first outputs */
    const int32_t *wp;      /* 44 */
    const float *multiplier; /* 48: the four multipliers */
    float lo, hi, shift;    /* 52, 56, 60 */
    uint8_t *mask;          /* 64: the mask byte of the next pixel's four bits (masked loop) */
    uint32_t mask_shift;    /* 68: their position in the byte, 0 or 4 */
    int32_t mask_step;      /* 72: bytes between two pixels' mask bytes, channels / 8 */
} dw4_job_t;
_Static_assert(offsetof(dw4_job_t, wp) == 44 && offsetof(dw4_job_t, shift) == 60 &&
                   offsetof(dw4_job_t, mask_step) == 72,
               "dw4_job_t layout");

#define QTRAIN_DW4_TAP                                                                                              \
    "ldm     r12!, {r4, r5, r6, r7}\n\t"                                                                          \
    "ldm     lr!, {r8, r9, r10, r11}\n\t"                                                                         \
    "smlad   r0, r4, r8, r0\n\t"                                                                                  \
    "smlad   r1, r5, r9, r1\n\t"                                                                                  \
    "smlad   r2, r6, r10, r2\n\t"                                                                                 \
    "smlad   r3, r7, r11, r3\n\t"
#define QTRAIN_DW4_NEXT_PAIR_ROW                                                                                    \
    "ldr     r4, [sp, #16]\n\t"                                                                                   \
    "add     r12, r4\n\t"
#define QTRAIN_DW4_ROW3 QTRAIN_DW4_TAP QTRAIN_DW4_TAP QTRAIN_DW4_TAP
#define QTRAIN_DW4_ROW5 QTRAIN_DW4_ROW3 QTRAIN_DW4_TAP QTRAIN_DW4_TAP
#define QTRAIN_DW4_ROW7 QTRAIN_DW4_ROW5 QTRAIN_DW4_TAP QTRAIN_DW4_TAP
/* The stack frame, laid out for the loop (the job's fields rearranged): 0 the four biases (one LDM from
 * sp starts the accumulators), 16 row_skip, 20 back, 24 wp (LDRD with back), 28 out, 32 channels,
 * 36 the row's end (the loop compares the output pointer with it), 40 zero_points, 44 bytes of an output
 * row, 48 rows left, 52 row, 56 row_step, 60 mask, 64 mask_shift, 68 mask_step. */
#define QTRAIN_DW4_LOOP(window, requant, zero_points)                                                               \
    "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"                                                          \
    "sub     sp, #72\n\t"                                                                                         \
    "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7, r8}\n\t" /* row_skip back bias out channels zp count out_w */      \
    "strd    r1, r2, [sp, #16]\n\t"                                                                               \
    "ldm     r3, {r9, r10, r11, r12}\n\t"                                                                         \
    "stm     sp, {r9, r10, r11, r12}\n\t"                                                                         \
    "mul     r9, r8, r5\n\t"                                                                                      \
    "add     r10, r4, r9\n\t"                                                                                     \
    "strd    r4, r5, [sp, #28]\n\t"                                                                               \
    "str     r10, [sp, #36]\n\t"                                                                                  \
    "strd    r6, r9, [sp, #40]\n\t"                                                                               \
    "ldm     r0!, {r1, r2, r3, r4}\n\t" /* rows row row_step wp */                                                \
    "add     r5, sp, #48\n\t"                                                                                     \
    "stm     r5, {r1, r2, r3}\n\t"                                                                                \
    "str     r4, [sp, #24]\n\t"                                                                                   \
    "ldr     r1, [r0]\n\t"                                                                                        \
    "vldmia  r1, {s4-s7}\n\t"                                                                                     \
    "vldr    s0, [r0, #4]\n\t"                                                                                    \
    "vldr    s1, [r0, #8]\n\t"                                                                                    \
    "vldr    s2, [r0, #12]\n\t"                                                                                   \
    "add     r0, r0, #16\n\t"                                                                                     \
    "ldm     r0, {r1, r2, r3}\n\t"                                                                                \
    "add     r4, sp, #60\n\t"                                                                                     \
    "stm     r4, {r1, r2, r3}\n\t"                                                                                \
    "ldr     r12, [sp, #52]\n\t"                                                                                  \
    "ldr     lr, [sp, #24]\n\t"                                                                                   \
    "2:\n\t"                                                                                                      \
    "ldm     sp, {r0, r1, r2, r3}\n\t"                                                                            \
    window                                                                                                        \
    "ldrd    r4, lr, [sp, #20]\n\t"                                                                               \
    "add     r12, r4\n\t"                                                                                         \
    requant                                                                                                       \
    "bfi     r0, r1, #8, #8\n\t"                                                                                  \
    "bfi     r0, r2, #16, #8\n\t"                                                                                 \
    "bfi     r0, r3, #24, #8\n\t"                                                                                 \
    zero_points                                                                                                   \
    "ldrd    r4, r5, [sp, #28]\n\t"                                                                               \
    "str     r0, [r4]\n\t"                                                                                        \
    "add     r4, r5\n\t"                                                                                          \
    "str     r4, [sp, #28]\n\t"                                                                                   \
    "ldr     r5, [sp, #36]\n\t"                                                                                   \
    "cmp     r4, r5\n\t"                                                                                          \
    "bne     2b\n\t"                                                                                              \
    "ldr     r6, [sp, #44]\n\t"                                                                                   \
    "add     r5, r6\n\t"                                                                                          \
    "str     r5, [sp, #36]\n\t"                                                                                   \
    "ldr     r4, [sp, #52]\n\t"                                                                                   \
    "ldr     r5, [sp, #56]\n\t"                                                                                   \
    "add     r4, r5\n\t"                                                                                          \
    "str     r4, [sp, #52]\n\t"                                                                                   \
    "mov     r12, r4\n\t"                                                                                         \
    "ldr     r4, [sp, #48]\n\t"                                                                                   \
    "subs    r4, r4, #1\n\t"                                                                                      \
    "str     r4, [sp, #48]\n\t"                                                                                   \
    "bne     2b\n\t"                                                                                              \
    "add     sp, #72\n\t"                                                                                         \
    "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t"

/* qtrain_requant's operations on the four accumulators, two at a time through the core-FPU moves. */
#define QTRAIN_DW4_REQUANT                                                                                          \
    "vmov    s8, s9, r0, r1\n\t"                                                                                  \
    "vmov    s10, s11, r2, r3\n\t"                                                                                \
    "vcvt.f32.s32 s8, s8\n\t"                                                                                     \
    "vcvt.f32.s32 s9, s9\n\t"                                                                                     \
    "vcvt.f32.s32 s10, s10\n\t"                                                                                   \
    "vcvt.f32.s32 s11, s11\n\t"                                                                                   \
    "vmul.f32 s8, s8, s4\n\t"                                                                                     \
    "vmul.f32 s9, s9, s5\n\t"                                                                                     \
    "vmul.f32 s10, s10, s6\n\t"                                                                                   \
    "vmul.f32 s11, s11, s7\n\t"                                                                                   \
    "vmaxnm.f32 s8, s8, s0\n\t"                                                                                   \
    "vmaxnm.f32 s9, s9, s0\n\t"                                                                                   \
    "vmaxnm.f32 s10, s10, s0\n\t"                                                                                 \
    "vmaxnm.f32 s11, s11, s0\n\t"                                                                                 \
    "vminnm.f32 s8, s8, s1\n\t"                                                                                   \
    "vminnm.f32 s9, s9, s1\n\t"                                                                                   \
    "vminnm.f32 s10, s10, s1\n\t"                                                                                 \
    "vminnm.f32 s11, s11, s1\n\t"                                                                                 \
    "vadd.f32 s8, s8, s2\n\t"                                                                                     \
    "vadd.f32 s9, s9, s2\n\t"                                                                                     \
    "vadd.f32 s10, s10, s2\n\t"                                                                                   \
    "vadd.f32 s11, s11, s2\n\t"                                                                                   \
    "vmov    r0, r1, s8, s9\n\t"                                                                                  \
    "vmov    r2, r3, s10, s11\n\t"

/* The same with the masks: each value rounded (VRINTX) before the clamp, its bit set when the clamp
 * changed nothing (qtrain_requant_scaled_mask), the four bits ORed into the pixel's mask byte. */
#define QTRAIN_DW4_REQUANT_MASK                                                                                     \
    "vmov    s8, s9, r0, r1\n\t"                                                                                  \
    "vmov    s10, s11, r2, r3\n\t"                                                                                \
    "movs    r5, #0\n\t"                                                                                          \
    QTRAIN_DW4_MASK_STEP("s8", "s4", "1")                                                                         \
    QTRAIN_DW4_MASK_STEP("s9", "s5", "2")                                                                         \
    QTRAIN_DW4_MASK_STEP("s10", "s6", "4")                                                                        \
    QTRAIN_DW4_MASK_STEP("s11", "s7", "8")                                                                        \
    "ldr     r4, [sp, #64]\n\t"                                                                                   \
    "lsl     r5, r4\n\t"                                                                                          \
    "ldr     r4, [sp, #60]\n\t"                                                                                   \
    "ldrb    r6, [r4]\n\t"                                                                                        \
    "orr     r6, r5\n\t"                                                                                          \
    "strb    r6, [r4]\n\t"                                                                                        \
    "ldr     r6, [sp, #68]\n\t"                                                                                   \
    "add     r4, r6\n\t"                                                                                          \
    "str     r4, [sp, #60]\n\t"                                                                                   \
    "vmov    r0, r1, s8, s9\n\t"                                                                                  \
    "vmov    r2, r3, s10, s11\n\t"
#define QTRAIN_DW4_MASK_STEP(s, m, bit)                                                                             \
    "vcvt.f32.s32 " s ", " s "\n\t"                                                                               \
    "vmul.f32 " s ", " s ", " m "\n\t"                                                                            \
    "vrintx.f32 s12, " s "\n\t"                                                                                   \
    "vmaxnm.f32 " s ", s12, s0\n\t"                                                                               \
    "vminnm.f32 " s ", " s ", s1\n\t"                                                                             \
    "vcmp.f32 s12, " s "\n\t"                                                                                     \
    "vmrs    APSR_nzcv, fpscr\n\t"                                                                                \
    "it      eq\n\t"                                                                                              \
    "orreq   r5, r5, #" bit "\n\t"                                                                                \
    "vadd.f32 " s ", " s ", s2\n\t"

#define QTRAIN_DW4_WINDOW3 QTRAIN_DW4_ROW3 QTRAIN_DW4_NEXT_PAIR_ROW QTRAIN_DW4_ROW3
#define QTRAIN_DW4_WINDOW5                                                                                          \
    QTRAIN_DW4_ROW5 QTRAIN_DW4_NEXT_PAIR_ROW QTRAIN_DW4_ROW5 QTRAIN_DW4_NEXT_PAIR_ROW QTRAIN_DW4_ROW5
#define QTRAIN_DW4_WINDOW7                                                                                          \
    QTRAIN_DW4_ROW7 QTRAIN_DW4_NEXT_PAIR_ROW QTRAIN_DW4_ROW7 QTRAIN_DW4_NEXT_PAIR_ROW QTRAIN_DW4_ROW7               \
        QTRAIN_DW4_NEXT_PAIR_ROW QTRAIN_DW4_ROW7

/* the zero point added to the four packed outputs, or (even) already in the rounding shifter */
#define QTRAIN_DW4_ZP "ldr     r4, [sp, #40]\n\tuadd8   r0, r0, r4\n\t"
#define QTRAIN_DW4_VARIANTS(n)                                                                                      \
    __attribute__((naked, noinline)) static void dw4_rows##n##_asm(const dw4_job_t *job) {                       \
        __asm__ volatile(QTRAIN_DW4_LOOP(QTRAIN_DW4_WINDOW##n, QTRAIN_DW4_REQUANT, QTRAIN_DW4_ZP));                \
    }                                                                                                             \
    __attribute__((naked, noinline)) static void dw4_rows##n##_even_asm(const dw4_job_t *job) {                  \
        __asm__ volatile(QTRAIN_DW4_LOOP(QTRAIN_DW4_WINDOW##n, QTRAIN_DW4_REQUANT, ""));                           \
    }                                                                                                             \
    __attribute__((naked, noinline)) static void dw4_rows##n##_mask_asm(const dw4_job_t *job) {                  \
        __asm__ volatile(QTRAIN_DW4_LOOP(QTRAIN_DW4_WINDOW##n, QTRAIN_DW4_REQUANT_MASK, QTRAIN_DW4_ZP));           \
    }                                                                                                             \
    __attribute__((naked, noinline)) static void dw4_rows##n##_mask_even_asm(const dw4_job_t *job) {             \
        __asm__ volatile(QTRAIN_DW4_LOOP(QTRAIN_DW4_WINDOW##n, QTRAIN_DW4_REQUANT_MASK, ""));                      \
    }
QTRAIN_DW4_VARIANTS(3)
QTRAIN_DW4_VARIANTS(5)
QTRAIN_DW4_VARIANTS(7)
#undef QTRAIN_DW4_VARIANTS
#undef QTRAIN_DW4_ZP
#undef QTRAIN_DW4_WINDOW3
#undef QTRAIN_DW4_WINDOW5
#undef QTRAIN_DW4_WINDOW7
#undef QTRAIN_DW4_REQUANT
#undef QTRAIN_DW4_REQUANT_MASK
#undef QTRAIN_DW4_MASK_STEP
#undef QTRAIN_DW4_TAP
#undef QTRAIN_DW4_NEXT_PAIR_ROW
#undef QTRAIN_DW4_ROW3
#undef QTRAIN_DW4_ROW5
#undef QTRAIN_DW4_ROW7
#undef QTRAIN_DW4_LOOP
#endif

void qtrain_dw4_output_rows(const int32_t *plane, int32_t row_words, int32_t pair_step, int32_t out_step,
                            int32_t kernel_h, int32_t kernel_w, const int32_t *wp, int32_t out_rows, int32_t out_w,
                            int32_t sw, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                            int8_t *out, int32_t channels, uint8_t *mask, uint32_t e) {
    static const int32_t no_bias[4] = {0, 0, 0, 0};
    const int32_t npairs = (kernel_h + 1) / 2;
    if (bias == NULL) {
        bias = no_bias;
    }
#if QTRAIN_DSP_ASM
    if ((mask == NULL || (channels & 7) == 0) && kernel_h == kernel_w &&
        (kernel_h == 3 || kernel_h == 5 || kernel_h == 7)) {
        const int32_t row_bytes = 4 * row_words, tap_bytes = 16 * kernel_w;
        /* an even zero point goes into the rounding shifter (the sums' low bytes are the outputs) */
        const int even = (q->zp & 1) == 0;
        const dw4_job_t job = {pair_step * row_bytes - tap_bytes,
                               16 * sw - (npairs - 1) * pair_step * row_bytes - tap_bytes,
                               bias,
                               out,
                               channels,
                               ((uint32_t)q->zp & 0xFFu) * 0x01010101u,
                               (uint32_t)out_w,
                               (uint32_t)out_w,
                               (uint32_t)out_rows,
                               plane,
                               out_step * row_bytes,
                               wp,
                               multiplier,
                               q->lo,
                               q->hi,
                               even ? QTRAIN_ROUND_SHIFTER + (float)q->zp : QTRAIN_ROUND_SHIFTER,
                               mask != NULL ? mask + (e >> 3) : NULL,
                               e & 7u,
                               channels / 8};
        typedef void (*dw4_loop_t)(const dw4_job_t *);
        static const dw4_loop_t loops[3][4] = {
            {dw4_rows3_asm, dw4_rows3_even_asm, dw4_rows3_mask_asm, dw4_rows3_mask_even_asm},
            {dw4_rows5_asm, dw4_rows5_even_asm, dw4_rows5_mask_asm, dw4_rows5_mask_even_asm},
            {dw4_rows7_asm, dw4_rows7_even_asm, dw4_rows7_mask_asm, dw4_rows7_mask_even_asm}};
        loops[kernel_h / 2 - 1][(mask != NULL ? 2 : 0) + even](&job);
        return;
    }
#endif
    const qtrain_requant_t rq = *q;
    for (int32_t oy = 0; oy < out_rows; oy++) {
        for (int32_t ox = 0; ox < out_w; ox++) {
            const int32_t o = (oy * out_w + ox) * channels;
            for (int32_t g = 0; g < 4; g++) {
                int32_t acc = bias[g];
                for (int32_t i = 0; i < npairs; i++) {
                    const int32_t *d = plane + (oy * out_step + i * pair_step) * row_words + ox * sw * 4 + g;
                    const int32_t *w = wp + i * kernel_w * 4 + g;
                    for (int32_t j = 0; j < kernel_w; j++) {
                        acc = qtrain_smlad(d[4 * j], w[4 * j], acc);
                    }
                }
                if (mask == NULL) {
                    out[o + g] = (int8_t)qtrain_requant(acc, multiplier[g], &rq);
                } else {
                    uint32_t inside;
                    out[o + g] = (int8_t)qtrain_requant_mask(acc, multiplier[g], &rq, &inside);
                    qtrain_mask_put(mask, e + (uint32_t)(o + g), inside);
                }
            }
        }
    }
}
#endif
