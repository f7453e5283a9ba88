/*
 * qtrain_conv2d_input_grad_f32.c - dL/dx of any convolution (kernel, stride, padding, groups): the
 * transposed convolution of g with the int8 weight, in gather form. For each input pixel and block
 * of four input channels of a group, the taps whose windows reach the pixel are visited row-major
 * and, for each, the group's output channels in ascending order: acc = fmaf(g, fp32(w), acc) from +0.
 * A weight with a trained slice is merged into one int8 weight in scratch first.
 * The _bf16, _bf16_f32 and _f32_bf16 entries (qtrain-narrow-gradients) run the same sums on a bf16
 * gradient and/or write a bf16 result (each sum rounded once, to nearest even).
 */
#include "qtrain_kernels_support.h"

int32_t qtrain_conv2d_input_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *grad_dims,
                                                     const qtrain_dims_t *filter_dims,
                                                     const qtrain_dims_t *input_dims, const qtrain_weight_t *weight) {
    (void)params;
    (void)grad_dims;
    (void)input_dims;
    if (weight == NULL || !qtrain_weight_has_slice(weight)) {
        return 0;
    }
    const int32_t rows = filter_dims->n * filter_dims->h * filter_dims->w;
    return qtrain_align4(rows * filter_dims->c) +
           qtrain_weight_slice_bytes(weight, rows * (weight->slice_stop - weight->slice_start));
}

/* First tap index k >= 0 (of `kernel`) with (position + pad - k) divisible by `stride` and the output
 * (position + pad - k) / stride in [0, out): returns the first such k and its output in *first_out;
 * the others follow every `stride` taps with one output less. */
static int32_t first_tap(int32_t position, int32_t pad, int32_t stride, int32_t out, int32_t *first_out) {
    int32_t shifted = position + pad; /* >= 0 */
    int32_t k = shifted % stride;
    int32_t o = shifted / stride;
    if (o >= out) { /* skip taps whose output lies beyond the last one */
        int32_t skip = o - (out - 1);
        k += skip * stride;
        o = out - 1;
    }
    *first_out = o;
    return k;
}

QTRAIN_INLINE void pixel_block(const void *grad, const qtrain_dims_t *grad_dims, const int8_t *w,
                               const qtrain_dims_t *filter_dims, const qtrain_conv_params_t *params, int32_t b,
                               int32_t iy, int32_t ix, int32_t group, int32_t ci, void *dst, int32_t dst_index,
                               const int32_t cb, const qtrain_grad_format_t in, const qtrain_grad_format_t out) {
    const int32_t kernel_h = filter_dims->h, kernel_w = filter_dims->w, cin_g = filter_dims->c;
    const int32_t cout = filter_dims->n, cout_g = cout / params->groups;
    const int32_t out_h = grad_dims->h, out_w = grad_dims->w;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int32_t oy0, ox0;
    const int32_t kh0 = first_tap(iy, params->pad_top, params->stride_h, out_h, &oy0);
    const int32_t kw0 = first_tap(ix, params->pad_left, params->stride_w, out_w, &ox0);
    for (int32_t kh = kh0, oy = oy0; kh < kernel_h && oy >= 0; kh += params->stride_h, oy--) {
        for (int32_t kw = kw0, ox = ox0; kw < kernel_w && ox >= 0; kw += params->stride_w, ox--) {
            const int32_t g = ((b * out_h + oy) * out_w + ox) * cout + group * cout_g;
            const int8_t *wt = w + ((group * cout_g * kernel_h + kh) * kernel_w + kw) * cin_g + ci;
            const int32_t w_stride = kernel_h * kernel_w * cin_g;
            for (int32_t co = 0; co < cout_g; co++, wt += w_stride) {
                const float gv = qtrain_grad_load(grad, g + co, in);
                for (int32_t i = 0; i < cb; i++) {
                    acc[i] = __builtin_fmaf(gv, (float)wt[i], acc[i]);
                }
            }
        }
    }
    for (int32_t i = 0; i < cb; i++) {
        qtrain_grad_store(dst, dst_index + i, acc[i], out);
    }
}

QTRAIN_INLINE qtrain_status_t input_grad_any(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                             const qtrain_dims_t *grad_dims, const void *grad,
                                         const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                         const qtrain_dims_t *input_dims, void *input_grad,
                                         const qtrain_grad_format_t in, const qtrain_grad_format_t out) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, grad_dims) ||
        !qtrain_weight_valid(weight, filter_dims->c) || !qtrain_weight_fits_groups(weight, params->groups, filter_dims->c)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch = qtrain_conv2d_input_grad_f32_get_buffer_size(params, grad_dims, filter_dims, input_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int8_t *w = weight->data;
    if (qtrain_weight_has_slice(weight)) {
        const int32_t rows = filter_dims->n * filter_dims->h * filter_dims->w;
        int8_t *merged = (int8_t *)ctx->buf;
        const int8_t *slice_s8 = qtrain_weight_slice_s8(weight, rows * (weight->slice_stop - weight->slice_start),
                                                        merged + qtrain_align4(rows * filter_dims->c));
        qtrain_weight_merge(weight, slice_s8, filter_dims, merged);
        w = merged;
    }
    const int32_t cin = input_dims->c, cin_g = filter_dims->c;
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t iy = 0; iy < input_dims->h; iy++) {
            for (int32_t ix = 0; ix < input_dims->w; ix++) {
                const int32_t dst = ((b * input_dims->h + iy) * input_dims->w + ix) * cin;
                for (int32_t group = 0; group < params->groups; group++) {
                    int32_t ci = 0;
                    for (; ci + 4 <= cin_g; ci += 4) {
                        pixel_block(grad, grad_dims, w, filter_dims, params, b, iy, ix, group, ci, input_grad,
                                    dst + group * cin_g + ci, 4, in, out);
                    }
                    for (; ci < cin_g; ci++) {
                        pixel_block(grad, grad_dims, w, filter_dims, params, b, iy, ix, group, ci, input_grad,
                                    dst + group * cin_g + ci, 1, in, out);
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_conv2d_input_grad_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                             const qtrain_dims_t *grad_dims, const float *grad,
                                             const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                             const qtrain_dims_t *input_dims, float *input_grad) {
    return input_grad_any(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad, QTRAIN_GRAD_F32,
                      QTRAIN_GRAD_F32);
}

qtrain_status_t qtrain_conv2d_input_grad_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                              const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                              const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                              const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    return input_grad_any(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad, QTRAIN_GRAD_BF16,
                      QTRAIN_GRAD_BF16);
}

qtrain_status_t qtrain_conv2d_input_grad_bf16_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                  const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                  const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                  const qtrain_dims_t *input_dims, float *input_grad) {
    return input_grad_any(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad, QTRAIN_GRAD_BF16,
                      QTRAIN_GRAD_F32);
}

qtrain_status_t qtrain_conv2d_input_grad_f32_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                  const qtrain_dims_t *grad_dims, const float *grad,
                                                  const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                  const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    return input_grad_any(ctx, params, grad_dims, grad, filter_dims, weight, input_dims, input_grad, QTRAIN_GRAD_F32,
                      QTRAIN_GRAD_BF16);
}
