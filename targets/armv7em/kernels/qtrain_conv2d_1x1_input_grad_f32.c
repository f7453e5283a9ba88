/*
 * qtrain_conv2d_1x1_input_grad_f32.c - dL/dx of a pointwise convolution (KH = KW = 1, groups = 1, no
 * padding, any stride): gx[p, ci] = sum_co g[p, co] * w[co, ci]; input pixels a stride skips get +0.
 *
 * Register blocking: four output pixels x four input channels (16 fp32 accumulators), so each int8
 * weight is converted once per four pixels and each gradient value loaded once per four channels.
 * Every accumulator runs co = 0, 1, ... with acc = fmaf(g, fp32(w), acc) from +0, whatever the block
 * (a last block with fewer pixels repeats its last pixel, writing the same values twice).
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

/* `cb` (1 or 4) input channels starting at column `w` of a segment, for the four pixels of `g` / `gx`. */
QTRAIN_INLINE void block(const float *const g[4], float *const gx[4], const int8_t *w, int32_t stride, int32_t cout,
                         const int32_t cb) {
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
            for (; ci + 4 <= seg.end; ci += 4) {
                float *const dst[4] = {gx[0] + ci, gx[1] + ci, gx[2] + ci, gx[3] + ci};
                block(g, dst, seg.base + (ci - seg.begin), seg.stride, cout, 4);
            }
            for (; ci < seg.end; ci++) {
                float *const dst[4] = {gx[0] + ci, gx[1] + ci, gx[2] + ci, gx[3] + ci};
                block(g, dst, seg.base + (ci - seg.begin), seg.stride, cout, 1);
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
