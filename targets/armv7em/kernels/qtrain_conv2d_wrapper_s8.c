/*
 * qtrain_conv2d_wrapper_s8.c - picks the convolution kernel for a shape, like CMSIS-NN's
 * arm_convolve_wrapper_s8. A generator that knows the shapes may call the chosen kernel directly
 * (qtrain_conv2d_wrapper_s8_kernel names it); the choice (and so the scratch size) only depends on
 * shapes, with the limits of qtrain_kernels.h:
 *   groups 1, C_in <= QTRAIN_SMALL_K_MAX_CHANNELS, K = KH * KW * C_in <= QTRAIN_SMALL_K_MAX_K (the
 *     stem), and widened weights of at most QTRAIN_SMALL_K_MAX_SCRATCH bytes
 *                                            -> qtrain_conv2d_small_k_s8
 *   1x1, groups 1, no padding on any side    -> qtrain_conv2d_1x1_s8
 *   depthwise, multiplier 1, KH and KW <= QTRAIN_MAX_DEPTHWISE_KERNEL
 *                                            -> qtrain_depthwise_conv2d_s8
 *   anything else                           -> qtrain_conv2d_s8
 * In place: the output may overlap the input only as the chosen kernel allows (1x1: head-aligned with
 * C_out <= C_in, tail-aligned with C_out >= C_in and stride 1; depthwise: head-aligned with OH <= H,
 * OW <= W, pad_top < KH; small-K: the output starting at least qtrain_conv2d_small_k_s8_in_place_gap()
 * bytes before the input); generic allows none. An overlap the chosen kernel does not allow is
 * refused (QTRAIN_STATUS_ARG_ERROR, nothing written): by the 1x1, depthwise and small-K kernels
 * themselves, and here for generic, so an aliased call is never computed by a kernel that cannot take it.
 * kernels.in_place_alignment() mirrors this.
 */
#include "qtrain_kernels_support.h"

typedef enum { KERNEL_1X1, KERNEL_DEPTHWISE, KERNEL_SMALL_K, KERNEL_GENERIC } conv_kernel_t;

static conv_kernel_t choose(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                            const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims) {
    const int32_t k = filter_dims->h * filter_dims->w * input_dims->c;
    if (params->groups == 1 && k <= QTRAIN_SMALL_K_MAX_K && input_dims->c <= QTRAIN_SMALL_K_MAX_CHANNELS &&
        qtrain_conv2d_small_k_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, NULL) <=
            QTRAIN_SMALL_K_MAX_SCRATCH) {
        return KERNEL_SMALL_K;
    }
    if (filter_dims->h == 1 && filter_dims->w == 1 && params->groups == 1 && params->pad_top == 0 &&
        params->pad_left == 0 && output_dims->h == (input_dims->h - 1) / params->stride_h + 1 &&
        output_dims->w == (input_dims->w - 1) / params->stride_w + 1) {
        return KERNEL_1X1;
    }
    if (params->groups == input_dims->c && filter_dims->n == input_dims->c && filter_dims->c == 1 &&
        filter_dims->h <= QTRAIN_MAX_DEPTHWISE_KERNEL && filter_dims->w <= QTRAIN_MAX_DEPTHWISE_KERNEL) {
        return KERNEL_DEPTHWISE;
    }
    return KERNEL_GENERIC;
}

qtrain_conv_kernel_t qtrain_conv2d_wrapper_s8_kernel(const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *input_dims,
                                                     const qtrain_dims_t *filter_dims,
                                                     const qtrain_dims_t *output_dims) {
    switch (choose(params, input_dims, filter_dims, output_dims)) {
    case KERNEL_1X1:
        return QTRAIN_CONV_KERNEL_1X1;
    case KERNEL_DEPTHWISE:
        return QTRAIN_CONV_KERNEL_DEPTHWISE;
    case KERNEL_SMALL_K:
        return QTRAIN_CONV_KERNEL_SMALL_K;
    default:
        return QTRAIN_CONV_KERNEL_GENERIC;
    }
}

int32_t qtrain_conv2d_wrapper_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                                 const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                                 const qtrain_weight_t *weight) {
    switch (choose(params, input_dims, filter_dims, output_dims)) {
    case KERNEL_1X1:
        return qtrain_conv2d_1x1_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    case KERNEL_DEPTHWISE:
        return qtrain_depthwise_conv2d_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    case KERNEL_SMALL_K:
        return qtrain_conv2d_small_k_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    default:
        return qtrain_conv2d_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    }
}

qtrain_status_t qtrain_conv2d_wrapper_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                         const qtrain_dims_t *input_dims, const int8_t *input,
                                         const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                         const int32_t *bias, const float *multiplier,
                                         const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask) {
    if (!qtrain_conv_args_valid(params, input_dims, filter_dims, output_dims)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const conv_kernel_t kernel = choose(params, input_dims, filter_dims, output_dims);
    if (kernel == KERNEL_GENERIC &&
        !qtrain_conv_placement_ok(QTRAIN_IN_PLACE_NEVER, params, input_dims, input, filter_dims, output_dims,
                                  output)) {
        return QTRAIN_STATUS_ARG_ERROR; /* never runs in place (the other three check themselves) */
    }
    switch (kernel) {
    case KERNEL_1X1:
        return qtrain_conv2d_1x1_s8(ctx, params, input_dims, input, filter_dims, weight, bias, multiplier,
                                    output_dims, output, mask);
    case KERNEL_DEPTHWISE:
        return qtrain_depthwise_conv2d_s8(ctx, params, input_dims, input, filter_dims, weight, bias, multiplier,
                                          output_dims, output, mask);
    case KERNEL_SMALL_K:
        return qtrain_conv2d_small_k_s8(ctx, params, input_dims, input, filter_dims, weight, bias, multiplier,
                                     output_dims, output, mask);
    default:
        return qtrain_conv2d_s8(ctx, params, input_dims, input, filter_dims, weight, bias, multiplier, output_dims,
                                output, mask);
    }
}
