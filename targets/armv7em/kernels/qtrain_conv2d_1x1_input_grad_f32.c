/*
 * qtrain_conv2d_1x1_input_grad_f32.c - dL/dx of a pointwise convolution (KH = KW = 1, groups = 1, no
 * padding, any stride): gx[p, ci] = sum_co g[p, co] * w[co, ci]; input pixels a stride skips get +0.
 *
 * Register blocking: four output pixels x four input channels (16 fp32 accumulators), so each weight
 * is used for four pixels and each gradient value loaded once per four channels. Every accumulator runs
 * co = 0, 1, ... with acc = fmaf(g, fp32(w), acc) from +0, whatever the block or the loop order (a last
 * block with fewer pixels repeats its last pixel, writing the same values twice).
 *
 * Out of place the four-channel blocks go outermost: each block's C_out x 4 weights are converted to
 * fp32 once into scratch (where the in-place path keeps its gradient rows), then every pixel block
 * reads them (on the Cortex-M7 an assembly loop over output channel pairs: 6 VLDM + 32 VFMA per 32
 * MACs). In place the pixel blocks go outermost (below) and each block converts its int8 weights as
 * it goes.
 *
 * In place (stride 1: input_grad == grad when C_in <= C_out, or the two ending at the same byte when
 * C_in >= C_out). Pixels go in ascending order in both buffers, and pixel p's input-gradient row ends
 * no later than its gradient row in either placement, so the rows a block writes cover only gradient
 * rows of its own or earlier pixels. A block therefore copies its four gradient rows into scratch
 * (after the master slice's int8 conversion) before writing anything, and reads them from there: the
 * same values in the same order, the same bits as out of place. With disjoint buffers the kernel
 * reads grad directly (the scratch for the rows is still required, so the size depends on the shapes
 * only).
 */
#include "qtrain_kernels_support.h"

static int32_t slice_elements(const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight) {
    return qtrain_weight_has_slice(weight) ? filter_dims->n * (weight->slice_stop - weight->slice_start) : 0;
}

int32_t qtrain_conv2d_1x1_input_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                         const qtrain_dims_t *grad_dims,
                                                         const qtrain_dims_t *filter_dims,
                                                         const qtrain_dims_t *input_dims,
                                                         const qtrain_weight_t *weight) {
    (void)params;
    (void)grad_dims;
    (void)input_dims;
    /* the master slice as int8, then one block's four gradient rows (in place) */
    return qtrain_size_saturate((int64_t)qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight)) +
                                16 * (int64_t)filter_dims->n);
}

#if QTRAIN_DSP_ASM
/* The out-of-place block on the Cortex-M7: 16 accumulators (s0-s15), the gradients of two output
 * channels for the four pixels (s16-s23) and the fp32 weights of two output channels (s24-s31), then
 * the 16 results stored row by row. Same operations and order as block_f32 below. */
typedef struct {
    const float *g[4];  /* 0: the four gradient rows */
    const float *w;     /* 16: C_out x 4 fp32 weights */
    uint32_t pairs;     /* 20: C_out / 2 */
    float *gx[4];       /* 24: the four result rows (at the block's first channel) */
} ig_job_t;
_Static_assert(offsetof(ig_job_t, w) == 16 && offsetof(ig_job_t, pairs) == 20 && offsetof(ig_job_t, gx) == 24,
               "ig_job_t layout used by block_f32_asm");

static const float zeros16[16] = {0.0f};

__attribute__((naked, noinline)) static void block_f32_asm(const ig_job_t *job, const float *zeros) {
    __asm__ volatile(
        "push    {r4, r5, r6, lr}\n\t"
        "vpush   {s16-s31}\n\t"
        "mov     r12, r0\n\t"
        "vldmia  r1, {s0-s15}\n\t"                 /* +0 */
        "ldm     r12, {r0, r1, r2, r3, r4, r5}\n\t" /* g0..g3, w, pairs */
        "1:\n\t"
        "vldmia  r4!, {s24-s31}\n\t"
        "vldmia  r0!, {s16-s17}\n\t"
        "vldmia  r1!, {s18-s19}\n\t"
        "vldmia  r2!, {s20-s21}\n\t"
        "vldmia  r3!, {s22-s23}\n\t"
        "vfma.f32 s0, s16, s24\n\t"
        "vfma.f32 s1, s16, s25\n\t"
        "vfma.f32 s2, s16, s26\n\t"
        "vfma.f32 s3, s16, s27\n\t"
        "vfma.f32 s4, s18, s24\n\t"
        "vfma.f32 s5, s18, s25\n\t"
        "vfma.f32 s6, s18, s26\n\t"
        "vfma.f32 s7, s18, s27\n\t"
        "vfma.f32 s8, s20, s24\n\t"
        "vfma.f32 s9, s20, s25\n\t"
        "vfma.f32 s10, s20, s26\n\t"
        "vfma.f32 s11, s20, s27\n\t"
        "vfma.f32 s12, s22, s24\n\t"
        "vfma.f32 s13, s22, s25\n\t"
        "vfma.f32 s14, s22, s26\n\t"
        "vfma.f32 s15, s22, s27\n\t"
        "vfma.f32 s0, s17, s28\n\t"
        "vfma.f32 s1, s17, s29\n\t"
        "vfma.f32 s2, s17, s30\n\t"
        "vfma.f32 s3, s17, s31\n\t"
        "vfma.f32 s4, s19, s28\n\t"
        "vfma.f32 s5, s19, s29\n\t"
        "vfma.f32 s6, s19, s30\n\t"
        "vfma.f32 s7, s19, s31\n\t"
        "vfma.f32 s8, s21, s28\n\t"
        "vfma.f32 s9, s21, s29\n\t"
        "vfma.f32 s10, s21, s30\n\t"
        "vfma.f32 s11, s21, s31\n\t"
        "vfma.f32 s12, s23, s28\n\t"
        "vfma.f32 s13, s23, s29\n\t"
        "vfma.f32 s14, s23, s30\n\t"
        "vfma.f32 s15, s23, s31\n\t"
        "subs    r5, r5, #1\n\t"
        "bne     1b\n\t"
        "add     r12, r12, #24\n\t"
        "ldm     r12, {r0, r1, r2, r3}\n\t"        /* gx0..gx3 */
        "vstmia  r0, {s0-s3}\n\t"
        "vstmia  r1, {s4-s7}\n\t"
        "vstmia  r2, {s8-s11}\n\t"
        "vstmia  r3, {s12-s15}\n\t"
        "vpop    {s16-s31}\n\t"
        "pop     {r4, r5, r6, pc}\n\t");
}

/* The in-place block on the Cortex-M7: as block_f32_asm, but the weights of two output channels come as
 * two int8 words (w and w + stride), each converted with four SBFX, two VMOV and four VCVT. */
typedef struct {
    const float *g[4];  /* 0 */
    const int8_t *w;    /* 16: weight row of the first output channel, at the block's first input channel */
    uint32_t pairs;     /* 20 */
    float *gx[4];       /* 24 */
    int32_t stride;     /* 40: bytes between weight rows */
} ig_s8_job_t;
_Static_assert(offsetof(ig_s8_job_t, gx) == 24 && offsetof(ig_s8_job_t, stride) == 40,
               "ig_s8_job_t layout used by block_s8_asm");

__attribute__((naked, noinline)) static void block_s8_asm(const ig_s8_job_t *job, const float *zeros) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, r8, r9, r10, r11, lr}\n\t"
        "vpush   {s16-s31}\n\t"
        "mov     lr, r0\n\t"
        "vldmia  r1, {s0-s15}\n\t"                 /* +0 */
        "ldm     lr, {r0, r1, r2, r3, r4, r5}\n\t" /* g0..g3, w, pairs */
        "ldr     r12, [lr, #40]\n\t"               /* stride */
        "1:\n\t"
        "ldr     r6, [r4]\n\t"
        "ldr     r7, [r4, r12]\n\t"
        "add     r4, r4, r12, lsl #1\n\t"
        "sbfx    r8, r6, #0, #8\n\t"
        "sbfx    r9, r6, #8, #8\n\t"
        "sbfx    r10, r6, #16, #8\n\t"
        "asr     r11, r6, #24\n\t"
        "vmov    s24, s25, r8, r9\n\t"
        "vmov    s26, s27, r10, r11\n\t"
        "sbfx    r8, r7, #0, #8\n\t"
        "sbfx    r9, r7, #8, #8\n\t"
        "sbfx    r10, r7, #16, #8\n\t"
        "asr     r11, r7, #24\n\t"
        "vmov    s28, s29, r8, r9\n\t"
        "vmov    s30, s31, r10, r11\n\t"
        "vcvt.f32.s32 s24, s24\n\t"
        "vcvt.f32.s32 s25, s25\n\t"
        "vcvt.f32.s32 s26, s26\n\t"
        "vcvt.f32.s32 s27, s27\n\t"
        "vcvt.f32.s32 s28, s28\n\t"
        "vcvt.f32.s32 s29, s29\n\t"
        "vcvt.f32.s32 s30, s30\n\t"
        "vcvt.f32.s32 s31, s31\n\t"
        "vldmia  r0!, {s16-s17}\n\t"
        "vldmia  r1!, {s18-s19}\n\t"
        "vldmia  r2!, {s20-s21}\n\t"
        "vldmia  r3!, {s22-s23}\n\t"
        "vfma.f32 s0, s16, s24\n\t"
        "vfma.f32 s1, s16, s25\n\t"
        "vfma.f32 s2, s16, s26\n\t"
        "vfma.f32 s3, s16, s27\n\t"
        "vfma.f32 s4, s18, s24\n\t"
        "vfma.f32 s5, s18, s25\n\t"
        "vfma.f32 s6, s18, s26\n\t"
        "vfma.f32 s7, s18, s27\n\t"
        "vfma.f32 s8, s20, s24\n\t"
        "vfma.f32 s9, s20, s25\n\t"
        "vfma.f32 s10, s20, s26\n\t"
        "vfma.f32 s11, s20, s27\n\t"
        "vfma.f32 s12, s22, s24\n\t"
        "vfma.f32 s13, s22, s25\n\t"
        "vfma.f32 s14, s22, s26\n\t"
        "vfma.f32 s15, s22, s27\n\t"
        "vfma.f32 s0, s17, s28\n\t"
        "vfma.f32 s1, s17, s29\n\t"
        "vfma.f32 s2, s17, s30\n\t"
        "vfma.f32 s3, s17, s31\n\t"
        "vfma.f32 s4, s19, s28\n\t"
        "vfma.f32 s5, s19, s29\n\t"
        "vfma.f32 s6, s19, s30\n\t"
        "vfma.f32 s7, s19, s31\n\t"
        "vfma.f32 s8, s21, s28\n\t"
        "vfma.f32 s9, s21, s29\n\t"
        "vfma.f32 s10, s21, s30\n\t"
        "vfma.f32 s11, s21, s31\n\t"
        "vfma.f32 s12, s23, s28\n\t"
        "vfma.f32 s13, s23, s29\n\t"
        "vfma.f32 s14, s23, s30\n\t"
        "vfma.f32 s15, s23, s31\n\t"
        "subs    r5, r5, #1\n\t"
        "bne     1b\n\t"
        "add     lr, lr, #24\n\t"
        "ldm     lr, {r0, r1, r2, r3}\n\t"
        "vstmia  r0, {s0-s3}\n\t"
        "vstmia  r1, {s4-s7}\n\t"
        "vstmia  r2, {s8-s11}\n\t"
        "vstmia  r3, {s12-s15}\n\t"
        "vpop    {s16-s31}\n\t"
        "pop     {r4, r5, r6, r7, r8, r9, r10, r11, pc}\n\t");
}
#endif

#if QTRAIN_DSP_ASM
/* In place with room for eight transposed gradient rows: 16 accumulators (8 pixels x 2 input channels),
 * per output channel one VLDM of the 8 pixels' gradients and the two int8 weights widened. */
typedef struct {
    const float *gt;    /* 0: the block's gradients, gt[co * 8 + j] */
    const int8_t *w;    /* 4: weight row 0 at the pair's first input channel */
    int32_t stride;     /* 8: bytes between weight rows */
    uint32_t cout;      /* 12 */
    float *gx[8];       /* 16: the 8 result rows at the pair's first channel */
} ig82_job_t;
_Static_assert(offsetof(ig82_job_t, gx) == 16, "ig82_job_t layout used by block82_asm");

__attribute__((naked, noinline)) static void block82_asm(const ig82_job_t *job, const float *zeros) {
    __asm__ volatile(
        "push    {r4, r5, r6, r7, lr}\n\t"
        "vpush   {s16-s25}\n\t"
        "vldmia  r1, {s0-s15}\n\t"                 /* +0 */
        "mov     lr, r0\n\t"
        "ldm     lr, {r0, r1, r2, r3}\n\t"         /* gt, w, stride, cout */
        "1:\n\t"
        "vldmia  r0!, {s16-s23}\n\t"
        "ldrsb   r4, [r1]\n\t"
        "ldrsb   r5, [r1, #1]\n\t"
        "add     r1, r2\n\t"
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
        "subs    r3, r3, #1\n\t"
        "bne     1b\n\t"
        "add     lr, lr, #16\n\t"
        "ldm     lr!, {r0, r1, r2, r3}\n\t"
        "vstmia  r0, {s0-s1}\n\t"
        "vstmia  r1, {s2-s3}\n\t"
        "vstmia  r2, {s4-s5}\n\t"
        "vstmia  r3, {s6-s7}\n\t"
        "ldm     lr, {r0, r1, r2, r3}\n\t"
        "vstmia  r0, {s8-s9}\n\t"
        "vstmia  r1, {s10-s11}\n\t"
        "vstmia  r2, {s12-s13}\n\t"
        "vstmia  r3, {s14-s15}\n\t"
        "vpop    {s16-s25}\n\t"
        "pop     {r4, r5, r6, r7, pc}\n\t");
}
#endif

/* In place, eight pixels' transposed gradients gt[co * 8 + j]: cb (1 or 2) input channels at column w of a
 * segment. */
QTRAIN_INLINE void block82(const float *gt, float *const gx[8], const int8_t *w, int32_t stride, int32_t cout,
                           const int32_t cb) {
#if QTRAIN_DSP_ASM
    if (cb == 2) {
        const ig82_job_t job = {gt, w, stride, (uint32_t)cout,
                                {gx[0], gx[1], gx[2], gx[3], gx[4], gx[5], gx[6], gx[7]}};
        block82_asm(&job, zeros16);
        return;
    }
#endif
    float acc[8][2] = {{0.0f}};
#pragma clang loop unroll(disable)
    for (int32_t co = 0; co < cout; co++, w += stride, gt += 8) {
        for (int32_t j = 0; j < 8; j++) {
            for (int32_t i = 0; i < cb; i++) {
                acc[j][i] = __builtin_fmaf(gt[j], (float)w[i], acc[j][i]);
            }
        }
    }
    for (int32_t j = 0; j < 8; j++) {
        for (int32_t i = 0; i < cb; i++) {
            gx[j][i] = acc[j][i];
        }
    }
}

/* The out-of-place block: four input channels whose fp32 weights are wf[co * 4 + i], for the four pixels
 * of `g` / `gx`. */
QTRAIN_INLINE void block_f32(const float *const g[4], float *const gx[4], const float *wf, int32_t cout) {
#if QTRAIN_DSP_ASM
    if ((cout & 1) == 0) {
        const ig_job_t job = {{g[0], g[1], g[2], g[3]}, wf, (uint32_t)cout / 2, {gx[0], gx[1], gx[2], gx[3]}};
        block_f32_asm(&job, zeros16);
        return;
    }
#endif
    float acc[4][4] = {{0.0f}};
    const float *g0 = g[0], *g1 = g[1], *g2 = g[2], *g3 = g[3];
#pragma clang loop unroll(disable)
    for (int32_t co = 0; co < cout; co++, wf += 4) {
        const float gv[4] = {*g0++, *g1++, *g2++, *g3++};
        for (int32_t j = 0; j < 4; j++) {
            for (int32_t i = 0; i < 4; i++) {
                acc[j][i] = __builtin_fmaf(gv[j], wf[i], acc[j][i]);
            }
        }
    }
    for (int32_t j = 0; j < 4; j++) {
        for (int32_t i = 0; i < 4; i++) {
            gx[j][i] = acc[j][i];
        }
    }
}

/* `cb` (1 or 4) input channels starting at column `w` of a segment, for the four pixels of `g` / `gx`. */
QTRAIN_INLINE void block(const float *const g[4], float *const gx[4], const int8_t *w, int32_t stride, int32_t cout,
                         const int32_t cb) {
#if QTRAIN_DSP_ASM
    if (cb == 4 && (cout & 1) == 0) {
        const ig_s8_job_t job = {{g[0], g[1], g[2], g[3]}, w, (uint32_t)cout / 2, {gx[0], gx[1], gx[2], gx[3]}, stride};
        block_s8_asm(&job, zeros16);
        return;
    }
#endif
    float acc[4][4] = {{0.0f}};
    const float *g0 = g[0], *g1 = g[1], *g2 = g[2], *g3 = g[3];
#pragma clang loop unroll(disable)
    for (int32_t co = 0; co < cout; co++, w += stride) {
        float wf[4];
        for (int32_t i = 0; i < cb; i++) {
            wf[i] = (float)w[i];
        }
        const float gv[4] = {*g0++, *g1++, *g2++, *g3++};
        for (int32_t j = 0; j < 4; j++) {
            for (int32_t i = 0; i < cb; i++) {
                acc[j][i] = __builtin_fmaf(gv[j], wf[i], acc[j][i]);
            }
        }
    }
    for (int32_t j = 0; j < 4; j++) {
        for (int32_t i = 0; i < cb; i++) {
            gx[j][i] = acc[j][i];
        }
    }
}

qtrain_status_t qtrain_conv2d_1x1_input_grad_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                 const qtrain_dims_t *grad_dims, const float *grad,
                                                 const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                 const qtrain_dims_t *input_dims, float *input_grad) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, grad_dims) || filter_dims->h != 1 ||
        filter_dims->w != 1 || params->groups != 1 || params->pad_top != 0 || params->pad_left != 0 ||
        grad_dims->h != (input_dims->h - 1) / params->stride_h + 1 ||
        grad_dims->w != (input_dims->w - 1) / params->stride_w + 1 || !qtrain_weight_valid(weight, input_dims->c) ||
        !qtrain_input_grad_placement_ok(QTRAIN_GRAD_IN_PLACE_1X1, params, grad_dims, grad, input_dims, input_grad)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch =
        qtrain_conv2d_1x1_input_grad_f32_get_buffer_size(params, grad_dims, filter_dims, input_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t cin = input_dims->c, cout = filter_dims->n;
    const int32_t out_h = grad_dims->h, out_w = grad_dims->w;
    const int32_t pixels = grad_dims->n * out_h * out_w;
    const int8_t *slice_s8 =
        qtrain_weight_slice_s8(weight, slice_elements(filter_dims, weight), ctx->buf);
    /* in place: each block's gradient rows are read from a copy here (see the top of the file) */
    float *const rows =
        qtrain_overlap((const int8_t *)(const void *)grad, qtrain_dims_bytes_f32(grad_dims),
                       (const int8_t *)(const void *)input_grad, qtrain_dims_bytes_f32(input_dims)) !=
                QTRAIN_OVERLAP_NONE
            ? (float *)ctx->buf + qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight)) / 4
            : NULL;
    qtrain_weight_segment_t segments[3];
    const int32_t count = qtrain_weight_segments(weight, slice_s8, cin, segments);
    if (params->stride_h != 1 || params->stride_w != 1) {
        const int32_t total = input_dims->n * input_dims->h * input_dims->w * cin;
        for (int32_t i = 0; i < total; i++) {
            input_grad[i] = 0.0f;
        }
    }

    if (rows == NULL) {
        /* out of place: four-channel blocks outermost, their weights converted once (see the top) */
        float *const wf = (float *)ctx->buf + qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight)) / 4;
        for (int32_t s = 0; s < count; s++) {
            const qtrain_weight_segment_t seg = segments[s];
            int32_t ci = seg.begin;
            for (; ci + 4 <= seg.end; ci += 4) {
                const int8_t *w = seg.base + (ci - seg.begin);
                for (int32_t co = 0; co < cout; co++, w += seg.stride) {
                    wf[4 * co] = (float)w[0];
                    wf[4 * co + 1] = (float)w[1];
                    wf[4 * co + 2] = (float)w[2];
                    wf[4 * co + 3] = (float)w[3];
                }
                for (int32_t p = 0; p < pixels; p += 4) {
                    const float *g[4];
                    float *gx[4];
                    for (int32_t j = 0; j < 4; j++) {
                        const int32_t pj = p + j < pixels ? p + j : pixels - 1;
                        const int32_t x = pj % out_w, rest = pj / out_w, y = rest % out_h, b = rest / out_h;
                        g[j] = grad + pj * cout;
                        gx[j] = input_grad + ((b * input_dims->h + y * params->stride_h) * input_dims->w +
                                              x * params->stride_w) * cin + ci;
                    }
                    block_f32(g, gx, wf, cout);
                }
            }
        }
    }
    const int32_t slice_bytes = qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight));
    if (rows != NULL && ctx->size - slice_bytes >= 32 * cout) {
        /* in place with room for eight gradient rows: blocks of eight pixels, their rows copied transposed
         * before any of their results is written (the argument at the top holds for any block size) */
        float *const gt = (float *)ctx->buf + slice_bytes / 4;
        for (int32_t p = 0; p < pixels; p += 8) {
            float *gx[8];
            for (int32_t j = 0; j < 8; j++) {
                const int32_t pj = p + j < pixels ? p + j : pixels - 1;
                const int32_t x = pj % out_w, rest = pj / out_w, y = rest % out_h, b = rest / out_h;
                const float *g = grad + pj * cout;
                for (int32_t co = 0; co < cout; co++) {
                    gt[co * 8 + j] = g[co];
                }
                gx[j] = input_grad +
                        ((b * input_dims->h + y * params->stride_h) * input_dims->w + x * params->stride_w) * cin;
            }
            for (int32_t s = 0; s < count; s++) {
                const qtrain_weight_segment_t seg = segments[s];
                int32_t ci = seg.begin;
                for (; ci + 2 <= seg.end; ci += 2) {
                    float *const dst[8] = {gx[0] + ci, gx[1] + ci, gx[2] + ci, gx[3] + ci,
                                           gx[4] + ci, gx[5] + ci, gx[6] + ci, gx[7] + ci};
                    block82(gt, dst, seg.base + (ci - seg.begin), seg.stride, cout, 2);
                }
                for (; ci < seg.end; ci++) {
                    float *const dst[8] = {gx[0] + ci, gx[1] + ci, gx[2] + ci, gx[3] + ci,
                                           gx[4] + ci, gx[5] + ci, gx[6] + ci, gx[7] + ci};
                    block82(gt, dst, seg.base + (ci - seg.begin), seg.stride, cout, 1);
                }
            }
        }
        return QTRAIN_STATUS_OK;
    }
    for (int32_t p = 0; p < pixels; p += 4) {
        const float *g[4];
        float *gx[4];
        for (int32_t j = 0; j < 4; j++) {
            const int32_t pj = p + j < pixels ? p + j : pixels - 1;
            const int32_t x = pj % out_w, rest = pj / out_w, y = rest % out_h, b = rest / out_h;
            g[j] = grad + pj * cout;
            gx[j] = input_grad +
                    ((b * input_dims->h + y * params->stride_h) * input_dims->w + x * params->stride_w) * cin;
        }
        if (rows != NULL) {
            for (int32_t j = 0; j < 4; j++) {
                float *const copy = rows + j * cout;
                for (int32_t co = 0; co < cout; co++) {
                    copy[co] = g[j][co];
                }
                g[j] = copy;
            }
        }
        for (int32_t s = 0; s < count; s++) {
            const qtrain_weight_segment_t seg = segments[s];
            int32_t ci = seg.begin;
            for (; rows != NULL && ci + 4 <= seg.end; ci += 4) {
                float *const dst[4] = {gx[0] + ci, gx[1] + ci, gx[2] + ci, gx[3] + ci};
                block(g, dst, seg.base + (ci - seg.begin), seg.stride, cout, 4);
            }
            if (rows == NULL) {
                ci = seg.begin + ((seg.end - seg.begin) & ~3); /* the four-channel blocks are done */
            }
            for (; ci < seg.end; ci++) {
                float *const dst[4] = {gx[0] + ci, gx[1] + ci, gx[2] + ci, gx[3] + ci};
                block(g, dst, seg.base + (ci - seg.begin), seg.stride, cout, 1);
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
