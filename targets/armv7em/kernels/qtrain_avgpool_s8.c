/*
 * qtrain_avgpool_s8.c - average pool without padding (numerics.avgpool_with_mask): exact int32 window
 * sums of x - zx, then y = clamp(rint(fp32(acc) * M) + zy, -128, 127). A global pool (the classifier's
 * input) sums each channel over all pixels.
 */
#include "qtrain_kernels_support.h"

qtrain_status_t qtrain_avgpool_s8(const qtrain_dims_t *input_dims, const int8_t *input, int32_t kernel_h,
                                  int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t input_zero_point,
                                  float multiplier, int32_t output_zero_point, const qtrain_dims_t *output_dims,
                                  int8_t *output, uint8_t *mask) {
    const int32_t in_h = input_dims->h, in_w = input_dims->w, channels = input_dims->c;
    if (!qtrain_dims_fit(input_dims) || !qtrain_dims_fit(output_dims) || kernel_h < 1 || kernel_w < 1 || stride_h < 1 || stride_w < 1 || kernel_h > in_h || kernel_w > in_w ||
        output_dims->n != input_dims->n || output_dims->c != channels ||
        output_dims->h != (in_h - kernel_h) / stride_h + 1 || output_dims->w != (in_w - kernel_w) / stride_w + 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const qtrain_requant_t q = qtrain_requant_make(output_zero_point, -128, 127);
    if (mask != NULL) {
        qtrain_mask_clear(mask, output_dims->n * out_h * out_w * channels);
    }
    /* zx is subtracted once per window sum: sum(x - zx) = sum(x) - kh * kw * zx, exact in int32. */
    const int32_t window_offset = kernel_h * kernel_w * input_zero_point;
    for (int32_t b = 0; b < input_dims->n; b++) {
        for (int32_t oy = 0; oy < out_h; oy++) {
            for (int32_t ox = 0; ox < out_w; ox++) {
                const int8_t *window = input + ((b * in_h + oy * stride_h) * in_w + ox * stride_w) * channels;
                const uint32_t e0 = (uint32_t)(((b * out_h + oy) * out_w + ox) * channels);
                for (int32_t c = 0; c < channels; c++) {
                    int32_t acc = 0;
                    for (int32_t kh = 0; kh < kernel_h; kh++) {
                        const int8_t *row = window + kh * in_w * channels + c;
                        for (int32_t kw = 0; kw < kernel_w; kw++) {
                            acc += row[kw * channels];
                        }
                    }
                    qtrain_store_output(acc - window_offset, multiplier, &q, output, e0 + (uint32_t)c, mask);
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
