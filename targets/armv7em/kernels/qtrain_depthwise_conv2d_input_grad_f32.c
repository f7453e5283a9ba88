/*
 * qtrain_depthwise_conv2d_input_grad_f32.c - dL/dx of a depthwise convolution (channel multiplier 1),
 * any kernel up to QTRAIN_MAX_DEPTHWISE_KERNEL a side, stride and padding: gx[n, iy, ix, c] = sum over
 * the taps (kh, kw) whose window reaches (iy, ix) of g[n, oy, ox, c] * w[c, kh, kw],
 * oy = (iy + pt - kh) / sh (exact), same for x.
 *
 * One channel (and batch) at a time: its gradient plane is copied into a zero-bordered fp32 plane
 * wide enough for every tap of every input pixel, so no bounds are tested. The input pixels split
 * into sh x sw stride classes (iy mod sh, ix mod sw); all pixels of a class are reached by the same
 * taps (kh = kh0, kh0 + sh, ...), which makes each class a stride-1 correlation with a sub-kernel
 * (the whole kernel for stride 1). Each gx element is one accumulator from +0 over its taps
 * row-major: acc = fmaf(g, w, acc). Sub-kernels of 1..7 taps a side are unrolled.
 *
 * Eight channels at a time when their planes fit the scratch given (a channel count that is a
 * multiple of 8; the rest one at a time): the plane interleaves the eight channels (8 floats per
 * position, copied with VLDM / VSTM of 8 on the DSP path) and so do the class's weights, and on the
 * Cortex-M7 an assembly loop runs each tap as one VLDMDB of 8 gradients, one VLDMIA of 8 weights and
 * 8 VFMA (the taps of a row unrolled), the same operations per element in the same order.
 *
 * In place (input_grad == grad when grad_dims == input_dims): the gradient plane of (batch b, channel
 * c) is copied whole into scratch before any element of input_grad's plane (b, c) is written, and with
 * equal shapes that plane occupies exactly the elements of grad's plane (b, c), read by nothing else
 * (eight channels: their planes, before any of their elements is written).
 */
#include "qtrain_kernels_support.h"

#if QTRAIN_DSP_ASM
typedef struct {
    const float *row;       /* 0: the end of pixel (0, 0)'s element in the plane (its 8 floats end here) */
    int32_t plane_row;      /* 4: bytes between plane rows (plane_w * 32) */
    float *dst_row;         /* 8: gx of pixel (0, 0), channel c0 */
    int32_t dst_row_step;   /* 12: bytes between two class rows of gx */
    uint32_t count;         /* 16: pixels per class row */
    uint32_t rows;          /* 20 */
    int32_t tap_skip;       /* 24: plane_row - nu * 32: from the end of a tap row to the next row up */
    int32_t dst_step;       /* 28: bytes between two pixels of gx */
    const float *taps;      /* 32: nt * nu * 8 weights */
    uint32_t nt;            /* 36 */
    uint32_t nu;            /* 40: 1 .. QTRAIN_MAX_DEPTHWISE_KERNEL */
    const float *zeros;     /* 44: 8 x +0.0 */
} ig8_job_t;
_Static_assert(offsetof(ig8_job_t, zeros) == 44, "ig8_job_t layout used by ig8_asm");
#define IG8_UNROLLED_TAPS 11 /* the taps of a row ig8_asm has unrolled (".rept" below) */
_Static_assert(QTRAIN_MAX_DEPTHWISE_KERNEL <= IG8_UNROLLED_TAPS, "ig8_asm unrolls too few taps per row");

/* Registers: r0 gradient pointer (VLDMDB, leftwards), r1 weights, r2 tap rows left, r3 the entry into
 * the unrolled taps, r4 the pixel's element end, r5 gx, r6 pixels left, r7 rows left, r8 tap_skip,
 * r9 dst_step, r10 taps, r11 nt, r12 zeros; s0-s7 the 8 sums, s8-s15 gradients, s16-s23 weights.
 * Stack: [sp] the row's element end, [4] plane_row, [8] gx row, [12] dst_row_step, [16] count. */
__attribute__((naked, noinline)) static void ig8_asm(const ig8_job_t *job) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "vpush   {s16-s23}\n\t"
        "sub     sp, #24\n\t"
        "ldm     r0, {r1, r2, r3, r4, r5}\n\t"
        "stm     sp, {r1, r2, r3, r4, r5}\n\t"
        "ldr     r7, [r0, #20]\n\t"
        "ldr     r8, [r0, #24]\n\t"
        "ldr     r9, [r0, #28]\n\t"
        "ldr     r10, [r0, #32]\n\t"
        "ldr     r11, [r0, #36]\n\t"
        "ldr     r3, [r0, #40]\n\t"
        "ldr     r12, [r0, #44]\n\t"
        "movs    r2, #40\n\t"
        "mul     r3, r3, r2\n\t"
        "adr     r2, 4f\n\t"
        "sub     r3, r2, r3\n\t"
        "orr     r3, r3, #1\n\t"                /* Thumb: the entry leaving nu taps */
        "ldr     r4, [sp, #0]\n\t"
        "ldr     r5, [sp, #8]\n\t"
        "ldr     r6, [sp, #16]\n\t"
        "2:\n\t"
        "vldmia  r12, {s0-s7}\n\t"
        "mov     r0, r4\n\t"
        "mov     r1, r10\n\t"
        "mov     r2, r11\n\t"
        "3:\n\t"
        "bx      r3\n\t"
        ".p2align 2\n\t"
        ".rept 11\n\t"
        "vldmdb  r0!, {s8-s15}\n\t"
        "vldmia  r1!, {s16-s23}\n\t"
        "vfma.f32 s0, s8, s16\n\t"
        "vfma.f32 s1, s9, s17\n\t"
        "vfma.f32 s2, s10, s18\n\t"
        "vfma.f32 s3, s11, s19\n\t"
        "vfma.f32 s4, s12, s20\n\t"
        "vfma.f32 s5, s13, s21\n\t"
        "vfma.f32 s6, s14, s22\n\t"
        "vfma.f32 s7, s15, s23\n\t"
        ".endr\n\t"
        "4:\n\t"
        "sub     r0, r0, r8\n\t"
        "subs    r2, r2, #1\n\t"
        "bne     3b\n\t"
        "vstmia  r5, {s0-s7}\n\t"
        "add     r5, r9\n\t"
        "add     r4, r4, #32\n\t"
        "subs    r6, r6, #1\n\t"
        "bne     2b\n\t"
        "ldr     r4, [sp, #0]\n\t"
        "ldr     r6, [sp, #4]\n\t"
        "add     r4, r6\n\t"
        "str     r4, [sp, #0]\n\t"
        "ldr     r5, [sp, #8]\n\t"
        "ldr     r6, [sp, #12]\n\t"
        "add     r5, r6\n\t"
        "str     r5, [sp, #8]\n\t"
        "ldr     r6, [sp, #16]\n\t"
        "subs    r7, r7, #1\n\t"
        "bne     2b\n\t"
        "add     sp, #24\n\t"
        "vpop    {s16-s23}\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}

static const float zeros8[8] = {0.0f};
#endif

/* The pixels of one stride class for eight interleaved channels: as class_block, element i of a plane
 * position or a tap is channel c0 + i; dst steps in floats. */
static void class_block8(const float *gp, int32_t plane_w, const float *taps, int32_t nt, int32_t nu, float *dst,
                         int32_t dst_step, int32_t dst_row_step, int32_t count, int32_t rows) {
#if QTRAIN_DSP_ASM
    if (nt > 0 && nu > 0) {
        const ig8_job_t job = {gp + 8,  32 * plane_w,       dst,      4 * dst_row_step, (uint32_t)count,
                               (uint32_t)rows, 32 * (plane_w - nu), 4 * dst_step, taps, (uint32_t)nt,
                               (uint32_t)nu, zeros8};
        ig8_asm(&job);
        return;
    }
#endif
    for (int32_t r = 0; r < rows; r++, gp += 8 * plane_w, dst += dst_row_step) {
        const float *g = gp;
        float *out = dst;
        for (int32_t j = 0; j < count; j++, g += 8, out += dst_step) {
            for (int32_t i = 0; i < 8; i++) {
                float acc = 0.0f;
                const float *row = g + i;
                const float *w = taps + i;
                for (int32_t t = 0; t < nt; t++, row -= 8 * plane_w) {
                    for (int32_t u = 0; u < nu; u++, w += 8) {
                        acc = __builtin_fmaf(row[-8 * u], *w, acc);
                    }
                }
                out[i] = acc;
            }
        }
    }
}


static int32_t slice_elements(const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight) {
    return qtrain_weight_has_slice(weight)
               ? (weight->slice_stop - weight->slice_start) * filter_dims->h * filter_dims->w
               : 0;
}

static int32_t floor_div(int32_t a, int32_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* The range [lo, hi] of output indices any tap of any input position reaches, along one axis. */
static void reach(int32_t size, int32_t kernel, int32_t stride, int32_t pad, int32_t *lo, int32_t *hi) {
    *lo = floor_div(pad - (kernel - 1), stride);
    *hi = floor_div(size - 1 + pad, stride);
}

/* Floats of the padded gradient plane, in int64. The size query may see shapes the kernel refuses:
 * sizes and paddings above QTRAIN_MAX_TENSOR_ELEMENTS (which the kernel's geometry check rules out)
 * count as too large, and below it reach() cannot overflow. (No int64 division: the Cortex-M build
 * has no runtime library for it.) */
static int64_t plane_floats(const qtrain_conv_params_t *params, const qtrain_dims_t *filter_dims,
                            const qtrain_dims_t *input_dims) {
    if (!qtrain_dims_fit(input_dims) || !qtrain_dims_fit(filter_dims) || params->stride_h < 1 ||
        params->stride_w < 1 || params->pad_top < 0 || params->pad_left < 0 ||
        params->pad_top > QTRAIN_MAX_TENSOR_ELEMENTS || params->pad_left > QTRAIN_MAX_TENSOR_ELEMENTS) {
        return INT32_MAX;
    }
    int32_t ylo, yhi, xlo, xhi;
    reach(input_dims->h, filter_dims->h, params->stride_h, params->pad_top, &ylo, &yhi);
    reach(input_dims->w, filter_dims->w, params->stride_w, params->pad_left, &xlo, &xhi);
    return ((int64_t)yhi - ylo + 1) * ((int64_t)xhi - xlo + 1);
}

int32_t qtrain_depthwise_conv2d_input_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                               const qtrain_dims_t *grad_dims,
                                                               const qtrain_dims_t *filter_dims,
                                                               const qtrain_dims_t *input_dims,
                                                               const qtrain_weight_t *weight) {
    (void)grad_dims;
    return qtrain_size_saturate(4 * plane_floats(params, filter_dims, input_dims) +
                                qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight)));
}

/* All pixels of one stride class: `rows` rows of `count` pixels; pixel (r, j) reads g at
 * gp + r * plane_w + j - t * plane_w - u for its taps (t, u) < (nt, nu), weights taps[t * nu + u], and
 * writes dst[r * dst_row_step + j * dst_step]. `nu` is a compile-time constant for 1..7. */
QTRAIN_INLINE void class_block(const float *gp, int32_t plane_w, const float *taps, const int32_t nt, const int32_t nu,
                               float *dst, int32_t dst_step, int32_t dst_row_step, int32_t count, int32_t rows) {
    /* A local copy, so that the stores to dst (which may alias `taps` as far as the compiler knows) do
     * not force a reload of every weight per pixel; with constant nt and nu it lives in registers. */
    float wt[QTRAIN_MAX_DEPTHWISE_KERNEL * QTRAIN_MAX_DEPTHWISE_KERNEL];
    for (int32_t k = 0; k < nt * nu; k++) {
        wt[k] = taps[k];
    }
    for (int32_t r = 0; r < rows; r++, gp += plane_w, dst += dst_row_step) {
        const float *g = gp;
        float *out = dst;
#pragma clang loop unroll(disable)
        for (int32_t j = 0; j < count; j++, g++, out += dst_step) {
            float acc = 0.0f;
            const float *row = g;
            const float *w = wt;
            for (int32_t t = 0; t < nt; t++, row -= plane_w, w += nu) {
                for (int32_t u = 0; u < nu; u++) {
                    acc = __builtin_fmaf(row[-u], w[u], acc);
                }
            }
            *out = acc;
        }
    }
}

static __attribute__((noinline)) void class_block_any(const float *gp, int32_t plane_w, const float *taps, int32_t nt,
                                                      int32_t nu, float *dst, int32_t dst_step, int32_t dst_row_step,
                                                      int32_t count, int32_t rows) {
#define SQUARE(n)                                                                                          \
    case n:                                                                                                \
        if (nt == n) {                                                                                     \
            class_block(gp, plane_w, taps, n, n, dst, dst_step, dst_row_step, count, rows);                \
            return;                                                                                        \
        }                                                                                                  \
        break;
    switch (nu) {
        SQUARE(1)
        SQUARE(2)
        SQUARE(3)
        SQUARE(4)
        SQUARE(5)
        SQUARE(7)
    default:
        break;
    }
#undef SQUARE
    switch (nu) {
    case 1:
        class_block(gp, plane_w, taps, nt, 1, dst, dst_step, dst_row_step, count, rows);
        return;
    case 2:
        class_block(gp, plane_w, taps, nt, 2, dst, dst_step, dst_row_step, count, rows);
        return;
    case 3:
        class_block(gp, plane_w, taps, nt, 3, dst, dst_step, dst_row_step, count, rows);
        return;
    case 4:
        class_block(gp, plane_w, taps, nt, 4, dst, dst_step, dst_row_step, count, rows);
        return;
    case 5:
        class_block(gp, plane_w, taps, nt, 5, dst, dst_step, dst_row_step, count, rows);
        return;
    case 7:
        class_block(gp, plane_w, taps, nt, 7, dst, dst_step, dst_row_step, count, rows);
        return;
    default:
        class_block(gp, plane_w, taps, nt, nu, dst, dst_step, dst_row_step, count, rows);
        return;
    }
}

qtrain_status_t qtrain_depthwise_conv2d_input_grad_f32(const qtrain_context_t *ctx,
                                                       const qtrain_conv_params_t *params,
                                                       const qtrain_dims_t *grad_dims, const float *grad,
                                                       const qtrain_dims_t *filter_dims,
                                                       const qtrain_weight_t *weight,
                                                       const qtrain_dims_t *input_dims, float *input_grad) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, grad_dims) ||
        params->groups != input_dims->c || filter_dims->n != input_dims->c || filter_dims->c != 1 ||
        filter_dims->h > QTRAIN_MAX_DEPTHWISE_KERNEL || filter_dims->w > QTRAIN_MAX_DEPTHWISE_KERNEL ||
        !qtrain_weight_valid(weight, filter_dims->n) ||
        !qtrain_input_grad_placement_ok(QTRAIN_GRAD_IN_PLACE_DEPTHWISE, params, grad_dims, grad, input_dims,
                                        input_grad)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch =
        qtrain_depthwise_conv2d_input_grad_f32_get_buffer_size(params, grad_dims, filter_dims, input_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t channels = input_dims->c, kernel_h = filter_dims->h, kernel_w = filter_dims->w;
    const int32_t taps = kernel_h * kernel_w;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, out_h = grad_dims->h, out_w = grad_dims->w;
    const int32_t sh = params->stride_h, sw = params->stride_w, pt = params->pad_top, pl = params->pad_left;
    int32_t ylo, yhi, xlo, xhi;
    reach(in_h, kernel_h, sh, pt, &ylo, &yhi);
    reach(in_w, kernel_w, sw, pl, &xlo, &xhi);
    const int32_t plane_h = yhi - ylo + 1, plane_w = xhi - xlo + 1;
    /* The outputs the plane holds: those some tap of some input pixel reaches. Padding of KH or more
     * rows (legal) gives output rows no input pixel reaches; their gradient flows nowhere. */
    const int32_t oy_begin = ylo > 0 ? ylo : 0, oy_end = yhi + 1 < out_h ? yhi + 1 : out_h;
    const int32_t ox_begin = xlo > 0 ? xlo : 0, ox_end = xhi + 1 < out_w ? xhi + 1 : out_w;
    float *plane = (float *)ctx->buf;
    const int8_t *slice_s8 = qtrain_weight_slice_s8(weight, slice_elements(filter_dims, weight), plane + plane_h * plane_w);
    /* eight channels at a time when their planes and class weights fit after the slice */
    const int32_t slice_bytes = qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight));
    const int32_t eights = 32 * (plane_h * plane_w + taps) + 4 * plane_h * plane_w + slice_bytes <= ctx->size
                               ? channels & ~7
                               : 0;
    if (eights > 0) {
        /* after the one-channel plane and the slice: the eight-channel plane, then the class weights */
        float *plane8 = plane + plane_h * plane_w + slice_bytes / 4, *taps8 = plane8 + 8 * plane_h * plane_w;
        for (int32_t i = 0; i < 8 * plane_h * plane_w; i++) {
            plane8[i] = 0.0f; /* the border stays 0; the interior is rewritten per group */
        }
        for (int32_t c0 = 0; c0 < eights; c0 += 8) {
            const int8_t *w[8];
            for (int32_t i = 0; i < 8; i++) {
                const int32_t c = c0 + i;
                w[i] = slice_s8 != NULL && c >= weight->slice_start && c < weight->slice_stop
                           ? slice_s8 + (c - weight->slice_start) * taps
                           : weight->data + c * taps;
            }
            for (int32_t b = 0; b < input_dims->n; b++) {
                for (int32_t oy = oy_begin; oy < oy_end; oy++) {
                    float *row = plane8 + ((oy - ylo) * plane_w + (ox_begin - xlo)) * 8;
                    const float *g = grad + ((b * out_h + oy) * out_w + ox_begin) * channels + c0;
                    for (int32_t ox = ox_begin; ox < ox_end; ox++, g += channels, row += 8) {
                        for (int32_t i = 0; i < 8; i++) {
                            row[i] = g[i];
                        }
                    }
                }
                float *gx = input_grad + b * in_h * in_w * channels + c0;
                for (int32_t py = 0; py < sh && py < in_h; py++) {
                    const int32_t kh0 = (py + pt) % sh, nt = kh0 < kernel_h ? (kernel_h - kh0 + sh - 1) / sh : 0;
                    for (int32_t px = 0; px < sw && px < in_w; px++) {
                        const int32_t kw0 = (px + pl) % sw, nu = kw0 < kernel_w ? (kernel_w - kw0 + sw - 1) / sw : 0;
                        for (int32_t t = 0; t < nt; t++) {
                            for (int32_t u = 0; u < nu; u++) {
                                for (int32_t i = 0; i < 8; i++) {
                                    taps8[(t * nu + u) * 8 + i] = (float)w[i][(kh0 + t * sh) * kernel_w + kw0 + u * sw];
                                }
                            }
                        }
                        const int32_t count = (in_w - px + sw - 1) / sw, rows = (in_h - py + sh - 1) / sh;
                        const int32_t ox0 = (px + pl - kw0) / sw, oy0 = (py + pt - kh0) / sh;
                        const float *gp = nt > 0 && nu > 0 ? plane8 + ((oy0 - ylo) * plane_w + (ox0 - xlo)) * 8 : plane8;
                        class_block8(gp, plane_w, taps8, nt, nu, gx + (py * in_w + px) * channels, sw * channels,
                                     sh * in_w * channels, count, rows);
                    }
                }
            }
        }
    }
    for (int32_t i = 0; i < plane_h * plane_w; i++) {
        plane[i] = 0.0f; /* the border stays 0; the interior is rewritten per channel */
    }
    for (int32_t c = eights; c < channels; c++) {
        const int8_t *w = slice_s8 != NULL && c >= weight->slice_start && c < weight->slice_stop
                              ? slice_s8 + (c - weight->slice_start) * taps
                              : weight->data + c * taps;
        for (int32_t b = 0; b < input_dims->n; b++) {
            /* the interior: plane[(oy - ylo) * plane_w + (ox - xlo)] = g[oy, ox] */
            for (int32_t oy = oy_begin; oy < oy_end; oy++) {
                float *row = plane + (oy - ylo) * plane_w - xlo;
                const float *g = grad + ((b * out_h + oy) * out_w + ox_begin) * channels + c;
                for (int32_t ox = ox_begin; ox < ox_end; ox++, g += channels) {
                    row[ox] = *g;
                }
            }
            float *gx = input_grad + b * in_h * in_w * channels + c;
            for (int32_t py = 0; py < sh && py < in_h; py++) {
                const int32_t kh0 = (py + pt) % sh, nt = kh0 < kernel_h ? (kernel_h - kh0 + sh - 1) / sh : 0;
                for (int32_t px = 0; px < sw && px < in_w; px++) {
                    const int32_t kw0 = (px + pl) % sw, nu = kw0 < kernel_w ? (kernel_w - kw0 + sw - 1) / sw : 0;
                    float class_taps[QTRAIN_MAX_DEPTHWISE_KERNEL * QTRAIN_MAX_DEPTHWISE_KERNEL];
                    for (int32_t t = 0; t < nt; t++) {
                        for (int32_t u = 0; u < nu; u++) {
                            class_taps[t * nu + u] = (float)w[(kh0 + t * sh) * kernel_w + kw0 + u * sw];
                        }
                    }
                    const int32_t count = (in_w - px + sw - 1) / sw, rows = (in_h - py + sh - 1) / sh;
                    const int32_t ox0 = (px + pl - kw0) / sw, oy0 = (py + pt - kh0) / sh;
                    const float *gp = nt > 0 && nu > 0 ? plane + (oy0 - ylo) * plane_w + (ox0 - xlo) : plane;
                    class_block_any(gp, plane_w, class_taps, nt, nu, gx + (py * in_w + px) * channels, sw * channels,
                                    sh * in_w * channels, count, rows);
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
