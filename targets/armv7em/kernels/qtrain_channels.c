/*
 * qtrain_channels.c - channel moves without arithmetic (dialects/qtrain/channels.py): a concat input copied
 * into its channel range of the output (qtrain.concat), a channel gather (qtrain.gather_channels: a slice,
 * split or shuffle) and its gradient, a scatter (qtrain.scatter_channels). `pixels` rows of channels each.
 */
#include "qtrain_kernels_support.h"

void qtrain_copy_channels_s8(const int8_t *input, int32_t pixels, int32_t channels, int8_t *output,
                             int32_t output_channels, int32_t offset) {
    for (int32_t p = 0; p < pixels; p++) {
        const int8_t *src = input + p * channels;
        int8_t *dst = output + p * output_channels + offset;
        for (int32_t c = 0; c < channels; c++) {
            dst[c] = src[c];
        }
    }
}

void qtrain_gather_channels_s8(const int8_t *input, int32_t pixels, int32_t channels, const int32_t *indices,
                               int32_t output_channels, int8_t *output) {
    for (int32_t p = 0; p < pixels; p++) {
        const int8_t *src = input + p * channels;
        int8_t *dst = output + p * output_channels;
        for (int32_t k = 0; k < output_channels; k++) {
            dst[k] = src[indices[k]];
        }
    }
}

void qtrain_scatter_channels_f32(const float *grad, int32_t pixels, int32_t grad_channels, const int32_t *indices,
                                 int32_t channels, float *input_grad) {
    for (int32_t p = 0; p < pixels; p++) {
        const float *src = grad + p * grad_channels;
        float *dst = input_grad + p * channels;
        for (int32_t c = 0; c < channels; c++) {
            dst[c] = 0.0f;
        }
        for (int32_t k = 0; k < grad_channels; k++) {
            dst[indices[k]] = src[k];
        }
    }
}
