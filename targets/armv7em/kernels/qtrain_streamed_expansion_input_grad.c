/*
 * qtrain_streamed_expansion_input_grad.c - the backward of an inverted-residual block's 1x1 expansion and
 * depthwise conv (qtrain.streamed_expansion_input_grad), one row of the expanded tensor at a time:
 *
 *   g_mid[n, y, x, c] = the depthwise input gradient of `grad` (gather form: taps row-major from +0,
 *                       acc = fmaf(g, fp32(w), acc), as qtrain_conv2d_input_grad_f32)
 *   g_acc             = mask bit ? fp32(g_mid * multiplier[c]) : +0.0          (qtrain_requant_grad_f32)
 *   bias_grad[c]     += g_acc, pixels in row order from +0                     (qtrain_bias_grad_f32)
 *   input_grad[n, y, x, ci] = sum over c ascending of fmaf(g_acc, fp32(pw[c, ci]), acc) from +0
 *
 * g_mid / g_acc of one row live in scratch as fp32 (W x C floats); the expanded tensor never exists
 * whole. The weights are frozen int8 (Flash). Suffixes as the other bf16 kernels: _f32, _bf16, _IN_OUT.
 * No in-place placement (a result row may cover gradient rows later rows still read).
 */
#include "qtrain_kernels.h"
#include "qtrain_kernels_support.h"

int32_t qtrain_streamed_expansion_input_grad_get_buffer_size(const qtrain_dims_t *mid_dims) {
    return qtrain_align4(4 * mid_dims->w * mid_dims->c);
}

/* As qtrain_conv2d_input_grad_f32.c: the first tap k whose output (position + pad - k) / stride is an
 * integer in [0, out), and that output; the others follow every `stride` taps, one output less. */
static int32_t first_tap(int32_t position, int32_t pad, int32_t stride, int32_t out, int32_t *first_out) {
    int32_t shifted = position + pad;
    int32_t k = shifted % stride;
    int32_t o = shifted / stride;
    if (o >= out) {
        k += (o - (out - 1)) * stride;
        o = out - 1;
    }
    *first_out = o;
    return k;
}

QTRAIN_INLINE qtrain_status_t streamed(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                       const qtrain_dims_t *grad_dims, const void *grad,
                                       const qtrain_dims_t *dw_dims, const int8_t *dw_weight,
                                       const qtrain_dims_t *mid_dims, const uint8_t *mask, const float *multiplier,
                                       int32_t num_multipliers, const qtrain_dims_t *pw_dims, const int8_t *pw_weight,
                                       const qtrain_dims_t *input_dims, void *input_grad, float *bias_grad,
                                       const qtrain_grad_format_t in, const qtrain_grad_format_t out) {
    const int32_t c_mid = mid_dims->c, cin = input_dims->c, kernel_h = dw_dims->h, kernel_w = dw_dims->w;
    if (params == NULL || grad_dims == NULL || dw_dims == NULL || mid_dims == NULL || pw_dims == NULL ||
        input_dims == NULL || dw_weight == NULL || pw_weight == NULL || multiplier == NULL ||
        params->groups != c_mid || dw_dims->n != c_mid || dw_dims->c != 1 || grad_dims->c != c_mid ||
        pw_dims->n != c_mid || pw_dims->h != 1 || pw_dims->w != 1 || pw_dims->c != cin ||
        input_dims->n != mid_dims->n || input_dims->h != mid_dims->h || input_dims->w != mid_dims->w ||
        (num_multipliers != 1 && num_multipliers != c_mid) ||
        !qtrain_conv_geometry_valid(params, mid_dims, dw_dims, grad_dims)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    if (!qtrain_ctx_fits(ctx, qtrain_streamed_expansion_input_grad_get_buffer_size(mid_dims))) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    float *row = (float *)ctx->buf;
    const int32_t out_h = grad_dims->h, out_w = grad_dims->w, width = mid_dims->w;
    if (bias_grad != NULL) {
        for (int32_t c = 0; c < c_mid; c++) {
            bias_grad[c] = 0.0f;
        }
    }
    for (int32_t b = 0; b < mid_dims->n; b++) {
        for (int32_t y = 0; y < mid_dims->h; y++) {
            int32_t oy0;
            const int32_t kh0 = first_tap(y, params->pad_top, params->stride_h, out_h, &oy0);
            for (int32_t x = 0; x < width; x++) {
                int32_t ox0;
                const int32_t kw0 = first_tap(x, params->pad_left, params->stride_w, out_w, &ox0);
                const uint32_t e0 = (uint32_t)(((b * mid_dims->h + y) * width + x) * c_mid);
                for (int32_t c = 0; c < c_mid; c++) {
                    float acc = 0.0f;
                    for (int32_t kh = kh0, oy = oy0; kh < kernel_h && oy >= 0; kh += params->stride_h, oy--) {
                        for (int32_t kw = kw0, ox = ox0; kw < kernel_w && ox >= 0; kw += params->stride_w, ox--) {
                            const float g = qtrain_grad_load(grad, ((b * out_h + oy) * out_w + ox) * c_mid + c, in);
                            acc = __builtin_fmaf(g, (float)dw_weight[(c * kernel_h + kh) * kernel_w + kw], acc);
                        }
                    }
                    const float v = acc * (num_multipliers > 1 ? multiplier[c] : multiplier[0]);
                    const uint32_t e = e0 + (uint32_t)c;
                    const int keep = mask == NULL || ((mask[e >> 3] >> (e & 7u)) & 1u);
                    row[x * c_mid + c] = keep ? v : 0.0f;
                }
            }
            if (bias_grad != NULL) {
                for (int32_t x = 0; x < width; x++) {
                    for (int32_t c = 0; c < c_mid; c++) {
                        bias_grad[c] = bias_grad[c] + row[x * c_mid + c];
                    }
                }
            }
            for (int32_t x = 0; x < width; x++) {
                const float *g = row + x * c_mid;
                const int32_t dst = ((b * mid_dims->h + y) * width + x) * cin;
                for (int32_t ci = 0; ci < cin; ci++) {
                    float acc = 0.0f;
                    for (int32_t c = 0; c < c_mid; c++) {
                        acc = __builtin_fmaf(g[c], (float)pw_weight[c * cin + ci], acc);
                    }
                    qtrain_grad_store(input_grad, dst + ci, acc, out);
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

#define QTRAIN_STREAMED(SUFFIX, IN_T, OUT_T, IN, OUT)                                                              \
    QTRAIN_STREAMED_EXPANSION_INPUT_GRAD(SUFFIX, IN_T, OUT_T) {                                                   \
        return streamed(ctx, params, grad_dims, grad, dw_dims, dw_weight, mid_dims, mask, multiplier,             \
                        num_multipliers, pw_dims, pw_weight, input_dims, input_grad, bias_grad, IN, OUT);         \
    }

QTRAIN_STREAMED(f32, float, float, QTRAIN_GRAD_F32, QTRAIN_GRAD_F32)
QTRAIN_STREAMED(bf16, uint16_t, uint16_t, QTRAIN_GRAD_BF16, QTRAIN_GRAD_BF16)
QTRAIN_STREAMED(bf16_f32, uint16_t, float, QTRAIN_GRAD_BF16, QTRAIN_GRAD_F32)
QTRAIN_STREAMED(f32_bf16, float, uint16_t, QTRAIN_GRAD_F32, QTRAIN_GRAD_BF16)
