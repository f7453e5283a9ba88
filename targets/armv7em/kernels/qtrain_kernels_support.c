/*
 * qtrain_kernels_support.c - helpers shared by the kernels: mask clearing, trained-slice conversion
 * and merging, and qtrain_master_to_s8.
 */
#include "qtrain_kernels_support.h"

void qtrain_mask_clear(uint8_t *mask, int32_t count) {
    int32_t bytes = (count + 7) >> 3;
    for (int32_t i = 0; i < bytes; i++) {
        mask[i] = 0;
    }
}

void qtrain_master_to_s8(const float *master, int32_t count, int8_t *output) {
    for (int32_t i = 0; i < count; i++) {
        /* numerics.master_to_param: saturate(rint(m)); fmaxf maps NaN to -128. Clamping before
         * rounding is the same function (integer bounds). */
        float m = __builtin_fminf(__builtin_fmaxf(master[i], -128.0f), 127.0f);
        output[i] = (int8_t)__builtin_rintf(m);
    }
}

int qtrain_weight_valid(const qtrain_weight_t *weight, int32_t channels) {
    if (weight == NULL || weight->data == NULL) {
        return 0;
    }
    if (!qtrain_weight_has_slice(weight)) {
        return 1;
    }
    if (weight->master != NULL && weight->slice != NULL) {
        return 0;
    }
    return 0 <= weight->slice_start && weight->slice_start < weight->slice_stop && weight->slice_stop <= channels;
}

int32_t qtrain_weight_slice_bytes(const qtrain_weight_t *weight, int32_t count) {
    return weight != NULL && weight->master != NULL ? qtrain_align4(count) : 0;
}

const int8_t *qtrain_weight_slice_s8(const qtrain_weight_t *weight, int32_t count, void *scratch) {
    if (weight->master != NULL) {
        qtrain_master_to_s8(weight->master, count, (int8_t *)scratch);
        return (const int8_t *)scratch;
    }
    return weight->slice;
}

int32_t qtrain_weight_segments(const qtrain_weight_t *weight, const int8_t *slice_s8, int32_t channels,
                               qtrain_weight_segment_t segments[3]) {
    if (slice_s8 == NULL) {
        segments[0] = (qtrain_weight_segment_t){0, channels, weight->data, channels};
        return 1;
    }
    int32_t start = weight->slice_start, stop = weight->slice_stop, k = stop - start, n = 0;
    if (start > 0) {
        segments[n++] = (qtrain_weight_segment_t){0, start, weight->data, channels};
    }
    segments[n++] = (qtrain_weight_segment_t){start, stop, slice_s8, k};
    if (stop < channels) {
        segments[n++] = (qtrain_weight_segment_t){stop, channels, weight->data + stop, channels};
    }
    return n;
}

void qtrain_weight_merge(const qtrain_weight_t *weight, const int8_t *slice_s8, const qtrain_dims_t *filter_dims,
                         int8_t *output) {
    int32_t cin = filter_dims->c;
    int32_t rows = filter_dims->n * filter_dims->h * filter_dims->w;
    int32_t start = weight->slice_start, stop = weight->slice_stop, k = stop - start;
    const int8_t *data = weight->data;
    for (int32_t r = 0; r < rows; r++) {
        for (int32_t c = 0; c < cin; c++) {
            output[r * cin + c] = (c >= start && c < stop) ? slice_s8[r * k + (c - start)] : data[r * cin + c];
        }
    }
}

int qtrain_conv_geometry_valid(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                               const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims) {
    if (params == NULL || input_dims == NULL || filter_dims == NULL || output_dims == NULL) {
        return 0;
    }
    const qtrain_dims_t *all[3] = {input_dims, filter_dims, output_dims};
    for (int i = 0; i < 3; i++) {
        if (!qtrain_dims_fit(all[i])) {
            return 0;
        }
    }
    int32_t groups = params->groups;
    /* C_in / groups == filter C (after the divisibility check) rather than filter C * groups == C_in:
     * the product can overflow. */
    if (groups < 1 || input_dims->c % groups != 0 || filter_dims->n % groups != 0 ||
        input_dims->c / groups != filter_dims->c) {
        return 0;
    }
    if (output_dims->n != input_dims->n || output_dims->c != filter_dims->n) {
        return 0;
    }
    if (params->stride_h < 1 || params->stride_w < 1 || params->pad_top < 0 || params->pad_left < 0) {
        return 0;
    }
    /* The rows (columns) the outputs' windows span, (O - 1) * stride + K, and the padding before them,
     * bounded like a tensor: the kernels' int32 index arithmetic (o * stride - pad + k) cannot overflow. */
    const int64_t span_h = (int64_t)(output_dims->h - 1) * params->stride_h + filter_dims->h;
    const int64_t span_w = (int64_t)(output_dims->w - 1) * params->stride_w + filter_dims->w;
    return span_h <= QTRAIN_MAX_TENSOR_ELEMENTS && span_w <= QTRAIN_MAX_TENSOR_ELEMENTS &&
           params->pad_top <= span_h && params->pad_left <= span_w;
}

int qtrain_conv_args_valid(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                           const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims) {
    if (!qtrain_conv_geometry_valid(params, input_dims, filter_dims, output_dims)) {
        return 0;
    }
    return -128 <= params->clamp_min && params->clamp_min <= params->clamp_max && params->clamp_max <= 127;
}

int qtrain_conv_placement_ok(qtrain_in_place_t allowed, const qtrain_conv_params_t *params,
                             const qtrain_dims_t *input_dims, const int8_t *input, const qtrain_dims_t *filter_dims,
                             const qtrain_dims_t *output_dims, const int8_t *output) {
    const qtrain_overlap_t overlap =
        qtrain_overlap(input, qtrain_dims_count(input_dims), output, qtrain_dims_count(output_dims));
    if (overlap == QTRAIN_OVERLAP_NONE) {
        return 1;
    }
    if (allowed == QTRAIN_IN_PLACE_1X1) {
        /* head-aligned: C_out <= C_in, any stride; tail-aligned: C_out >= C_in, stride 1 */
        return (overlap == QTRAIN_OVERLAP_HEAD && output_dims->c <= input_dims->c) ||
               (overlap == QTRAIN_OVERLAP_TAIL && output_dims->c >= input_dims->c && params->stride_h == 1 &&
                params->stride_w == 1);
    }
    if (allowed == QTRAIN_IN_PLACE_DEPTHWISE) {
        /* head-aligned: OH <= H, OW <= W, pad_top < KH */
        return overlap == QTRAIN_OVERLAP_HEAD && output_dims->h <= input_dims->h && output_dims->w <= input_dims->w &&
               params->pad_top < filter_dims->h;
    }
    if (allowed == QTRAIN_IN_PLACE_SMALL_K) {
        /* the output starts at least the gap before the input (compared as integers) */
        const intptr_t gap = (intptr_t)input - (intptr_t)output;
        return gap >= (intptr_t)qtrain_conv2d_small_k_s8_in_place_gap(params, input_dims, output_dims);
    }
    return 0;
}

int qtrain_input_grad_placement_ok(qtrain_grad_in_place_t allowed, const qtrain_conv_params_t *params,
                                   const qtrain_dims_t *grad_dims, const float *grad,
                                   const qtrain_dims_t *input_dims, const float *input_grad) {
    const qtrain_overlap_t overlap =
        qtrain_overlap((const int8_t *)(const void *)grad, qtrain_dims_bytes_f32(grad_dims),
                       (const int8_t *)(const void *)input_grad, qtrain_dims_bytes_f32(input_dims));
    if (overlap == QTRAIN_OVERLAP_NONE) {
        return 1;
    }
    if (allowed == QTRAIN_GRAD_IN_PLACE_1X1) {
        /* stride 1 only: head-aligned when C_in <= C_out, tail-aligned when C_in >= C_out */
        return params->stride_h == 1 && params->stride_w == 1 &&
               ((overlap == QTRAIN_OVERLAP_HEAD && input_dims->c <= grad_dims->c) ||
                (overlap == QTRAIN_OVERLAP_TAIL && input_dims->c >= grad_dims->c));
    }
    if (allowed == QTRAIN_GRAD_IN_PLACE_DEPTHWISE) {
        /* head-aligned when grad_dims == input_dims */
        return overlap == QTRAIN_OVERLAP_HEAD && grad_dims->n == input_dims->n && grad_dims->h == input_dims->h &&
               grad_dims->w == input_dims->w && grad_dims->c == input_dims->c;
    }
    return 0;
}

#if QTRAIN_USE_DSP
void qtrain_pair_outputs(const int32_t *x, const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin,
                         int32_t o_end, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                         int8_t *out0, int8_t *out1, uint8_t *mask, uint32_t e0, uint32_t e1) {
    /* A local copy: the int8 stores may alias anything read through a pointer. */
    const qtrain_requant_t rq = *q;
    if (count == 1) {
        /* One weight segment (no trained slice): the common case, with its loop invariants in registers. */
        const int8_t *base = segments[0].base;
        const int32_t stride = segments[0].stride, len = segments[0].end - segments[0].begin;
        for (int32_t o = o_begin; o < o_end; o += 2) {
            const int32_t o1 = o + 1 < o_end ? o + 1 : o;
            int32_t s00 = 0, s01 = 0;
            if (bias != NULL) {
                s00 = bias[o];
                s01 = bias[o1];
            }
            int32_t s10 = s00, s11 = s01;
            qtrain_dot_pair(x, base + o * stride, (o1 - o) * stride, len, &s00, &s01, &s10, &s11);
            qtrain_put_block(s00, s01, s10, s11, o, o1, multiplier, &rq, out0, out1, mask, e0, e1);
        }
        return;
    }
    for (int32_t o = o_begin; o < o_end; o += 2) {
        const int32_t o1 = o + 1 < o_end ? o + 1 : o;
        const int32_t b0 = bias != NULL ? bias[o] : 0, b1 = bias != NULL ? bias[o1] : 0;
        int32_t s00 = b0, s01 = b1, s10 = b0, s11 = b1;
        const int32_t *xs = x;
        for (int32_t s = 0; s < count; s++) {
            const int32_t len = segments[s].end - segments[s].begin;
            qtrain_dot_pair(xs, segments[s].base + o * segments[s].stride, (o1 - o) * segments[s].stride, len, &s00,
                            &s01, &s10, &s11);
            xs += len;
        }
        qtrain_put_block(s00, s01, s10, s11, o, o1, multiplier, &rq, out0, out1, mask, e0, e1);
    }
}
#endif
