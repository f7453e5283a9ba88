/*
 * qtrain_depthwise_conv2d_input_grad_bf16.c - dL/dx of a depthwise conv (multiplier 1) at stride 1 whose
 * gradient has the input's shape ("same" padding), bf16 in and out (qtrain-narrow-gradients), in gather
 * form: gx[n, y, x, c] = taps row-major from +0 of fmaf(g[n, y + pt - kh, x + pl - kw, c], fp32(w), acc),
 * rounded once (the order of every input-gradient kernel).
 *
 * In place (input_grad == grad), eight channels at a time: before row y of the result is written over
 * gradient row y, that row's channels are copied into a ring of KH rows in scratch; the result's row y reads gradient rows r <= y from the ring
 * (r >= y - (KH - 1 - pt) >= y - KH + 1 is still there) and rows r > y from the arena, which no result row
 * has reached yet. Out of place the same reads give the same values.
 */
#include "qtrain_kernels.h"
#include "qtrain_kernels_support.h"

/* Channels per pass: the ring holds KH rows of W x this many channels. */
#define BLOCK 8

int32_t qtrain_depthwise_conv2d_input_grad_bf16_get_buffer_size(const qtrain_dims_t *filter_dims,
                                                                const qtrain_dims_t *input_dims) {
    const int32_t block = input_dims->c < BLOCK ? input_dims->c : BLOCK;
    return qtrain_align4(2 * filter_dims->h * input_dims->w * block);
}

qtrain_status_t qtrain_depthwise_conv2d_input_grad_bf16(const qtrain_context_t *ctx,
                                                        const qtrain_conv_params_t *params,
                                                        const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                        const qtrain_dims_t *filter_dims, const int8_t *weight,
                                                        const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    const int32_t h = input_dims->h, w = input_dims->w, c = input_dims->c, kh_n = filter_dims->h,
                  kw_n = filter_dims->w;
    if (params == NULL || grad_dims == NULL || filter_dims == NULL || input_dims == NULL || weight == NULL ||
        params->stride_h != 1 || params->stride_w != 1 || params->groups != c || filter_dims->n != c ||
        filter_dims->c != 1 || grad_dims->n != input_dims->n || grad_dims->h != h || grad_dims->w != w ||
        grad_dims->c != c || params->pad_top < 0 || params->pad_top >= kh_n || params->pad_left < 0 ||
        params->pad_left >= kw_n || !qtrain_dims_fit(input_dims)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    if (!qtrain_ctx_fits(ctx, qtrain_depthwise_conv2d_input_grad_bf16_get_buffer_size(filter_dims, input_dims))) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    uint16_t *ring = (uint16_t *)ctx->buf;
    const int32_t row = w * c, block = c < BLOCK ? c : BLOCK, ring_row = w * block;
    for (int32_t b = 0; b < input_dims->n; b++) {
        const uint16_t *g_batch = grad + b * h * row;
        uint16_t *out_batch = input_grad + b * h * row;
        for (int32_t c0 = 0; c0 < c; c0 += block) { /* each pass reads and writes only its channels */
            const int32_t cb = c - c0 < block ? c - c0 : block;
            for (int32_t y = 0; y < h; y++) {
                uint16_t *saved = ring + (y % kh_n) * ring_row;
                for (int32_t x = 0; x < w; x++) {
                    for (int32_t j = 0; j < cb; j++) {
                        saved[x * block + j] = g_batch[y * row + x * c + c0 + j];
                    }
                }
                for (int32_t x = 0; x < w; x++) {
                    for (int32_t j = 0; j < cb; j++) {
                        const int32_t ch = c0 + j;
                        float acc = 0.0f;
                        for (int32_t kh = 0; kh < kh_n; kh++) {
                            const int32_t r = y + params->pad_top - kh;
                            if (r < 0 || r >= h) {
                                continue;
                            }
                            for (int32_t kw = 0; kw < kw_n; kw++) {
                                const int32_t col = x + params->pad_left - kw;
                                if (col < 0 || col >= w) {
                                    continue;
                                }
                                const uint16_t g = r <= y ? ring[(r % kh_n) * ring_row + col * block + j]
                                                          : g_batch[r * row + col * c + ch];
                                acc = __builtin_fmaf(qtrain_bf16_to_f32(g), (float)weight[(ch * kh_n + kh) * kw_n + kw],
                                                     acc);
                            }
                        }
                        out_batch[y * row + x * c + ch] = qtrain_f32_to_bf16(acc);
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
