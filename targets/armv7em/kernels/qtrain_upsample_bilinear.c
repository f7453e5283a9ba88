/*
 * qtrain_upsample_bilinear.c - qtrain.upsample (bilinear, align_corners = False, int8) and its gradient
 * qtrain.upsample_grad (fp32), exactly as dialects/qtrain/upsample.py states them. Both share the taps:
 * for output index o of O along an axis of I, src = max(0, fp32(fp32(fp32(I) / fp32(O)) * (o + 0.5f)) -
 * 0.5f), i0 = trunc(src), i1 = min(i0 + 1, I - 1), l1 = src - i0, l0 = 1 - l1, every step one float32
 * operation (the build uses -ffp-contract=off, so nothing is fused).
 */
#include "qtrain_kernels_support.h"

typedef struct {
    int32_t i0, i1;
    float l0, l1;
} qtrain_tap_t;

static qtrain_tap_t qtrain_bilinear_tap(int32_t o, int32_t size_in, int32_t size_out) {
    const float scale = (float)size_in / (float)size_out;
    float src = scale * ((float)o + 0.5f) - 0.5f;
    if (src < 0.0f) {
        src = 0.0f;
    }
    qtrain_tap_t t;
    t.i0 = (int32_t)src;
    t.i1 = t.i0 < size_in - 1 ? t.i0 + 1 : t.i0;
    t.l1 = src - (float)t.i0;
    t.l0 = 1.0f - t.l1;
    return t;
}

static int qtrain_upsample_dims_ok(const qtrain_dims_t *small, const qtrain_dims_t *large) {
    return qtrain_dims_fit(small) && qtrain_dims_fit(large) && large->n == small->n && large->c == small->c;
}

qtrain_status_t qtrain_upsample_bilinear_s8(const qtrain_dims_t *input_dims, const int8_t *input,
                                            int32_t input_zero_point, float multiplier, int32_t output_zero_point,
                                            const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask) {
    if (!qtrain_upsample_dims_ok(input_dims, output_dims)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t in_h = input_dims->h, in_w = input_dims->w, channels = input_dims->c;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const qtrain_requant_t q = qtrain_requant_make(output_zero_point, -128, 127);
    if (mask != NULL) {
        qtrain_mask_clear(mask, output_dims->n * out_h * out_w * channels);
    }
    const float zx = (float)input_zero_point;
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t oy = 0; oy < out_h; oy++) {
            const qtrain_tap_t ty = qtrain_bilinear_tap(oy, in_h, out_h);
            const int8_t *row0 = input + (b * in_h + ty.i0) * in_w * channels;
            const int8_t *row1 = input + (b * in_h + ty.i1) * in_w * channels;
            for (int32_t ox = 0; ox < out_w; ox++) {
                const qtrain_tap_t tx = qtrain_bilinear_tap(ox, in_w, out_w);
                const int32_t e0 = ((b * out_h + oy) * out_w + ox) * channels;
                for (int32_t c = 0; c < channels; c++) {
                    /* x - zx is exact in float32 (|x - zx| <= 255). */
                    const float a = (float)row0[tx.i0 * channels + c] - zx;
                    const float bb = (float)row0[tx.i1 * channels + c] - zx;
                    const float cc = (float)row1[tx.i0 * channels + c] - zx;
                    const float d = (float)row1[tx.i1 * channels + c] - zx;
                    const float top = tx.l0 * a + tx.l1 * bb;
                    const float bottom = tx.l0 * cc + tx.l1 * d;
                    const float t = (ty.l0 * top + ty.l1 * bottom) * multiplier;
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
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_upsample_bilinear_grad_f32(const qtrain_dims_t *grad_dims, const float *grad,
                                                  const qtrain_dims_t *input_dims, float *input_grad) {
    if (!qtrain_upsample_dims_ok(input_dims, grad_dims)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t in_h = input_dims->h, in_w = input_dims->w, channels = input_dims->c;
    const int32_t out_h = grad_dims->h, out_w = grad_dims->w;
    const int32_t count = input_dims->n * in_h * in_w * channels;
    for (int32_t i = 0; i < count; i++) {
        input_grad[i] = 0.0f;
    }
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t oy = 0; oy < out_h; oy++) {
            const qtrain_tap_t ty = qtrain_bilinear_tap(oy, in_h, out_h);
            for (int32_t ox = 0; ox < out_w; ox++) {
                const qtrain_tap_t tx = qtrain_bilinear_tap(ox, in_w, out_w);
                const float *g = grad + ((b * out_h + oy) * out_w + ox) * channels;
                /* The four taps in the order of the golden model: (y0, x0), (y0, x1), (y1, x0), (y1, x1). */
                const int32_t rows[4] = {ty.i0, ty.i0, ty.i1, ty.i1};
                const int32_t cols[4] = {tx.i0, tx.i1, tx.i0, tx.i1};
                const float weights[4] = {ty.l0 * tx.l0, ty.l0 * tx.l1, ty.l1 * tx.l0, ty.l1 * tx.l1};
                for (int32_t k = 0; k < 4; k++) {
                    float *dst = input_grad + ((b * in_h + rows[k]) * in_w + cols[k]) * channels;
                    for (int32_t c = 0; c < channels; c++) {
                        dst[c] = dst[c] + weights[k] * g[c];
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
