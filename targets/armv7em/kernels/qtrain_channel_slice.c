/*
 * qtrain_channel_slice.c - a copy of channels [start, stop) of an NHWC tensor (what forward saves of
 * a partially trained layer's input), int8 and fp32.
 */
#include "qtrain_kernels_support.h"

void qtrain_channel_slice_s8(const int8_t *input, int32_t pixels, int32_t channels, int32_t start, int32_t stop,
                             int8_t *output) {
    const int32_t k = stop - start;
    for (int32_t p = 0; p < pixels; p++) {
        const int8_t *src = input + p * channels + start;
        int32_t i = 0;
        for (; i + 4 <= k; i += 4) {
            qtrain_write_s32(output + i, qtrain_read_s32(src + i));
        }
        for (; i < k; i++) {
            output[i] = src[i];
        }
        output += k;
    }
}

void qtrain_channel_slice_f32(const float *input, int32_t pixels, int32_t channels, int32_t start, int32_t stop,
                              float *output) {
    const int32_t k = stop - start;
    for (int32_t p = 0; p < pixels; p++) {
        const float *src = input + p * channels + start;
        for (int32_t i = 0; i < k; i++) {
            output[i] = src[i];
        }
        output += k;
    }
}
