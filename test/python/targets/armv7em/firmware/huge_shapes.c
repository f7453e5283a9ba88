/* Kernels called with shapes far too large for any memory (element counts above 2^31, dimensions near
 * INT32_MAX): every call must return QTRAIN_STATUS_ARG_ERROR without touching the (tiny) buffers, and
 * the size queries must not overflow. Built with -fsanitize=address,undefined by
 * test_sanitizers.py, so a signed overflow in a dimension check or an access past a buffer is a
 * finding (a nonzero exit), not a silent wrap. Prints one line per failed expectation; exits with
 * the number of failures. */

#include <stdint.h>
#include <stdio.h>

#include "qtrain_kernels.h"
#include "qtrain_kernels_support.h"

static int failures = 0;

static void expect(int ok, const char *what) {
    if (!ok) {
        printf("FAILED %s\n", what);
        failures++;
    }
}

#define EXPECT_REFUSED(call) expect((call) == QTRAIN_STATUS_ARG_ERROR, #call)

static int8_t s8[64];
static float f32[64];
static int32_t s32[64];
static uint8_t mask[64];
static float scratch[64];

int main(void) {
    const qtrain_context_t ctx = {scratch, (int32_t)sizeof scratch};
    const qtrain_weight_t weight = {s8, NULL, NULL, 0, 0};
    /* 1x1 (65536 x 65536 x 8 = 2^35 elements), depthwise 3x3, generic 3x3 and small-K 3x3 stems:
     * shapes that are consistent with each other, so only their size is wrong. */
    const qtrain_conv_params_t pw = {0, 0, 1, 1, 0, 0, 1, -128, 127};
    const qtrain_conv_params_t dw = {0, 0, 1, 1, 1, 1, 8, -128, 127};
    const qtrain_conv_params_t conv = {0, 0, 1, 1, 1, 1, 1, -128, 127};
    const qtrain_dims_t big = {1, 65536, 65536, 8}, pw_filter = {8, 1, 1, 8};
    const qtrain_dims_t dw_filter = {8, 3, 3, 1}, conv_filter = {8, 3, 3, 8};
    const qtrain_dims_t stem_in = {1, 65536, 65536, 3}, stem_filter = {8, 3, 3, 3};
    const qtrain_dims_t wide = {INT32_MAX, INT32_MAX, INT32_MAX, INT32_MAX};
    const qtrain_dims_t wide_filter = {INT32_MAX, 1, 1, INT32_MAX};
    const qtrain_conv_params_t wide_params = {0, 0, 1, 1, 0, 0, 1, -128, 127};
    /* Small tensors, but strides and padding near INT32_MAX (the planes' sides overflow int32). */
    const qtrain_dims_t small = {1, 4, 4, 8}, small_out = {1, 2, 2, 8};
    const qtrain_conv_params_t far_dw = {0, 0, INT32_MAX, INT32_MAX, INT32_MAX - 1, INT32_MAX - 1, 8, -128, 127};
    const qtrain_conv_params_t far_conv = {0, 0, INT32_MAX, INT32_MAX, INT32_MAX - 1, INT32_MAX - 1, 1, -128, 127};

    expect(qtrain_dims_count(&big) == INT32_MAX, "qtrain_dims_count saturates at INT32_MAX");
    expect(qtrain_dims_count(&wide) == INT32_MAX, "qtrain_dims_count of INT32_MAX^4 saturates");
    expect(qtrain_dims_bytes_f32(&big) == INT32_MAX, "qtrain_dims_bytes_f32 saturates at INT32_MAX");
    expect(!qtrain_conv_geometry_valid(&pw, &big, &pw_filter, &big), "a 2^35-element 1x1 geometry is invalid");
    expect(!qtrain_conv_geometry_valid(&wide_params, &wide, &wide_filter, &wide), "INT32_MAX dims are invalid");

    const struct {
        const qtrain_conv_params_t *params;
        const qtrain_dims_t *in, *filter, *out;
    } convs[] = {
        {&pw, &big, &pw_filter, &big},
        {&dw, &big, &dw_filter, &big},
        {&conv, &big, &conv_filter, &big},
        {&conv, &stem_in, &stem_filter, &big},
        {&wide_params, &wide, &wide_filter, &wide},
        {&far_dw, &small, &dw_filter, &small_out},
        {&far_conv, &small, &conv_filter, &small_out},
    };
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        const qtrain_conv_params_t *p = convs[i].params;
        const qtrain_dims_t *in = convs[i].in, *filter = convs[i].filter, *out = convs[i].out;
        (void)qtrain_conv2d_wrapper_s8_get_buffer_size(p, in, filter, out, &weight);
        (void)qtrain_conv2d_input_grad_wrapper_f32_get_buffer_size(p, out, filter, in, &weight);
        EXPECT_REFUSED(qtrain_conv2d_wrapper_s8(&ctx, p, in, s8, filter, &weight, s32, f32, out, s8, mask));
        EXPECT_REFUSED(qtrain_conv2d_s8(&ctx, p, in, s8, filter, &weight, s32, f32, out, s8, mask));
        EXPECT_REFUSED(qtrain_conv2d_input_grad_wrapper_f32(&ctx, p, out, f32, filter, &weight, in, f32));
        EXPECT_REFUSED(qtrain_conv2d_input_grad_f32(&ctx, p, out, f32, filter, &weight, in, f32));
        EXPECT_REFUSED(qtrain_conv2d_weight_grad_f32(p, in, s8, out, f32, filter, f32));
    }
    EXPECT_REFUSED(qtrain_depthwise_conv2d_weight_grad_f32(&ctx, &dw, &big, s8, &big, f32, 0, &dw_filter, f32));
    EXPECT_REFUSED(
        qtrain_depthwise_conv2d_weight_grad_f32(&ctx, &far_dw, &small, s8, &small_out, f32, 0, &dw_filter, f32));
    EXPECT_REFUSED(qtrain_avgpool_s8(&big, s8, 1, 1, 1, 1, 0, 1.0f, 0, &big, s8, mask));
    EXPECT_REFUSED(qtrain_avgpool_grad_f32(&big, f32, 1, 1, 1, 1, &big, f32));
    EXPECT_REFUSED(qtrain_upsample_bilinear_s8(&big, s8, 0, 1.0f, 0, &big, s8, mask));
    EXPECT_REFUSED(qtrain_upsample_bilinear_grad_f32(&big, f32, &big, f32));
    printf("%d failures\n", failures);
    return failures;
}
