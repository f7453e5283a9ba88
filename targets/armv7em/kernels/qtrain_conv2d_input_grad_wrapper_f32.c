/*
 * qtrain_conv2d_input_grad_wrapper_f32.c - picks the input-gradient kernel for a shape:
 *   1x1, groups 1, no padding on any side -> qtrain_conv2d_1x1_input_grad_f32
 *   depthwise, multiplier 1, KH and KW <= QTRAIN_MAX_DEPTHWISE_KERNEL
 *                                         -> qtrain_depthwise_conv2d_input_grad_f32
 *   anything else                        -> qtrain_conv2d_input_grad_f32
 * In place: as the picked kernel allows; the generic kernel never, which the wrapper checks (the
 * kernel itself does not).
 */
#include "qtrain_kernels_support.h"

typedef enum { KERNEL_1X1, KERNEL_DEPTHWISE, KERNEL_GENERIC } input_grad_kernel_t;

static input_grad_kernel_t choose(const qtrain_conv_params_t *params, const qtrain_dims_t *grad_dims,
                                  const qtrain_dims_t *filter_dims, const qtrain_dims_t *input_dims) {
    if (filter_dims->h == 1 && filter_dims->w == 1 && params->groups == 1 && params->pad_top == 0 &&
        params->pad_left == 0 && grad_dims->h == (input_dims->h - 1) / params->stride_h + 1 &&
        grad_dims->w == (input_dims->w - 1) / params->stride_w + 1) {
        return KERNEL_1X1;
    }
    if (params->groups == input_dims->c && filter_dims->n == input_dims->c && filter_dims->c == 1 &&
        filter_dims->h <= QTRAIN_MAX_DEPTHWISE_KERNEL && filter_dims->w <= QTRAIN_MAX_DEPTHWISE_KERNEL) {
        return KERNEL_DEPTHWISE;
    }
    return KERNEL_GENERIC;
}

qtrain_conv_kernel_t qtrain_conv2d_input_grad_wrapper_f32_kernel(const qtrain_conv_params_t *params,
                                                                 const qtrain_dims_t *grad_dims,
                                                                 const qtrain_dims_t *filter_dims,
                                                                 const qtrain_dims_t *input_dims) {
    switch (choose(params, grad_dims, filter_dims, input_dims)) {
    case KERNEL_1X1:
        return QTRAIN_CONV_KERNEL_1X1;
    case KERNEL_DEPTHWISE:
        return QTRAIN_CONV_KERNEL_DEPTHWISE;
    default:
        return QTRAIN_CONV_KERNEL_GENERIC;
    }
}

int32_t qtrain_conv2d_input_grad_wrapper_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                             const qtrain_dims_t *grad_dims,
                                                             const qtrain_dims_t *filter_dims,
                                                             const qtrain_dims_t *input_dims,
                                                             const qtrain_weight_t *weight) {
    switch (choose(params, grad_dims, filter_dims, input_dims)) {
    case KERNEL_1X1:
        return qtrain_conv2d_1x1_input_grad_f32_get_buffer_size(params, grad_dims, filter_dims, input_dims, weight);
    case KERNEL_DEPTHWISE:
        return qtrain_depthwise_conv2d_input_grad_f32_get_buffer_size(params, grad_dims, filter_dims, input_dims,
                                                                      weight);
    default:
        return qtrain_conv2d_input_grad_f32_get_buffer_size(params, grad_dims, filter_dims, input_dims, weight);
    }
}

qtrain_status_t qtrain_conv2d_input_grad_wrapper_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *grad_dims, const float *grad,
                                                     const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                     const qtrain_dims_t *input_dims, float *input_grad) {
    if (params == NULL || grad_dims == NULL || filter_dims == NULL || input_dims == NULL || params->stride_h < 1 ||
        params->stride_w < 1) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    switch (choose(params, grad_dims, filter_dims, input_dims)) {
    case KERNEL_1X1:
        return qtrain_conv2d_1x1_input_grad_f32(ctx, params, grad_dims, grad, filter_dims, weight, input_dims,
                                                input_grad);
    case KERNEL_DEPTHWISE:
        return qtrain_depthwise_conv2d_input_grad_f32(ctx, params, grad_dims, grad, filter_dims, weight, input_dims,
                                                      input_grad);
    default:
        /* (invalid shapes: the kernel refuses them) */
        if (qtrain_conv_geometry_valid(params, input_dims, filter_dims, grad_dims) &&
            !qtrain_input_grad_placement_ok(QTRAIN_GRAD_IN_PLACE_NEVER, params, grad_dims, grad, input_dims,
                                            input_grad)) {
            return QTRAIN_STATUS_ARG_ERROR;
        }
        return qtrain_conv2d_input_grad_f32(ctx, params, grad_dims, grad, filter_dims, weight, input_dims,
                                            input_grad);
    }
}
