/*
 * qtrain_group_norm.c - qtrain.group_norm (int8 in, fp32 statistics, int8 out) and its gradients
 * qtrain.group_norm_input_grad / qtrain.group_norm_gamma_grad, operation for operation as
 * dialects/qtrain/group_norm.py states them (the build uses -ffp-contract=off: nothing is fused).
 *
 * Statistics: the group's sums of x and x^2 are exact integers. The DSP path takes four int8 values
 * per word, SXTB16 splits them into two pairs of 16-bit lanes and SMLAD adds both lanes' products to
 * 32-bit accumulators (x * x for the squares, x * 1 for the sum), flushed into 64-bit totals every
 * row of pixels (or every 2^16 values, for longer rows: clear of int32 overflow). The portable path
 * adds one value at a time. Both give the same integers, so the same float statistics.
 */
#include "qtrain_kernels_support.h"

typedef struct {
    float mean;
    float inv_std;
    float n; /* fp32(elements of the group) */
} gn_stats_t;

/* Largest number of int8 values accumulated in 32 bits before a flush: 2^16 * 128^2 = 2^30. */
#define GN_FLUSH_ELEMENTS 65536
_Static_assert(QTRAIN_GROUP_NORM_MAX_CHANNELS <= GN_FLUSH_ELEMENTS, "one pixel's channels must fit one flush");

static int gn_args_ok(const qtrain_dims_t *dims, int32_t groups, float epsilon) {
    if (dims == NULL || dims->n < 1 || dims->h < 1 || dims->w < 1 || dims->c < 1 || groups < 1 ||
        dims->c % groups != 0 || !(epsilon > 0.0f)) {
        return 0;
    }
    const int64_t group_elements = (int64_t)dims->h * dims->w * (dims->c / groups);
    return group_elements <= QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS && dims->c / groups <= QTRAIN_GROUP_NORM_MAX_CHANNELS;
}

/* fp32(v) for 0 <= v < 2^63, rounded to nearest even like C's conversion, without the runtime's
 * __aeabi_ul2f (the targets link no compiler runtime): above 2^24 the top 24 bits are rounded by hand
 * and scaled by an exact power of two. */
static float gn_u64_to_f32(uint64_t v) {
    if (v < (1u << 24)) {
        return (float)(uint32_t)v;
    }
    int32_t shift = 0;
    while ((v >> shift) >= (1u << 24)) {
        shift++;
    }
    uint32_t mantissa = (uint32_t)(v >> shift);
    const uint64_t rest = v & (((uint64_t)1 << shift) - 1u), half = (uint64_t)1 << (shift - 1);
    if (rest > half || (rest == half && (mantissa & 1u))) {
        mantissa++; /* may reach 2^24: still exact in fp32 */
    }
    return (float)mantissa * qtrain_bits_float((uint32_t)(127 + shift) << 23);
}

/* Sum and sum of squares of the raw int8 values of `pixels` pixels of one group (cpg channels from `x`,
 * pixel stride `stride`), into 32-bit accumulators (the caller keeps pixels * cpg <= GN_FLUSH_ELEMENTS). */
QTRAIN_INLINE void gn_raw_sums(const int8_t *x, int32_t pixels, int32_t cpg, int32_t stride, int32_t *sum,
                               int32_t *sum_sq) {
    int32_t s = 0, ss = 0;
#if QTRAIN_USE_DSP
    if (cpg % 4 == 0) {
        const int32_t ones = 0x00010001;
        for (int32_t p = 0; p < pixels; p++, x += stride) {
            for (int32_t k = 0; k < cpg; k += 4) {
                const int32_t word = qtrain_read_s32(x + k);
                const int32_t even = qtrain_sxtb16(word);
                const int32_t odd = qtrain_sxtb16_ror8(word);
                ss = qtrain_smlad(even, even, ss);
                ss = qtrain_smlad(odd, odd, ss);
                s = qtrain_smlad(even, ones, s);
                s = qtrain_smlad(odd, ones, s);
            }
        }
        *sum = s;
        *sum_sq = ss;
        return;
    }
#endif
    for (int32_t p = 0; p < pixels; p++, x += stride) {
        for (int32_t k = 0; k < cpg; k++) {
            const int32_t v = x[k];
            s += v;
            ss += v * v;
        }
    }
    *sum = s;
    *sum_sq = ss;
}

/* mean and inv_std of group `g` of sample `b` (module docstring of dialects/qtrain/group_norm.py). */
static gn_stats_t gn_statistics(const qtrain_dims_t *dims, const int8_t *input, int32_t zero_point, int32_t groups,
                                float epsilon, int32_t b, int32_t g) {
    const int32_t cpg = dims->c / groups, pixels = dims->h * dims->w;
    const int8_t *x = input + (int64_t)b * pixels * dims->c + g * cpg;
    /* Pixels per flush: a row when it is short enough (the usual case), else as many as fit. */
    int32_t chunk = dims->w;
    if ((int64_t)chunk * cpg > GN_FLUSH_ELEMENTS) {
        chunk = GN_FLUSH_ELEMENTS / cpg;
    }
    int64_t sx = 0, sxx = 0;
    for (int32_t p = 0; p < pixels; p += chunk) {
        const int32_t count = pixels - p < chunk ? pixels - p : chunk;
        int32_t s, ss;
        gn_raw_sums(x + (int64_t)p * dims->c, count, cpg, dims->c, &s, &ss);
        sx += s;
        sxx += (uint32_t)ss; /* at most 2^30: never negative, the cast only documents it */
    }
    const int64_t n = (int64_t)pixels * cpg, z = zero_point;
    /* d = x - zx: S1 = sum x - n zx, S2 = sum x^2 - 2 zx sum x + n zx^2, M2 = n S2 - S1^2, all exact. */
    const int64_t s1 = sx - n * z;
    const int64_t s2 = sxx - 2 * z * sx + n * z * z;
    const int64_t m2 = n * s2 - s1 * s1;
    gn_stats_t st;
    st.n = (float)(int32_t)n; /* n <= 2^20, |S1| <= 2^28: int32, converted by the FPU */
    st.mean = (float)(int32_t)s1 / st.n;
    const float var = (gn_u64_to_f32((uint64_t)m2) / st.n) / st.n;
    st.inv_std = 1.0f / __builtin_sqrtf(var + epsilon);
    return st;
}

qtrain_status_t qtrain_group_norm_s8(const qtrain_dims_t *dims, const int8_t *input, int32_t input_zero_point,
                                     int32_t groups, float epsilon, const float *gamma, const float *beta,
                                     int32_t output_zero_point, int32_t clamp_min, int32_t clamp_max, int8_t *output,
                                     uint8_t *mask) {
    if (!gn_args_ok(dims, groups, epsilon) || input == NULL || gamma == NULL || beta == NULL || output == NULL ||
        clamp_min < -128 || clamp_min > clamp_max || clamp_max > 127) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t channels = dims->c, cpg = channels / groups, pixels = dims->h * dims->w;
    const qtrain_requant_t q = qtrain_requant_make(output_zero_point, clamp_min, clamp_max);
    if (mask != NULL) {
        qtrain_mask_clear(mask, dims->n * pixels * channels);
    }
    const float zx = (float)input_zero_point;
    for (int32_t b = 0; b < dims->n; b++) {
        for (int32_t g = 0; g < groups; g++) {
            const gn_stats_t st = gn_statistics(dims, input, input_zero_point, groups, epsilon, b, g);
            /* Channel by channel: the per-channel affine map is two constants (a[c], b[c]). Every group's
             * statistics are taken before any of its outputs is written, so output may be input. */
            for (int32_t k = 0; k < cpg; k++) {
                const int32_t c = g * cpg + k;
                const float a = st.inv_std * gamma[c];
                const float shift = beta[c] - st.mean * a;
                int32_t e = b * pixels * channels + c;
                for (int32_t p = 0; p < pixels; p++, e += channels) {
                    const float t = ((float)input[e] - zx) * a + shift;
                    if (mask != NULL) {
                        uint32_t inside;
                        output[e] = (int8_t)qtrain_requant_scaled_mask(t, &q, &inside);
                        qtrain_mask_put(mask, (uint32_t)e, inside);
                    } else {
                        output[e] = (int8_t)qtrain_requant_scaled(t, &q);
                    }
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_group_norm_input_grad_f32(const qtrain_dims_t *dims, const int8_t *input,
                                                 int32_t input_zero_point, int32_t groups, float epsilon,
                                                 const float *gamma, const float *grad, float *input_grad) {
    if (!gn_args_ok(dims, groups, epsilon) || input == NULL || gamma == NULL || grad == NULL || input_grad == NULL) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t channels = dims->c, cpg = channels / groups, pixels = dims->h * dims->w;
    const float zx = (float)input_zero_point;
    for (int32_t b = 0; b < dims->n; b++) {
        for (int32_t g = 0; g < groups; g++) {
            const gn_stats_t st = gn_statistics(dims, input, input_zero_point, groups, epsilon, b, g);
            const int32_t first = b * pixels * channels + g * cpg;
            /* Pass 1: the two sums over the group, in memory order. */
            float sum_a = 0.0f, sum_b = 0.0f;
            for (int32_t p = 0; p < pixels; p++) {
                const int32_t e0 = first + p * channels;
                for (int32_t k = 0; k < cpg; k++) {
                    const float xhat = ((float)input[e0 + k] - zx - st.mean) * st.inv_std;
                    const float dxhat = grad[e0 + k] * gamma[g * cpg + k];
                    sum_a = sum_a + dxhat;
                    sum_b = sum_b + dxhat * xhat;
                }
            }
            const float mean_a = sum_a / st.n, mean_b = sum_b / st.n;
            /* Pass 2: each element read before it is written (input_grad may be grad). */
            for (int32_t p = 0; p < pixels; p++) {
                const int32_t e0 = first + p * channels;
                for (int32_t k = 0; k < cpg; k++) {
                    const float xhat = ((float)input[e0 + k] - zx - st.mean) * st.inv_std;
                    const float dxhat = grad[e0 + k] * gamma[g * cpg + k];
                    input_grad[e0 + k] = st.inv_std * ((dxhat - mean_a) - xhat * mean_b);
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}

qtrain_status_t qtrain_group_norm_gamma_grad_f32(const qtrain_dims_t *dims, const int8_t *input,
                                                 int32_t input_zero_point, int32_t groups, float epsilon,
                                                 const float *grad, float *gamma_grad) {
    if (!gn_args_ok(dims, groups, epsilon) || input == NULL || grad == NULL || gamma_grad == NULL) {
        return QTRAIN_STATUS_ARG_ERROR;
    }
    const int32_t channels = dims->c, cpg = channels / groups, pixels = dims->h * dims->w;
    const float zx = (float)input_zero_point;
    for (int32_t c = 0; c < channels; c++) {
        gamma_grad[c] = 0.0f;
    }
    for (int32_t b = 0; b < dims->n; b++) {
        for (int32_t g = 0; g < groups; g++) {
            const gn_stats_t st = gn_statistics(dims, input, input_zero_point, groups, epsilon, b, g);
            for (int32_t p = 0; p < pixels; p++) {
                const int32_t e0 = b * pixels * channels + p * channels + g * cpg;
                for (int32_t k = 0; k < cpg; k++) {
                    const float xhat = ((float)input[e0 + k] - zx - st.mean) * st.inv_std;
                    gamma_grad[g * cpg + k] = gamma_grad[g * cpg + k] + grad[e0 + k] * xhat;
                }
            }
        }
    }
    return QTRAIN_STATUS_OK;
}
