/*
 * qtrain_conv2d_1x1_input_grad_bf16.c - dL/dx of a 1x1 convolution (stride 1, no padding, groups 1)
 * with bf16 activation gradients (qtrain-narrow-gradients): gx[p, ci] = sum over co ascending of
 * g[p, co] * fp32(w[co, ci]), one fmaf accumulator from +0 per element (the order of every input
 * gradient kernel), rounded once when stored. Suffix _bf16: bf16 in and out; _bf16_f32, _f32_bf16:
 * the gradient's format, then the result's.
 *
 * Each pixel's gradient row is first widened into scratch (C_out floats), so the result may lie on
 * the gradient in the arena: pixel p's result only covers bytes of rows already read when it starts
 * at the same first byte and a result pixel is not larger than a gradient pixel ("head"), or ends at
 * the same last byte and is larger ("tail"). A trained slice is read in place (int8), or converted
 * once into scratch after the row (fp32 master).
 */
#include "qtrain_kernels_support.h"

int32_t qtrain_conv2d_1x1_input_grad_bf16_get_buffer_size(const qtrain_dims_t *filter_dims,
                                                          const qtrain_weight_t *weight) {
    const int32_t row = qtrain_align4(4 * filter_dims->n);
    if (weight == NULL || !qtrain_weight_has_slice(weight)) {
        return row;
    }
    return row + qtrain_weight_slice_bytes(weight, filter_dims->n * (weight->slice_stop - weight->slice_start));
}

QTRAIN_INLINE qtrain_status_t input_grad_1x1(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                             const qtrain_dims_t *grad_dims, const void *grad,
                                             const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                             const qtrain_dims_t *input_dims, void *input_grad,
                                             const qtrain_grad_format_t in, const qtrain_grad_format_t out) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, grad_dims) ||
        !qtrain_weight_valid(weight, filter_dims->c) || filter_dims->h != 1 || filter_dims->w != 1 ||
        params->groups != 1 || params->stride_h != 1 || params->stride_w != 1 || params->pad_top != 0 ||
        params->pad_left != 0 || grad_dims->h != input_dims->h || grad_dims->w != input_dims->w) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    if (!qtrain_ctx_fits(ctx, qtrain_conv2d_1x1_input_grad_bf16_get_buffer_size(filter_dims, weight))) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t cin = input_dims->c, cout = filter_dims->n;
    float *row = (float *)ctx->buf;
    const int8_t *slice_s8 = NULL;
    if (qtrain_weight_has_slice(weight)) {
        slice_s8 = qtrain_weight_slice_s8(weight, cout * (weight->slice_stop - weight->slice_start),
                                          (int8_t *)ctx->buf + qtrain_align4(4 * cout));
    }
    qtrain_weight_segment_t segments[3];
    const int32_t count = qtrain_weight_segments(weight, slice_s8, cin, segments);
    const int32_t pixels = input_dims->n * input_dims->h * input_dims->w;
    for (int32_t p = 0; p < pixels; p++) {
        for (int32_t co = 0; co < cout; co++) {
            row[co] = qtrain_grad_load(grad, p * cout + co, in);
        }
        for (int32_t s = 0; s < count; s++) {
            const qtrain_weight_segment_t *seg = &segments[s];
            for (int32_t ci = seg->begin; ci < seg->end; ci++) {
                const int8_t *w = seg->base + (ci - seg->begin);
                float acc = 0.0f;
                for (int32_t co = 0; co < cout; co++, w += seg->stride) {
                    acc = __builtin_fmaf(row[co], (float)*w, acc);
                }
                qtrain_grad_store(input_grad, p * cin + ci, acc, out);
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_conv2d_1x1_input_grad_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                  const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                  const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                  const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    return input_grad_1x1(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad,
                          QTRAIN_GRAD_BF16, QTRAIN_GRAD_BF16);
}

qtrain_status_t qtrain_conv2d_1x1_input_grad_bf16_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                      const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                      const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                      const qtrain_dims_t *input_dims, float *input_grad) {
    return input_grad_1x1(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad,
                          QTRAIN_GRAD_BF16, QTRAIN_GRAD_F32);
}

qtrain_status_t qtrain_conv2d_1x1_input_grad_f32_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                      const qtrain_dims_t *grad_dims, const float *grad,
                                                      const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                      const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    return input_grad_1x1(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad,
                          QTRAIN_GRAD_F32, QTRAIN_GRAD_BF16);
}
