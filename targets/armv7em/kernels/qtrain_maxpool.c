/*
 * qtrain_maxpool.c - qtrain.maxpool (int8, padded taps never read) and qtrain.maxpool_grad (each window's
 * gradient to its first maximal tap in row-major window order, recomputed from the saved input), as
 * dialects/qtrain/maxpool.py states them.
 */
#include "qtrain_kernels_support.h"

static int qtrain_maxpool_dims_ok(const qtrain_dims_t *in, const qtrain_dims_t *out, int32_t kh, int32_t kw,
                                  int32_t sh, int32_t sw, int32_t pt, int32_t pl) {
    return in->n >= 1 && in->h >= 1 && in->w >= 1 && in->c >= 1 && out->n == in->n && out->c == in->c &&
           out->h >= 1 && out->w >= 1 && kh >= 1 && kw >= 1 && sh >= 1 && sw >= 1 && pt >= 0 && pl >= 0 &&
           pt < kh && pl < kw && (out->h - 1) * sh - pt < in->h && (out->w - 1) * sw - pl < in->w;
}

qtrain_status_t qtrain_maxpool_s8(const qtrain_dims_t *input_dims, const int8_t *input, int32_t kernel_h,
                                  int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t pad_top,
                                  int32_t pad_left, const qtrain_dims_t *output_dims, int8_t *output) {
    if (!qtrain_maxpool_dims_ok(input_dims, output_dims, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                pad_left)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t h = input_dims->h, w = input_dims->w, channels = input_dims->c;
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t oy = 0; oy < output_dims->h; oy++) {
            const int32_t y0 = oy * stride_h - pad_top;
            for (int32_t ox = 0; ox < output_dims->w; ox++) {
                const int32_t x0 = ox * stride_w - pad_left;
                int8_t *dst = output + ((b * output_dims->h + oy) * output_dims->w + ox) * channels;
                for (int32_t c = 0; c < channels; c++) {
                    dst[c] = -128;
                }
                for (int32_t i = 0; i < kernel_h; i++) {
                    const int32_t y = y0 + i;
                    if (y < 0 || y >= h) {
                        continue;
                    }
                    for (int32_t j = 0; j < kernel_w; j++) {
                        const int32_t x = x0 + j;
                        if (x < 0 || x >= w) {
                            continue;
                        }
                        const int8_t *src = input + ((b * h + y) * w + x) * channels;
                        for (int32_t c = 0; c < channels; c++) {
                            dst[c] = src[c] > dst[c] ? src[c] : dst[c];
                        }
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_maxpool_grad_f32(const qtrain_dims_t *input_dims, const int8_t *input,
                                        const qtrain_dims_t *grad_dims, const float *grad, int32_t kernel_h,
                                        int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t pad_top,
                                        int32_t pad_left, float *input_grad) {
    if (!qtrain_maxpool_dims_ok(input_dims, grad_dims, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                pad_left)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t h = input_dims->h, w = input_dims->w, channels = input_dims->c;
    const int32_t count = input_dims->n * h * w * channels;
    for (int32_t i = 0; i < count; i++) {
        input_grad[i] = 0.0f;
    }
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t oy = 0; oy < grad_dims->h; oy++) {
            const int32_t y0 = oy * stride_h - pad_top;
            for (int32_t ox = 0; ox < grad_dims->w; ox++) {
                const int32_t x0 = ox * stride_w - pad_left;
                const float *g = grad + ((b * grad_dims->h + oy) * grad_dims->w + ox) * channels;
                for (int32_t c = 0; c < channels; c++) {
                    /* The first maximal tap in row-major window order (a strict > keeps the first). */
                    int32_t best = -1, best_value = -129;
                    for (int32_t i = 0; i < kernel_h; i++) {
                        const int32_t y = y0 + i;
                        if (y < 0 || y >= h) {
                            continue;
                        }
                        for (int32_t j = 0; j < kernel_w; j++) {
                            const int32_t x = x0 + j;
                            if (x < 0 || x >= w) {
                                continue;
                            }
                            const int32_t e = ((b * h + y) * w + x) * channels + c;
                            if (input[e] > best_value) {
                                best_value = input[e];
                                best = e;
                            }
                        }
                    }
                    input_grad[best] += g[c];
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
