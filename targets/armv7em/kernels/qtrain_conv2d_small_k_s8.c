/*
 * qtrain_conv2d_small_k_s8.c - convolutions with few inputs per output, K = KH * KW * C_in <=
 * QTRAIN_SMALL_K_MAX_K, groups = 1, any kernel, stride and padding: the network's first convolution
 * (mcunet: 3x3, stride 2, 3 input channels, K = 27) and the pointwise expansions with few input
 * channels (C_in = 8 .. 32).
 *
 * With so few inputs per output the int8 weight reads of the generic and 1x1 kernels would not amortise,
 * so the whole weight is widened to int16 once per call (K_pad = K rounded up to 2, a zero tap
 * appended), each pair of output pixels is gathered once (im2col, int16 x - zx, padding 0), and every
 * pair of output channels runs 2 LDRD + 4 SMLAD per 2 taps: both operands are stored interleaved
 * in words (pixel 0 taps (i, i + 1), pixel 1 taps (i, i + 1); channel o taps (i, i + 1), channel o + 1
 * taps (i, i + 1)). The portable path is the same computation without the intrinsics.
 */
#include "qtrain_kernels_support.h"

static int32_t padded_k(const qtrain_dims_t *filter_dims) {
    return (filter_dims->h * filter_dims->w * filter_dims->c + 1) & ~1;
}

int32_t qtrain_conv2d_small_k_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                              const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                              const qtrain_weight_t *weight) {
    (void)params;
    (void)input_dims;
    (void)output_dims;
    (void)weight;
    return 2 * padded_k(filter_dims) * (((filter_dims->n + 1) & ~1) + 2);
}

/* window_start(q), below: the first input byte (relative to `input`) the window of output pixel q reads,
 * its top-left tap clamped to the image. A window entirely in the padding reads nothing; its clamped
 * start is then at or past its image row's end, which only makes the bound less strict where nothing is
 * read. */
int32_t qtrain_conv2d_small_k_s8_in_place_gap(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                              const qtrain_dims_t *output_dims) {
    /* When the pair ending at pixel q - 1 is stored (q even), output bytes [0, q * C_out) are written
     * and pixels q.. still read from min over r >= q of window_start(r): that must lie at or after
     * the written end, i.e. input - output >= q * C_out - min_start(q). */
    /* window_start(q) walked backwards row by row, without its divisions (this runs on every call of an
     * in-place stem: a division per pixel was 3% of mcunet's inference). */
    const int32_t out_h = output_dims->h, out_w = output_dims->w, cout = output_dims->c;
    const int32_t cin = input_dims->c, line = input_dims->w * cin;
    int32_t gap = -qtrain_dims_count(input_dims), suffix_min = INT32_MAX;
    int32_t q = output_dims->n * out_h * out_w - 1;
    for (int32_t b = output_dims->n - 1; b >= 0; b--) {
        for (int32_t oy = out_h - 1; oy >= 0; oy--) {
            int32_t iy = oy * params->stride_h - params->pad_top;
            iy = iy < 0 ? 0 : iy;
            const int32_t row = (b * input_dims->h + iy) * line;
            for (int32_t ox = out_w - 1; ox >= 0 && q >= 2; ox--, q--) {
                int32_t ix = ox * params->stride_w - params->pad_left;
                ix = ix < 0 ? 0 : ix;
                const int32_t start = row + ix * cin; /* window_start(q) */
                suffix_min = start < suffix_min ? start : suffix_min;
                if ((q & 1) == 0 && q * cout - suffix_min > gap) {
                    gap = q * cout - suffix_min;
                }
            }
        }
    }
    return gap;
}

/* Weight element (o, t, ci) of the effective int8 weight (t = kh * KW + kw). */
static int32_t weight_element(const qtrain_weight_t *weight, const qtrain_dims_t *filter_dims, int32_t o, int32_t t,
                              int32_t ci) {
    const int32_t cin = filter_dims->c, taps = filter_dims->h * filter_dims->w;
    if ((weight->master != NULL || weight->slice != NULL) && ci >= weight->slice_start && ci < weight->slice_stop) {
        const int32_t k = weight->slice_stop - weight->slice_start;
        const int32_t index = (o * taps + t) * k + (ci - weight->slice_start);
        if (weight->master != NULL) {
            int8_t value;
            qtrain_master_to_s8(weight->master + index, 1, &value);
            return value;
        }
        return weight->slice[index];
    }
    return weight->data[(o * taps + t) * cin + ci];
}

#if !QTRAIN_USE_DSP
/* One output pixel's inputs (x - zx, padding 0), in weight order (kh, kw, ci), zero padded to K_pad,
 * into lane `px` of the interleaved pixel-pair layout: tap i at int16 index (i / 2) * 4 + px * 2 + i % 2. */
static void im2col(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                   const qtrain_dims_t *filter_dims, int32_t b, int32_t oy, int32_t ox, int32_t k_pad, int32_t px,
                   int16_t *col) {
    const int32_t cin = filter_dims->c, zx = params->input_zero_point;
    int16_t *d = col + px * 2;
    int32_t half = 0; /* which int16 of the current word */
    for (int32_t kh = 0; kh < filter_dims->h; kh++) {
        const int32_t iy = oy * params->stride_h + kh - params->pad_top;
        const int row_inside = iy >= 0 && iy < input_dims->h;
        const int8_t *row = input + (b * input_dims->h + iy) * input_dims->w * input_dims->c;
        for (int32_t kw = 0; kw < filter_dims->w; kw++) {
            const int32_t ix = ox * params->stride_w + kw - params->pad_left;
            if (row_inside && ix >= 0 && ix < input_dims->w) {
                const int8_t *src = row + ix * input_dims->c;
                for (int32_t ci = 0; ci < cin; ci++) {
                    d[half] = (int16_t)(src[ci] - zx);
                    d += half * 4;
                    half ^= 1;
                }
            } else {
                for (int32_t ci = 0; ci < cin; ci++) {
                    d[half] = 0;
                    d += half * 4;
                    half ^= 1;
                }
            }
        }
    }
    if (half) {
        d[1] = 0; /* K odd: the appended zero tap */
    }
    (void)k_pad;
}
#endif

#if QTRAIN_USE_DSP
/* The DSP path's im2col, first step: output pixel (b, oy, ox)'s K inputs as raw bytes in weight order
 * (kh, kw, ci), a padding tap (and the appended taps up to K_pad rounded up to 4) holding zx, so that
 * subtracting zx gives 0; a kernel row inside the image is one copy of KW * C_in contiguous bytes, a word
 * at a time. `bytes` has room for K_pad rounded up to 4. */
static void gather(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                   const qtrain_dims_t *filter_dims, int32_t b, int32_t oy, int32_t ox, int32_t k_pad, int8_t *bytes) {
    const int32_t cin = filter_dims->c, kh_count = filter_dims->h, kw_count = filter_dims->w;
    const int32_t width = input_dims->w, height = input_dims->h;
    const int32_t row_bytes = kw_count * cin, line = width * cin;
    const int32_t ix0 = ox * params->stride_w - params->pad_left, iy0 = oy * params->stride_h - params->pad_top;
    const int8_t fill = (int8_t)params->input_zero_point;
    const int32_t k = kh_count * row_bytes, k4 = (k_pad + 3) & ~3;
    if (iy0 >= 0 && iy0 + kh_count <= height && ix0 >= 0 && ix0 + kw_count <= width) {
        const int8_t *src = input + ((b * height + iy0) * width + ix0) * cin;
        int8_t *d = bytes;
        for (int32_t kh = 0; kh < kh_count; kh++, src += line, d += row_bytes) {
            int32_t i = 0;
#pragma clang loop unroll(disable) vectorize(disable)
            for (; i + 4 <= row_bytes; i += 4) {
                qtrain_write_s32(d + i, qtrain_read_s32(src + i));
            }
#pragma clang loop unroll(disable) vectorize(disable)
            for (; i < row_bytes; i++) {
                d[i] = src[i];
            }
        }
        for (int32_t i = k; i < k4; i++) {
            bytes[i] = fill;
        }
        return;
    }
    /* a window over the border: all taps zx first (a word at a time), then each kernel row's taps inside
     * the image copied over them */
    const uint32_t fill4 = ((uint32_t)(uint8_t)fill) * 0x01010101u;
    for (int32_t i = 0; i < k4; i += 4) {
        qtrain_write_s32(bytes + i, (int32_t)fill4);
    }
    const int32_t kw_lo = ix0 < 0 ? -ix0 : 0, kw_hi = width - ix0 < kw_count ? width - ix0 : kw_count;
    for (int32_t kh = 0; kh < kh_count && kw_lo < kw_hi; kh++) {
        if (iy0 + kh >= 0 && iy0 + kh < height) {
            const int8_t *from = input + ((b * height + iy0 + kh) * width + ix0 + kw_lo) * cin;
            int8_t *to = bytes + (kh * kw_count + kw_lo) * cin;
            for (int32_t i = 0; i < (kw_hi - kw_lo) * cin; i++) {
                to[i] = from[i];
            }
        }
    }
}

/* gather() for two pixels whose windows lie inside the image (the caller checked), with the geometry
 * precomputed: each kernel row of both copied a word at a time, the last word of a row overlapping the
 * one before (no byte loop; nothing outside the row read or written; row_bytes >= 4), then the fill up
 * to k4. */
QTRAIN_INLINE void gather_pair_inside(const int8_t *s0, const int8_t *s1, int32_t line, int32_t kh_count,
                                      int32_t row_bytes, int32_t k, int32_t k4, int8_t fill, int8_t *b0, int8_t *b1) {
    const int32_t last = row_bytes - 4;
    for (int32_t kh = 0; kh < kh_count; kh++, s0 += line, s1 += line, b0 += row_bytes, b1 += row_bytes) {
#pragma clang loop unroll(disable) vectorize(disable)
        for (int32_t i = 0; i < last; i += 4) {
            qtrain_write_s32(b0 + i, qtrain_read_s32(s0 + i));
            qtrain_write_s32(b1 + i, qtrain_read_s32(s1 + i));
        }
        qtrain_write_s32(b0 + last, qtrain_read_s32(s0 + last));
        qtrain_write_s32(b1 + last, qtrain_read_s32(s1 + last));
    }
    b0 -= k; /* back to the windows' starts */
    b1 -= k;
    for (int32_t i = k; i < k4; i++) {
        b0[i] = fill;
        b1[i] = fill;
    }
}

/* Second step: two pixels' bytes (`a`: pixel 0, `b`: pixel 1) widened to int16 (x - zx) into the
 * interleaved pair layout, four taps of both at a time: two LDR, four SXTAB16, four PKH, one STM. */
static void interleave(const int8_t *a, const int8_t *b, int32_t k_pad, int32_t zero_point, int32_t *col) {
    const int32_t offset = (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u);
    int32_t i = 0;
#pragma clang loop unroll(disable) vectorize(disable)
    for (; i + 4 <= k_pad; i += 4, col += 4) {
        const int32_t va = qtrain_read_s32(a + i), vb = qtrain_read_s32(b + i);
        const uint32_t ea = (uint32_t)qtrain_sxtab16(offset, va), oa = (uint32_t)qtrain_sxtab16_ror8(offset, va);
        const uint32_t eb = (uint32_t)qtrain_sxtab16(offset, vb), ob = (uint32_t)qtrain_sxtab16_ror8(offset, vb);
        col[0] = (int32_t)((ea & 0xFFFFu) | (oa << 16));         /* pixel 0, taps (i, i + 1) */
        col[1] = (int32_t)((eb & 0xFFFFu) | (ob << 16));         /* pixel 1 */
        col[2] = (int32_t)((oa & 0xFFFF0000u) | (ea >> 16));     /* pixel 0, taps (i + 2, i + 3) */
        col[3] = (int32_t)((ob & 0xFFFF0000u) | (eb >> 16));     /* pixel 1 */
    }
    if (i < k_pad) { /* two taps left */
        col[0] = (int32_t)(((uint32_t)(a[i] - zero_point) & 0xFFFFu) | ((uint32_t)(a[i + 1] - zero_point) << 16));
        col[1] = (int32_t)(((uint32_t)(b[i] - zero_point) & 0xFFFFu) | ((uint32_t)(b[i + 1] - zero_point) << 16));
    }
}
#endif

/* Requantize and store one output and, with a mask, its bit. */
QTRAIN_INLINE void put(int32_t acc, float m, const qtrain_requant_t *q, int8_t *out, uint8_t *mask, uint32_t e,
                       const int with_mask) {
    if (with_mask) {
        uint32_t inside;
        *out = (int8_t)qtrain_requant_mask(acc, m, q, &inside);
        qtrain_mask_put(mask, e, inside);
    } else {
        *out = (int8_t)qtrain_requant(acc, m, q);
    }
}

/* All output channels of one pixel pair (col: the interleaved pair, w: the interleaved channel
 * pairs). The inputs are `restrict` so that the int8 stores do not force reloads. */
QTRAIN_INLINE void pair_outputs_impl(const int32_t *restrict col, const int32_t *restrict w, int32_t k_pad,
                                     int32_t cout, const int32_t *restrict bias, const float *restrict multiplier,
                                     const qtrain_requant_t *q, int8_t *out0, int8_t *out1, uint8_t *mask, uint32_t e0,
                                     uint32_t e1, const int with_mask) {
    const int32_t words = k_pad; /* 2 words per 2 taps */
    for (int32_t o = 0; o < cout; o += 2, w += words) {
        const int32_t o1 = o + 1 < cout ? o + 1 : o;
        int32_t s00 = 0, s01 = 0;
        if (bias != NULL) {
            s00 = bias[o];
            s01 = bias[o1];
        }
        int32_t s10 = s00, s11 = s01;
        const int32_t *x = col, *wp = w;
#if QTRAIN_USE_DSP
        uint32_t n = (uint32_t)k_pad >> 1; /* >= 1 */
#if QTRAIN_DSP_ASM
        /* 2 LDRD + 4 SMLAD per 2 taps, 8 instructions per 8 MACs (clang 14 turns the C below into
         * indexed loads with extra address arithmetic). x and w are word aligned. */
        int32_t x0, x1, wa, wb;
        __asm__("1:\n\t"
                "ldrd    %[x0], %[x1], [%[x]], #8\n\t"
                "ldrd    %[wa], %[wb], [%[w]], #8\n\t"
                "smlad   %[s00], %[x0], %[wa], %[s00]\n\t"
                "smlad   %[s01], %[x0], %[wb], %[s01]\n\t"
                "smlad   %[s10], %[x1], %[wa], %[s10]\n\t"
                "smlad   %[s11], %[x1], %[wb], %[s11]\n\t"
                "subs    %[n], %[n], #1\n\t"
                "bne     1b"
                : [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10), [s11] "+r"(s11), [x] "+r"(x), [w] "+r"(wp),
                  [n] "+r"(n), [x0] "=&r"(x0), [x1] "=&r"(x1), [wa] "=&r"(wa), [wb] "=&r"(wb)
                :
                : "cc", "memory");
#else
#pragma clang loop unroll(disable)
        do {
            const int32_t x0 = x[0], x1 = x[1], wa = wp[0], wb = wp[1];
            s00 = qtrain_smlad(x0, wa, s00);
            s01 = qtrain_smlad(x0, wb, s01);
            s10 = qtrain_smlad(x1, wa, s10);
            s11 = qtrain_smlad(x1, wb, s11);
            x += 2;
            wp += 2;
        } while (--n != 0u);
#endif
#else
        const int16_t *xs = (const int16_t *)(const void *)x, *ws = (const int16_t *)(const void *)wp;
        for (int32_t i = 0; i < 2 * k_pad; i += 4) {
            for (int32_t j = 0; j < 2; j++) {
                s00 += xs[i + j] * ws[i + j];
                s01 += xs[i + j] * ws[i + 2 + j];
                s10 += xs[i + 2 + j] * ws[i + j];
                s11 += xs[i + 2 + j] * ws[i + 2 + j];
            }
        }
#endif
        const float m0 = multiplier[o], m1 = multiplier[o1];
        put(s00, m0, q, out0 + o, mask, e0 + (uint32_t)o, with_mask);
        put(s10, m0, q, out1 + o, mask, e1 + (uint32_t)o, with_mask);
        if (o1 != o) {
            put(s01, m1, q, out0 + o1, mask, e0 + (uint32_t)o1, with_mask);
            put(s11, m1, q, out1 + o1, mask, e1 + (uint32_t)o1, with_mask);
        }
    }
}

#if QTRAIN_DSP_ASM
/* All output channels of one pixel pair in one assembly loop (no mask, a bias, an even C_out): per
 * channel pair, the taps four at a time (two LDM + 8 SMLAD: 10 instructions per 16 MACs, unrolled, entered
 * at the block that leaves K_pad / 4 blocks), a last two taps when K_pad / 2 is odd, then the four
 * requantizations through the FPU (qtrain_requant's operations) and four post-increment stores. The job
 * is copied onto the stack: every register is taken by the dot products. */
typedef struct {
    int8_t *out0;          /* 0: pixel 0's next output byte */
    int8_t *out1;          /* 4 */
    const int32_t *col;    /* 8: the interleaved pixel pair */
    const int32_t *w;      /* 12: the interleaved channel pairs */
    uint32_t pairs;        /* 16: channel pairs left */
    const int32_t *bias;   /* 20 */
    const float *mult;     /* 24 */
    int32_t bias_bits;     /* 28 */
    float lo, hi, shift;   /* 32, 36, 40 */
    uint32_t skip_bytes;   /* 44: 40 * (QTRAIN_SMALL_K_MAX_K / 4 - K_pad / 4): unrolled blocks not run */
    uint32_t half;         /* 48: K_pad / 2 odd */
} small_k_job_t;
_Static_assert(sizeof(small_k_job_t) == 52 && offsetof(small_k_job_t, skip_bytes) == 44,
               "small_k_job_t layout used by small_k_rows_asm");
#define SMALL_K_BLOCKS 64 /* QTRAIN_SMALL_K_MAX_K / 4 */
_Static_assert(SMALL_K_BLOCKS * 4 == QTRAIN_SMALL_K_MAX_K, "the unrolled chain covers every K");

__attribute__((naked, noinline)) static void small_k_rows_asm(const small_k_job_t *job) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "sub     sp, #56\n\t"
        "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7}\n\t" /* out0 .. mult */
        "stm     sp, {r1, r2, r3, r4, r5, r6, r7}\n\t"
        "ldm     r0, {r1, r2, r3, r4, r5, r6}\n\t"      /* bias_bits .. half */
        "add     r7, sp, #28\n\t"
        "stm     r7, {r1, r2, r3, r4, r5, r6}\n\t"
        "vldr    s0, [sp, #32]\n\t"
        "vldr    s1, [sp, #36]\n\t"
        "vldr    s2, [sp, #40]\n\t"
        "adr     r6, 4f\n\t"                            /* the first unrolled block */
        "add     r6, r6, r5\n\t"                        /* + skip_bytes */
        "orr     r6, r6, #1\n\t"                        /* Thumb */
        "str     r6, [sp, #44]\n\t"
        "ldr     r1, [sp, #12]\n\t"                     /* w */
        "2:\n\t"
        "ldr     r0, [sp, #20]\n\t"
        "ldrd    r2, r3, [r0], #8\n\t"                  /* acc = bias[o], bias[o + 1] */
        "str     r0, [sp, #20]\n\t"
        "mov     r4, r2\n\t"
        "mov     r5, r3\n\t"
        "ldr     r0, [sp, #8]\n\t"                      /* x = col */
        "ldr     r6, [sp, #44]\n\t"
        "bx      r6\n\t"
        ".p2align 2\n\t"
        "4:\n\t"
        ".rept 64\n\t"
        "ldm.w   r0!, {r6, r7, r8, r9}\n\t"
        "ldm.w   r1!, {r10, r11, r12, lr}\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "smlad   r2, r8, r12, r2\n\t"
        "smlad   r3, r8, lr, r3\n\t"
        "smlad   r4, r9, r12, r4\n\t"
        "smlad   r5, r9, lr, r5\n\t"
        ".endr\n\t"
        "ldr     r6, [sp, #48]\n\t"                     /* half */
        "cbz     r6, 3f\n\t"
        "ldrd    r6, r7, [r0]\n\t"
        "ldrd    r10, r11, [r1], #8\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "3:\n\t"
        "vmov    s4, s5, r2, r3\n\t"                    /* pixel 0: channels o, o + 1 */
        "vmov    s6, s7, r4, r5\n\t"                    /* pixel 1 */
        "ldr     r6, [sp, #24]\n\t"
        "vldmia  r6!, {s8, s9}\n\t"
        "str     r6, [sp, #24]\n\t"
        "vcvt.f32.s32 s4, s4\n\t"
        "vcvt.f32.s32 s5, s5\n\t"
        "vcvt.f32.s32 s6, s6\n\t"
        "vcvt.f32.s32 s7, s7\n\t"
        "vmul.f32 s4, s4, s8\n\t"
        "vmul.f32 s5, s5, s9\n\t"
        "vmul.f32 s6, s6, s8\n\t"
        "vmul.f32 s7, s7, s9\n\t"
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
        "vmov    r2, r3, s4, s5\n\t"
        "vmov    r4, r5, s6, s7\n\t"
        "ldr     r6, [sp, #28]\n\t"                     /* bias_bits */
        "add     r2, r6\n\t"
        "add     r3, r6\n\t"
        "add     r4, r6\n\t"
        "add     r5, r6\n\t"
        "ldrd    r6, r7, [sp]\n\t"                      /* out0, out1 */
        "strb    r2, [r6], #1\n\t"
        "strb    r3, [r6], #1\n\t"
        "strb    r4, [r7], #1\n\t"
        "strb    r5, [r7], #1\n\t"
        "strd    r6, r7, [sp]\n\t"
        "ldr     r6, [sp, #16]\n\t"
        "subs    r6, r6, #1\n\t"
        "str     r6, [sp, #16]\n\t"
        "bne     2b\n\t"
        "add     sp, #56\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
/* The same two over widened rows (small_k_widen): per channel pair its biases (o, o + 1, twice) and
 * multipliers in front of its weights, so one LDM and one VLDM start a pair where the above take eight
 * instructions; `pairs` then holds pixel 0's output pointer after the last channel, which ends the loop. */
__attribute__((naked, noinline)) static void small_k_wide_asm(const small_k_job_t *job) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "sub     sp, #56\n\t"
        "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7}\n\t" /* out0 .. mult */
        "stm     sp, {r1, r2, r3, r4, r5, r6, r7}\n\t"
        "ldm     r0, {r1, r2, r3, r4, r5, r6}\n\t"      /* bias_bits .. half */
        "add     r7, sp, #28\n\t"
        "stm     r7, {r1, r2, r3, r4, r5, r6}\n\t"
        "vldr    s0, [sp, #32]\n\t"
        "vldr    s1, [sp, #36]\n\t"
        "vldr    s2, [sp, #40]\n\t"
        "adr     r6, 4f\n\t"                            /* the first unrolled block */
        "add     r6, r6, r5\n\t"                        /* + skip_bytes */
        "orr     r6, r6, #1\n\t"                        /* Thumb */
        "str     r6, [sp, #44]\n\t"
        "ldr     r1, [sp, #12]\n\t"                     /* w */
        "2:\n\t"
        "ldm     r1!, {r2, r3, r4, r5}\n\t"             /* acc = bias[o], bias[o + 1], twice */
        "vldmia  r1!, {s8, s9}\n\t"                     /* multiplier[o], multiplier[o + 1] */
        "ldr     r0, [sp, #8]\n\t"                      /* x = col */
        "ldr     r6, [sp, #44]\n\t"
        "bx      r6\n\t"
        ".p2align 2\n\t"
        "4:\n\t"
        ".rept 64\n\t"
        "ldm.w   r0!, {r6, r7, r8, r9}\n\t"
        "ldm.w   r1!, {r10, r11, r12, lr}\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "smlad   r2, r8, r12, r2\n\t"
        "smlad   r3, r8, lr, r3\n\t"
        "smlad   r4, r9, r12, r4\n\t"
        "smlad   r5, r9, lr, r5\n\t"
        ".endr\n\t"
        "ldr     r6, [sp, #48]\n\t"                     /* half */
        "cbz     r6, 3f\n\t"
        "ldrd    r6, r7, [r0]\n\t"
        "ldrd    r10, r11, [r1], #8\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "3:\n\t"
        "vmov    s4, s5, r2, r3\n\t"                    /* pixel 0: channels o, o + 1 */
        "vmov    s6, s7, r4, r5\n\t"                    /* pixel 1 */
        "vcvt.f32.s32 s4, s4\n\t"
        "vcvt.f32.s32 s5, s5\n\t"
        "vcvt.f32.s32 s6, s6\n\t"
        "vcvt.f32.s32 s7, s7\n\t"
        "vmul.f32 s4, s4, s8\n\t"
        "vmul.f32 s5, s5, s9\n\t"
        "vmul.f32 s6, s6, s8\n\t"
        "vmul.f32 s7, s7, s9\n\t"
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
        "vmov    r2, r3, s4, s5\n\t"
        "vmov    r4, r5, s6, s7\n\t"
        "ldr     r6, [sp, #28]\n\t"                     /* bias_bits */
        "add     r2, r6\n\t"
        "add     r3, r6\n\t"
        "add     r4, r6\n\t"
        "add     r5, r6\n\t"
        "ldrd    r6, r7, [sp]\n\t"                      /* out0, out1 */
        "strb    r2, [r6], #1\n\t"
        "strb    r3, [r6], #1\n\t"
        "strb    r4, [r7], #1\n\t"
        "strb    r5, [r7], #1\n\t"
        "strd    r6, r7, [sp]\n\t"
        "ldr     r8, [sp, #16]\n\t"                     /* pixel 0's end */
        "cmp     r6, r8\n\t"
        "bne     2b\n\t"
        "add     sp, #56\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
__attribute__((naked, noinline)) static void small_k_wide_even_asm(const small_k_job_t *job) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "sub     sp, #56\n\t"
        "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7}\n\t" /* out0 .. mult */
        "stm     sp, {r1, r2, r3, r4, r5, r6, r7}\n\t"
        "ldm     r0, {r1, r2, r3, r4, r5, r6}\n\t"      /* bias_bits .. half */
        "add     r7, sp, #28\n\t"
        "stm     r7, {r1, r2, r3, r4, r5, r6}\n\t"
        "vldr    s0, [sp, #32]\n\t"
        "vldr    s1, [sp, #36]\n\t"
        "vldr    s2, [sp, #40]\n\t"
        "adr     r6, 4f\n\t"                            /* the first unrolled block */
        "add     r6, r6, r5\n\t"                        /* + skip_bytes */
        "orr     r6, r6, #1\n\t"                        /* Thumb */
        "str     r6, [sp, #44]\n\t"
        "ldr     r1, [sp, #12]\n\t"                     /* w */
        "2:\n\t"
        "ldm     r1!, {r2, r3, r4, r5}\n\t"             /* acc = bias[o], bias[o + 1], twice */
        "vldmia  r1!, {s8, s9}\n\t"                     /* multiplier[o], multiplier[o + 1] */
        "ldr     r0, [sp, #8]\n\t"                      /* x = col */
        "ldr     r6, [sp, #44]\n\t"
        "bx      r6\n\t"
        ".p2align 2\n\t"
        "4:\n\t"
        ".rept 64\n\t"
        "ldm.w   r0!, {r6, r7, r8, r9}\n\t"
        "ldm.w   r1!, {r10, r11, r12, lr}\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "smlad   r2, r8, r12, r2\n\t"
        "smlad   r3, r8, lr, r3\n\t"
        "smlad   r4, r9, r12, r4\n\t"
        "smlad   r5, r9, lr, r5\n\t"
        ".endr\n\t"
        "ldr     r6, [sp, #48]\n\t"                     /* half */
        "cbz     r6, 3f\n\t"
        "ldrd    r6, r7, [r0]\n\t"
        "ldrd    r10, r11, [r1], #8\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "3:\n\t"
        "vmov    s4, s5, r2, r3\n\t"                    /* pixel 0: channels o, o + 1 */
        "vmov    s6, s7, r4, r5\n\t"                    /* pixel 1 */
        "vcvt.f32.s32 s4, s4\n\t"
        "vcvt.f32.s32 s5, s5\n\t"
        "vcvt.f32.s32 s6, s6\n\t"
        "vcvt.f32.s32 s7, s7\n\t"
        "vmul.f32 s4, s4, s8\n\t"
        "vmul.f32 s5, s5, s9\n\t"
        "vmul.f32 s6, s6, s8\n\t"
        "vmul.f32 s7, s7, s9\n\t"
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
        "vmov    r2, r3, s4, s5\n\t"
        "vmov    r4, r5, s6, s7\n\t"
        "ldrd    r6, r7, [sp]\n\t"                      /* out0, out1 */
        "strb    r2, [r6], #1\n\t"
        "strb    r3, [r6], #1\n\t"
        "strb    r4, [r7], #1\n\t"
        "strb    r5, [r7], #1\n\t"
        "strd    r6, r7, [sp]\n\t"
        "ldr     r8, [sp, #16]\n\t"                     /* pixel 0's end */
        "cmp     r6, r8\n\t"
        "bne     2b\n\t"
        "add     sp, #56\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
/* the same with an even zero point folded into the rounding shifter (no bias_bits adds) */
__attribute__((naked, noinline)) static void small_k_rows_even_asm(const small_k_job_t *job) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "sub     sp, #56\n\t"
        "ldm     r0!, {r1, r2, r3, r4, r5, r6, r7}\n\t" /* out0 .. mult */
        "stm     sp, {r1, r2, r3, r4, r5, r6, r7}\n\t"
        "ldm     r0, {r1, r2, r3, r4, r5, r6}\n\t"      /* bias_bits .. half */
        "add     r7, sp, #28\n\t"
        "stm     r7, {r1, r2, r3, r4, r5, r6}\n\t"
        "vldr    s0, [sp, #32]\n\t"
        "vldr    s1, [sp, #36]\n\t"
        "vldr    s2, [sp, #40]\n\t"
        "adr     r6, 4f\n\t"                            /* the first unrolled block */
        "add     r6, r6, r5\n\t"                        /* + skip_bytes */
        "orr     r6, r6, #1\n\t"                        /* Thumb */
        "str     r6, [sp, #44]\n\t"
        "ldr     r1, [sp, #12]\n\t"                     /* w */
        "2:\n\t"
        "ldr     r0, [sp, #20]\n\t"
        "ldrd    r2, r3, [r0], #8\n\t"                  /* acc = bias[o], bias[o + 1] */
        "str     r0, [sp, #20]\n\t"
        "mov     r4, r2\n\t"
        "mov     r5, r3\n\t"
        "ldr     r0, [sp, #8]\n\t"                      /* x = col */
        "ldr     r6, [sp, #44]\n\t"
        "bx      r6\n\t"
        ".p2align 2\n\t"
        "4:\n\t"
        ".rept 64\n\t"
        "ldm.w   r0!, {r6, r7, r8, r9}\n\t"
        "ldm.w   r1!, {r10, r11, r12, lr}\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "smlad   r2, r8, r12, r2\n\t"
        "smlad   r3, r8, lr, r3\n\t"
        "smlad   r4, r9, r12, r4\n\t"
        "smlad   r5, r9, lr, r5\n\t"
        ".endr\n\t"
        "ldr     r6, [sp, #48]\n\t"                     /* half */
        "cbz     r6, 3f\n\t"
        "ldrd    r6, r7, [r0]\n\t"
        "ldrd    r10, r11, [r1], #8\n\t"
        "smlad   r2, r6, r10, r2\n\t"
        "smlad   r3, r6, r11, r3\n\t"
        "smlad   r4, r7, r10, r4\n\t"
        "smlad   r5, r7, r11, r5\n\t"
        "3:\n\t"
        "vmov    s4, s5, r2, r3\n\t"                    /* pixel 0: channels o, o + 1 */
        "vmov    s6, s7, r4, r5\n\t"                    /* pixel 1 */
        "ldr     r6, [sp, #24]\n\t"
        "vldmia  r6!, {s8, s9}\n\t"
        "str     r6, [sp, #24]\n\t"
        "vcvt.f32.s32 s4, s4\n\t"
        "vcvt.f32.s32 s5, s5\n\t"
        "vcvt.f32.s32 s6, s6\n\t"
        "vcvt.f32.s32 s7, s7\n\t"
        "vmul.f32 s4, s4, s8\n\t"
        "vmul.f32 s5, s5, s9\n\t"
        "vmul.f32 s6, s6, s8\n\t"
        "vmul.f32 s7, s7, s9\n\t"
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
        "vmov    r2, r3, s4, s5\n\t"
        "vmov    r4, r5, s6, s7\n\t"
        "ldrd    r6, r7, [sp]\n\t"                      /* out0, out1 */
        "strb    r2, [r6], #1\n\t"
        "strb    r3, [r6], #1\n\t"
        "strb    r4, [r7], #1\n\t"
        "strb    r5, [r7], #1\n\t"
        "strd    r6, r7, [sp]\n\t"
        "ldr     r6, [sp, #16]\n\t"
        "subs    r6, r6, #1\n\t"
        "str     r6, [sp, #16]\n\t"
        "bne     2b\n\t"
        "add     sp, #56\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
#endif

static __attribute__((noinline)) void pair_outputs(const int32_t *col, const int32_t *w, const int32_t *wide,
                                                   int32_t k_pad, int32_t cout, const int32_t *bias,
                                                   const float *multiplier, qtrain_requant_t q, int8_t *out0,
                                                   int8_t *out1, uint8_t *mask, uint32_t e0, uint32_t e1) {
    (void)wide; /* the assembly loop's (QTRAIN_DSP_ASM) */
    if (mask != NULL) {
        pair_outputs_impl(col, w, k_pad, cout, bias, multiplier, &q, out0, out1, mask, e0, e1, 1);
    } else {
#if QTRAIN_DSP_ASM
        if (bias != NULL && (cout & 1) == 0) {
            const int even = (q.zp & 1) == 0;
            if (wide != NULL) {
                const small_k_job_t job = {out0, out1, col, wide, (uint32_t)(uintptr_t)(out0 + cout), bias, multiplier,
                                           q.bias_bits, q.lo, q.hi,
                                           even ? QTRAIN_ROUND_SHIFTER + (float)q.zp : QTRAIN_ROUND_SHIFTER,
                                           40u * (uint32_t)(SMALL_K_BLOCKS - k_pad / 4), (uint32_t)(k_pad / 2) & 1u};
                if (even) {
                    small_k_wide_even_asm(&job);
                } else {
                    small_k_wide_asm(&job);
                }
                return;
            }
            const small_k_job_t job = {out0, out1, col, w, (uint32_t)cout / 2, bias, multiplier, q.bias_bits, q.lo,
                                       q.hi, even ? QTRAIN_ROUND_SHIFTER + (float)q.zp : QTRAIN_ROUND_SHIFTER,
                                       40u * (uint32_t)(SMALL_K_BLOCKS - k_pad / 4), (uint32_t)(k_pad / 2) & 1u};
            if (even) {
                small_k_rows_even_asm(&job);
            } else {
                small_k_rows_asm(&job);
            }
            return;
        }
#endif
        pair_outputs_impl(col, w, k_pad, cout, bias, multiplier, &q, out0, out1, mask, e0, e1, 0);
    }
}

qtrain_status_t qtrain_conv2d_small_k_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                      const qtrain_dims_t *input_dims, const int8_t *input,
                                      const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                      const int32_t *bias, const float *multiplier,
                                      const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask) {
    if (!qtrain_conv_args_valid(params, input_dims, filter_dims, output_dims) || params->groups != 1 ||
        filter_dims->h * filter_dims->w * filter_dims->c > QTRAIN_SMALL_K_MAX_K ||
        !qtrain_weight_valid(weight, filter_dims->c)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch = qtrain_conv2d_small_k_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch) ||
        !qtrain_conv_placement_ok(QTRAIN_IN_PLACE_SMALL_K, params, input_dims, input, filter_dims, output_dims,
                                  output)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t k_pad = padded_k(filter_dims), taps = filter_dims->h * filter_dims->w;
    const int32_t cin = filter_dims->c, cout = filter_dims->n;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t pixels = output_dims->n * out_h * out_w;
    /* col: the pixel pair, 2 * k_pad int16; w16: channel pairs, 2 * k_pad int16 each (an odd last
     * channel is paired with itself). */
    int16_t *col = (int16_t *)ctx->buf, *w16 = col + 2 * k_pad;
    for (int32_t o = 0; o < cout; o += 2) {
        int16_t *pair = w16 + o * k_pad;
        for (int32_t lane = 0; lane < 2; lane++) {
            const int32_t oo = o + lane < cout ? o + lane : o;
            for (int32_t i = 0; i < k_pad; i++) {
                pair[(i >> 1) * 4 + lane * 2 + (i & 1)] =
                    (int16_t)(i < taps * cin ? weight_element(weight, filter_dims, oo, i / cin, i % cin) : 0);
            }
        }
    }
    const qtrain_requant_t q = qtrain_requant_make(params->output_zero_point, params->clamp_min, params->clamp_max);
    if (mask != NULL) {
        qtrain_mask_clear(mask, pixels * cout);
    }
    /* With room beyond the minimum scratch (no mask, a bias, an even C_out): the channel pairs again, each
     * led by its biases (o, o + 1, o, o + 1) and multipliers, for the assembly loop's one-pointer walk. */
    const int32_t *wide = NULL;
#if QTRAIN_DSP_ASM
    const int32_t wide_bytes = (cout / 2) * (24 + 4 * k_pad);
    if (mask == NULL && bias != NULL && (cout & 1) == 0 && ctx->size - scratch >= wide_bytes) {
        int32_t *dst = (int32_t *)(void *)((uint8_t *)ctx->buf + scratch), *const first = dst;
        const int32_t *src = (const int32_t *)(const void *)w16;
        for (int32_t o = 0; o < cout; o += 2) {
            dst[0] = dst[2] = bias[o];
            dst[1] = dst[3] = bias[o + 1];
            dst[4] = (int32_t)qtrain_float_bits(multiplier[o]);
            dst[5] = (int32_t)qtrain_float_bits(multiplier[o + 1]);
            dst += 6;
            for (int32_t i = 0; i < k_pad; i++) {
                *dst++ = *src++;
            }
        }
        wide = first;
    }
#endif

#if QTRAIN_USE_DSP
    int32_t bytes0[QTRAIN_SMALL_K_MAX_K / 4 + 1], bytes1[QTRAIN_SMALL_K_MAX_K / 4 + 1]; /* the pair's raw windows */
    /* the pixels' coordinates walked along (no division per pixel), a window inside the image copied
     * row by row straight away */
    const int32_t line = input_dims->w * cin, row_bytes = filter_dims->w * cin, k = taps * cin;
    const int32_t k4 = (k_pad + 3) & ~3;
    const int32_t x_last = input_dims->w - filter_dims->w, y_last = input_dims->h - filter_dims->h;
    int32_t coords[2][3] = {{0, 0, 0}, {0, 0, 0}}; /* (b, oy, ox) of the pair's two pixels */
#endif
    for (int32_t p = 0; p < pixels; p += 2) {
        const int32_t p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is paired with itself */
#if QTRAIN_USE_DSP
        coords[1][0] = coords[0][0];
        coords[1][1] = coords[0][1];
        coords[1][2] = coords[0][2];
        if (p1 != p && ++coords[1][2] == out_w) {
            coords[1][2] = 0;
            if (++coords[1][1] == out_h) {
                coords[1][1] = 0;
                coords[1][0]++;
            }
        }
        int inside = row_bytes >= 4;
        int32_t start[2]; /* each window's first byte, when inside */
        for (int32_t j = 0; j < 2; j++) {
            const int32_t iy0 = coords[j][1] * params->stride_h - params->pad_top;
            const int32_t ix0 = coords[j][2] * params->stride_w - params->pad_left;
            inside &= iy0 >= 0 && iy0 <= y_last && ix0 >= 0 && ix0 <= x_last;
            start[j] = (coords[j][0] * input_dims->h + iy0) * line + ix0 * cin;
        }
        if (inside) {
            gather_pair_inside(input + start[0], input + start[1], line, filter_dims->h, row_bytes, k, k4, (int8_t)params->input_zero_point,
                               (int8_t *)bytes0, (int8_t *)bytes1);
        } else {
            gather(input, input_dims, params, filter_dims, coords[0][0], coords[0][1], coords[0][2], k_pad,
                   (int8_t *)bytes0);
            gather(input, input_dims, params, filter_dims, coords[1][0], coords[1][1], coords[1][2], k_pad,
                   (int8_t *)bytes1);
        }
        interleave((const int8_t *)bytes0, (const int8_t *)bytes1, k_pad, params->input_zero_point,
                   (int32_t *)(void *)col);
        /* the next pair's first pixel */
        coords[0][0] = coords[1][0];
        coords[0][1] = coords[1][1];
        coords[0][2] = coords[1][2];
        if (++coords[0][2] == out_w) {
            coords[0][2] = 0;
            if (++coords[0][1] == out_h) {
                coords[0][1] = 0;
                coords[0][0]++;
            }
        }
#else
        im2col(input, input_dims, params, filter_dims, p / (out_h * out_w), (p / out_w) % out_h, p % out_w, k_pad, 0,
               col);
        im2col(input, input_dims, params, filter_dims, p1 / (out_h * out_w), (p1 / out_w) % out_h, p1 % out_w, k_pad, 1,
               col);
#endif
        pair_outputs((const int32_t *)(const void *)col, (const int32_t *)(const void *)w16, wide, k_pad, cout, bias,
                     multiplier, q, output + p * cout, output + p1 * cout, mask, (uint32_t)(p * cout),
                     (uint32_t)(p1 * cout));
    }
    return QTRAIN_STATUS_OK;
}
