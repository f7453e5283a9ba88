/*
 * qtrain_mul.c - qtrain.mul (requantizing int8 multiply, onnxruntime's x86 QLinearMul order) and its operand
 * gradient qtrain.mul_grad, as dialects/qtrain/mul.py states them:
 *   p = (a - za) * (b - zb) (exact);  t = fp32(fp32(p) * k) + fp32(zy);  y = clamp(rint(t), -128, 127)
 * with k = fp32(fp32(s_a * s_b) / s_y). The rhs is either the lhs's shape or N x 1 x 1 x C (broadcast over
 * H and W: squeeze-and-excitation).
 */
#include "qtrain_kernels_support.h"

qtrain_status_t qtrain_mul_s8(const qtrain_dims_t *dims, const int8_t *lhs, int32_t lhs_zero_point, const int8_t *rhs,
                              int32_t rhs_broadcast, int32_t rhs_zero_point, float multiplier,
                              int32_t output_zero_point, int8_t *output, uint8_t *mask) {
    if (dims->n < 1 || dims->h < 1 || dims->w < 1 || dims->c < 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    /* zy is added in float before rounding (as onnxruntime does), so the requantization's own zero point is 0. */
    const qtrain_requant_t q = qtrain_requant_make(0, -128, 127);
    const float zy = (float)output_zero_point;
    const int32_t pixels = dims->h * dims->w, channels = dims->c;
    if (mask != NULL) {
        qtrain_mask_clear(mask, dims->n * pixels * channels);
    }
    for (int32_t b = 0; b < dims->n; b++) {
        for (int32_t p = 0; p < pixels; p++) {
            const int32_t e0 = (b * pixels + p) * channels;
            const int8_t *r = rhs + (rhs_broadcast ? b * channels : e0);
            for (int32_t c = 0; c < channels; c++) {
                const int32_t product = ((int32_t)lhs[e0 + c] - lhs_zero_point) * ((int32_t)r[c] - rhs_zero_point);
                const float t = (float)product * multiplier + zy;
                if (mask != NULL) {
                    uint32_t inside;
                    output[e0 + c] = (int8_t)qtrain_requant_scaled_mask(t, &q, &inside);
                    qtrain_mask_put(mask, (uint32_t)(e0 + c), inside);
                } else {
                    output[e0 + c] = (int8_t)qtrain_requant_scaled(t, &q);
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

void qtrain_mul_grad_f32(const qtrain_dims_t *grad_dims, const float *grad, const int8_t *other,
                         int32_t other_broadcast, int32_t other_zero_point, int32_t reduce, float *result) {
    const int32_t pixels = grad_dims->h * grad_dims->w, channels = grad_dims->c;
    if (reduce) {
        for (int32_t i = 0; i < grad_dims->n * channels; i++) {
            result[i] = 0.0f;
        }
    }
    for (int32_t b = 0; b < grad_dims->n; b++) {
        for (int32_t p = 0; p < pixels; p++) {
            const int32_t e0 = (b * pixels + p) * channels;
            const int8_t *o = other + (other_broadcast ? b * channels : e0);
            for (int32_t c = 0; c < channels; c++) {
                const float v = grad[e0 + c] * (float)((int32_t)o[c] - other_zero_point);
                if (reduce) {
                    result[b * channels + c] += v;
                } else {
                    result[e0 + c] = v;
                }
            }
        }
    }
}
