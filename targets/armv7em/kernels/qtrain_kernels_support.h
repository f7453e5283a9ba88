/*
 * qtrain_kernels_support.h - what the kernel files share (not part of the public API): the DSP
 * switch and its intrinsics, requantization, mask bits, unaligned reads, and the weight-slice helpers
 * implemented in qtrain_kernels_support.c.
 */
#ifndef QTRAIN_KERNELS_SUPPORT_H
#define QTRAIN_KERNELS_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "qtrain_kernels.h"

/* ---- the DSP switch ---------------------------------------------------------------------------- */

#ifndef QTRAIN_USE_DSP
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define QTRAIN_USE_DSP 1
#else
#define QTRAIN_USE_DSP 0
#endif
#endif

#define QTRAIN_INLINE static inline __attribute__((always_inline))

/* QTRAIN_DSP_ASM: the DSP path's hottest loop (qtrain_dot_pair) as inline assembly on Thumb-2 targets
 * with the DSP extension. It needs 14 registers, i.e. no frame pointer (build.py passes
 * -fomit-frame-pointer); define it to 0 to use the equivalent C with intrinsics. */
#ifndef QTRAIN_DSP_ASM
#if QTRAIN_USE_DSP && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && defined(__thumb2__)
#define QTRAIN_DSP_ASM 1
#else
#define QTRAIN_DSP_ASM 0
#endif
#endif

#if QTRAIN_USE_DSP && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
/* The ARMv7E-M instructions themselves. */
QTRAIN_INLINE int32_t qtrain_smlad(int32_t a, int32_t b, int32_t acc) {
    return __smlad(a, b, acc);
}
QTRAIN_INLINE int32_t qtrain_sxtb16(int32_t x) {
    return __sxtb16(x);
}
/* sxtb16 of x rotated right by 8: lanes x[15:8], x[31:24] (one instruction: SXTB16 Rd, Rm, ROR #8). */
QTRAIN_INLINE int32_t qtrain_sxtb16_ror8(int32_t x) {
    return __sxtb16((int32_t)__ror((uint32_t)x, 8));
}
QTRAIN_INLINE int32_t qtrain_sxtab16(int32_t a, int32_t x) {
    return __sxtab16(a, x);
}
QTRAIN_INLINE int32_t qtrain_sxtab16_ror8(int32_t a, int32_t x) {
    return __sxtab16(a, (int32_t)__ror((uint32_t)x, 8));
}
QTRAIN_INLINE int32_t qtrain_smlabb(int32_t a, int32_t b, int32_t acc) {
    return __smlabb(a, b, acc);
}
QTRAIN_INLINE int32_t qtrain_smlatb(int32_t a, int32_t b, int32_t acc) {
    return __smlatb(a, b, acc);
}
#elif QTRAIN_USE_DSP
/* Any other host: the same instructions in C (bit-exact, 16-bit lanes wrap like the hardware's), so
 * the DSP code paths build and are tested on the host too. */
QTRAIN_INLINE int32_t qtrain_lo16(int32_t x) {
    return (int16_t)(uint16_t)((uint32_t)x & 0xFFFFu);
}
QTRAIN_INLINE int32_t qtrain_hi16(int32_t x) {
    return (int16_t)(uint16_t)((uint32_t)x >> 16);
}
QTRAIN_INLINE int32_t qtrain_pack16(int32_t lo, int32_t hi) {
    return (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
}
QTRAIN_INLINE int32_t qtrain_smlad(int32_t a, int32_t b, int32_t acc) {
    uint32_t p0 = (uint32_t)(qtrain_lo16(a) * qtrain_lo16(b));
    uint32_t p1 = (uint32_t)(qtrain_hi16(a) * qtrain_hi16(b));
    return (int32_t)((uint32_t)acc + p0 + p1);
}
QTRAIN_INLINE int32_t qtrain_sxtb16(int32_t x) {
    return qtrain_pack16((int8_t)(uint8_t)((uint32_t)x & 0xFFu), (int8_t)(uint8_t)(((uint32_t)x >> 16) & 0xFFu));
}
QTRAIN_INLINE int32_t qtrain_sxtb16_ror8(int32_t x) {
    return qtrain_sxtb16((int32_t)(((uint32_t)x >> 8) | ((uint32_t)x << 24)));
}
QTRAIN_INLINE int32_t qtrain_sxtab16(int32_t a, int32_t x) {
    int32_t b = qtrain_sxtb16(x);
    return qtrain_pack16(qtrain_lo16(a) + qtrain_lo16(b), qtrain_hi16(a) + qtrain_hi16(b));
}
QTRAIN_INLINE int32_t qtrain_sxtab16_ror8(int32_t a, int32_t x) {
    return qtrain_sxtab16(a, (int32_t)(((uint32_t)x >> 8) | ((uint32_t)x << 24)));
}
QTRAIN_INLINE int32_t qtrain_smlabb(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(qtrain_lo16(a) * qtrain_lo16(b)));
}
QTRAIN_INLINE int32_t qtrain_smlatb(int32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)(qtrain_hi16(a) * qtrain_lo16(b)));
}
#endif

/* ---- memory access ------------------------------------------------------------------------------ */

/* 32-bit reads and writes at any alignment: one LDR/STR on the Cortex-M7 (unaligned LDR/STR are
 * enabled there, and the kernels are built with -munaligned-access), never LDRD/LDM. */
QTRAIN_INLINE int32_t qtrain_read_s32(const void *p) {
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
QTRAIN_INLINE void qtrain_write_s32(void *p, int32_t v) {
    __builtin_memcpy(p, &v, sizeof v);
}
/* Two int16 values as one word (lane 0 = p[0]). */
QTRAIN_INLINE int32_t qtrain_read_s16x2(const int16_t *p) {
    return qtrain_read_s32(p);
}

QTRAIN_INLINE float qtrain_bits_float(uint32_t u) {
    float f;
    __builtin_memcpy(&f, &u, sizeof f);
    return f;
}
QTRAIN_INLINE uint32_t qtrain_float_bits(float f) {
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof u);
    return u;
}

/* ---- requantization -------------------------------------------------------------------------------
 * numerics.requantize_with_mask: y = clamp(rint(fp32(acc) * m) + zp, lo, hi), mask = whether the
 * clamp left rint(...) + zp unchanged.
 *
 * Without a mask the kernels clamp first and round second, which is the same function (the bounds
 * lo - zp and hi - zp are integers, so rint and the clamp commute; NaN, impossible here, would give
 * lo like numerics._round_and_clamp). After the clamp |t| <= 255, and adding 1.5 * 2^23 rounds t to
 * an integer half to even (the sum's ulp is 1) whose bits are 0x4B400000 + rint(t): one VADD instead
 * of VRINTX + VCVT. */
#define QTRAIN_ROUND_SHIFTER 12582912.0f /* 1.5 * 2^23 */
#define QTRAIN_ROUND_SHIFTER_BITS 0x4B400000

typedef struct {
    float lo;          /* fp32(clamp_min - zp) */
    float hi;          /* fp32(clamp_max - zp) */
    int32_t bias_bits; /* zp - QTRAIN_ROUND_SHIFTER_BITS: y = bits(t + shifter) + bias_bits */
    int32_t zp;
} qtrain_requant_t;

QTRAIN_INLINE qtrain_requant_t qtrain_requant_make(int32_t zero_point, int32_t clamp_min, int32_t clamp_max) {
    qtrain_requant_t q;
    q.lo = (float)(clamp_min - zero_point);
    q.hi = (float)(clamp_max - zero_point);
    q.bias_bits = zero_point - QTRAIN_ROUND_SHIFTER_BITS;
    q.zp = zero_point;
    return q;
}

/* The output value for an already scaled t = fp32(acc) * m. */
QTRAIN_INLINE int32_t qtrain_requant_scaled(float t, const qtrain_requant_t *q) {
    t = __builtin_fminf(__builtin_fmaxf(t, q->lo), q->hi);
    return (int32_t)qtrain_float_bits(t + QTRAIN_ROUND_SHIFTER) + q->bias_bits;
}

/* The same, also reporting (1/0) whether the clamp left rint(t) unchanged. */
QTRAIN_INLINE int32_t qtrain_requant_scaled_mask(float t, const qtrain_requant_t *q, uint32_t *inside) {
    float r = __builtin_rintf(t);
    float c = __builtin_fminf(__builtin_fmaxf(r, q->lo), q->hi);
    *inside = (uint32_t)(r == c);
    return (int32_t)qtrain_float_bits(c + QTRAIN_ROUND_SHIFTER) + q->bias_bits;
}

QTRAIN_INLINE int32_t qtrain_requant(int32_t acc, float m, const qtrain_requant_t *q) {
    return qtrain_requant_scaled((float)acc * m, q);
}

QTRAIN_INLINE int32_t qtrain_requant_mask(int32_t acc, float m, const qtrain_requant_t *q, uint32_t *inside) {
    return qtrain_requant_scaled_mask((float)acc * m, q, inside);
}

/* ---- mask bits ---------------------------------------------------------------------------------- */

/* Zero the ceil(count / 8) bytes of a mask (kernels then OR the set bits in). */
void qtrain_mask_clear(uint8_t *mask, int32_t count);

QTRAIN_INLINE void qtrain_mask_put(uint8_t *mask, uint32_t element, uint32_t bit) {
    mask[element >> 3] |= (uint8_t)(bit << (element & 7u));
}

QTRAIN_INLINE uint32_t qtrain_mask_get(const uint8_t *mask, uint32_t element) {
    return ((uint32_t)mask[element >> 3] >> (element & 7u)) & 1u;
}

/* ---- weights -------------------------------------------------------------------------------------- */

/* The int8 values of a weight's trained slice: `weight->slice`, or its fp32 master converted into
 * `scratch` (count = the slice's element count), or NULL when the weight has no slice. */
const int8_t *qtrain_weight_slice_s8(const qtrain_weight_t *weight, int32_t count, void *scratch);

/* Bytes qtrain_weight_slice_s8 needs in scratch for a slice of `count` elements (0 without master),
 * rounded up to 4. */
int32_t qtrain_weight_slice_bytes(const qtrain_weight_t *weight, int32_t count);

/* Whether the weight has a trained slice (master or int8 copy). */
QTRAIN_INLINE int qtrain_weight_has_slice(const qtrain_weight_t *weight) {
    return weight->master != NULL || weight->slice != NULL;
}

/* Whether a grouped convolution (groups > 1) can read this weight: a trained slice must then cover all
 * `channels` (= C_in / groups) input channels of the filter (a fully trained grouped weight's master). */
QTRAIN_INLINE int qtrain_weight_fits_groups(const qtrain_weight_t *weight, int32_t groups, int32_t channels) {
    return groups == 1 || !qtrain_weight_has_slice(weight) ||
           (weight->slice_start == 0 && weight->slice_stop == channels);
}

/* A groups = 1 weight seen as `rows` rows of `row_len` int8 values per input channel segment:
 * input channels [begin, end) of row r are base[r * stride + (c - begin)]. One segment without a
 * slice, up to three with one (before, inside, after). For the 1x1 kernels (row = C_in). */
typedef struct {
    int32_t begin;
    int32_t end;
    const int8_t *base;
    int32_t stride;
} qtrain_weight_segment_t;

int32_t qtrain_weight_segments(const qtrain_weight_t *weight, const int8_t *slice_s8, int32_t channels,
                               qtrain_weight_segment_t segments[3]);

/* The full OHWI int8 weight of a groups = 1 convolution with its slice merged in (into `output`,
 * C_out * KH * KW * C_in bytes). */
void qtrain_weight_merge(const qtrain_weight_t *weight, const int8_t *slice_s8, const qtrain_dims_t *filter_dims,
                         int8_t *output);

/* Round up to a multiple of 4. */
QTRAIN_INLINE int32_t qtrain_align4(int32_t bytes) {
    return (bytes + 3) & ~3;
}

/* Validate the slice of a weight with `channels` channels along its slice axis. */
int qtrain_weight_valid(const qtrain_weight_t *weight, int32_t channels);


/* Requantize one accumulator and store it as output element `e` (and its mask bit when `mask`). */
QTRAIN_INLINE void qtrain_store_output(int32_t acc, float m, const qtrain_requant_t *q, int8_t *output, uint32_t e,
                                       uint8_t *mask) {
    if (mask == NULL) {
        output[e] = (int8_t)qtrain_requant(acc, m, q);
    } else {
        uint32_t inside;
        output[e] = (int8_t)qtrain_requant_mask(acc, m, q, &inside);
        qtrain_mask_put(mask, e, inside);
    }
}

/* ---- argument checks ------------------------------------------------------------------------------ */

/* Shared checks of a forward convolution call: positive shapes, batch and channel counts that agree,
 * groups dividing both channel counts, strides >= 1, padding >= 0, a valid clamp range. */
int qtrain_conv_args_valid(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                           const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims);

/* ---- in place (see "In place" in qtrain_kernels.h) ------------------------------------------------ */

typedef enum {
    QTRAIN_OVERLAP_NONE = 0, /* disjoint */
    QTRAIN_OVERLAP_HEAD = 1, /* output == input (the two start at the same byte) */
    QTRAIN_OVERLAP_TAIL = 2, /* output + output_bytes == input + input_bytes, output != input */
    QTRAIN_OVERLAP_OTHER = 3 /* any other overlap */
} qtrain_overlap_t;

/* How the output buffer [output, output + output_bytes) lies on the input [input, input + input_bytes)
 * (both sizes > 0). The addresses are compared as integers: the two may be parts of one buffer. */
QTRAIN_INLINE qtrain_overlap_t qtrain_overlap(const int8_t *input, int32_t input_bytes, const int8_t *output,
                                              int32_t output_bytes) {
    const uintptr_t i0 = (uintptr_t)input, i1 = i0 + (uint32_t)input_bytes;
    const uintptr_t o0 = (uintptr_t)output, o1 = o0 + (uint32_t)output_bytes;
    if (o1 <= i0 || i1 <= o0) {
        return QTRAIN_OVERLAP_NONE;
    }
    if (o0 == i0) {
        return QTRAIN_OVERLAP_HEAD;
    }
    return o1 == i1 ? QTRAIN_OVERLAP_TAIL : QTRAIN_OVERLAP_OTHER;
}

/* Elements of the largest tensor a kernel accepts: its fp32 bytes (4 per element) fit an int32, as the
 * kernels' offsets and sizes are int32. Far above any MCU's memory; what it rules out are shapes whose
 * products would overflow (undefined behaviour in C, a wrapped size that then passes the checks). */
#define QTRAIN_MAX_TENSOR_ELEMENTS (INT32_MAX / 4)

/* Bytes of an int8 NHWC tensor, saturated at INT32_MAX (0 for a non-positive dimension): the product is
 * taken in int64 one factor at a time, so no shape, however large, overflows. */
QTRAIN_INLINE int32_t qtrain_dims_count(const qtrain_dims_t *dims) {
    const int32_t factors[4] = {dims->n, dims->h, dims->w, dims->c};
    int64_t count = 1;
    for (int i = 0; i < 4; i++) {
        if (factors[i] <= 0) {
            return 0;
        }
        count *= factors[i]; /* < 2^31 * 2^31: fits */
        if (count > INT32_MAX) {
            return INT32_MAX;
        }
    }
    return (int32_t)count;
}

/* A scratch size computed in int64, saturated at INT32_MAX: a size query on shapes too large never
 * overflows, and the saturated size never fits a context, so the kernel then refuses the call. */
QTRAIN_INLINE int32_t qtrain_size_saturate(int64_t bytes) {
    return bytes > INT32_MAX ? INT32_MAX : (int32_t)bytes;
}

/* Whether every dimension is >= 1 and the tensor has at most QTRAIN_MAX_TENSOR_ELEMENTS elements. */
QTRAIN_INLINE int qtrain_dims_fit(const qtrain_dims_t *dims) {
    const int32_t count = qtrain_dims_count(dims);
    return count >= 1 && count <= QTRAIN_MAX_TENSOR_ELEMENTS;
}

/* The placements of output on input a forward convolution kernel allows ("In place" in
 * qtrain_kernels.h): none (small-K, generic), the 1x1 kernel's, or the depthwise kernel's. */
typedef enum {
    QTRAIN_IN_PLACE_NEVER = 0,
    QTRAIN_IN_PLACE_1X1 = 1,
    QTRAIN_IN_PLACE_DEPTHWISE = 2,
    QTRAIN_IN_PLACE_SMALL_K = 3
} qtrain_in_place_t;

/* Whether `output` may lie where it does relative to `input` for a kernel allowing `allowed`
 * (disjoint buffers always may). Shapes already validated for that kernel. Not inline, so that the
 * check leaves the kernels' own code (register allocation of the hot loops) as it was. */
int qtrain_conv_placement_ok(qtrain_in_place_t allowed, const qtrain_conv_params_t *params,
                             const qtrain_dims_t *input_dims, const int8_t *input, const qtrain_dims_t *filter_dims,
                             const qtrain_dims_t *output_dims, const int8_t *output);

/* Whether `ctx` provides at least `bytes` of 4-byte aligned scratch (the DSP loops read it with LDRD). */
QTRAIN_INLINE int qtrain_ctx_fits(const qtrain_context_t *ctx, int32_t bytes) {
    return bytes == 0 ||
           (ctx != NULL && ctx->buf != NULL && ((uintptr_t)ctx->buf & 3u) == 0u && ctx->size >= bytes);
}

/* The placements of input_grad (dL/dx) on grad (dL/dy) an input-gradient kernel allows ("In place"
 * in qtrain_kernels.h): none (generic), the 1x1 kernel's, or the depthwise kernel's. */
typedef enum {
    QTRAIN_GRAD_IN_PLACE_NEVER = 0,
    QTRAIN_GRAD_IN_PLACE_1X1 = 1,
    QTRAIN_GRAD_IN_PLACE_DEPTHWISE = 2
} qtrain_grad_in_place_t;

/* Bytes of an fp32 NHWC tensor. */
QTRAIN_INLINE int32_t qtrain_dims_bytes_f32(const qtrain_dims_t *dims) {
    const int32_t count = qtrain_dims_count(dims);
    return count > INT32_MAX / 4 ? INT32_MAX : 4 * count; /* saturated, like qtrain_dims_count */
}

/* Whether `input_grad` may lie where it does relative to `grad` for an input-gradient kernel allowing
 * `allowed` (disjoint buffers always may; the byte ranges are [p, p + 4 * count), compared as
 * integers). Shapes already validated for that kernel. Not inline, like qtrain_conv_placement_ok. */
int qtrain_input_grad_placement_ok(qtrain_grad_in_place_t allowed, const qtrain_conv_params_t *params,
                                   const qtrain_dims_t *grad_dims, const float *grad,
                                   const qtrain_dims_t *input_dims, const float *input_grad);


/* ---- SGD update of one element (numerics.sgd_update) ------------------------------------------------
 * delta = fp32(step * g) is computed by the caller. */

/* int8: saturate(p - rint(delta)). rint(delta) is clamped to +-256 first, which changes nothing (any
 * |r| >= 256 saturates anyway) and keeps the subtraction in int32. */
QTRAIN_INLINE int8_t qtrain_sgd_s8(int8_t p, float delta) {
    float r = __builtin_fminf(__builtin_fmaxf(__builtin_rintf(delta), -256.0f), 256.0f);
    int32_t v = (int32_t)p - (int32_t)r;
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

/* int32: saturate(p - clamp(rint(delta), -2^32, 2^32)), the subtraction exact in int64 (add and
 * compare only: no 64-bit division or float conversion, which would need a runtime library). */
QTRAIN_INLINE int32_t qtrain_sgd_s32(int32_t p, float delta) {
    float r = __builtin_rintf(delta);
    int64_t v;
    if (r >= 4294967296.0f) {
        v = (int64_t)p - 4294967296LL;
    } else if (r <= -4294967296.0f) {
        v = (int64_t)p + 4294967296LL;
    } else {
        int64_t magnitude = (int64_t)(uint32_t)__builtin_fabsf(r); /* exact: an integer below 2^32 */
        v = r < 0.0f ? (int64_t)p + magnitude : (int64_t)p - magnitude;
    }
    return v < INT32_MIN ? INT32_MIN : (v > INT32_MAX ? INT32_MAX : (int32_t)v);
}

/* ---- stochastic rounding (numerics.mix32 / rounding_noise / sgd_update with a noise key) ---------- */

/* MurmurHash3's 32-bit finalizer: a bijection of uint32 with full avalanche. */
QTRAIN_INLINE uint32_t qtrain_mix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

/* u in [0, 1) of element `index`: the top 24 bits of mix32(key + index * 0x9E3779B9), times 2^-24
 * (exact in fp32). Counter-based: any element on its own, no state. */
QTRAIN_INLINE float qtrain_noise_u(uint32_t key, uint32_t index) {
    return (float)(qtrain_mix32(key + index * 0x9E3779B9u) >> 8) * 0x1p-24f;
}

/* int8, stochastic: saturate(p + floor(fp32(u - delta))), the floor clamped to +-256 first (changes
 * nothing: any step that large saturates anyway). */
QTRAIN_INLINE int8_t qtrain_sgd_s8_stochastic(int8_t p, float delta, float u) {
    float r = __builtin_fminf(__builtin_fmaxf(__builtin_floorf(u - delta), -256.0f), 256.0f);
    int32_t v = (int32_t)p + (int32_t)r;
    return (int8_t)(v < -128 ? -128 : (v > 127 ? 127 : v));
}

/* The int16 master (value plane v, fraction plane f), stochastic: m = 256 v + f,
 * m = clamp(m + floor(fp32(u - fp32(256 * delta))), -32768, 32639), then v = floor((m + 128) / 256)
 * (computed on m + 32896 >= 0: no shift of a negative number) and f = m - 256 v. */
QTRAIN_INLINE void qtrain_sgd_s16_stochastic(int8_t *value, int8_t *fraction, float delta, float u) {
    float r = __builtin_fminf(__builtin_fmaxf(__builtin_floorf(u - delta * 256.0f), -131072.0f), 131072.0f);
    int32_t m = (int32_t)*value * 256 + (int32_t)*fraction + (int32_t)r;
    m = m < -32768 ? -32768 : (m > 32639 ? 32639 : m);
    int32_t v = (int32_t)((uint32_t)(m + 32896) >> 8) - 128;
    *value = (int8_t)v;
    *fraction = (int8_t)(m - v * 256);
}

/* step[c] = fp32(lr * grad_scale[c]) (grad_scale[0] when there is one value). */
QTRAIN_INLINE float qtrain_sgd_step(float lr, const float *grad_scale, int32_t num_grad_scales, int32_t c) {
    return lr * grad_scale[num_grad_scales > 1 ? c : 0];
}

/* Geometry checks shared by the gradient kernels (no clamp): positive shapes, batch agreement,
 * groups dividing the channel counts, strides >= 1, padding >= 0. */
int qtrain_conv_geometry_valid(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                               const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims);

#if QTRAIN_USE_DSP
/* ---- the DSP pixel-pair engine of the 1x1 and generic convolutions ---------------------------------
 *
 * Two output pixels' inputs are unpacked once as int16 (x - zx) in an interleaved layout: for each 4
 * elements of a weight segment, 4 words (pixel 0 lanes (e0, e2), (e1, e3), then pixel 1 the same),
 * matching SXTB16 / SXTB16 ROR 8 of a 4-weight word; then one word per remaining element (lanes
 * pixel 0, pixel 1). Each pair of output channels then costs 8 SMLAD per 4 elements on 4
 * accumulators (two pixels x two channels). */

/* The dot products of the unpacked pair `x` (len elements) with weight rows w and w + stride. */
QTRAIN_INLINE void qtrain_dot_pair(const int32_t *x, const int8_t *w, int32_t stride, int32_t len, int32_t *s00,
                                   int32_t *s01, int32_t *s10, int32_t *s11) {
    int32_t a00 = *s00, a01 = *s01, a10 = *s10, a11 = *s11;
    uint32_t n = (uint32_t)len >> 2;
#if QTRAIN_DSP_ASM
    /* The same loop as the C below, register-allocated by hand: 19 instructions per 16 MACs.
     * (clang 14 adds three to five moves or spills to the C version, whose 14 live values fill every
     * allocatable register.) LDRD needs x word aligned: the scratch buffer is. */
    if (n != 0u) {
        const int8_t *w1 = w + stride;
        int32_t v0, v1, wa, wb, xa, xb;
        __asm__("1:\n\t"
                "ldr     %[v0], [%[w0]], #4\n\t"
                "ldr     %[v1], [%[w1]], #4\n\t"
                "ldrd    %[xa], %[xb], [%[x]], #16\n\t"
                "sxtb16  %[wa], %[v0]\n\t"
                "sxtb16  %[wb], %[v1]\n\t"
                "smlad   %[a00], %[xa], %[wa], %[a00]\n\t"
                "smlad   %[a01], %[xa], %[wb], %[a01]\n\t"
                "ldr     %[xa], [%[x], #-8]\n\t"
                "smlad   %[a10], %[xa], %[wa], %[a10]\n\t"
                "smlad   %[a11], %[xa], %[wb], %[a11]\n\t"
                "sxtb16  %[wa], %[v0], ror #8\n\t"
                "sxtb16  %[wb], %[v1], ror #8\n\t"
                "smlad   %[a00], %[xb], %[wa], %[a00]\n\t"
                "smlad   %[a01], %[xb], %[wb], %[a01]\n\t"
                "ldr     %[xb], [%[x], #-4]\n\t"
                "smlad   %[a10], %[xb], %[wa], %[a10]\n\t"
                "smlad   %[a11], %[xb], %[wb], %[a11]\n\t"
                "subs    %[n], %[n], #1\n\t"
                "bne     1b"
                : [a00] "+r"(a00), [a01] "+r"(a01), [a10] "+r"(a10), [a11] "+r"(a11), [w0] "+r"(w), [w1] "+r"(w1),
                  [x] "+r"(x), [n] "+r"(n), [v0] "=&r"(v0), [v1] "=&r"(v1), [wa] "=&r"(wa), [wb] "=&r"(wb),
                  [xa] "=&r"(xa), [xb] "=&r"(xb)
                :
                : "cc", "memory");
    }
#else
#pragma clang loop unroll(disable)
    for (; n != 0u; n--) {
        const int32_t v0 = qtrain_read_s32(w), v1 = qtrain_read_s32(w + stride);
        w += 4;
        int32_t wa = qtrain_sxtb16(v0), wb = qtrain_sxtb16(v1);
        int32_t xv = x[0];
        a00 = qtrain_smlad(xv, wa, a00);
        a01 = qtrain_smlad(xv, wb, a01);
        xv = x[2];
        a10 = qtrain_smlad(xv, wa, a10);
        a11 = qtrain_smlad(xv, wb, a11);
        wa = qtrain_sxtb16_ror8(v0);
        wb = qtrain_sxtb16_ror8(v1);
        xv = x[1];
        a00 = qtrain_smlad(xv, wa, a00);
        a01 = qtrain_smlad(xv, wb, a01);
        xv = x[3];
        a10 = qtrain_smlad(xv, wa, a10);
        a11 = qtrain_smlad(xv, wb, a11);
        x += 4;
    }
#endif
    for (int32_t i = len & 3; i > 0; i--) {
        const int32_t xv = *x++;
        const int32_t x0 = (int16_t)(uint16_t)((uint32_t)xv & 0xFFFFu), x1 = (int16_t)(uint16_t)((uint32_t)xv >> 16);
        const int32_t a = w[0], b = w[stride];
        w++;
        a00 += x0 * a;
        a01 += x0 * b;
        a10 += x1 * a;
        a11 += x1 * b;
    }
    *s00 = a00;
    *s01 = a01;
    *s10 = a10;
    *s11 = a11;
}

/* Requantize and store one output (and its mask bit). */
QTRAIN_INLINE void qtrain_put(int32_t acc, float m, const qtrain_requant_t *q, int8_t *out, uint8_t *mask, uint32_t e,
                              const int with_mask) {
    if (with_mask) {
        uint32_t inside;
        *out = (int8_t)qtrain_requant_mask(acc, m, q, &inside);
        qtrain_mask_put(mask, e, inside);
    } else {
        *out = (int8_t)qtrain_requant(acc, m, q);
    }
}

/* Requantize and store the 2 x 2 block (pixels 0/1 x channels o/o1; o1 == o stores one channel). */
QTRAIN_INLINE void qtrain_put_block(int32_t s00, int32_t s01, int32_t s10, int32_t s11, int32_t o, int32_t o1,
                                    const float *multiplier, const qtrain_requant_t *q, int8_t *out0, int8_t *out1,
                                    uint8_t *mask, uint32_t e0, uint32_t e1) {
    const float m0 = multiplier[o], m1 = multiplier[o1];
    if (mask == NULL) {
        out0[o] = (int8_t)qtrain_requant(s00, m0, q);
        out1[o] = (int8_t)qtrain_requant(s10, m0, q);
        if (o1 != o) {
            out0[o1] = (int8_t)qtrain_requant(s01, m1, q);
            out1[o1] = (int8_t)qtrain_requant(s11, m1, q);
        }
    } else {
        qtrain_put(s00, m0, q, out0 + o, mask, e0 + (uint32_t)o, 1);
        qtrain_put(s10, m0, q, out1 + o, mask, e1 + (uint32_t)o, 1);
        if (o1 != o) {
            qtrain_put(s01, m1, q, out0 + o1, mask, e0 + (uint32_t)o1, 1);
            qtrain_put(s11, m1, q, out1 + o1, mask, e1 + (uint32_t)o1, 1);
        }
    }
}

/* Unpack the input rows of two pixels as int16 (x - zx), segment by segment: each 4 channels become
 * 4 words (pixel 0 lanes (c0, c2), (c1, c3), then pixel 1), matching SXTB16 / SXTB16 ROR 8 of a
 * weight word; each remaining channel one word (pixel 0, pixel 1). One word per channel in all.
 * (The 1x1 kernel's, shared with the fused pointwise-depthwise kernel.) */
QTRAIN_INLINE void qtrain_unpack_pair(const int8_t *row0, const int8_t *row1, const qtrain_weight_segment_t *segments,
                                      int32_t count, int32_t zero_point, int32_t *dst) {
    int32_t offset = (int32_t)(((uint32_t)(-zero_point) & 0xFFFFu) * 0x10001u);
    for (int32_t s = 0; s < count; s++) {
        const int8_t *a = row0 + segments[s].begin, *b = row1 + segments[s].begin;
        int32_t len = segments[s].end - segments[s].begin;
        for (int32_t i = len >> 2; i > 0; i--) {
            int32_t va = qtrain_read_s32(a), vb = qtrain_read_s32(b);
            dst[0] = qtrain_sxtab16(offset, va);
            dst[1] = qtrain_sxtab16_ror8(offset, va);
            dst[2] = qtrain_sxtab16(offset, vb);
            dst[3] = qtrain_sxtab16_ror8(offset, vb);
            a += 4;
            b += 4;
            dst += 4;
        }
        for (int32_t i = len & 3; i > 0; i--) {
            *dst++ = (int32_t)(((uint32_t)(*a++ - zero_point) & 0xFFFFu) | ((uint32_t)(*b++ - zero_point) << 16));
        }
    }
}

/* Output channels [o_begin, o_end) of an unpacked pixel pair: out0 / out1 are the two pixels' output
 * rows (equal for an odd last pixel, which then stores the same values twice), e0 / e1 their first
 * element index (for the mask). An odd channel count ends with a duplicated channel stored once. */
void qtrain_pair_outputs(const int32_t *x, const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin,
                         int32_t o_end, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                         int8_t *out0, int8_t *out1, uint8_t *mask, uint32_t e0, uint32_t e1);

/* ---- the DSP pixel-quad engine of the 1x1 convolutions ------------------------------------------------
 *
 * Four output pixels' inputs are unpacked once as int16 (x - zx): for each 4 elements of a weight
 * segment, 8 words (pixel 0 lanes (e0, e2), (e1, e3), then pixels 1, 2, 3 the same), matching SXTB16 /
 * SXTB16 ROR 8 of a 4-weight word; then two words per remaining element (lanes pixels 0, 1 and pixels
 * 2, 3). Each output channel then costs one weight word, two SXTB16, two LDM and 8 SMLAD per 4
 * elements on 4 accumulators (the four pixels): 15 instructions per 16 MACs. */

/* Unpack four pixels' input rows (any of them may be the same row) segment by segment. `dst` must be
 * word aligned: the dot product reads it with LDM. */
void qtrain_unpack_quad(const int8_t *const rows[4], const qtrain_weight_segment_t *segments, int32_t count,
                        int32_t zero_point, int32_t *dst);

/* Output channels [o_begin, o_end) of an unpacked pixel quad: out[j] is pixel j's output row, e[j] its
 * first element index (for the mask, when not NULL). Equal rows (a repeated last pixel) store the same
 * values again. */
void qtrain_quad_outputs(const int32_t *x, const qtrain_weight_segment_t *segments, int32_t count, int32_t o_begin,
                         int32_t o_end, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                         int8_t *const out[4], uint8_t *mask, const uint32_t e[4]);

/* A line of pixels four at a time: pixel p's input row at in + p * in_step, its outputs at out + p * out_step
 * (channels [o_begin, o_end)), its mask elements from e0 + p * e_step; `unpacked` holds one quad
 * (qtrain_quad_words(C_in) words, word aligned). The assembly loop's job is prepared once per line. */
void qtrain_quad_line(const int8_t *in, int32_t in_step, int32_t pixels, const qtrain_weight_segment_t *segments,
                      int32_t count, int32_t zero_point, int32_t o_begin, int32_t o_end, const int32_t *bias,
                      const float *multiplier, const qtrain_requant_t *q, int8_t *out, int32_t out_step,
                      uint8_t *mask, uint32_t e0, uint32_t e_step, int32_t *unpacked, const int32_t *wide);

/* Widened rows: a weight that many pixel quads read is widened to int16 once per call, with each output
 * channel's bias (four copies) and multiplier in front of its weights, in the order the widened loop
 * consumes them: per channel 5 + C_in / 2 words (bias x4, multiplier bits, then per block of four input
 * channels the words SXTB16(v) and SXTB16(v ROR 8) of its weight word v, the segments concatenated).
 * The loop then walks one pointer, reads each block pair's weights with one LDM and its accumulators'
 * start with another: 21 instructions per 32 MACs instead of 30, and about 7 fewer per channel and quad.
 * qtrain_quad_widen_bytes: bytes for `rows` rows, or 0 when the widened loop does not apply (a segment
 * not a multiple of four channels, C_in not a multiple of 8 or above 8 * 72, or no assembly loop:
 * QTRAIN_DSP_ASM = 0). qtrain_quad_widen: rows 0 .. rows - 1 into dst (word aligned); bias may be NULL.
 * qtrain_quad_line's `wide`: NULL, or the widened row of channel o_begin (rows follow each other). */
QTRAIN_INLINE int32_t qtrain_quad_widened_words(int32_t channels) {
    return 5 + channels / 2;
}
int32_t qtrain_quad_widen_bytes(const qtrain_weight_segment_t *segments, int32_t count, int32_t rows);

/* A stride-1 pointwise convolution of few pixels whose widened rows do not all fit the scratch: every
 * pixel quad unpacked first (so the output may then overwrite any input: the 1x1 kernel's in-place
 * placements hold), then the output channels in blocks (a multiple of 8) whose widened rows fit after
 * them, each block's rows widened once and run on every quad. Pixels at `in` (C_in bytes each), outputs
 * at `out` (C_out each), mask elements from 0. `buf`: buf_bytes of word-aligned scratch. Returns 0 (having
 * done nothing) when it does not apply: no assembly loop, no bias, the rows not widenable, or not room
 * for the unpacked quads and a block of 8 channels. */
int qtrain_quad_blocked(const int8_t *in, int32_t pixels, const qtrain_weight_segment_t *segments, int32_t count,
                        int32_t zero_point, int32_t cout, const int32_t *bias, const float *multiplier,
                        const qtrain_requant_t *q, int8_t *out, uint8_t *mask, int32_t *buf, int32_t buf_bytes);
void qtrain_quad_widen(const qtrain_weight_segment_t *segments, int32_t count, int32_t rows, const int32_t *bias,
                       const float *multiplier, int32_t *dst);

/* Words of an unpacked quad of `channels` elements, whatever the segments: two per element. */
QTRAIN_INLINE int32_t qtrain_quad_words(int32_t channels) {
    return 2 * channels;
}

/* ---- the DSP depthwise pair-row engine --------------------------------------------------------------
 *
 * A channel's padded input (x - zx, padding 0) lives in pair rows of W_p words: word j of pair row k is
 * (x_pad[k][j], x_pad[k + 1][j]) in the low / high halfword, so two vertically adjacent taps are one
 * SMLAD and a window row of pairs is KW consecutive words (one LDM). The weights go in as pair rows too:
 * wp[i * KW + j] = (w[2i][j], w[2i + 1][j]), 0 for the missing row of an odd KH, whatever the high half
 * of the last pair row then holds. Output row oy reads pair rows oy * sh + 2i, i < ceil(KH / 2). */

/* The pair rows of one channel's [KH, KW] kernel `w` (ceil(KH / 2) * KW words). */
void qtrain_dw_weight_pairs(const int8_t *w, int32_t kernel_h, int32_t kernel_w, int32_t *wp);

/* Output rows of one channel: out[(oy * out_w + ox) * channels] = requant(bias + sum over pair rows i and
 * columns j of SMLAD(rows[i][oy * row_step + ox * sw + j], wp[i * KW + j])), oy < out_rows, ox < out_w; with
 * a mask, the bits of elements e + (oy * out_w + ox) * channels. rows[i]: pair row i of the window of
 * output (0, 0) (word aligned); row_step in words. */
void qtrain_dw_output_rows(const int32_t *const rows[], int32_t kernel_h, int32_t kernel_w, const int32_t *wp,
                           int32_t out_rows, int32_t row_step, int32_t out_w, int32_t sw, int32_t bias,
                           float multiplier, const qtrain_requant_t *q, int8_t *out, int32_t channels, uint8_t *mask,
                           uint32_t e);

/* Padded input row r of channels c0 .. c0 + count - 1 (count <= 4) of batch b into their rings of pair
 * rows (channel g's ring at rings + g * ring_words; R pair rows of `columns` words, pair row k in slot
 * k mod R): the low halves of pair row r and the high halves of pair row r - 1, each only when `parity`
 * is -1 or the pair row's index has that parity (a stride-2 convolution reads one parity only). */
void qtrain_dw_load_row(const int8_t *input, const qtrain_dims_t *input_dims, int32_t b, int32_t c0, int32_t count,
                        int32_t r, int32_t pad_top, int32_t pad_left, int32_t zero_point, int32_t columns, int32_t rows,
                        int32_t parity, int32_t *rings, int32_t ring_words);

/* ---- the DSP depthwise four-channel engine ----------------------------------------------------------
 *
 * Four channels c0 .. c0 + 3 at once: their padded input as pair rows interleaved by channel, word
 * (j * 4 + g) of pair row k = (x_pad[k][j][c0 + g] - zx, x_pad[k + 1][j][c0 + g] - zx) in the low / high
 * halfword (0 for padding), and their weights the same way, word ((i * KW + j) * 4 + g) = (w[2i][j],
 * w[2i + 1][j]) of channel c0 + g (0 for the missing row of an odd KH). One LDM then gives a tap pair of
 * all four channels and four SMLAD use it; the four outputs of a pixel are adjacent bytes, stored as
 * one word. */

/* The interleaved weight pair rows of channels c0 .. c0 + 3 (`w[g]` is channel c0 + g's [KH, KW]). */
void qtrain_dw4_weights(const int8_t *const w[4], int32_t kernel_h, int32_t kernel_w, int32_t *wp);

/* One interleaved pair row (`columns` x 4 words) from padded rows k (`a`) and k + 1 (`b`): a row pointer
 * points at the pixel of column `first`, channel c0 (NULL: a padding row); pixels step `pixel_stride`
 * bytes; columns outside [first, last) are padding. */
void qtrain_dw4_pair_row(const int8_t *a, const int8_t *b, int32_t pixel_stride, int32_t first, int32_t last,
                         int32_t columns, int32_t zero_point, int32_t *dst);

/* Output rows of channels c0 .. c0 + 3 from interleaved pair rows: pair row i of the window of output
 * (oy, ox) is at plane + (oy * out_step + i * pair_step) * row_words + ox * sw * 4 words (row_words =
 * 4 * columns). out points at output (0, 0) of channel c0; outputs step `channels` bytes; with a mask,
 * the bits of elements e + (oy * out_w + ox) * channels + g. */
void qtrain_dw4_output_rows(const int32_t *plane, int32_t row_words, int32_t pair_step, int32_t out_step,
                            int32_t kernel_h, int32_t kernel_w, const int32_t *wp, int32_t out_rows, int32_t out_w,
                            int32_t sw, const int32_t *bias, const float *multiplier, const qtrain_requant_t *q,
                            int8_t *out, int32_t channels, uint8_t *mask, uint32_t e);

/* ---- the DSP depthwise row engine (qtrain_depthwise_conv2d_s8.c), shared with the fused kernel -------
 *
 * A depthwise window is a ring of int16 (x - zx, padding 0) in column-interleaved layout: column j
 * holds 2 * KH slots, the window's KH rows are slots 0 .. KH - 1 of every column (read from `window`
 * onwards; an odd KH also reads slot KH, multiplied by weight 0). Weights go in as pairs: pairs[j *
 * ceil(KH / 2) + i] = (w[2i, j], w[2i + 1, j]) in the low / high halfword (0 for the missing row of an
 * odd KH), so two vertically adjacent taps are one SMLAD. */

/* The weight pairs of one channel's [KH, KW] depthwise kernel `w` (KW * ceil(KH / 2) words). */
QTRAIN_INLINE void qtrain_depthwise_pairs(const int8_t *w, int32_t kernel_h, int32_t kernel_w, int32_t *pairs) {
    const int32_t npairs = (kernel_h + 1) / 2;
    for (int32_t j = 0; j < kernel_w; j++) {
        for (int32_t i = 0; i < npairs; i++) {
            const int32_t lo = w[(2 * i) * kernel_w + j];
            const int32_t hi = 2 * i + 1 < kernel_h ? w[(2 * i + 1) * kernel_w + j] : 0;
            pairs[j * npairs + i] = (int32_t)(((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16));
        }
    }
}

/* One output row of one channel: out[ox * channels] = requant(bias + window . weights) for ox < out_w,
 * the window moving sw columns per output; `e` is out[0]'s element index (for the mask, when not NULL).
 * 3x3, 5x5 and 7x7 run with constant bounds. */
void qtrain_depthwise_output_row(const int16_t *window, int32_t kernel_h, int32_t kernel_w, const int32_t *pairs,
                                 int32_t out_w, int32_t sw, int32_t bias, float multiplier, const qtrain_requant_t *q,
                                 int8_t *out, int32_t channels, uint8_t *mask, uint32_t e);
#endif

/* ---- gradient formats (qtrain-narrow-gradients) ------------------------------------------------ */

/* An activation gradient in the arena: fp32, or bf16 (the top 16 bits of the fp32 pattern). Kernels
 * compute in fp32 either way: a bf16 read is exact, a bf16 write rounds the fp32 result to nearest
 * even once (numerics.round_bf16: NaN stays a quiet NaN, overflow goes to infinity). Passing the
 * format as a constant to a QTRAIN_INLINE body specialises it. */
typedef enum { QTRAIN_GRAD_F32 = 0, QTRAIN_GRAD_BF16 = 1 } qtrain_grad_format_t;

QTRAIN_INLINE float qtrain_bf16_to_f32(uint16_t h) {
    return qtrain_bits_float((uint32_t)h << 16);
}
QTRAIN_INLINE uint16_t qtrain_f32_to_bf16(float f) {
    const uint32_t u = qtrain_float_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) {
        return (uint16_t)((u >> 16) | 0x40u);
    }
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
QTRAIN_INLINE float qtrain_grad_load(const void *p, int32_t i, qtrain_grad_format_t format) {
    return format == QTRAIN_GRAD_BF16 ? qtrain_bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
QTRAIN_INLINE void qtrain_grad_store(void *p, int32_t i, float v, qtrain_grad_format_t format) {
    if (format == QTRAIN_GRAD_BF16) {
        ((uint16_t *)p)[i] = qtrain_f32_to_bf16(v);
    } else {
        ((float *)p)[i] = v;
    }
}

#endif /* QTRAIN_KERNELS_SUPPORT_H */
