/*
 * qtrain_depthwise_conv2d_weight_grad_f32.c - dL/dW of a depthwise convolution on the channel slice
 * [slice_start, slice_start + k): dw[i, kh, kw] = sum over (n, oy, ox) of
 * g[n, oy, ox, slice_start + i] * (x_pad[n, oy*sh + kh - pt, ox*sw + kw - pl, i] - zx).
 *
 * One channel at a time: its padded input plane is converted to fp32 once (x - zx, padding 0) and its
 * gradient column gathered into a contiguous buffer; then each kernel row is one pass over the
 * outputs with KW accumulators in registers (one gradient load feeds KW fused multiply-adds). Every
 * dw element is one accumulator from +0 over the outputs (n, oy, ox) row-major, acc = fmaf(g, x, acc);
 * padded taps add +0 products.
 */
#include "qtrain_kernels_support.h"


/* Rows and columns of the padded plane the outputs read. */
static void plane_size(const qtrain_conv_params_t *params, const qtrain_dims_t *grad_dims,
                       const qtrain_dims_t *filter_dims, int32_t *rows, int32_t *cols) {
    *rows = (grad_dims->h - 1) * params->stride_h + filter_dims->h;
    *cols = (grad_dims->w - 1) * params->stride_w + filter_dims->w;
}

int32_t qtrain_depthwise_conv2d_weight_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                                const qtrain_dims_t *input_dims,
                                                                const qtrain_dims_t *grad_dims,
                                                                const qtrain_dims_t *filter_dims) {
    /* In int64 and saturated: shapes too large (qtrain_dims_fit) or strides that make the plane's sides
     * overflow give a size no context fits, and the kernel refuses the call. */
    if (!qtrain_dims_fit(input_dims) || !qtrain_dims_fit(grad_dims) || !qtrain_dims_fit(filter_dims) ||
        params->stride_h < 1 || params->stride_w < 1) {
        return INT32_MAX;
    }
    const int64_t rows = (int64_t)(grad_dims->h - 1) * params->stride_h + filter_dims->h;
    const int64_t cols = (int64_t)(grad_dims->w - 1) * params->stride_w + filter_dims->w;
    if (rows > INT32_MAX || cols > INT32_MAX) {
        return INT32_MAX;
    }
    const int64_t floats = rows * cols + (int64_t)grad_dims->h * grad_dims->w; /* < 2^63 */
    return floats > INT32_MAX ? INT32_MAX : qtrain_size_saturate(4 * (int64_t)input_dims->n * floats);
}

/* One kernel row kh of one channel: acc[kw] over all outputs. */
QTRAIN_INLINE void kernel_row(const float *plane, int32_t cols, const float *g, int32_t batches, int32_t plane_size,
                              int32_t out_h, int32_t out_w, int32_t sh, int32_t sw, int32_t kh, const int32_t kernel_w,
                              float *dst) {
    float acc[QTRAIN_MAX_DEPTHWISE_KERNEL];
    for (int32_t kw = 0; kw < kernel_w; kw++) {
        acc[kw] = 0.0f;
    }
    for (int32_t b = 0; b < batches; b++) {
        for (int32_t oy = 0; oy < out_h; oy++) {
            const float *x = plane + b * plane_size + (oy * sh + kh) * cols;
#pragma clang loop unroll(disable)
            for (int32_t ox = 0; ox < out_w; ox++, x += sw) {
                const float gv = *g++;
                for (int32_t kw = 0; kw < kernel_w; kw++) {
                    acc[kw] = __builtin_fmaf(gv, x[kw], acc[kw]);
                }
            }
        }
    }
    for (int32_t kw = 0; kw < kernel_w; kw++) {
        dst[kw] = acc[kw];
    }
}

static __attribute__((noinline)) void kernel_row_any(const float *plane, int32_t cols, const float *g, int32_t batches,
                                                     int32_t plane_size, int32_t out_h, int32_t out_w, int32_t sh,
                                                     int32_t sw, int32_t kh, int32_t kernel_w, float *dst) {
    switch (kernel_w) {
    case 3:
        kernel_row(plane, cols, g, batches, plane_size, out_h, out_w, sh, sw, kh, 3, dst);
        return;
    case 5:
        kernel_row(plane, cols, g, batches, plane_size, out_h, out_w, sh, sw, kh, 5, dst);
        return;
    case 7:
        kernel_row(plane, cols, g, batches, plane_size, out_h, out_w, sh, sw, kh, 7, dst);
        return;
    default:
        kernel_row(plane, cols, g, batches, plane_size, out_h, out_w, sh, sw, kh, kernel_w, dst);
        return;
    }
}

qtrain_status_t qtrain_depthwise_conv2d_weight_grad_f32(const qtrain_context_t *ctx,
                                                        const qtrain_conv_params_t *params,
                                                        const qtrain_dims_t *input_dims, const int8_t *input,
                                                        const qtrain_dims_t *grad_dims, const float *grad,
                                                        int32_t slice_start, const qtrain_dims_t *filter_dims,
                                                        float *weight_grad) {
    if (params == NULL || input_dims == NULL || grad_dims == NULL || filter_dims == NULL ||
        params->stride_h < 1 || params->stride_w < 1 || params->pad_top < 0 || params->pad_left < 0 ||
        params->groups != grad_dims->c || filter_dims->c != 1 || filter_dims->n != input_dims->c ||
        filter_dims->h > QTRAIN_MAX_DEPTHWISE_KERNEL || filter_dims->w > QTRAIN_MAX_DEPTHWISE_KERNEL ||
        grad_dims->n != input_dims->n || slice_start < 0 || slice_start + input_dims->c > grad_dims->c) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch = qtrain_depthwise_conv2d_weight_grad_f32_get_buffer_size(params, input_dims, grad_dims,
                                                                              filter_dims);
    if (!qtrain_ctx_fits(ctx, scratch)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t rows, cols;
    plane_size(params, grad_dims, filter_dims, &rows, &cols);
    const int32_t k = input_dims->c, cout = grad_dims->c, batches = input_dims->n;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, out_h = grad_dims->h, out_w = grad_dims->w;
    const int32_t zx = params->input_zero_point, kernel_h = filter_dims->h, kernel_w = filter_dims->w;
    const int32_t plane_floats = rows * cols;
    float *plane = (float *)ctx->buf;
    float *gbuf = plane + batches * plane_floats;
    for (int32_t i = 0; i < k; i++) {
        for (int32_t b = 0; b < batches; b++) {
            float *dst = plane + b * plane_floats;
            for (int32_t r = 0; r < rows; r++) {
                const int32_t iy = r - params->pad_top;
                for (int32_t s = 0; s < cols; s++) {
                    const int32_t ix = s - params->pad_left;
                    const int inside = iy >= 0 && iy < in_h && ix >= 0 && ix < in_w;
                    dst[r * cols + s] = inside ? (float)(input[((b * in_h + iy) * in_w + ix) * k + i] - zx) : 0.0f;
                }
            }
        }
        const float *g = grad + slice_start + i;
        for (int32_t j = 0; j < batches * out_h * out_w; j++, g += cout) {
            gbuf[j] = *g;
        }
        for (int32_t kh = 0; kh < kernel_h; kh++) {
            kernel_row_any(plane, cols, gbuf, batches, plane_floats, out_h, out_w, params->stride_h, params->stride_w,
                           kh, kernel_w, weight_grad + (i * kernel_h + kh) * kernel_w);
        }
    }
    return QTRAIN_STATUS_OK;
}
