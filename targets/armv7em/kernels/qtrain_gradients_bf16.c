/*
 * qtrain_gradients_bf16.c - the element-wise and pooling gradient kernels for activation gradients
 * held as bf16 (qtrain-narrow-gradients), and the conversions between the two formats. Each computes
 * exactly what its fp32 kernel computes, in the same fp32 operations and order (portable C: the DSP
 * paths of the fp32 kernels read fp32 only), widening bf16 inputs on read and rounding results to
 * bf16 (nearest even) on write. Suffixes: _bf16 reads and writes bf16; _IN_OUT reads IN, writes OUT.
 */
#include "qtrain_kernels_support.h"
#include "qtrain_runtime.h"

#define F32 QTRAIN_GRAD_F32
#define BF16 QTRAIN_GRAD_BF16

void qtrain_grad_convert_f32_bf16(const float *input, int32_t count, uint16_t *output) {
    for (int32_t i = 0; i < count; i++) {
        output[i] = qtrain_f32_to_bf16(input[i]);
    }
}

void qtrain_grad_convert_bf16_f32(const uint16_t *input, int32_t count, float *output) {
    for (int32_t i = 0; i < count; i++) {
        output[i] = qtrain_bf16_to_f32(input[i]);
    }
}

/* qtrain_requant_grad_f32's arithmetic: out[e] = mask bit e ? fp32(g[e] * m[c]) : +0.0. In place
 * (output == grad) when both formats are the same. */
QTRAIN_INLINE void requant_grad(const void *grad, const uint8_t *mask, int32_t count, int32_t channels,
                                const float *multiplier, int32_t num_multipliers, void *output,
                                const qtrain_grad_format_t in, const qtrain_grad_format_t out) {
    const int per_channel = num_multipliers > 1;
    int32_t c = 0;
    for (int32_t e = 0; e < count; e++) {
        const float v = qtrain_grad_load(grad, e, in) * (per_channel ? multiplier[c] : multiplier[0]);
        const int keep = mask == NULL || ((mask[(uint32_t)e >> 3] >> ((uint32_t)e & 7u)) & 1u);
        qtrain_grad_store(output, e, keep ? v : 0.0f, out);
        c = c + 1 == channels ? 0 : c + 1;
    }
}

void qtrain_requant_grad_bf16(const uint16_t *grad, const uint8_t *mask, int32_t count, int32_t channels,
                              const float *multiplier, int32_t num_multipliers, uint16_t *output) {
    requant_grad(grad, mask, count, channels, multiplier, num_multipliers, output, BF16, BF16);
}

void qtrain_requant_grad_bf16_f32(const uint16_t *grad, const uint8_t *mask, int32_t count, int32_t channels,
                                  const float *multiplier, int32_t num_multipliers, float *output) {
    requant_grad(grad, mask, count, channels, multiplier, num_multipliers, output, BF16, F32);
}

void qtrain_requant_grad_f32_bf16(const float *grad, const uint8_t *mask, int32_t count, int32_t channels,
                                  const float *multiplier, int32_t num_multipliers, uint16_t *output) {
    requant_grad(grad, mask, count, channels, multiplier, num_multipliers, output, F32, BF16);
}

/* qtrain_bias_grad_f32's sums (rows in order, fp32 adds from +0) of a bf16 gradient. */
void qtrain_bias_grad_bf16(const uint16_t *grad, int32_t pixels, int32_t channels, float *output) {
    for (int32_t c = 0; c < channels; c++) {
        output[c] = 0.0f;
    }
    for (int32_t p = 0; p < pixels; p++) {
        const uint16_t *row = grad + p * channels;
        for (int32_t c = 0; c < channels; c++) {
            output[c] = output[c] + qtrain_bf16_to_f32(row[c]);
        }
    }
}

void qtrain_grad_accumulate_bf16(const uint16_t *lhs, const uint16_t *rhs, int32_t count, uint16_t *output) {
    for (int32_t i = 0; i < count; i++) {
        output[i] = qtrain_f32_to_bf16(qtrain_bf16_to_f32(lhs[i]) + qtrain_bf16_to_f32(rhs[i]));
    }
}

/* qtrain_avgpool_grad_f32 in gather form (each input element sums the windows holding it, row-major,
 * from +0: the order the scatter form adds them in; a global pool copies), so each result is rounded
 * once. */
QTRAIN_INLINE qtrain_status_t avgpool_grad(const qtrain_dims_t *grad_dims, const void *grad, int32_t kernel_h,
                                           int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                           const qtrain_dims_t *input_dims, void *input_grad,
                                           const qtrain_grad_format_t in, const qtrain_grad_format_t out) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, channels = input_dims->c;
    if (!qtrain_dims_fit(input_dims) || !qtrain_dims_fit(grad_dims) || kernel_h < 1 || kernel_w < 1 ||
        stride_h < 1 || stride_w < 1 || kernel_h > in_h || kernel_w > in_w || grad_dims->n != input_dims->n ||
        grad_dims->c != channels || grad_dims->h != (in_h - kernel_h) / stride_h + 1 ||
        grad_dims->w != (in_w - kernel_w) / stride_w + 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t out_h = grad_dims->h, out_w = grad_dims->w;
    const int global = out_h == 1 && out_w == 1 && kernel_h == in_h && kernel_w == in_w; /* a broadcast: copies */
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t y = 0; y < in_h; y++) {
            for (int32_t x = 0; x < in_w; x++) {
                const int32_t dst = ((b * in_h + y) * in_w + x) * channels;
                for (int32_t c = 0; c < channels; c++) {
                    float acc = 0.0f;
                    for (int32_t oy = 0; oy < out_h; oy++) {
                        if (y < oy * stride_h || y >= oy * stride_h + kernel_h) {
                            continue;
                        }
                        for (int32_t ox = 0; ox < out_w; ox++) {
                            if (x < ox * stride_w || x >= ox * stride_w + kernel_w) {
                                continue;
                            }
                            const float g = qtrain_grad_load(grad, ((b * out_h + oy) * out_w + ox) * channels + c, in);
                            acc = global ? g : acc + g;
                        }
                    }
                    qtrain_grad_store(input_grad, dst + c, acc, out);
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_avgpool_grad_bf16(const qtrain_dims_t *grad_dims, const uint16_t *grad, int32_t kernel_h,
                                         int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                         const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    return avgpool_grad(grad_dims, grad, kernel_h, kernel_w, stride_h, stride_w, input_dims, input_grad, BF16, BF16);
}

qtrain_status_t qtrain_avgpool_grad_bf16_f32(const qtrain_dims_t *grad_dims, const uint16_t *grad, int32_t kernel_h,
                                             int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                             const qtrain_dims_t *input_dims, float *input_grad) {
    return avgpool_grad(grad_dims, grad, kernel_h, kernel_w, stride_h, stride_w, input_dims, input_grad, BF16, F32);
}

qtrain_status_t qtrain_avgpool_grad_f32_bf16(const qtrain_dims_t *grad_dims, const float *grad, int32_t kernel_h,
                                             int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                             const qtrain_dims_t *input_dims, uint16_t *input_grad) {
    return avgpool_grad(grad_dims, grad, kernel_h, kernel_w, stride_h, stride_w, input_dims, input_grad, F32, BF16);
}

/* qtrain_cross_entropy_grad_f32's values, rounded: e[i] is recomputed (qtrain_expf is a function of
 * its argument), so no fp32 buffer is needed. */
void qtrain_cross_entropy_grad_bf16(const float *logits, int32_t num_classes, int32_t label, uint16_t *grad) {
    float mx = logits[0];
    for (int32_t i = 1; i < num_classes; i++) {
        mx = logits[i] > mx ? logits[i] : mx;
    }
    float s = 0.0f;
    for (int32_t i = 0; i < num_classes; i++) {
        const float e = qtrain_expf(logits[i] - mx);
        s = i == 0 ? e : s + e;
    }
    for (int32_t i = 0; i < num_classes; i++) {
        const float g = qtrain_expf(logits[i] - mx) / s;
        grad[i] = qtrain_f32_to_bf16(i == label ? g - 1.0f : g);
    }
}
