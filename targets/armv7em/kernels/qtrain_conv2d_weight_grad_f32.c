/*
 * qtrain_conv2d_weight_grad_f32.c - dL/dW of a convolution (numerics.conv2d_weight_grad), groups = 1
 * on a saved input-channel slice, or any groups over all channels; and the same fused with the SGD+QAS
 * update of the trainable weight (qtrain_conv2d_weight_grad_sgd_update, and with SGD momentum
 * qtrain_conv2d_weight_grad_sgd_momentum_update).
 *
 *   dw[o, kh, kw, c] = sum over (n, oy, ox) of g[n, oy, ox, o] * fp32(x[n, oy*sh + kh - pt, ox*sw + kw - pl, c] - zx)
 *
 * For each tap the outputs whose input pixel lies inside the image form a rectangle (padding
 * contributes 0, so the rest is skipped). Register blocking: eight output channels x two input
 * channels (16 fp32 accumulators) per pass over that rectangle, so each int8 input is converted once
 * per eight output channels and each gradient value loaded once per two input channels. Every
 * accumulator starts at +0 and runs the outputs row-major with acc = fmaf(g, x - zx, acc), whatever
 * the block. No scratch: the fused kernel applies each finished block to the parameter and drops it.
 * On the Cortex-M7 a full block's rectangle is one assembly loop: per output pixel one VLDM of the
 * eight gradients, the two inputs widened (LDRSB, SUB, VMOV, VCVT) and 16 VFMA; fused with plain SGD
 * into an fp32 master, the same loop then applies the block from its registers (VMUL, VSUB per element).
 */
#include "qtrain_kernels_support.h"

#if QTRAIN_DSP_ASM
typedef struct {
    const float *g;      /* 0: g[first output pixel, o] */
    const int8_t *x;     /* 4: x[its input pixel, c] */
    uint32_t rows;       /* 8 */
    uint32_t cols;       /* 12 */
    int32_t g_step;      /* 16: bytes between two outputs' gradients (C_out * 4) */
    int32_t x_step;      /* 20: bytes between their inputs (sw * C_in) */
    int32_t g_row_skip;  /* 24: from the end of a row of gradients to the next row */
    int32_t x_row_skip;  /* 28: the same for the inputs */
    int32_t zero_point;  /* 32 */
    float *acc;          /* 36: the 16 sums, [j * 2 + i], from +0 (or the update's steps, below) */
    float *param;        /* 40: update: the fp32 master's p[o, kh, kw, c] */
    int32_t param_row;   /* 44: update: bytes from p[o, ...] to p[o + 1, ...] */
} wg_job_t;
_Static_assert(offsetof(wg_job_t, acc) == 36 && offsetof(wg_job_t, param_row) == 44,
               "wg_job_t layout used by wg_block_asm");

static const float wg_zeros[16] = {0.0f};

__attribute__((naked, noinline)) static void wg_block_asm(const wg_job_t *job, const float *zeros) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "vpush   {s16-s25}\n\t"
        "vldmia  r1, {s0-s15}\n\t"
        "mov     lr, r0\n\t"
        "ldm     lr, {r0, r1, r3, r11}\n\t"          /* g, x, rows, cols */
        "ldr     r7, [lr, #16]\n\t"
        "ldr     r8, [lr, #20]\n\t"
        "ldr     r9, [lr, #24]\n\t"
        "ldr     r10, [lr, #28]\n\t"
        "ldr     r6, [lr, #32]\n\t"
        "mov     r2, r11\n\t"
        "1:\n\t"
        "vldmia  r0, {s16-s23}\n\t"
        "add     r0, r7\n\t"
        "ldrsb   r4, [r1]\n\t"
        "ldrsb   r5, [r1, #1]\n\t"
        "add     r1, r8\n\t"
        "sub     r4, r6\n\t"
        "sub     r5, r6\n\t"
        "vmov    s24, s25, r4, r5\n\t"
        "vcvt.f32.s32 s24, s24\n\t"
        "vcvt.f32.s32 s25, s25\n\t"
        "vfma.f32 s0, s16, s24\n\t"
        "vfma.f32 s1, s16, s25\n\t"
        "vfma.f32 s2, s17, s24\n\t"
        "vfma.f32 s3, s17, s25\n\t"
        "vfma.f32 s4, s18, s24\n\t"
        "vfma.f32 s5, s18, s25\n\t"
        "vfma.f32 s6, s19, s24\n\t"
        "vfma.f32 s7, s19, s25\n\t"
        "vfma.f32 s8, s20, s24\n\t"
        "vfma.f32 s9, s20, s25\n\t"
        "vfma.f32 s10, s21, s24\n\t"
        "vfma.f32 s11, s21, s25\n\t"
        "vfma.f32 s12, s22, s24\n\t"
        "vfma.f32 s13, s22, s25\n\t"
        "vfma.f32 s14, s23, s24\n\t"
        "vfma.f32 s15, s23, s25\n\t"
        "subs    r2, r2, #1\n\t"
        "bne     1b\n\t"
        "add     r0, r9\n\t"
        "add     r1, r10\n\t"
        "mov     r2, r11\n\t"
        "subs    r3, r3, #1\n\t"
        "bne     1b\n\t"
        "ldr     r0, [lr, #36]\n\t"
        "vstmia  r0, {s0-s15}\n\t"
        "vpop    {s16-s25}\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}

/* The same sums applied straight to an fp32 master (qtrain_conv2d_weight_grad_sgd_update): per output
 * channel j of the block, p = p - fp32(step[j] * sum) for its two input channels (numerics.sgd_update:
 * a multiply, then a subtract). job->acc holds the 8 steps. */
#define QTRAIN_WG_UPDATE_ROW(step, a, b)                                                                            \
    "vldmia  r0, {s24-s25}\n\t"                                                                                   \
    "vmul.f32 s26, " step ", " a "\n\t"                                                                           \
    "vmul.f32 s27, " step ", " b "\n\t"                                                                           \
    "vsub.f32 s24, s24, s26\n\t"                                                                                  \
    "vsub.f32 s25, s25, s27\n\t"                                                                                  \
    "vstmia  r0, {s24-s25}\n\t"                                                                                   \
    "add     r0, r1\n\t"
__attribute__((naked, noinline)) static void wg_block_update_asm(const wg_job_t *job, const float *zeros) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "vpush   {s16-s27}\n\t"
        "vldmia  r1, {s0-s15}\n\t"
        "mov     lr, r0\n\t"
        "ldm     lr, {r0, r1, r3, r11}\n\t"
        "ldr     r7, [lr, #16]\n\t"
        "ldr     r8, [lr, #20]\n\t"
        "ldr     r9, [lr, #24]\n\t"
        "ldr     r10, [lr, #28]\n\t"
        "ldr     r6, [lr, #32]\n\t"
        "mov     r2, r11\n\t"
        "1:\n\t"
        "vldmia  r0, {s16-s23}\n\t"
        "add     r0, r7\n\t"
        "ldrsb   r4, [r1]\n\t"
        "ldrsb   r5, [r1, #1]\n\t"
        "add     r1, r8\n\t"
        "sub     r4, r6\n\t"
        "sub     r5, r6\n\t"
        "vmov    s24, s25, r4, r5\n\t"
        "vcvt.f32.s32 s24, s24\n\t"
        "vcvt.f32.s32 s25, s25\n\t"
        "vfma.f32 s0, s16, s24\n\t"
        "vfma.f32 s1, s16, s25\n\t"
        "vfma.f32 s2, s17, s24\n\t"
        "vfma.f32 s3, s17, s25\n\t"
        "vfma.f32 s4, s18, s24\n\t"
        "vfma.f32 s5, s18, s25\n\t"
        "vfma.f32 s6, s19, s24\n\t"
        "vfma.f32 s7, s19, s25\n\t"
        "vfma.f32 s8, s20, s24\n\t"
        "vfma.f32 s9, s20, s25\n\t"
        "vfma.f32 s10, s21, s24\n\t"
        "vfma.f32 s11, s21, s25\n\t"
        "vfma.f32 s12, s22, s24\n\t"
        "vfma.f32 s13, s22, s25\n\t"
        "vfma.f32 s14, s23, s24\n\t"
        "vfma.f32 s15, s23, s25\n\t"
        "subs    r2, r2, #1\n\t"
        "bne     1b\n\t"
        "add     r0, r9\n\t"
        "add     r1, r10\n\t"
        "mov     r2, r11\n\t"
        "subs    r3, r3, #1\n\t"
        "bne     1b\n\t"
        "ldr     r0, [lr, #36]\n\t"
        "vldmia  r0, {s16-s23}\n\t"                 /* the steps */
        "ldr     r0, [lr, #40]\n\t"
        "ldr     r1, [lr, #44]\n\t"
        QTRAIN_WG_UPDATE_ROW("s16", "s0", "s1")
        QTRAIN_WG_UPDATE_ROW("s17", "s2", "s3")
        QTRAIN_WG_UPDATE_ROW("s18", "s4", "s5")
        QTRAIN_WG_UPDATE_ROW("s19", "s6", "s7")
        QTRAIN_WG_UPDATE_ROW("s20", "s8", "s9")
        QTRAIN_WG_UPDATE_ROW("s21", "s10", "s11")
        QTRAIN_WG_UPDATE_ROW("s22", "s12", "s13")
        QTRAIN_WG_UPDATE_ROW("s23", "s14", "s15")
        "vpop    {s16-s27}\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
#undef QTRAIN_WG_UPDATE_ROW
#endif

#define OB 8 /* output channels per block */
#define CB 2 /* input channels per block */

typedef struct {
    float *weight_grad;       /* non-fused: where dw goes */
    qtrain_storage_t storage; /* fused: the trainable copy's element type ... */
    void *param;              /* ... and data */
    float lr;
    const float *grad_scale;
    int32_t num_grad_scales;
    float *velocity; /* fused with momentum: the velocity (filter_dims elements), else NULL */
    float momentum;
    int32_t plain_sgd; /* 1: p = p - step * dw and nothing else, so a block may go from FPU registers to p */
    int32_t stochastic; /* fused, S8 / S16: rounded stochastically with noise_key */
    uint32_t noise_key;
    int32_t count;      /* fused, S16: elements of the value plane (the fraction plane follows it) */
} sink_t;

/* [begin, end) of the outputs along one axis whose tap `k` reads inside [0, size). */
static void valid_range(int32_t size, int32_t k, int32_t stride, int32_t pad, int32_t out, int32_t *begin,
                        int32_t *end) {
    int32_t lo = pad - k > 0 ? (pad - k + stride - 1) / stride : 0;
    int32_t last = size - 1 + pad - k; /* the largest oy * stride allowed */
    int32_t hi = last >= 0 ? last / stride + 1 : 0;
    *begin = lo;
    *end = hi < out ? hi : out;
}

typedef struct {
    const int8_t *input;
    const qtrain_dims_t *input_dims;
    const float *grad;
    const qtrain_dims_t *grad_dims;
    const qtrain_conv_params_t *params;
    int32_t oy0, oy1, ox0, ox1; /* the tap's valid output rectangle */
    int32_t kh, kw;
} tap_t;

/* acc[j][i] = dw[o + j, kh, kw, c + i] for j < ob, i < cb; input channel c + i is x channel xc + i. */
QTRAIN_INLINE void accumulate(const tap_t *t, int32_t o, int32_t xc, const int32_t ob, const int32_t cb,
                              float acc[OB][CB]) {
    const int32_t cin = t->input_dims->c, cout = t->grad_dims->c;
    const int32_t in_h = t->input_dims->h, in_w = t->input_dims->w;
    const int32_t out_h = t->grad_dims->h, out_w = t->grad_dims->w;
    const int32_t sh = t->params->stride_h, sw = t->params->stride_w, zx = t->params->input_zero_point;
#if QTRAIN_DSP_ASM
    if (ob == OB && cb == CB && t->grad_dims->n == 1 && t->oy1 > t->oy0 && t->ox1 > t->ox0) {
        const int32_t cols = t->ox1 - t->ox0;
        const int32_t iy = t->oy0 * sh + t->kh - t->params->pad_top, ix = t->ox0 * sw + t->kw - t->params->pad_left;
        const wg_job_t job = {t->grad + (t->oy0 * out_w + t->ox0) * cout + o,
                              t->input + (iy * in_w + ix) * cin + xc,
                              (uint32_t)(t->oy1 - t->oy0),
                              (uint32_t)cols,
                              4 * cout,
                              sw * cin,
                              4 * (out_w - cols) * cout,
                              (sh * in_w - cols * sw) * cin,
                              zx,
                              &acc[0][0],
                              NULL,
                              0};
        wg_block_asm(&job, wg_zeros);
        return;
    }
#endif
    for (int32_t j = 0; j < ob; j++) {
        for (int32_t i = 0; i < cb; i++) {
            acc[j][i] = 0.0f;
        }
    }
    const int32_t x_step = sw * cin;
    for (int32_t b = 0; b < t->grad_dims->n; b++) {
        for (int32_t oy = t->oy0; oy < t->oy1; oy++) {
            const int32_t iy = oy * sh + t->kh - t->params->pad_top;
            const int32_t ix = t->ox0 * sw + t->kw - t->params->pad_left;
            const float *g = t->grad + ((b * out_h + oy) * out_w + t->ox0) * cout + o;
            const int8_t *x = t->input + ((b * in_h + iy) * in_w + ix) * cin + xc;
            for (int32_t ox = t->ox0; ox < t->ox1; ox++, g += cout, x += x_step) {
                float xf[CB];
                for (int32_t i = 0; i < cb; i++) {
                    xf[i] = (float)(x[i] - zx);
                }
                for (int32_t j = 0; j < ob; j++) {
                    const float gv = g[j];
                    for (int32_t i = 0; i < cb; i++) {
                        acc[j][i] = __builtin_fmaf(gv, xf[i], acc[j][i]);
                    }
                }
            }
        }
    }
}

/* Store or apply a finished block: rows o .. o + ob - 1, columns c .. c + cb - 1 of tap (kh, kw). */
QTRAIN_INLINE void drain(const sink_t *sink, const qtrain_dims_t *filter_dims, const tap_t *t, int32_t o, int32_t c,
                         const int32_t ob, const int32_t cb, float acc[OB][CB]) {
    const int32_t k = filter_dims->c;
    if (sink->velocity != NULL) { /* momentum: v = fp32(fp32(momentum * v) + dw), applied instead of dw */
        for (int32_t j = 0; j < ob; j++) {
            float *v = sink->velocity + (((o + j) * filter_dims->h + t->kh) * filter_dims->w + t->kw) * k + c;
            for (int32_t i = 0; i < cb; i++) {
                v[i] = sink->momentum * v[i] + acc[j][i];
                acc[j][i] = v[i];
            }
        }
    }
    for (int32_t j = 0; j < ob; j++) {
        const int32_t index = (((o + j) * filter_dims->h + t->kh) * filter_dims->w + t->kw) * k + c;
        if (sink->weight_grad != NULL) {
            for (int32_t i = 0; i < cb; i++) {
                sink->weight_grad[index + i] = acc[j][i];
            }
            continue;
        }
        const float step = qtrain_sgd_step(sink->lr, sink->grad_scale, sink->num_grad_scales, o + j);
        if (sink->stochastic) {
            int8_t *p = (int8_t *)sink->param + index;
            for (int32_t i = 0; i < cb; i++) {
                const float u = qtrain_noise_u(sink->noise_key, (uint32_t)(index + i));
                if (sink->storage == QTRAIN_STORAGE_S16) {
                    qtrain_sgd_s16_stochastic(&p[i], &p[i + sink->count], step * acc[j][i], u);
                } else {
                    p[i] = qtrain_sgd_s8_stochastic(p[i], step * acc[j][i], u);
                }
            }
        } else if (sink->storage == QTRAIN_STORAGE_S8) {
            int8_t *p = (int8_t *)sink->param + index;
            for (int32_t i = 0; i < cb; i++) {
                p[i] = qtrain_sgd_s8(p[i], step * acc[j][i]);
            }
        } else {
            float *p = (float *)sink->param + index;
            for (int32_t i = 0; i < cb; i++) {
                p[i] = p[i] - step * acc[j][i];
            }
        }
    }
}

QTRAIN_INLINE void run_block(const sink_t *sink, const qtrain_dims_t *filter_dims, const tap_t *t, int32_t o,
                             int32_t c, int32_t xc, const int32_t ob, const int32_t cb) {
#if QTRAIN_DSP_ASM
    /* a full block fused into an fp32 master: the sums never leave the FPU registers */
    if (ob == OB && cb == CB && sink->plain_sgd && sink->storage == QTRAIN_STORAGE_F32 &&
        t->grad_dims->n == 1 && t->oy1 > t->oy0 && t->ox1 > t->ox0) {
        const int32_t cin = t->input_dims->c, cout = t->grad_dims->c, in_w = t->input_dims->w;
        const int32_t out_w = t->grad_dims->w, sh = t->params->stride_h, sw = t->params->stride_w;
        const int32_t cols = t->ox1 - t->ox0, k = filter_dims->c;
        const int32_t iy = t->oy0 * sh + t->kh - t->params->pad_top, ix = t->ox0 * sw + t->kw - t->params->pad_left;
        float steps[OB];
        for (int32_t j = 0; j < OB; j++) {
            steps[j] = qtrain_sgd_step(sink->lr, sink->grad_scale, sink->num_grad_scales, o + j);
        }
        const wg_job_t job = {t->grad + (t->oy0 * out_w + t->ox0) * cout + o,
                              t->input + (iy * in_w + ix) * cin + xc,
                              (uint32_t)(t->oy1 - t->oy0),
                              (uint32_t)cols,
                              4 * cout,
                              sw * cin,
                              4 * (out_w - cols) * cout,
                              (sh * in_w - cols * sw) * cin,
                              t->params->input_zero_point,
                              steps,
                              (float *)sink->param + ((o * filter_dims->h + t->kh) * filter_dims->w + t->kw) * k + c,
                              4 * filter_dims->h * filter_dims->w * k};
        wg_block_update_asm(&job, wg_zeros);
        return;
    }
#endif
    float acc[OB][CB];
    accumulate(t, o, xc, ob, cb, acc);
    drain(sink, filter_dims, t, o, c, ob, cb, acc);
}

static qtrain_status_t weight_grad_into(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                   const int8_t *input, const qtrain_dims_t *grad_dims, const float *grad,
                                   const qtrain_dims_t *filter_dims, const sink_t *sink) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, grad_dims)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t groups = params->groups, cin_g = filter_dims->c, cout_g = filter_dims->n / groups;
    for (int32_t g = 0; g < groups; g++) {
        for (int32_t kh = 0; kh < filter_dims->h; kh++) {
            for (int32_t kw = 0; kw < filter_dims->w; kw++) {
                tap_t t = {input, input_dims, grad, grad_dims, params, 0, 0, 0, 0, kh, kw};
                valid_range(input_dims->h, kh, params->stride_h, params->pad_top, grad_dims->h, &t.oy0, &t.oy1);
                valid_range(input_dims->w, kw, params->stride_w, params->pad_left, grad_dims->w, &t.ox0, &t.ox1);
                const int32_t o_end = (g + 1) * cout_g;
                int32_t o = g * cout_g;
                for (; o + OB <= o_end; o += OB) {
                    int32_t c = 0;
                    for (; c + CB <= cin_g; c += CB) {
                        run_block(sink, filter_dims, &t, o, c, g * cin_g + c, OB, CB);
                    }
                    for (; c < cin_g; c++) {
                        run_block(sink, filter_dims, &t, o, c, g * cin_g + c, OB, 1);
                    }
                }
                for (; o < o_end; o++) {
                    int32_t c = 0;
                    for (; c + CB <= cin_g; c += CB) {
                        run_block(sink, filter_dims, &t, o, c, g * cin_g + c, 1, CB);
                    }
                    for (; c < cin_g; c++) {
                        run_block(sink, filter_dims, &t, o, c, g * cin_g + c, 1, 1);
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_conv2d_weight_grad_f32(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                              const int8_t *input, const qtrain_dims_t *grad_dims, const float *grad,
                                              const qtrain_dims_t *filter_dims, float *weight_grad) {
    if (weight_grad == NULL) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const sink_t sink = {weight_grad, QTRAIN_STORAGE_F32, NULL, 0.0f, NULL, 0, NULL, 0.0f, 0, 0, 0u, 0};
    return weight_grad_into(params, input_dims, input, grad_dims, grad, filter_dims, &sink);
}

qtrain_status_t qtrain_conv2d_weight_grad_sgd_update(const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *input_dims, const int8_t *input,
                                                     const qtrain_dims_t *grad_dims, const float *grad,
                                                     const qtrain_dims_t *filter_dims, float lr,
                                                     const float *grad_scale, int32_t num_grad_scales,
                                                     qtrain_storage_t storage, void *param) {
    if (param == NULL || grad_scale == NULL || params == NULL || params->groups != 1 ||
        (storage != QTRAIN_STORAGE_S8 && storage != QTRAIN_STORAGE_F32) || num_grad_scales < 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const sink_t sink = {NULL, storage, param, lr, grad_scale, num_grad_scales, NULL, 0.0f, 1, 0, 0u, 0};
    return weight_grad_into(params, input_dims, input, grad_dims, grad, filter_dims, &sink);
}

qtrain_status_t qtrain_conv2d_weight_grad_sgd_update_stochastic(const qtrain_conv_params_t *params,
                                                                const qtrain_dims_t *input_dims, const int8_t *input,
                                                                const qtrain_dims_t *grad_dims, const float *grad,
                                                                const qtrain_dims_t *filter_dims, float lr,
                                                                const float *grad_scale, int32_t num_grad_scales,
                                                                qtrain_storage_t storage, void *param,
                                                                uint32_t noise_key) {
    if (param == NULL || grad_scale == NULL || params == NULL || filter_dims == NULL || params->groups != 1 ||
        (storage != QTRAIN_STORAGE_S8 && storage != QTRAIN_STORAGE_S16) || num_grad_scales < 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t count = filter_dims->n * filter_dims->h * filter_dims->w * filter_dims->c;
    const sink_t sink = {NULL, storage, param, lr, grad_scale, num_grad_scales, NULL, 0.0f, 0, 1, noise_key, count};
    return weight_grad_into(params, input_dims, input, grad_dims, grad, filter_dims, &sink);
}

qtrain_status_t qtrain_conv2d_weight_grad_sgd_momentum_update(const qtrain_conv_params_t *params,
                                                              const qtrain_dims_t *input_dims, const int8_t *input,
                                                              const qtrain_dims_t *grad_dims, const float *grad,
                                                              const qtrain_dims_t *filter_dims, float lr,
                                                              const float *grad_scale, int32_t num_grad_scales,
                                                              qtrain_storage_t storage, void *param, float *velocity,
                                                              float momentum) {
    if (param == NULL || velocity == NULL || grad_scale == NULL || params == NULL || params->groups != 1 ||
        (storage != QTRAIN_STORAGE_S8 && storage != QTRAIN_STORAGE_F32) || num_grad_scales < 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const sink_t sink = {NULL, storage, param, lr, grad_scale, num_grad_scales, velocity, momentum, 0, 0, 0u, 0};
    return weight_grad_into(params, input_dims, input, grad_dims, grad, filter_dims, &sink);
}
