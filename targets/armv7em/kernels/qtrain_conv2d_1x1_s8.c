/*
 * qtrain_conv2d_1x1_s8.c - pointwise convolution (KH = KW = 1, groups = 1, no padding, any stride):
 * y[p, o] = requant(bias[o] + sum_c (x[p, c] - zx) * w[o, c]). The hot kernel of an inverted-residual
 * network.
 *
 * DSP path: four output pixels at a time are unpacked once into int16 (x - zx, one SXTAB16 per two
 * channels, reordered so that SXTB16 of a weight word lines up with them), then every output channel
 * runs 8 SMLAD per 4 input channels on 4 accumulators (the four pixels; qtrain_quad_outputs). A last
 * quad of fewer pixels repeats its last pixel, whose outputs are then stored again.
 * Portable path: one pixel at a time, its input copied into scratch as int32 (x - zx) first.
 *
 * In place. Both paths read the input of output pixels p .. p + 3 (a quad: four pixels of one line,
 * the whole tensor at stride 1, an output row otherwise; fewer at a line's end) only before writing
 * them, and walk the pixels in memory order; the input pixel of output pixel p is input pixel idx(p) >= p
 * (idx strictly increasing, = p for stride 1). So the output may lie on the input
 *   head-aligned (output == input) when C_out <= C_in, any stride: output pixels 0..p + 3 end at byte
 *     (p + 4) * C_out <= (p + 4) * C_in <= idx(p + 4) * C_in, the first input byte still to be read;
 *   tail-aligned (output + P * C_out == input + P * C_in, P pixels) when C_out >= C_in, stride 1:
 *     input pixel p + 4 starts at P * (C_out - C_in) + (p + 4) * C_in >= (p + 4) * C_out.
 */
#include "qtrain_kernels_support.h"

static int32_t slice_elements(const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight) {
    return qtrain_weight_has_slice(weight) ? filter_dims->n * (weight->slice_stop - weight->slice_start) : 0;
}

int32_t qtrain_conv2d_1x1_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                             const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                             const qtrain_weight_t *weight) {
    (void)params;
    (void)output_dims;
    /* Two words per input channel: four unpacked input rows (DSP, see qtrain_unpack_quad); the portable
     * path uses the first half (one row as int32). */
    return qtrain_size_saturate(8 * (int64_t)input_dims->c +
                                qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight)));
}

/* The input row of output pixel p (batch, row, column in the output). */
static const int8_t *input_row(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                               int32_t out_h, int32_t out_w, int32_t p) {
    int32_t x = p % out_w, rest = p / out_w;
    int32_t y = rest % out_h, b = rest / out_h;
    return input + (((b * input_dims->h + y * params->stride_h) * input_dims->w) + x * params->stride_w) * input_dims->c;
}


qtrain_status_t qtrain_conv2d_1x1_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                     const qtrain_dims_t *input_dims, const int8_t *input,
                                     const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                     const int32_t *bias, const float *multiplier,
                                     const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask) {
    if (!qtrain_conv_args_valid(params, input_dims, filter_dims, output_dims) || filter_dims->h != 1 ||
        filter_dims->w != 1 || params->groups != 1 || params->pad_top != 0 || params->pad_left != 0 ||
        output_dims->h != (input_dims->h - 1) / params->stride_h + 1 ||
        output_dims->w != (input_dims->w - 1) / params->stride_w + 1 || !qtrain_weight_valid(weight, input_dims->c)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch = qtrain_conv2d_1x1_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch) ||
        !qtrain_conv_placement_ok(QTRAIN_IN_PLACE_1X1, params, input_dims, input, filter_dims, output_dims,
                                  output)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t cin = input_dims->c, cout = filter_dims->n;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t pixels = output_dims->n * out_h * out_w;
    uint8_t *buf = ctx != NULL ? (uint8_t *)ctx->buf : NULL;
    int32_t *unpacked = (int32_t *)(void *)buf;
    const int8_t *slice_s8 =
        qtrain_weight_slice_s8(weight, slice_elements(filter_dims, weight), buf + 8 * cin);
    qtrain_weight_segment_t segments[3];
    const int32_t count = qtrain_weight_segments(weight, slice_s8, cin, segments);
    const qtrain_requant_t q = qtrain_requant_make(params->output_zero_point, params->clamp_min, params->clamp_max);
    const int32_t zx = params->input_zero_point;
    if (mask != NULL) {
        qtrain_mask_clear(mask, pixels * cout);
    }

#if QTRAIN_USE_DSP
    /* The weights widened once, with the biases and multipliers (qtrain_quad_widen), in the scratch beyond
     * the minimum when it holds them and there are pixels enough to repay the widening (about two
     * instructions per weight, against about one per weight and pixel quad). */
    const int32_t *wide = NULL;
    const int32_t wide_bytes = qtrain_quad_widen_bytes(segments, count, cout);
    if (wide_bytes > 0 && pixels >= 8 && ctx->size - qtrain_align4(scratch) >= wide_bytes) {
        int32_t *dst = (int32_t *)(void *)(buf + qtrain_align4(scratch));
        qtrain_quad_widen(segments, count, cout, bias, multiplier, dst);
        wide = dst;
    }
    if (wide == NULL && pixels >= 8 && params->stride_h == 1 && params->stride_w == 1 &&
        qtrain_quad_blocked(input, pixels, segments, count, zx, cout, bias, multiplier, &q, output, mask,
                            (int32_t *)(void *)(buf + qtrain_align4(scratch)), ctx->size - qtrain_align4(scratch))) {
        return QTRAIN_STATUS_OK;
    }
    if (params->stride_h == 1 && params->stride_w == 1) {
        /* every pixel in one line (a short last quad repeats its last pixel) */
        qtrain_quad_line(input, cin, pixels, segments, count, zx, 0, cout, bias, multiplier, &q, output, cout, mask, 0u,
                         (uint32_t)cout, unpacked, wide);
    } else {
        for (int32_t r = 0; r < output_dims->n * out_h; r++) { /* one line per output row */
            const int32_t p = r * out_w;
            qtrain_quad_line(input_row(input, input_dims, params, out_h, out_w, p), params->stride_w * cin, out_w,
                             segments, count, zx, 0, cout, bias, multiplier, &q, output + p * cout, cout, mask,
                             (uint32_t)(p * cout), (uint32_t)cout, unpacked, wide);
        }
    }
#else
    for (int32_t p = 0; p < pixels; p++) {
        /* The pixel's input, copied before any of its outputs is written (they may overwrite it). */
        const int8_t *x = input_row(input, input_dims, params, out_h, out_w, p);
        for (int32_t c = 0; c < cin; c++) {
            unpacked[c] = x[c] - zx;
        }
        for (int32_t o = 0; o < cout; o++) {
            int32_t acc = bias != NULL ? bias[o] : 0;
            for (int32_t s = 0; s < count; s++) {
                const int8_t *w = segments[s].base + o * segments[s].stride;
                const int32_t *xs = unpacked + segments[s].begin;
                for (int32_t i = 0, len = segments[s].end - segments[s].begin; i < len; i++) {
                    acc += xs[i] * w[i];
                }
            }
            qtrain_store_output(acc, multiplier[o], &q, output, (uint32_t)(p * cout + o), mask);
        }
    }
#endif
    return QTRAIN_STATUS_OK;
}
