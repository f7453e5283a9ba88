/*
 * qtrain_conv2d_s8.c - generic convolution: any kernel size, stride, padding and groups (depthwise
 * with a channel multiplier included), the fallback for what the specialised kernels do not cover.
 *
 * DSP path: for each group, the K = KH * KW * C_in/groups inputs of two output pixels are gathered
 * (im2col) as int16 x - zx (padding 0) in the interleaved layout of the 1x1 kernel, then each pair of
 * output channels of the group runs qtrain_dot_pair_s16_s8 over its int8 weight rows. A weight with a
 * trained slice is merged into one int8 weight in scratch first.
 */
#include "qtrain_kernels_support.h"

static int32_t kernel_elements(const qtrain_dims_t *filter_dims) {
    return filter_dims->h * filter_dims->w * filter_dims->c;
}

int32_t qtrain_conv2d_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                         const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                         const qtrain_weight_t *weight) {
    (void)params;
    (void)input_dims;
    (void)output_dims;
    int32_t k = kernel_elements(filter_dims);
    int32_t bytes = 4 * qtrain_align4(k); /* two im2col columns, one word per element */
    if (weight != NULL && qtrain_weight_has_slice(weight)) {
        int32_t slice = filter_dims->n * filter_dims->h * filter_dims->w * (weight->slice_stop - weight->slice_start);
        bytes += qtrain_align4(filter_dims->n * k) + qtrain_weight_slice_bytes(weight, slice);
    }
    return bytes;
}

#if QTRAIN_USE_DSP
/* Write x - zx (or 0) for element i of pixel `px` into the interleaved layout (see qtrain_dot_pair_s16_s8). */
QTRAIN_INLINE void put_element(int16_t *col, int32_t k4, int32_t i, int32_t px, int32_t value) {
    int32_t index;
    if (i < k4) {
        int32_t lane = i & 3;
        index = (((i & ~3) + px * 2 + (lane & 1)) << 1) + (lane >> 1);
    } else {
        index = ((k4 + (i - k4)) << 1) + px;
    }
    col[index] = (int16_t)value;
}

/* im2col of output pixels (b, oy, ox) and its partner into `col`, input channels [c0, c0 + cin_g). */
static void im2col_pair(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                        const qtrain_dims_t *filter_dims, int32_t c0, const int32_t pos[2][3], int32_t *col) {
    const int32_t cin_g = filter_dims->c, kernel_h = filter_dims->h, kernel_w = filter_dims->w;
    const int32_t k = kernel_h * kernel_w * cin_g, k4 = k & ~3;
    const int32_t zx = params->input_zero_point;
    const int32_t offset = (int32_t)(((uint32_t)(-zx) & 0xFFFFu) * 0x10001u);
    const int fast = (cin_g & 3) == 0; /* every tap starts a whole 4-element chunk */
    for (int32_t px = 0; px < 2; px++) {
        const int32_t b = pos[px][0], oy = pos[px][1], ox = pos[px][2];
        int32_t i = 0;
        for (int32_t kh = 0; kh < kernel_h; kh++) {
            const int32_t iy = oy * params->stride_h + kh - params->pad_top;
            for (int32_t kw = 0; kw < kernel_w; kw++, i += cin_g) {
                const int32_t ix = ox * params->stride_w + kw - params->pad_left;
                const int inside = iy >= 0 && iy < input_dims->h && ix >= 0 && ix < input_dims->w;
                const int8_t *src =
                    inside ? input + ((b * input_dims->h + iy) * input_dims->w + ix) * input_dims->c + c0 : NULL;
                if (fast) {
                    int32_t *dst = col + i + px * 2;
                    for (int32_t ci = 0; ci < cin_g; ci += 4, dst += 4) {
                        if (src != NULL) {
                            int32_t v = qtrain_read_s32(src + ci);
                            dst[0] = qtrain_sxtab16(offset, v);
                            dst[1] = qtrain_sxtab16_ror8(offset, v);
                        } else {
                            dst[0] = 0;
                            dst[1] = 0;
                        }
                    }
                } else {
                    for (int32_t ci = 0; ci < cin_g; ci++) {
                        put_element((int16_t *)(void *)col, k4, i + ci, px, src != NULL ? src[ci] - zx : 0);
                    }
                }
            }
        }
    }
}
#endif

/* The portable path (also the DSP build's choice for K < 16 inputs per output, e.g. depthwise with a
 * channel multiplier, where gathering and pairing cost more than the SIMD dot product saves). */
static void conv_portable(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims, const int8_t *input,
                          const qtrain_dims_t *filter_dims, const int8_t *w, int32_t k, const int32_t *bias,
                          const float *multiplier, const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask,
                          const qtrain_requant_t *qp) {
    const qtrain_requant_t q = *qp;
    const int32_t cout = filter_dims->n, cin_g = filter_dims->c, cout_g = cout / params->groups;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t pixels = output_dims->n * out_h * out_w;
    const int32_t in_h = input_dims->h, in_w = input_dims->w, cin = input_dims->c;
    const int32_t zx = params->input_zero_point;
    for (int32_t p = 0; p < pixels; p++) {
        const int32_t b = p / (out_h * out_w), oy = (p / out_w) % out_h, ox = p % out_w;
        for (int32_t o = 0; o < cout; o++) {
            const int32_t c0 = (o / cout_g) * cin_g;
            const int8_t *wo = w + o * k;
            int32_t acc = bias != NULL ? bias[o] : 0;
            for (int32_t kh = 0; kh < filter_dims->h; kh++) {
                const int32_t iy = oy * params->stride_h + kh - params->pad_top;
                if (iy < 0 || iy >= in_h) {
                    continue;
                }
                for (int32_t kw = 0; kw < filter_dims->w; kw++) {
                    const int32_t ix = ox * params->stride_w + kw - params->pad_left;
                    if (ix < 0 || ix >= in_w) {
                        continue;
                    }
                    const int8_t *x = input + ((b * in_h + iy) * in_w + ix) * cin + c0;
                    const int8_t *wt = wo + (kh * filter_dims->w + kw) * cin_g;
                    for (int32_t ci = 0; ci < cin_g; ci++) {
                        acc += (x[ci] - zx) * wt[ci];
                    }
                }
            }
            qtrain_store_output(acc, multiplier[o], &q, output, (uint32_t)(p * cout + o), mask);
        }
    }
}

qtrain_status_t qtrain_conv2d_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                 const qtrain_dims_t *input_dims, const int8_t *input,
                                 const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                 const int32_t *bias, const float *multiplier, const qtrain_dims_t *output_dims,
                                 int8_t *output, uint8_t *mask) {
    if (!qtrain_conv_args_valid(params, input_dims, filter_dims, output_dims) ||
        !qtrain_weight_valid(weight, filter_dims->c) ||
        !qtrain_weight_fits_groups(weight, params->groups, filter_dims->c)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch = qtrain_conv2d_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t k = kernel_elements(filter_dims);
    const int32_t cout = filter_dims->n;
    const int32_t pixels = output_dims->n * output_dims->h * output_dims->w;
    uint8_t *buf = ctx != NULL ? (uint8_t *)ctx->buf : NULL;
    const int8_t *w = weight->data;
    if (qtrain_weight_has_slice(weight)) {
        int8_t *merged = (int8_t *)(buf + 4 * qtrain_align4(k));
        int32_t slice = cout * filter_dims->h * filter_dims->w * (weight->slice_stop - weight->slice_start);
        const int8_t *slice_s8 = qtrain_weight_slice_s8(weight, slice, merged + qtrain_align4(cout * k));
        qtrain_weight_merge(weight, slice_s8, filter_dims, merged);
        w = merged;
    }
    const qtrain_requant_t q = qtrain_requant_make(params->output_zero_point, params->clamp_min, params->clamp_max);
    if (mask != NULL) {
        qtrain_mask_clear(mask, pixels * cout);
    }

#if QTRAIN_USE_DSP
    const int32_t groups = params->groups, cin_g = filter_dims->c, cout_g = cout / groups;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    if (k < 16) {
        conv_portable(params, input_dims, input, filter_dims, w, k, bias, multiplier, output_dims, output, mask, &q);
        return QTRAIN_STATUS_OK;
    }
    int32_t *col = (int32_t *)(void *)buf;
    for (int32_t p = 0; p < pixels; p += 2) {
        const int32_t p1 = p + 1 < pixels ? p + 1 : p; /* an odd last pixel is paired with itself */
        const int32_t pos[2][3] = {{p / (out_h * out_w), (p / out_w) % out_h, p % out_w},
                                   {p1 / (out_h * out_w), (p1 / out_w) % out_h, p1 % out_w}};
        for (int32_t g = 0; g < groups; g++) {
            im2col_pair(input, input_dims, params, filter_dims, g * cin_g, pos, col);
            const qtrain_weight_segment_t segment = {0, k, w, k};
            qtrain_pair_outputs(col, &segment, 1, g * cout_g, (g + 1) * cout_g, bias, multiplier, &q,
                                output + p * cout, output + p1 * cout, mask, (uint32_t)(p * cout),
                                (uint32_t)(p1 * cout));
        }
    }
#else
    conv_portable(params, input_dims, input, filter_dims, w, k, bias, multiplier, output_dims, output, mask, &q);
#endif
    return QTRAIN_STATUS_OK;
}
