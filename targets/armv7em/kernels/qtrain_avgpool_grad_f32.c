/*
 * qtrain_avgpool_grad_f32.c - gradient of the pool's window sums (numerics.avgpool_grad): every input
 * pixel gets the sum of the gradients of the windows holding it (the 1 / (kh * kw) and the
 * requantization are in the preceding requant_grad). Windows are added row-major from +0; a global
 * pool is a broadcast.
 */
#include "qtrain_kernels_support.h"

qtrain_status_t qtrain_avgpool_grad_f32(const qtrain_dims_t *grad_dims, const float *grad, int32_t kernel_h,
                                        int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                        const qtrain_dims_t *input_dims, float *input_grad) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, channels = input_dims->c;
    if (!qtrain_dims_fit(input_dims) || !qtrain_dims_fit(grad_dims) || kernel_h < 1 || kernel_w < 1 || stride_h < 1 || stride_w < 1 || kernel_h > in_h || kernel_w > in_w ||
        grad_dims->n != input_dims->n || grad_dims->c != channels ||
        grad_dims->h != (in_h - kernel_h) / stride_h + 1 || grad_dims->w != (in_w - kernel_w) / stride_w + 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t out_h = grad_dims->h, out_w = grad_dims->w;
    const int32_t count = input_dims->n * in_h * in_w * channels;
    if (out_h == 1 && out_w == 1 && kernel_h == in_h && kernel_w == in_w) {
        for (int32_t b = 0; b < input_dims->n; b++) {
            const float *g = grad + b * channels;
            float *dst = input_grad + b * in_h * in_w * channels;
            for (int32_t p = 0; p < in_h * in_w; p++, dst += channels) {
                for (int32_t c = 0; c < channels; c++) {
                    dst[c] = g[c];
                }
            }
        }
        return QTRAIN_STATUS_OK;
    }
    for (int32_t i = 0; i < count; i++) {
        input_grad[i] = 0.0f;
    }
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t oy = 0; oy < out_h; oy++) {
            for (int32_t ox = 0; ox < out_w; ox++) {
                const float *g = grad + ((b * out_h + oy) * out_w + ox) * channels;
                for (int32_t kh = 0; kh < kernel_h; kh++) {
                    for (int32_t kw = 0; kw < kernel_w; kw++) {
                        float *dst = input_grad + ((b * in_h + oy * stride_h + kh) * in_w + ox * stride_w + kw) * channels;
                        for (int32_t c = 0; c < channels; c++) {
                            dst[c] = dst[c] + g[c];
                        }
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
