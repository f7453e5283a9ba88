/*
 * qtrain_depthwise_conv2d_s8.c - depthwise convolution, channel multiplier 1 (groups = C_in = C_out,
 * filter [C, KH, KW, 1]), any kernel up to QTRAIN_MAX_DEPTHWISE_KERNEL a side, stride and padding:
 * y[n, oh, ow, c] = requant(bias[c] + sum_{kh, kw} (x_pad[n, oh*sh + kh - pt, ow*sw + kw - pl, c] - zx) * w[c, kh, kw]).
 *
 * DSP path: one channel at a time. Its padded input rows are built once each as int16 (x - zx,
 * padding 0) into a ring of KH rows stored column-interleaved and twice: column j holds 2 * KH
 * slots, padded row r in slots r mod KH and r mod KH + KH, so the KH rows of any window are KH
 * consecutive int16 of every column. Two vertically adjacent taps are then one (possibly unaligned)
 * 32-bit word and one SMLAD, the window is read at constant offsets from one pointer, and the weight
 * pairs (w[2i, j], w[2i + 1, j]) stay fixed per channel (an odd KH pairs its last row with weight 0,
 * whatever the slot after it holds). 3x3, 5x5 and 7x7 are compiled with constant bounds, which keeps
 * a 3x3 window's six weight words in registers.
 *
 * Portable path: the same schedule on a ring of KH padded rows held as int32 (x - zx, padding 0), one
 * slot per column; each output sums only its taps inside the image (the others add 0).
 *
 * In place (output == input; OH <= H, OW <= W, pad_top < KH). Both paths work one channel c at a
 * time, batch by batch, output row by output row, and load padded row r (input row r - pad_top) of
 * channel c into the ring before computing the first output row that needs it, never reading the
 * input elsewhere. Output row oy is computed after rows up to R = oy * sh + KH - pad_top - 1 are
 * loaded (rows a stride larger than the kernel skips are never read). Its stores touch only channel c
 * (the pixel stride is C in both tensors), i.e. bytes no other channel reads, and within channel c the
 * pixels [(b * OH + oy) * OW, (b * OH + oy + 1) * OW) of the NHWC order, which end at or before
 * (b * H + R + 1) * W, the first pixel of channel c still to be loaded: (oy + 1) * OW <= (oy + 1) * W
 * <= (R + 1) * W because sh >= 1 and pad_top <= KH - 1 give R + 1 >= oy + 1, and b * OH * OW <= b * H * W.
 * The first output row (oy = 0, R = KH - 1 - pad_top >= 0) includes input row 0 for the same reason;
 * top padding rows read nothing.
 */
#include "qtrain_kernels_support.h"

#define MAX_PAIRS ((QTRAIN_MAX_DEPTHWISE_KERNEL + 1) / 2)

/* int16 per ring column: every padded row twice. */
static int32_t column_slots(int32_t kernel_h) {
    return 2 * kernel_h;
}

/* Columns of the ring: the widest read is (OW - 1) * sw + KW. */
static int32_t ring_columns(const qtrain_conv_params_t *params, const qtrain_dims_t *filter_dims,
                            const qtrain_dims_t *output_dims) {
    return (output_dims->w - 1) * params->stride_w + filter_dims->w;
}

static int32_t slice_elements(const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight) {
    return qtrain_weight_has_slice(weight)
               ? (weight->slice_stop - weight->slice_start) * filter_dims->h * filter_dims->w
               : 0;
}

int32_t qtrain_depthwise_conv2d_s8_get_buffer_size(const qtrain_conv_params_t *params,
                                                   const qtrain_dims_t *input_dims,
                                                   const qtrain_dims_t *filter_dims,
                                                   const qtrain_dims_t *output_dims, const qtrain_weight_t *weight) {
    (void)input_dims;
    /* Shapes the kernel refuses may reach this query: a kernel taller than the limit, or a ring wider than
     * int32 (the int64 span below), gives a size no context fits instead of an overflow. */
    const int64_t columns = (int64_t)(output_dims->w - 1) * params->stride_w + filter_dims->w;
    if (filter_dims->h < 1 || filter_dims->h > QTRAIN_MAX_DEPTHWISE_KERNEL || columns > QTRAIN_MAX_TENSOR_ELEMENTS) {
        return INT32_MAX;
    }
    const int64_t ring = 2 * (int64_t)column_slots(filter_dims->h) * columns; /* = ring_columns(...) */
    return qtrain_size_saturate(((ring + 3) & ~(int64_t)3) +
                                qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight)));
}

#if QTRAIN_USE_DSP
/* The DSP path: channels in groups of four (one when that does not fit the scratch given), each
 * channel's padded rows as pair rows (qtrain_kernels_support.h, "pair-row engine"), every padded row
 * loaded once, for the four channels of a group with one word read per pixel, into the low halves of
 * its pair row and the high halves of the one before (a stride-2 convolution reads pair rows of one
 * parity only and loads only their halves). When the group's whole padded planes fit, all rows are
 * loaded first and each channel's output is one qtrain_dw_output_rows call; otherwise each channel
 * keeps a ring of KH pair rows and each output row is one call, after the rows it needs are loaded. */
/* Channels [0, C - C mod 4) four at a time over bands of NB output rows, when a group's whole planes do
 * not fit but a band does: each input row of the group's four channels is copied once into a ring of
 * (NB - 1) * sh + KH rows (W words: four channels per pixel), before any output row that could overwrite
 * it (in place: output row oy lies on input row oy); each band's pair rows are built from the ring, then
 * its output rows are one qtrain_dw4_output_rows call. Returns the channels done (0: nothing fits). */
static int32_t depthwise_four_bands(const int8_t *input, const qtrain_dims_t *input_dims,
                                    const qtrain_conv_params_t *params, const qtrain_dims_t *output_dims,
                                    int32_t kernel_h, int32_t kernel_w, const qtrain_weight_t *weight,
                                    const int8_t *slice_s8, const int32_t *bias, const float *multiplier,
                                    const qtrain_requant_t *q, int32_t *buf, int32_t available, int32_t columns,
                                    int8_t *output, uint8_t *mask) {
    const int32_t channels = input_dims->c, taps = kernel_h * kernel_w, npairs = (kernel_h + 1) / 2;
    const int32_t height = input_dims->h, width = input_dims->w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, sh = params->stride_h, pt = params->pad_top;
    const int even = (sh & 1) == 0, row_words = 4 * columns, wp_words = 4 * npairs * kernel_w;
    int32_t band = 8, ring_rows = 0, stored = 0;
    for (; band >= 1; band /= 2) {
        ring_rows = (band - 1) * sh + kernel_h;
        stored = even ? (band - 1) * sh / 2 + npairs : (band - 1) * sh + 2 * npairs - 1;
        if (4 * (ring_rows * width + stored * row_words + wp_words) <= available) {
            break;
        }
    }
    if (band < 1) {
        return 0;
    }
    int32_t *ring = buf, *plane = buf + ring_rows * width, *wp = plane + stored * row_words;
    const int32_t first = params->pad_left < columns ? params->pad_left : columns;
    const int32_t last = params->pad_left + width < columns ? params->pad_left + width : columns;
    const int32_t fours = channels & ~3;
    for (int32_t c0 = 0; c0 < fours; c0 += 4) {
        const int8_t *w[4];
        for (int32_t g = 0; g < 4; g++) {
            const int32_t c = c0 + g;
            w[g] = slice_s8 != NULL && c >= weight->slice_start && c < weight->slice_stop
                       ? slice_s8 + (c - weight->slice_start) * taps
                       : weight->data + c * taps;
        }
        qtrain_dw4_weights(w, kernel_h, kernel_w, wp);
        for (int32_t b = 0; b < output_dims->n; b++) {
            const int8_t *image = input + b * height * width * channels + c0;
            int32_t next_row = 0; /* the first image row not in the ring yet */
            for (int32_t oy0 = 0; oy0 < out_h; oy0 += band) {
                const int32_t rows_out = out_h - oy0 < band ? out_h - oy0 : band;
                const int32_t r0 = oy0 * sh - pt, rows = (rows_out - 1) * sh + kernel_h;
                const int32_t lo = r0 > 0 ? r0 : 0, hi = r0 + rows < height ? r0 + rows : height;
                if (next_row < lo) {
                    next_row = lo; /* rows a stride larger than the kernel skips are never needed */
                }
                for (; next_row < hi; next_row++) {
                    const int8_t *src = image + next_row * width * channels;
                    int32_t *dst = ring + (next_row % ring_rows) * width;
#pragma clang loop unroll(disable)
                    for (int32_t x = 0; x < width; x++, src += channels) {
                        dst[x] = qtrain_read_s32(src);
                    }
                }
                const int32_t s_rows = even ? (rows_out - 1) * sh / 2 + npairs : (rows_out - 1) * sh + 2 * npairs - 1;
                for (int32_t m = 0; m < s_rows; m++) {
                    const int32_t ya = oy0 * sh + (even ? 2 * m : m) - pt, yb = ya + 1;
                    const int8_t *a = ya >= 0 && ya < height
                                          ? (const int8_t *)(ring + (ya % ring_rows) * width + (first - params->pad_left))
                                          : NULL;
                    const int8_t *bb = yb >= 0 && yb < height
                                           ? (const int8_t *)(ring + (yb % ring_rows) * width + (first - params->pad_left))
                                           : NULL;
                    qtrain_dw4_pair_row(a, bb, 4, first, last, columns, params->input_zero_point, plane + m * row_words);
                }
                const uint32_t e = (uint32_t)(((b * out_h + oy0) * out_w) * channels + c0);
                qtrain_dw4_output_rows(plane, row_words, even ? 1 : 2, even ? sh / 2 : sh, kernel_h, kernel_w, wp,
                                       rows_out, out_w, params->stride_w, bias != NULL ? bias + c0 : NULL,
                                       multiplier + c0, q, output + e, channels, mask, e);
            }
        }
    }
    return fours;
}

/* Channels [0, C - C mod 4) four at a time with the four-channel engine when a group's whole padded
 * planes fit the scratch given (qtrain_kernels_support.h): all of a group's pair rows are built first (a
 * stride-2 convolution stores the even pair rows only), then all its output rows are one call.
 * Returns the channels done (0 when the planes do not fit). */
static int32_t depthwise_fours(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                               const qtrain_dims_t *output_dims, int32_t kernel_h, int32_t kernel_w,
                               const qtrain_weight_t *weight, const int8_t *slice_s8, const int32_t *bias,
                               const float *multiplier, const qtrain_requant_t *q, int32_t *buf, int32_t available,
                               int32_t columns, int8_t *output, uint8_t *mask) {
    const int32_t channels = input_dims->c, taps = kernel_h * kernel_w, npairs = (kernel_h + 1) / 2;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, sh = params->stride_h;
    const int32_t plane_rows = (out_h - 1) * sh + kernel_h; /* padded rows the output reads */
    const int even = (sh & 1) == 0;                         /* then only even pair rows are read */
    const int32_t stored = even ? (plane_rows + 1) / 2 : plane_rows, row_words = 4 * columns;
    const int32_t plane_words = stored * row_words, wp_words = 4 * npairs * kernel_w;
    const int32_t fours = channels & ~3;
    if (fours == 0) {
        return 0;
    }
    if (4 * (plane_words + wp_words) > available) {
        return depthwise_four_bands(input, input_dims, params, output_dims, kernel_h, kernel_w, weight, slice_s8, bias,
                                    multiplier, q, buf, available, columns, output, mask);
    }
    int32_t *plane = buf, *wp = buf + plane_words;
    const int32_t pixel_stride = channels, line = input_dims->w * channels;
    const int32_t first = params->pad_left < columns ? params->pad_left : columns;
    const int32_t last = params->pad_left + input_dims->w < columns ? params->pad_left + input_dims->w : columns;
    for (int32_t c0 = 0; c0 < fours; c0 += 4) {
        const int8_t *w[4];
        for (int32_t g = 0; g < 4; g++) {
            const int32_t c = c0 + g;
            w[g] = slice_s8 != NULL && c >= weight->slice_start && c < weight->slice_stop
                       ? slice_s8 + (c - weight->slice_start) * taps
                       : weight->data + c * taps;
        }
        qtrain_dw4_weights(w, kernel_h, kernel_w, wp);
        for (int32_t b = 0; b < output_dims->n; b++) {
            const int8_t *image = input + b * input_dims->h * line + (first - params->pad_left) * channels + c0;
            for (int32_t m = 0; m < stored; m++) {
                const int32_t k = even ? 2 * m : m; /* pair row: padded rows k, k + 1 */
                const int32_t ia = k - params->pad_top, ib = ia + 1;
                qtrain_dw4_pair_row(ia >= 0 && ia < input_dims->h ? image + ia * line : NULL,
                                    ib >= 0 && ib < input_dims->h ? image + ib * line : NULL, pixel_stride, first,
                                    last, columns, params->input_zero_point, plane + m * row_words);
            }
            const uint32_t e = (uint32_t)(b * out_h * out_w * channels + c0);
            qtrain_dw4_output_rows(plane, row_words, even ? 1 : 2, even ? sh / 2 : sh, kernel_h, kernel_w, wp, out_h,
                                   out_w, params->stride_w, bias != NULL ? bias + c0 : NULL, multiplier + c0, q,
                                   output + e, channels, mask, e);
        }
    }
    return fours;
}

static void depthwise_groups(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                             const qtrain_dims_t *output_dims, int32_t kernel_h, int32_t kernel_w,
                             const qtrain_weight_t *weight, const int8_t *slice_s8, const int32_t *bias,
                             const float *multiplier, const qtrain_requant_t *q, int32_t *rings, int32_t available,
                             int32_t columns, int8_t *output, uint8_t *mask, int32_t c_begin) {
    const int32_t channels = input_dims->c, taps = kernel_h * kernel_w, npairs = (kernel_h + 1) / 2;
    const int32_t out_h = output_dims->h, out_w = output_dims->w, sh = params->stride_h;
    const int32_t plane_rows = (out_h - 1) * sh + kernel_h; /* padded rows the output reads */
    const int32_t wp_words = npairs * kernel_w;
    /* the schedule: whole planes (4 channels, else 1), else rings of KH pair rows (4 channels, else 1) */
    int32_t rows = plane_rows, group = 4, whole = 1;
    if (4 * group * (rows * columns + wp_words) > available) {
        group = 1;
    }
    if (4 * group * (rows * columns + wp_words) > available) {
        rows = kernel_h;
        whole = 0;
        group = 4 * 4 * (rows * columns + wp_words) <= available ? 4 : 1;
    }
    const int32_t ring_words = rows * columns;
    const int32_t parity = (sh & 1) == 0 ? 0 : -1; /* an even stride reads even pair rows only */
    int32_t local_wp[QTRAIN_MAX_DEPTHWISE_KERNEL * MAX_PAIRS];
    int32_t *wp = group == 4 || whole ? rings + group * ring_words : local_wp; /* they fit there */
    for (int32_t c0 = c_begin; c0 < channels; c0 += group) {
        const int32_t count = channels - c0 < group ? channels - c0 : group;
        for (int32_t g = 0; g < count; g++) {
            const int32_t c = c0 + g;
            const int8_t *w = slice_s8 != NULL && c >= weight->slice_start && c < weight->slice_stop
                                  ? slice_s8 + (c - weight->slice_start) * taps
                                  : weight->data + c * taps;
            qtrain_dw_weight_pairs(w, kernel_h, kernel_w, wp + g * wp_words);
        }
        for (int32_t b = 0; b < output_dims->n; b++) {
            const uint32_t e0 = (uint32_t)(b * out_h * out_w * channels);
            if (whole) {
                for (int32_t r = 0; r < plane_rows; r++) {
                    qtrain_dw_load_row(input, input_dims, b, c0, count, r, params->pad_top, params->pad_left,
                                       params->input_zero_point, columns, rows, parity, rings, ring_words);
                }
                for (int32_t g = 0; g < count; g++) {
                    const int32_t *pair_rows[MAX_PAIRS];
                    for (int32_t i = 0; i < npairs; i++) {
                        pair_rows[i] = rings + g * ring_words + 2 * i * columns;
                    }
                    const int32_t c = c0 + g;
                    qtrain_dw_output_rows(pair_rows, kernel_h, kernel_w, wp + g * wp_words, out_h, sh * columns,
                                          out_w, params->stride_w, bias != NULL ? bias[c] : 0, multiplier[c], q,
                                          output + e0 + c, channels, mask, e0 + (uint32_t)c);
                }
                continue;
            }
            int32_t next_row = 0; /* the first padded row not loaded yet */
            for (int32_t oy = 0; oy < out_h; oy++) {
                const int32_t r0 = oy * sh;
                if (next_row < r0) {
                    next_row = r0; /* rows a stride larger than the kernel skips are never needed */
                }
                for (; next_row < r0 + kernel_h; next_row++) {
                    qtrain_dw_load_row(input, input_dims, b, c0, count, next_row, params->pad_top, params->pad_left,
                                       params->input_zero_point, columns, rows, parity, rings, ring_words);
                }
                for (int32_t g = 0; g < count; g++) {
                    const int32_t *pair_rows[MAX_PAIRS];
                    for (int32_t i = 0; i < npairs; i++) {
                        pair_rows[i] = rings + g * ring_words + ((r0 + 2 * i) % rows) * columns;
                    }
                    const int32_t c = c0 + g;
                    const uint32_t e = e0 + (uint32_t)((oy * out_w) * channels + c);
                    qtrain_dw_output_rows(pair_rows, kernel_h, kernel_w, wp + g * wp_words, 1, 0, out_w,
                                          params->stride_w, bias != NULL ? bias[c] : 0, multiplier[c], q, output + e,
                                          channels, mask, e);
                }
            }
        }
    }
}

/* One output row of one channel. `window` points at slot 0 of the window's rows in ring column 0;
 * column j's rows are window[j * slots .. j * slots + KH); `pairs[j * npairs + i]` multiplies rows
 * (2i, 2i + 1) of column j. `slots`, `npairs` and `kernel_w` are compile-time constants for the
 * common sizes. */
QTRAIN_INLINE void output_row(const int16_t *window, const int32_t slots, const int32_t npairs, const int32_t kernel_w,
                              const int32_t *pairs, int32_t out_w, int32_t sw, int32_t bias, float multiplier,
                              const qtrain_requant_t *q, int8_t *out, int32_t channels, uint8_t *mask, uint32_t e,
                              const int with_mask) {
    const qtrain_requant_t rq = *q;
    int32_t w[QTRAIN_MAX_DEPTHWISE_KERNEL * MAX_PAIRS];
    for (int32_t i = 0; i < kernel_w * npairs; i++) {
        w[i] = pairs[i];
    }
    const int32_t step = sw * slots;
#pragma clang loop unroll(disable)
    for (int32_t ox = 0; ox < out_w; ox++, window += step) {
        int32_t acc = bias;
        for (int32_t j = 0; j < kernel_w; j++) {
            for (int32_t i = 0; i < npairs; i++) {
                acc = qtrain_smlad(qtrain_read_s16x2(window + j * slots + 2 * i), w[j * npairs + i], acc);
            }
        }
        if (with_mask) {
            uint32_t inside;
            *out = (int8_t)qtrain_requant_mask(acc, multiplier, &rq, &inside);
            qtrain_mask_put(mask, e, inside);
            e += (uint32_t)channels;
        } else {
            *out = (int8_t)qtrain_requant(acc, multiplier, &rq);
        }
        out += channels;
    }
}

#define ROW_VARIANTS(with_mask)                                                                                       \
    if (kernel_h == 3 && kernel_w == 3) {                                                                             \
        output_row(window, 6, 2, 3, pairs, out_w, sw, bias, multiplier, q, out, channels, mask, e, with_mask);        \
    } else if (kernel_h == 5 && kernel_w == 5) {                                                                      \
        output_row(window, 10, 3, 5, pairs, out_w, sw, bias, multiplier, q, out, channels, mask, e, with_mask);       \
    } else if (kernel_h == 7 && kernel_w == 7) {                                                                      \
        output_row(window, 14, 4, 7, pairs, out_w, sw, bias, multiplier, q, out, channels, mask, e, with_mask);       \
    } else {                                                                                                          \
        output_row(window, 2 * kernel_h, (kernel_h + 1) / 2, kernel_w, pairs, out_w, sw, bias, multiplier, q, out,    \
                   channels, mask, e, with_mask);                                                                     \
    }

/* Not inlined: the row loop then owns the registers (weights, window pointer) instead of sharing them
 * with the channel and row bookkeeping of the callers. Also the fused pointwise-depthwise kernel's. */
__attribute__((noinline)) void qtrain_depthwise_output_row(const int16_t *window, int32_t kernel_h, int32_t kernel_w,
                                                           const int32_t *pairs, int32_t out_w, int32_t sw,
                                                           int32_t bias, float multiplier, const qtrain_requant_t *q,
                                                           int8_t *out, int32_t channels, uint8_t *mask, uint32_t e) {
    if (mask != NULL) {
        ROW_VARIANTS(1)
    } else {
        ROW_VARIANTS(0)
    }
}
#undef ROW_VARIANTS

#else
/* Padded row r (r = iy + pt) of channel c of batch b, as int32 x - zx (padding 0), into `row`. */
static void load_row(const int8_t *input, const qtrain_dims_t *input_dims, int32_t b, int32_t c, int32_t r,
                     int32_t pad_top, int32_t pad_left, int32_t zero_point, int32_t columns, int32_t *row) {
    const int32_t iy = r - pad_top;
    int32_t j = 0;
    if (iy >= 0 && iy < input_dims->h) {
        const int32_t channels = input_dims->c;
        const int32_t first = pad_left < columns ? pad_left : columns;
        const int32_t last = pad_left + input_dims->w < columns ? pad_left + input_dims->w : columns;
        for (; j < first; j++) {
            row[j] = 0;
        }
        if (j < last) {
            const int8_t *src = input + ((b * input_dims->h + iy) * input_dims->w + (j - pad_left)) * channels + c;
            for (; j < last; j++, src += channels) {
                row[j] = *src - zero_point;
            }
        }
    }
    for (; j < columns; j++) {
        row[j] = 0;
    }
}

/* One channel: load its padded rows once each into the ring, compute every output row (the DSP
 * path's schedule, see depthwise_channel there). */
static void depthwise_channel(const int8_t *input, const qtrain_dims_t *input_dims, const qtrain_conv_params_t *params,
                              const qtrain_dims_t *output_dims, int32_t kernel_h, int32_t kernel_w, const int8_t *w,
                              int32_t c, int32_t bias, float multiplier, const qtrain_requant_t *q, int32_t *ring,
                              int32_t columns, int8_t *output, uint8_t *mask) {
    const int32_t out_h = output_dims->h, out_w = output_dims->w, channels = output_dims->c;
    const int32_t sh = params->stride_h, sw = params->stride_w;
    const int32_t pad_top = params->pad_top, pad_left = params->pad_left, in_h = input_dims->h, in_w = input_dims->w;
    const qtrain_requant_t rq = *q;
    for (int32_t b = 0; b < output_dims->n; b++) {
        int32_t next_row = 0; /* the first padded row not loaded yet */
        for (int32_t oy = 0; oy < out_h; oy++) {
            const int32_t r0 = oy * sh;
            if (next_row < r0) {
                next_row = r0; /* rows a stride larger than the kernel skips are never needed */
            }
            for (; next_row < r0 + kernel_h; next_row++) {
                load_row(input, input_dims, b, c, next_row, pad_top, pad_left, params->input_zero_point, columns,
                         ring + (next_row % kernel_h) * columns);
            }
            /* Taps on padding add 0: only the rectangle [kh0, kh1) x [kw0, kw1) inside the image is summed. */
            const int32_t kh0 = pad_top > r0 ? pad_top - r0 : 0;
            const int32_t kh1 = in_h + pad_top - r0 < kernel_h ? in_h + pad_top - r0 : kernel_h;
            const int32_t *rows[QTRAIN_MAX_DEPTHWISE_KERNEL];
            for (int32_t kh = kh0; kh < kh1; kh++) {
                rows[kh] = ring + ((r0 + kh) % kernel_h) * columns;
            }
            uint32_t e = (uint32_t)(((b * out_h + oy) * out_w) * channels + c);
            for (int32_t ox = 0; ox < out_w; ox++, e += (uint32_t)channels) {
                const int32_t x0 = ox * sw;
                const int32_t kw0 = pad_left > x0 ? pad_left - x0 : 0;
                const int32_t kw1 = in_w + pad_left - x0 < kernel_w ? in_w + pad_left - x0 : kernel_w;
                int32_t acc = bias;
                for (int32_t kh = kh0; kh < kh1; kh++) {
                    const int32_t *x = rows[kh] + x0;
                    const int8_t *wr = w + kh * kernel_w;
                    for (int32_t kw = kw0; kw < kw1; kw++) {
                        acc += x[kw] * wr[kw];
                    }
                }
                qtrain_store_output(acc, multiplier, &rq, output, e, mask);
            }
        }
    }
}
#endif

qtrain_status_t qtrain_depthwise_conv2d_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                           const qtrain_dims_t *input_dims, const int8_t *input,
                                           const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                           const int32_t *bias, const float *multiplier,
                                           const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask) {
    if (!qtrain_conv_args_valid(params, input_dims, filter_dims, output_dims) || params->groups != input_dims->c ||
        filter_dims->n != input_dims->c || filter_dims->c != 1 || filter_dims->h > QTRAIN_MAX_DEPTHWISE_KERNEL ||
        filter_dims->w > QTRAIN_MAX_DEPTHWISE_KERNEL || !qtrain_weight_valid(weight, filter_dims->n)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    int32_t scratch = qtrain_depthwise_conv2d_s8_get_buffer_size(params, input_dims, filter_dims, output_dims, weight);
    if (!qtrain_ctx_fits(ctx, scratch) ||
        !qtrain_conv_placement_ok(QTRAIN_IN_PLACE_DEPTHWISE, params, input_dims, input, filter_dims, output_dims,
                                  output)) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t channels = input_dims->c, kernel_h = filter_dims->h, kernel_w = filter_dims->w;
    const int32_t taps = kernel_h * kernel_w;
    const int32_t columns = ring_columns(params, filter_dims, output_dims);
    const int32_t ring_bytes = qtrain_align4(2 * column_slots(kernel_h) * columns);
    uint8_t *buf = ctx != NULL ? (uint8_t *)ctx->buf : NULL;
#if QTRAIN_USE_DSP
    /* the master slice's int8 values first, the rings after them (as many as fit: see depthwise_groups) */
    const int32_t slice_bytes = qtrain_weight_slice_bytes(weight, slice_elements(filter_dims, weight));
    const int8_t *slice_s8 = qtrain_weight_slice_s8(weight, slice_elements(filter_dims, weight), buf);
    (void)ring_bytes;
#else
    const int8_t *slice_s8 = qtrain_weight_slice_s8(weight, slice_elements(filter_dims, weight), buf + ring_bytes);
#endif
    const qtrain_requant_t q = qtrain_requant_make(params->output_zero_point, params->clamp_min, params->clamp_max);
    if (mask != NULL) {
        qtrain_mask_clear(mask, output_dims->n * output_dims->h * output_dims->w * channels);
    }

#if QTRAIN_USE_DSP
    int32_t *rings = (int32_t *)(void *)(buf + slice_bytes);
    const int32_t done = depthwise_fours(input, input_dims, params, output_dims, kernel_h, kernel_w, weight, slice_s8,
                                         bias, multiplier, &q, rings, ctx->size - slice_bytes, columns, output, mask);
    depthwise_groups(input, input_dims, params, output_dims, kernel_h, kernel_w, weight, slice_s8, bias, multiplier, &q,
                     rings, ctx->size - slice_bytes, columns, output, mask, done);
    (void)taps;
#else
    for (int32_t c = 0; c < channels; c++) {
        const int8_t *w = slice_s8 != NULL && c >= weight->slice_start && c < weight->slice_stop
                              ? slice_s8 + (c - weight->slice_start) * taps
                              : weight->data + c * taps;
        const int32_t b = bias != NULL ? bias[c] : 0;
        depthwise_channel(input, input_dims, params, output_dims, kernel_h, kernel_w, w, c, b, multiplier[c], &q,
                          (int32_t *)(void *)buf, columns, output, mask);
    }
#endif
    return QTRAIN_STATUS_OK;
}
