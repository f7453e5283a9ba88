/*
 * qtrain_fused_pointwise_depthwise_s8.c - a pointwise convolution streamed into a depthwise convolution
 * (qtrain.fused_pointwise_depthwise): y = depthwise(pointwise(x)) through the int8 intermediate tensor
 * mid [N, H, W, C_mid], bit for bit what qtrain_conv2d_1x1_s8 then qtrain_depthwise_conv2d_s8 compute,
 * but mid never exists whole.
 *
 * Schedule. The intermediate channels go in blocks of B channels; per block, the output rows go in
 * bands of NB rows. Before a band, the intermediate rows its windows need (rows oy0 * sh - pt ..
 * (oy0 + NB - 1) * sh - pt + KH - 1 inside the image) that are not computed yet are computed by the
 * pointwise stage into a ring of R = (NB - 1) * sh + KH rows (row r in slot r mod R; W x B int8 each),
 * so every intermediate element is computed exactly once (rows a stride larger than the kernel skips
 * never are); then each channel of the block gets the band's output rows from the ring.
 *
 * B and NB follow from the scratch the caller gives (ctx->size; at least get_buffer_size, which is
 * B = min(C_mid, QTRAIN_FUSED_CHANNEL_BLOCK), NB = 1): among B = ceil(C_mid / P) for P blocks (even
 * below C_mid: the pointwise engine computes channel pairs) and NB = 1 or floor((KH - 1) / sh) + 1,
 * the schedule that fits with the fewest estimated instructions (schedule_cost: each block unpacks the
 * input pixels again; a band builds its window rows once for NB output rows). The bytes written do
 * not depend on B or NB.
 *
 * DSP path: the pointwise stage is the 1x1 kernel's pixel-quad engine (qtrain_unpack_quad +
 * qtrain_quad_outputs on the block's weight rows); the depthwise stage builds, per channel and band,
 * the band's padded rows as int16 (x - zmid, padding 0) in the depthwise kernel's column-interleaved
 * layout (2 * KH slots per column; the band's (NB - 1) * sh + KH <= 2 * KH - 1 rows in slots 0, 1, ...)
 * and runs the depthwise kernel's row routine (qtrain_depthwise_output_row) on the window of each
 * output row (slot k * sh for the band's k-th row), with the block's weight pairs precomputed.
 * Portable path: the same schedule; one pixel at a time for the pointwise stage (as the 1x1 kernel),
 * and each depthwise output sums its taps inside the image straight from the int8 ring.
 *
 * Integer accumulation is exact and each requantization is the one of the separate kernels
 * (numerics.conv2d_with_mask without a mask), so both paths give the separate kernels' bytes.
 */
#include "qtrain_kernels_support.h"

typedef struct {
    int32_t block;     /* channels per block */
    int32_t band;      /* output rows per band */
    int32_t ring_rows; /* (band - 1) * sh + KH */
    int32_t unpacked;  /* bytes: one unpacked pixel quad, 8 * C_in */
    int32_t pairs;     /* bytes: the block's depthwise weight pairs */
    int32_t window;    /* bytes: one channel's int16 window, 2 * KH slots per column */
    int32_t ring;      /* bytes: ring_rows rows of W x block int8 */
    int32_t columns;   /* window columns: (OW - 1) * sw + KW */
    int32_t four;      /* DSP: the depthwise stage runs four channels at a time (qtrain_dw4_output_rows) */
    int32_t stored;    /* four: pair rows per band (only those of one parity for an even stride) */
} scratch_layout_t;

/* four: the window holds a group of four channels' interleaved pair rows for a band (word (j * 4 + g) of
 * each; with an even stride the pair rows of one parity only), instead of one channel's int16 window. */
static scratch_layout_t layout(const qtrain_dims_t *input_dims, const qtrain_conv_params_t *dw_params,
                               const qtrain_dims_t *dw_filter_dims, const qtrain_dims_t *output_dims, int32_t block,
                               int32_t band, int32_t four) {
    scratch_layout_t l;
    const int32_t kh = dw_filter_dims->h, kw = dw_filter_dims->w, sh = dw_params->stride_h;
    const int32_t npairs = (kh + 1) / 2;
    l.block = block;
    l.band = band;
    l.ring_rows = (band - 1) * dw_params->stride_h + kh;
    l.columns = (output_dims->w - 1) * dw_params->stride_w + kw;
    l.unpacked = 8 * input_dims->c;
    l.pairs = 4 * block * kw * ((kh + 1) / 2);
    l.window = qtrain_align4(4 * kh * l.columns);
    l.ring = qtrain_align4(l.ring_rows * input_dims->w * block);
    l.four = four;
    l.stored = (sh & 1) == 0 ? (band - 1) * sh / 2 + npairs : (band - 1) * sh + 2 * npairs - 1;
    if (four) {
        l.window = 16 * l.stored * l.columns;
    }
    return l;
}

static int32_t layout_bytes(const scratch_layout_t *l) {
    return l->unpacked + l->pairs + l->window + l->ring;
}

static int32_t min_block(int32_t c_mid) {
    return c_mid < QTRAIN_FUSED_CHANNEL_BLOCK ? c_mid : QTRAIN_FUSED_CHANNEL_BLOCK;
}

/* Instructions a schedule adds on the Cortex-M7, roughly (measured with tools/bench_kernels.py): each
 * channel block unpacks every input pixel quad again (about 50 + 2 * C_in per pixel), each band builds
 * its window rows (one channel's: about 4 instructions per element; four channels': about 3.5 per pair
 * word), and each output costs about 2 * ceil(KH / 2) * KW + 15 one channel at a time, 1.5 *
 * ceil(KH / 2) * KW + 11 four at a time. Only used to choose between schedules that fit. */
static float schedule_cost(const scratch_layout_t *l, const qtrain_dims_t *input_dims, int32_t c_mid,
                           const qtrain_dims_t *dw_filter_dims, const qtrain_dims_t *output_dims) {
    const int32_t blocks = (c_mid + l->block - 1) / l->block;
    const int32_t bands = (output_dims->h + l->band - 1) / l->band, taps = (dw_filter_dims->h + 1) / 2 * dw_filter_dims->w;
    const float unpack = (float)blocks * (float)(input_dims->h * input_dims->w) * (float)(50 + 2 * input_dims->c);
    const float outputs = (float)(output_dims->h * output_dims->w * c_mid);
    if (l->four) {
        return unpack + 3.5f * (float)bands * (float)c_mid * (float)(l->stored * l->columns) +
               outputs * (1.5f * (float)taps + 11.0f);
    }
    return unpack + 4.0f * (float)bands * (float)c_mid * (float)l->columns * (float)l->ring_rows +
           outputs * (2.0f * (float)taps + 15.0f);
}

/* The schedule for `available` bytes of scratch (>= the minimum): of the block sizes ceil(C_mid / P) (made
 * even below C_mid) and bands 1 or floor((KH - 1) / sh) + 1 that fit, the one with the lowest
 * schedule_cost (the first of equals: fewer blocks, then band 1). */
static scratch_layout_t choose_layout(const qtrain_dims_t *input_dims, int32_t c_mid,
                                      const qtrain_conv_params_t *dw_params, const qtrain_dims_t *dw_filter_dims,
                                      const qtrain_dims_t *output_dims, int32_t available) {
    const int32_t max_band = (dw_filter_dims->h - 1) / dw_params->stride_h + 1;
    /* the last candidate (block <= QTRAIN_FUSED_CHANNEL_BLOCK, band 1) always fits in the minimum */
    scratch_layout_t best = layout(input_dims, dw_params, dw_filter_dims, output_dims, min_block(c_mid), 1, 0);
    float best_cost = __builtin_inff();
    const int32_t most = (c_mid + QTRAIN_FUSED_CHANNEL_BLOCK - 1) / QTRAIN_FUSED_CHANNEL_BLOCK;
    for (int32_t blocks = 1; blocks <= most; blocks++) {
        int32_t block = (c_mid + blocks - 1) / blocks;
        if (block < c_mid) {
            block += block & 1; /* even, so no block ends with a half-used channel pair */
        }
        const int32_t bands[4] = {1, max_band, 2 * max_band, 4 * max_band};
        for (int32_t four = 0; four <= QTRAIN_USE_DSP; four++) {
            const int32_t b4 = four && block < c_mid ? (block + 3) & ~3 : block; /* whole groups of four */
            if (four && b4 % 4 != 0) {
                continue;
            }
            /* bands beyond max_band only when every block is whole groups of four: a last block of
             * another size runs one channel at a time, whose window holds at most 2 * KH - 1 rows */
            for (int32_t i = 0; i < (four && c_mid % 4 == 0 ? 4 : 2); i++) {
                const scratch_layout_t l =
                    layout(input_dims, dw_params, dw_filter_dims, output_dims, b4, bands[i], four);
                const float cost = schedule_cost(&l, input_dims, c_mid, dw_filter_dims, output_dims);
                if (layout_bytes(&l) <= available && cost < best_cost) {
                    best = l;
                    best_cost = cost;
                }
            }
        }
    }
    return best;
}

int32_t qtrain_fused_pointwise_depthwise_s8_get_buffer_size(const qtrain_conv_params_t *pw_params,
                                                            const qtrain_dims_t *input_dims,
                                                            const qtrain_dims_t *pw_filter_dims,
                                                            const qtrain_conv_params_t *dw_params,
                                                            const qtrain_dims_t *dw_filter_dims,
                                                            const qtrain_dims_t *output_dims) {
    (void)pw_params;
    const scratch_layout_t l =
        layout(input_dims, dw_params, dw_filter_dims, output_dims, min_block(pw_filter_dims->n), 1, 0);
    return layout_bytes(&l);
}

#if QTRAIN_USE_DSP
/* Pointwise stage: one intermediate row (W pixels) of the block's `block` channels, four pixels at a time
 * (a short last quad repeats its last pixel), into `out` (pixel p at out + p * stride). `segment` holds
 * the block's weight rows; bias and multiplier start at the block's first channel. */
static void pointwise_row(const int8_t *in, int32_t width, int32_t cin, const qtrain_weight_segment_t *segment,
                          const int32_t *bias, const float *multiplier, int32_t block, int32_t stride, int32_t zx,
                          const qtrain_requant_t *q, int8_t *out, int32_t *unpacked, const int32_t *wide) {
    qtrain_quad_line(in, cin, width, segment, 1, zx, 0, block, bias, multiplier, q, out, stride, NULL, 0u, 0u, unpacked,
                     wide);
}

/* Depthwise stage: the window of channel c for a band whose first padded row is intermediate row r0
 * (may be negative): slot i of column j = mid[r0 + i, j - pl, c] - zp for i < rows, 0 outside the image. */
static __attribute__((noinline)) void build_window(const int8_t *ring, int32_t ring_row, int32_t ring_rows,
                                                  int32_t height, int32_t width, int32_t block, int32_t c, int32_t r0,
                                                  int32_t rows, int32_t kernel_h, int32_t pad_left, int32_t columns,
                                                  int32_t zero_point, int16_t *window) {
    const int32_t slots = 2 * kernel_h;
    const int32_t first = pad_left < columns ? pad_left : columns;
    const int32_t last = pad_left + width < columns ? pad_left + width : columns;
    for (int32_t i = 0; i < rows; i++) {
        const int32_t iy = r0 + i;
        int16_t *dst = window + i;
        int32_t j = 0;
        if (iy >= 0 && iy < height && first < last) {
            for (; j < first; j++, dst += slots) {
                *dst = 0;
            }
            const int8_t *src = ring + (iy % ring_rows) * ring_row + (j - pad_left) * block + c;
            for (; j < last; j++, dst += slots, src += block) {
                *dst = (int16_t)(*src - zero_point);
            }
        }
        for (; j < columns; j++, dst += slots) {
            *dst = 0;
        }
    }
}
#else
/* Pointwise stage, portable: one pixel at a time, its input copied as int32 (x - zx) first. `w` holds
 * the block's weight rows (C_in each); bias and multiplier start at the block's first channel; pixel p
 * goes to out + p * stride. */
static void pointwise_row(const int8_t *in, int32_t width, int32_t cin, const int8_t *w, const int32_t *bias,
                          const float *multiplier, int32_t block, int32_t stride, int32_t zx, const qtrain_requant_t *q,
                          int8_t *out, int32_t *unpacked) {
    for (int32_t p = 0; p < width; p++) {
        const int8_t *x = in + p * cin;
        for (int32_t c = 0; c < cin; c++) {
            unpacked[c] = x[c] - zx;
        }
        for (int32_t o = 0; o < block; o++) {
            int32_t acc = bias != NULL ? bias[o] : 0;
            const int8_t *wo = w + o * cin;
            for (int32_t c = 0; c < cin; c++) {
                acc += unpacked[c] * wo[c];
            }
            qtrain_store_output(acc, multiplier[o], q, out, (uint32_t)(p * stride + o), NULL);
        }
    }
}

/* Depthwise stage, portable: output row oy of channel c (window rows from intermediate row r0), each
 * output summing only its taps inside the image. `w` is the channel's [KH, KW] kernel. */
static void depthwise_row(const int8_t *ring, int32_t ring_row, int32_t ring_rows, int32_t height, int32_t width,
                          int32_t block, int32_t c, int32_t r0, int32_t kernel_h, int32_t kernel_w, const int8_t *w,
                          int32_t sw, int32_t pad_left, int32_t zero_point, int32_t bias, float multiplier,
                          const qtrain_requant_t *q, int8_t *out, int32_t out_w, int32_t channels) {
    const int32_t kh0 = r0 < 0 ? -r0 : 0;
    const int32_t kh1 = height - r0 < kernel_h ? height - r0 : kernel_h;
    for (int32_t ox = 0; ox < out_w; ox++) {
        const int32_t x0 = ox * sw - pad_left;
        const int32_t kw0 = x0 < 0 ? -x0 : 0;
        const int32_t kw1 = width - x0 < kernel_w ? width - x0 : kernel_w;
        int32_t acc = bias;
        for (int32_t i = kh0; i < kh1; i++) {
            const int8_t *row = ring + ((r0 + i) % ring_rows) * ring_row + c;
            const int8_t *wr = w + i * kernel_w;
            for (int32_t j = kw0; j < kw1; j++) {
                acc += (row[(x0 + j) * block] - zero_point) * wr[j];
            }
        }
        qtrain_store_output(acc, multiplier, q, out, (uint32_t)(ox * channels), NULL);
    }
}
#endif

qtrain_status_t qtrain_fused_pointwise_depthwise_s8(
    const qtrain_context_t *ctx, const qtrain_conv_params_t *pw_params, const qtrain_dims_t *input_dims,
    const int8_t *input, const qtrain_dims_t *pw_filter_dims, const int8_t *pw_weight, const int32_t *pw_bias,
    const float *pw_multiplier, const qtrain_conv_params_t *dw_params, const qtrain_dims_t *dw_filter_dims,
    const int8_t *dw_weight, const int32_t *dw_bias, const float *dw_multiplier, const qtrain_dims_t *output_dims,
    int8_t *output) {
    if (input_dims == NULL || pw_filter_dims == NULL || input == NULL || pw_weight == NULL || pw_multiplier == NULL ||
        dw_weight == NULL || dw_multiplier == NULL || output == NULL) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const qtrain_dims_t mid_dims = {input_dims->n, input_dims->h, input_dims->w, pw_filter_dims->n};
    if (!qtrain_conv_args_valid(pw_params, input_dims, pw_filter_dims, &mid_dims) || pw_filter_dims->h != 1 ||
        pw_filter_dims->w != 1 || pw_params->groups != 1 || pw_params->stride_h != 1 || pw_params->stride_w != 1 ||
        pw_params->pad_top != 0 || pw_params->pad_left != 0 ||
        !qtrain_conv_args_valid(dw_params, &mid_dims, dw_filter_dims, output_dims) ||
        dw_params->groups != mid_dims.c || dw_filter_dims->n != mid_dims.c || dw_filter_dims->c != 1 ||
        dw_filter_dims->h > QTRAIN_MAX_DEPTHWISE_KERNEL || dw_filter_dims->w > QTRAIN_MAX_DEPTHWISE_KERNEL ||
        dw_params->input_zero_point != pw_params->output_zero_point) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t scratch = qtrain_fused_pointwise_depthwise_s8_get_buffer_size(pw_params, input_dims, pw_filter_dims,
                                                                                dw_params, dw_filter_dims, output_dims);
    if (!qtrain_ctx_fits(ctx, scratch) ||
        qtrain_overlap(input, qtrain_dims_count(input_dims), output, qtrain_dims_count(output_dims)) !=
            QTRAIN_OVERLAP_NONE) {
        return QTRAIN_STATUS_ARG_ERROR; /* never in place */
    }
    const int32_t height = input_dims->h, width = input_dims->w, cin = input_dims->c, c_mid = mid_dims.c;
    int32_t available = ctx->size;
#if QTRAIN_USE_DSP
    /* The pointwise weights widened once with their biases and multipliers (qtrain_quad_widen) at the end
     * of the scratch, when the minimum schedule still fits before them: every intermediate pixel quad then
     * reads them ready. */
    const qtrain_weight_segment_t all_rows = {0, cin, pw_weight, cin};
    const int32_t wide_bytes = qtrain_quad_widen_bytes(&all_rows, 1, c_mid);
    const int32_t *wide = NULL;
    if (wide_bytes > 0 && ((ctx->size - wide_bytes) & ~3) >= scratch) {
        available = (ctx->size - wide_bytes) & ~3;
        int32_t *dst = (int32_t *)(void *)((uint8_t *)ctx->buf + available);
        qtrain_quad_widen(&all_rows, 1, c_mid, pw_bias, pw_multiplier, dst);
        wide = dst;
    }
#endif
    const scratch_layout_t l = choose_layout(input_dims, c_mid, dw_params, dw_filter_dims, output_dims, available);
    const int32_t kernel_h = dw_filter_dims->h, kernel_w = dw_filter_dims->w, taps = kernel_h * kernel_w;
    const int32_t out_h = output_dims->h, out_w = output_dims->w;
    const int32_t sh = dw_params->stride_h, sw = dw_params->stride_w;
    const int32_t pad_top = dw_params->pad_top, pad_left = dw_params->pad_left;
    const int32_t zx = pw_params->input_zero_point, zmid = dw_params->input_zero_point;
    uint8_t *buf = (uint8_t *)ctx->buf;
    int32_t *unpacked = (int32_t *)(void *)buf;
    int32_t *pairs = (int32_t *)(void *)(buf + l.unpacked);
    int16_t *window = (int16_t *)(void *)(buf + l.unpacked + l.pairs);
    int8_t *ring = (int8_t *)(buf + l.unpacked + l.pairs + l.window);
    const int32_t ring_row = width * l.block;
    const qtrain_requant_t pq =
        qtrain_requant_make(pw_params->output_zero_point, pw_params->clamp_min, pw_params->clamp_max);
    const qtrain_requant_t dq =
        qtrain_requant_make(dw_params->output_zero_point, dw_params->clamp_min, dw_params->clamp_max);
#if QTRAIN_USE_DSP
    const int32_t npairs = (kernel_h + 1) / 2;
#else
    (void)pairs;
    (void)window;
#endif

    for (int32_t b = 0; b < input_dims->n; b++) {
        const int8_t *image = input + b * height * width * cin;
        for (int32_t ob = 0; ob < c_mid; ob += l.block) {
            const int32_t block = c_mid - ob < l.block ? c_mid - ob : l.block;
            const int32_t *bias = pw_bias != NULL ? pw_bias + ob : NULL;
#if QTRAIN_USE_DSP
            const qtrain_weight_segment_t segment = {0, cin, pw_weight + ob * cin, cin};
            const int four = l.four && block % 4 == 0;
            if (four) {
                for (int32_t c = 0; c < block; c += 4) {
                    const int8_t *w[4] = {dw_weight + (ob + c) * taps, dw_weight + (ob + c + 1) * taps,
                                          dw_weight + (ob + c + 2) * taps, dw_weight + (ob + c + 3) * taps};
                    qtrain_dw4_weights(w, kernel_h, kernel_w, pairs + c * kernel_w * npairs);
                }
            } else {
                for (int32_t c = 0; c < block; c++) {
                    qtrain_depthwise_pairs(dw_weight + (ob + c) * taps, kernel_h, kernel_w,
                                           pairs + c * kernel_w * npairs);
                }
            }
#endif
            int32_t next_row = 0; /* the first intermediate row not computed yet */
            for (int32_t oy0 = 0; oy0 < out_h; oy0 += l.band) {
                const int32_t band = out_h - oy0 < l.band ? out_h - oy0 : l.band;
                const int32_t r0 = oy0 * sh - pad_top, rows = (band - 1) * sh + kernel_h;
                const int32_t lo = r0 > 0 ? r0 : 0;
                const int32_t hi = r0 + rows < height ? r0 + rows : height;
                if (next_row < lo) {
                    next_row = lo; /* rows a stride larger than the kernel skips are never needed */
                }
                for (; next_row < hi; next_row++) {
                    int8_t *dst = ring + (next_row % l.ring_rows) * ring_row;
#if QTRAIN_USE_DSP
                    pointwise_row(image + next_row * width * cin, width, cin, &segment, bias, pw_multiplier + ob,
                                  block, l.block, zx, &pq, dst, unpacked, wide != NULL ? wide + ob * qtrain_quad_widened_words(cin) : NULL);
#else
                    pointwise_row(image + next_row * width * cin, width, cin, pw_weight + ob * cin, bias,
                                  pw_multiplier + ob, block, l.block, zx, &pq, dst, unpacked);
#endif
                }
                int8_t *out = output + ((b * out_h + oy0) * out_w) * c_mid + ob;
#if QTRAIN_USE_DSP
                if (four) {
                    /* four channels at a time: the band's pair rows from the ring, then its output rows */
                    const int even = (sh & 1) == 0;
                    const int32_t stored = even ? (band - 1) * sh / 2 + npairs : (band - 1) * sh + 2 * npairs - 1;
                    const int32_t first = pad_left < l.columns ? pad_left : l.columns;
                    const int32_t last = pad_left + width < l.columns ? pad_left + width : l.columns;
                    int32_t *plane = (int32_t *)(void *)window;
                    for (int32_t c = 0; c < block; c += 4) {
                        for (int32_t m = 0; m < stored; m++) {
                            const int32_t ya = oy0 * sh + (even ? 2 * m : m) - pad_top, yb = ya + 1;
                            const int8_t *a = ya >= 0 && ya < height
                                                  ? ring + (ya % l.ring_rows) * ring_row + (first - pad_left) * l.block + c
                                                  : NULL;
                            const int8_t *bb = yb >= 0 && yb < height
                                                   ? ring + (yb % l.ring_rows) * ring_row + (first - pad_left) * l.block + c
                                                   : NULL;
                            qtrain_dw4_pair_row(a, bb, l.block, first, last, l.columns, zmid, plane + m * 4 * l.columns);
                        }
                        qtrain_dw4_output_rows(plane, 4 * l.columns, even ? 1 : 2, even ? sh / 2 : sh, kernel_h,
                                               kernel_w, pairs + c * kernel_w * npairs, band, out_w, sw,
                                               dw_bias != NULL ? dw_bias + ob + c : NULL, dw_multiplier + ob + c, &dq,
                                               out + c, c_mid, NULL, 0);
                    }
                    continue;
                }
#endif
                for (int32_t c = 0; c < block; c++) {
                    const int32_t bias_c = dw_bias != NULL ? dw_bias[ob + c] : 0;
#if QTRAIN_USE_DSP
                    build_window(ring, ring_row, l.ring_rows, height, width, l.block, c, r0, rows, kernel_h, pad_left,
                                 l.columns, zmid, window);
                    for (int32_t k = 0; k < band; k++) {
                        qtrain_depthwise_output_row(window + k * sh, kernel_h, kernel_w, pairs + c * kernel_w * npairs,
                                                    out_w, sw, bias_c, dw_multiplier[ob + c], &dq,
                                                    out + k * out_w * c_mid + c, c_mid, NULL, 0);
                    }
#else
                    for (int32_t k = 0; k < band; k++) {
                        depthwise_row(ring, ring_row, l.ring_rows, height, width, l.block, c, r0 + k * sh, kernel_h,
                                      kernel_w, dw_weight + (ob + c) * taps, sw, pad_left, zmid, bias_c,
                                      dw_multiplier[ob + c], &dq, out + k * out_w * c_mid + c, out_w, c_mid);
                    }
#endif
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
