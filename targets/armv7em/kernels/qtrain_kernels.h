/*
 * qtrain_kernels.h - the kernel library the generated C calls: one function per qtrain op (forward
 * int8, backward fp32, SGD+QAS update), in the style of CMSIS-NN.
 *
 * Numerics. Every kernel computes exactly what its op's docstring in dialects/qtrain/ops.py and
 * grad_ops.py says, in the operation order spelled out by qtrain.numerics (numerics/) (the numpy golden
 * model):
 *   - int8 forward kernels (convolutions, add, avgpool, quantize, dequantize, requantize) are bit-exact
 *     with qtrain.numerics, whichever path (portable or DSP) is compiled;
 *   - element-wise fp32 kernels (requant_grad, grad_accumulate, sgd_update with or without momentum,
 *     channel_slice, the softmax gradient's division) and the learning-rate schedule are bit-exact too;
 *   - sums (convolution gradients, bias and pooling gradients) accumulate in fp32 in the order each
 *     function documents, with fused multiply-adds (`fmaf`, one VFMA.F32 on the Cortex-M7) where it
 *     says so; qtrain.numerics takes these as float64 "reference sums", so the two agree to within the
 *     fp32 summation bound (n + 1) * 2^-24 * sum of |terms|; the host and the Cortex-M7 builds of
 *     the same kernel agree bit for bit;
 *   - the loss uses the runtime's qtrain_expf / qtrain_logf (runtime_math.c), which are not the
 *     operation sequences of numerics.exp_f32 / log_f32: losses agree to a few ulp, not bit for bit.
 *
 * Layouts. Activations NHWC, weights OHWI ([C_out, KH, KW, C_in / groups]; depthwise [C, KH, KW, 1]),
 * biases int32 [C_out], per-channel quantities along the last (channel) axis. Gradients are fp32 in
 * the integer domain of the tensor they belong to (see grad_ops.py). Tensors are dense, row-major,
 * and must not overlap unless a function says "in place allowed" (or, for the forward convolutions
 * and the convolution input gradients, "In place" below allows it).
 *
 * In place (forward convolutions). A convolution's output may overlap its input only in these
 * placements. Input: P = N * H * W pixels of C_in bytes; output: Q = N * OH * OW pixels of C_out
 * bytes. "Head-aligned": output == input (the two start at the same byte). "Tail-aligned":
 * output + Q * C_out == input + P * C_in (the two end at the same byte).
 *   - qtrain_conv2d_1x1_s8:
 *       head-aligned when C_out <= C_in, any stride;
 *       tail-aligned when C_out >= C_in and stride_h = stride_w = 1.
 *     (C_out == C_in at stride 1: both name the same placement, output == input.)
 *   - qtrain_depthwise_conv2d_s8: head-aligned when OH <= H, OW <= W and pad_top < KH (pad_top <= KH - 1);
 *     any kernel size, stride, pad_left and bottom/right padding the kernel accepts. Never tail-aligned.
 *   - qtrain_conv2d_small_k_s8: "gap-aligned": the output starts G or more bytes before the input
 *       (input - output >= G, G = qtrain_conv2d_small_k_s8_in_place_gap(), a pure function of the
 *       shapes, possibly negative): the stem writes its larger output over the image rows it has read.
 *   - qtrain_conv2d_s8: never (called directly it does not check it).
 *   - qtrain_conv2d_wrapper_s8: exactly what the kernel it picks for the shapes allows (its choice is
 *     a pure function of the shapes, documented at the wrapper): the 1x1 placements above when it picks
 *     qtrain_conv2d_1x1_s8 (1x1, groups 1, no padding on any side, and not small-K: C_in >
 *     QTRAIN_SMALL_K_MAX_CHANNELS, or K > QTRAIN_SMALL_K_MAX_K, or small-K scratch >
 *     QTRAIN_SMALL_K_MAX_SCRATCH bytes), the depthwise placement when it picks
 *     qtrain_depthwise_conv2d_s8, the gap placement when it picks qtrain_conv2d_small_k_s8, none
 *     otherwise. Python mirror: qtrain.targets.armv7em.kernels.in_place_alignment() -> "head" | "tail" |
 *     "gap" | None, and small_k_in_place_gap() for G.
 * An allowed placement gives byte for byte the output and mask of the same call with disjoint
 * buffers, in the portable and the DSP path, with or without a mask, a bias or a trained weight slice
 * (int8, or fp32 master converted in scratch as usual), for any batch size; no byte outside the output
 * is written (the input bytes outside it are left as they were, those under it are overwritten). Any
 * other overlap of output and input (the addresses are compared as integers) is refused by
 * qtrain_conv2d_1x1_s8, qtrain_depthwise_conv2d_s8, qtrain_conv2d_small_k_s8 and qtrain_conv2d_wrapper_s8:
 * QTRAIN_STATUS_ARG_ERROR, nothing written. The mask, weight, slice, bias, multipliers and scratch
 * must not overlap the input, the output or each other.
 *
 * In place (convolution input gradients). An input-gradient kernel's output input_grad (dL/dx) may
 * overlap its input grad (dL/dy) only in these placements. Both are fp32: grad holds Q = N * OH * OW
 * pixels of 4 * C_out bytes, input_grad P = N * H * W pixels of 4 * C_in bytes. "Head-aligned":
 * input_grad == grad (the two start at the same byte). "Tail-aligned": (int8_t *)input_grad + 4 * P *
 * C_in == (int8_t *)grad + 4 * Q * C_out (the two end at the same byte).
 *   - qtrain_conv2d_1x1_input_grad_f32, only at stride_h = stride_w = 1 (then P = Q):
 *       head-aligned when C_in <= C_out;
 *       tail-aligned when C_in >= C_out.
 *     (C_in == C_out: both name the same placement, input_grad == grad.) Never at a stride > 1.
 *   - qtrain_depthwise_conv2d_input_grad_f32: head-aligned when grad_dims == input_dims (N, H, W and C
 *     equal: stride 1 with "same" padding in practice); any kernel size and padding the kernel accepts.
 *     Never tail-aligned.
 *   - qtrain_conv2d_input_grad_f32: never (called directly it does not check it).
 *   - qtrain_conv2d_input_grad_wrapper_f32: exactly what the kernel it picks for the shapes allows (a
 *     pure function of the shapes, documented at the wrapper): the 1x1 placements above when it picks
 *     qtrain_conv2d_1x1_input_grad_f32 (1x1, groups 1, no padding on any side), the depthwise placement
 *     when it picks qtrain_depthwise_conv2d_input_grad_f32, none otherwise (it refuses every overlap
 *     for the generic kernel). Python mirror:
 *     qtrain.targets.armv7em.kernels.input_grad_in_place_alignment() -> "head" | "tail" | None.
 * An allowed placement gives bit for bit the input_grad of the same call with disjoint buffers (the
 * same fmaf sequence), in the portable and the DSP build, with or without a trained weight slice
 * (int8, or fp32 master converted in scratch as usual), for any batch size; no byte outside input_grad
 * is written (the grad bytes outside it are left as they were, those under it are overwritten). Any
 * other overlap of grad and input_grad (the addresses are compared as integers, each buffer being the
 * byte range [p, p + 4 * count)) is refused by qtrain_conv2d_1x1_input_grad_f32,
 * qtrain_depthwise_conv2d_input_grad_f32 and qtrain_conv2d_input_grad_wrapper_f32:
 * QTRAIN_STATUS_ARG_ERROR, nothing written. The weight, slice and scratch must not overlap grad,
 * input_grad or each other.
 *
 * Scratch. No kernel allocates. A kernel that needs working memory takes a `qtrain_context_t` whose
 * buffer the caller provides (4-byte aligned, else the kernel refuses it; the model's QTRAIN_SCRATCH
 * section); ask `<kernel>_get_buffer_size()` with the same shape arguments first (0 means `ctx` may
 * be NULL). The sizes do not depend on whether the DSP path is compiled, so a code generator can plan
 * them once; qtrain.targets.armv7em.kernels.buffer_size_*() are their Python mirror. Kernels keep at
 * most about 1 KB on the stack.
 *
 * Saturation masks. A forward kernel given `mask != NULL` also writes the op's training mask: one
 * bit per output element, set where the output clamp left the rounded value unchanged (the gradient
 * flows only there). Element e (its row-major NHWC index, e = ((n * H + h) * W + w) * C + c) is bit
 * (e & 7) of byte mask[e >> 3]: 8 elements per byte, least significant bit first. The mask takes
 * ceil(count / 8) bytes; the unused high bits of the last byte are written as 0. Backward kernels
 * read masks the same way.
 *
 * Partially trained weights (qtrain_weight_t). A trainable weight keeps its frozen int8 original
 * (`data`, in Flash) and an SRAM copy of the trained channel slice [slice_start, slice_stop): input
 * channels (axis 3 of OHWI) for groups = 1, output channels (axis 0, [k, KH, KW, 1]) for a depthwise
 * weight. The copy is either int8 (`slice`) or an fp32 master (`master`) whose int8 value is
 * clamp(rint(master), -128, 127) (round half to even; numerics.master_to_param); a kernel converts a
 * master once per call into its scratch buffer. A fully trained weight is a slice over all channels
 * (or, for int8 storage, just `data` pointing at the SRAM copy).
 *
 * DSP. With QTRAIN_USE_DSP = 1 the hot kernels (1x1, depthwise, small-K and generic convolutions) use
 * the ARMv7E-M SIMD instructions through <arm_acle.h> (__smlad, __sxtb16, __sxtab16; the two
 * innermost dot-product loops are inline assembly of the same instructions, QTRAIN_DSP_ASM, because
 * clang 14 spills in them). It defaults to
 * 1 exactly when the compiler defines __ARM_FEATURE_DSP (Cortex-M4/M7); define it to 0 for the
 * portable C path, which the tests compare against (integer accumulation is exact, so both paths
 * give identical bytes). On other hosts QTRAIN_USE_DSP = 1 compiles the same DSP code over C
 * definitions of those intrinsics, which is how the host tests check that code too.
 *
 * C11, no libc beyond <stdint.h>/<stddef.h>, no double, no 64-bit division; -Wall -Wextra -Werror
 * -Wdouble-promotion clean; build with -ffp-contract=off (build.py does).
 */
#ifndef QTRAIN_KERNELS_H
#define QTRAIN_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ================================================================================================
 * Limits
 *
 * The numbers behind the wrappers' kernel choices and the kernels' shape limits, defined here once
 * for every kernel file. The Python mirror (qtrain.targets.armv7em.kernels: conv2d_kernel(),
 * buffer_size_*(), the planner's kernel registry) reads them from this file when it is imported, so
 * keep each one a `#define QTRAIN_NAME <integer>` line (a comment may follow on the line): a new
 * value here changes the kernels and the compiler's plans alike.
 * ============================================================================================== */

/* The largest KH and KW of the depthwise kernels (qtrain_depthwise_conv2d_s8,
 * qtrain_depthwise_conv2d_input_grad_f32, qtrain_depthwise_conv2d_weight_grad_f32 and the depthwise
 * stage of qtrain_fused_pointwise_depthwise_s8 refuse a larger one; the two convolution wrappers pick
 * the generic kernel for it). Their per-call tap arrays on the stack are sized by it. */
#define QTRAIN_MAX_DEPTHWISE_KERNEL 11

/* The largest K = KH * KW * C_in qtrain_conv2d_small_k_s8 accepts (qtrain_conv2d_wrapper_s8 picks it
 * only up to there). */
#define QTRAIN_SMALL_K_MAX_K 256

/* The most input channels for which qtrain_conv2d_wrapper_s8 picks qtrain_conv2d_small_k_s8 (the
 * stem): with more, the 1x1 and generic kernels' int8 weight reads amortise. */
#define QTRAIN_SMALL_K_MAX_CHANNELS 4

/* The most scratch bytes (qtrain_conv2d_small_k_s8_get_buffer_size: the weights widened to int16 and
 * one pixel pair) qtrain_conv2d_wrapper_s8 spends on qtrain_conv2d_small_k_s8; beyond it the wrapper
 * picks as if the shape were not small-K. */
#define QTRAIN_SMALL_K_MAX_SCRATCH 8192

/* Intermediate channels per block of qtrain_fused_pointwise_depthwise_s8 at its smallest scratch
 * (B = min(C_mid, QTRAIN_FUSED_CHANNEL_BLOCK) in its _get_buffer_size()). */
#define QTRAIN_FUSED_CHANNEL_BLOCK 8

/* The most elements (H * W * C / groups) one group of the group-norm kernels may hold: their exact
 * 64-bit statistics (n * sum d^2 - (sum d)^2) stay clear of overflow far beyond it. */
#define QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS 1048576

/* The most channels per group of the group-norm kernels (their 32-bit partial sums of squares take at
 * least one pixel's channels at a time and must stay below 2^31). */
#define QTRAIN_GROUP_NORM_MAX_CHANNELS 65536

/* ================================================================================================
 * Common types
 * ============================================================================================== */

typedef enum {
    QTRAIN_STATUS_OK = 0,
    /* A shape, parameter or buffer does not fit this kernel (nothing was written). The wrappers
     * never return it for arguments that satisfy the op verifiers. */
    QTRAIN_STATUS_ARG_ERROR = -1,
} qtrain_status_t;

/* A 4-d shape. Activations: n = batch, h, w, c. Filters: n = C_out, h = KH, w = KW, c = C_in / groups. */
typedef struct {
    int32_t n;
    int32_t h;
    int32_t w;
    int32_t c;
} qtrain_dims_t;

/* Caller-provided working memory: `size` bytes at `buf`, 4-byte aligned. */
typedef struct {
    void *buf;
    int32_t size;
} qtrain_context_t;

/* Geometry and quantization of one convolution (forward and both gradients).
 * Padding is given as [top, left]; bottom and right follow from the input and output sizes
 * (output = (input + top + bottom - kernel) / stride + 1), exactly as the op's `padding` says.
 * Padded taps read the input zero point, i.e. contribute 0 to the accumulator. */
typedef struct {
    int32_t input_zero_point;  /* zx (forward, weight gradient) */
    int32_t output_zero_point; /* zy (forward) */
    int32_t stride_h;
    int32_t stride_w;
    int32_t pad_top;
    int32_t pad_left;
    int32_t groups;    /* 1, C_in (depthwise), or any divisor of C_in and C_out */
    int32_t clamp_min; /* forward output range [clamp_min, clamp_max] within [-128, 127] (fused ReLU/ReLU6) */
    int32_t clamp_max;
} qtrain_conv_params_t;

/* The int8 weight a convolution reads (see "Partially trained weights" above).
 * data:         full OHWI weight, [C_out, KH, KW, C_in / groups]; read outside the slice only.
 * master:       NULL, or the fp32 master of the slice: OHWI [C_out, KH, KW, k] (groups = 1) or
 *               [k, KH, KW, 1] (depthwise), k = slice_stop - slice_start; other groups: the whole weight
 *               (slice 0 .. C_in / groups), read by the generic kernels.
 * slice:        NULL, or the int8 SRAM copy of the slice, same shape as `master`.
 *               At most one of master / slice; with neither, slice_start/slice_stop are ignored.
 * slice_start, slice_stop: the trained channels, 0 <= start < stop <= C_in (depthwise: C). */
typedef struct {
    const int8_t *data;
    const float *master;
    const int8_t *slice;
    int32_t slice_start;
    int32_t slice_stop;
} qtrain_weight_t;

/* Element type of a trainable tensor's SRAM copy (same values as qtrain_dtype_t). */
typedef enum {
    QTRAIN_STORAGE_S8 = 1,  /* int8 weight, updated in place: rint half to even, saturate */
    QTRAIN_STORAGE_S32 = 2, /* int32 bias, same */
    QTRAIN_STORAGE_F32 = 3, /* fp32 master copy: plain fp32 update */
    QTRAIN_STORAGE_S16 = 4, /* 16-bit fixed-point master of an int8 weight as two int8 planes (see below) */
} qtrain_storage_t;

/* ================================================================================================
 * Forward, int8 (bit-exact with qtrain.numerics (numerics/))
 *
 * Convolution (numerics.conv2d_with_mask), per output element (n, oh, ow, co):
 *   acc = bias[co] + sum_{kh, kw, ci} (x_pad[n, oh*sh + kh - pt, ow*sw + kw - pl, ci] - zx) * w[co, kh, kw, ci]
 *         (exact int32; the caller guarantees it fits, as qtrain.numerics checks)
 *   y   = clamp(rint(fp32(acc) * multiplier[co]) + zy, clamp_min, clamp_max)
 * with multiplier[co] = fp32(fp32(s_x * s_w[co]) / s_y) precomputed by the generator
 * (numerics.conv2d_multiplier; one value per output channel, repeat it for a per-tensor weight scale).
 *
 * Common arguments of the convolution kernels:
 *   ctx          scratch, at least <kernel>_get_buffer_size(...) bytes (NULL when that is 0)
 *   params       geometry, zero points, clamp range
 *   input_dims   [N, H, W, C_in];      input  int8 NHWC
 *   filter_dims  [C_out, KH, KW, C_in / groups]; weight (see qtrain_weight_t)
 *   bias         int32 [C_out], or NULL for none
 *   multiplier   fp32 [C_out]
 *   output_dims  [N, OH, OW, C_out];   output int8 NHWC
 *   mask         NULL, or ceil(N*OH*OW*C_out / 8) bytes for the saturation mask
 * They return QTRAIN_STATUS_ARG_ERROR (writing nothing) when the shapes do not fit the kernel or the
 * scratch buffer is too small.
 * ============================================================================================== */

/* Picks the kernel below for the shapes (a pure function of the shapes, so is its scratch size):
 *   groups 1, C_in <= QTRAIN_SMALL_K_MAX_CHANNELS, K = KH * KW * C_in <= QTRAIN_SMALL_K_MAX_K and
 *     small-K scratch <= QTRAIN_SMALL_K_MAX_SCRATCH bytes -> small_k (the stem);
 *   1x1, groups 1, no padding on any side -> 1x1;
 *   depthwise, multiplier 1, KH and KW <= QTRAIN_MAX_DEPTHWISE_KERNEL -> depthwise;
 *   anything else -> generic. ("No padding on any side": pad_top = pad_left = 0 and OH = (H - 1) / sh + 1,
 *   OW = (W - 1) / sw + 1; "depthwise": groups = C_in = C_out, filter [C, KH, KW, 1].)
 * In place: as the picked kernel allows (see "In place" at the top). */
qtrain_status_t qtrain_conv2d_wrapper_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                         const qtrain_dims_t *input_dims, const int8_t *input,
                                         const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                         const int32_t *bias, const float *multiplier,
                                         const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask);
int32_t qtrain_conv2d_wrapper_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                                 const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                                 const qtrain_weight_t *weight);

/* The kernel a convolution wrapper picks (qtrain_conv2d_wrapper_s8_kernel,
 * qtrain_conv2d_input_grad_wrapper_f32_kernel). */
typedef enum {
    QTRAIN_CONV_KERNEL_1X1 = 0,       /* qtrain_conv2d_1x1_s8 / qtrain_conv2d_1x1_input_grad_f32 */
    QTRAIN_CONV_KERNEL_DEPTHWISE = 1, /* qtrain_depthwise_conv2d_s8 / qtrain_depthwise_conv2d_input_grad_f32 */
    QTRAIN_CONV_KERNEL_SMALL_K = 2,   /* qtrain_conv2d_small_k_s8 (forward only) */
    QTRAIN_CONV_KERNEL_GENERIC = 3,   /* qtrain_conv2d_s8 / qtrain_conv2d_input_grad_f32 */
} qtrain_conv_kernel_t;

/* The kernel qtrain_conv2d_wrapper_s8 picks for these shapes (the rule above; the shapes are not
 * validated). For a generator that calls the kernel directly, and for the tests that hold the Python
 * mirror (qtrain.targets.armv7em.kernels.conv2d_kernel) to the wrapper's choice. */
qtrain_conv_kernel_t qtrain_conv2d_wrapper_s8_kernel(const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *input_dims,
                                                     const qtrain_dims_t *filter_dims,
                                                     const qtrain_dims_t *output_dims);

/* Pointwise: KH = KW = 1, groups = 1, no padding on any side (OH = (H - 1) / sh + 1), any stride.
 * The hot path for C_in > 32: the DSP version runs four output pixels x one output channel per inner
 * loop (8 SMLAD per 4 input channels; assembly on Thumb-2, see qtrain_kernels_support.h). Scratch:
 * 8 * C_in bytes (DSP: four unpacked input rows; portable: one, as int32), plus C_out * k bytes rounded
 * up to 4 when the weight has an fp32 master. Given more (ctx->size), the assembly path uses it: with
 * C_out * (20 + 2 * C_in) bytes beyond the minimum (C_in a multiple of 8, at most 576) it widens the
 * weights to int16 once per call, with each channel's bias and multiplier (qtrain_quad_widen in
 * qtrain_kernels_support.h), and runs 21 instructions per 32 MACs; with less, a stride-1 layer of few
 * pixels unpacks all its pixels first (8 * C_in bytes per 4 pixels) and widens the output channels in
 * blocks of 8 or more. The output does not depend on it.
 * In place: head-aligned when C_out <= C_in (any stride), tail-aligned when C_out >= C_in (stride 1). */
qtrain_status_t qtrain_conv2d_1x1_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                     const qtrain_dims_t *input_dims, const int8_t *input,
                                     const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                     const int32_t *bias, const float *multiplier,
                                     const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask);
int32_t qtrain_conv2d_1x1_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                             const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                             const qtrain_weight_t *weight);

/* Depthwise: groups = C_in = C_out (channel multiplier 1), filter [C, KH, KW, 1], KH and KW <=
 * QTRAIN_MAX_DEPTHWISE_KERNEL, any stride and padding (3x3/5x5/7x7, stride 1/2 in practice). The DSP
 * version works channel by channel on a ring of KH padded input rows held as int16 (x - zx),
 * column-interleaved (each row twice) so that two vertically adjacent taps are one SMLAD; the portable
 * version uses the same ring as int32, each row once. Scratch: 4 * KH * ((OW - 1) * sw + KW) bytes
 * rounded up to 4, plus k * KH * KW bytes rounded up to 4 when the weight has an fp32 master.
 * In place: head-aligned when OH <= H, OW <= W and pad_top < KH. */
qtrain_status_t qtrain_depthwise_conv2d_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                           const qtrain_dims_t *input_dims, const int8_t *input,
                                           const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                           const int32_t *bias, const float *multiplier,
                                           const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask);
int32_t qtrain_depthwise_conv2d_s8_get_buffer_size(const qtrain_conv_params_t *params,
                                                   const qtrain_dims_t *input_dims,
                                                   const qtrain_dims_t *filter_dims,
                                                   const qtrain_dims_t *output_dims, const qtrain_weight_t *weight);

/* Pointwise streamed into depthwise (qtrain.fused_pointwise_depthwise): y = depthwise(pointwise(x)),
 * through the int8 intermediate tensor mid [N, H, W, C_mid] quantized with zero point
 * pw_params->output_zero_point (= dw_params->input_zero_point), which never exists whole. Bit-exact with
 * qtrain_conv2d_1x1_s8 (pw_params, pw_filter_dims [C_mid, 1, 1, C_in], pw_weight, pw_bias,
 * pw_multiplier) into mid followed by qtrain_depthwise_conv2d_s8 (dw_params, dw_filter_dims
 * [C_mid, KH, KW, 1], dw_weight, dw_bias, dw_multiplier) from mid to output, without masks.
 *   pointwise: stride 1, no padding, groups 1 (pw_params' padding and strides must say so);
 *   depthwise: groups = C_mid, KH and KW <= QTRAIN_MAX_DEPTHWISE_KERNEL, any stride and padding;
 *   weights: frozen int8 OHWI arrays (a trained weight keeps the two separate ops); biases may be NULL.
 * The intermediate channels go in blocks of B channels and the output rows in bands of NB rows: per block
 * and band, the pointwise rows the band's windows need are computed once into a ring of
 * (NB - 1) * sh + KH rows of W x B int8 in scratch, then the band's depthwise output rows come from the
 * ring (DSP: the 1x1 kernel's pixel-quad engine and the depthwise kernel's row routine).
 * Scratch: at least _get_buffer_size() = 8 * C_in (one unpacked pixel quad) + 4 * B * KW * ceil(KH / 2)
 * (the block's weight pairs) + 4 * KH * ((OW - 1) * sw + KW) rounded up to 4 (one channel's int16
 * window) + KH * W * B rounded up to 4 (the ring), with B = min(C_mid, QTRAIN_FUSED_CHANNEL_BLOCK) and
 * NB = 1. Given more (ctx->size), the kernel uses it: of the schedules that fit (B = ceil(C_mid / P),
 * NB = 1 or floor((KH - 1) / sh) + 1), the one with the fewest estimated instructions (each block unpacks
 * the input again; a band builds its window rows once for NB output rows). The output does not depend
 * on it.
 * Never in place: the output must not overlap the input (refused otherwise). */
qtrain_status_t qtrain_fused_pointwise_depthwise_s8(
    const qtrain_context_t *ctx, const qtrain_conv_params_t *pw_params, const qtrain_dims_t *input_dims,
    const int8_t *input, const qtrain_dims_t *pw_filter_dims, const int8_t *pw_weight, const int32_t *pw_bias,
    const float *pw_multiplier, const qtrain_conv_params_t *dw_params, const qtrain_dims_t *dw_filter_dims,
    const int8_t *dw_weight, const int32_t *dw_bias, const float *dw_multiplier, const qtrain_dims_t *output_dims,
    int8_t *output);
int32_t qtrain_fused_pointwise_depthwise_s8_get_buffer_size(const qtrain_conv_params_t *pw_params,
                                                            const qtrain_dims_t *input_dims,
                                                            const qtrain_dims_t *pw_filter_dims,
                                                            const qtrain_conv_params_t *dw_params,
                                                            const qtrain_dims_t *dw_filter_dims,
                                                            const qtrain_dims_t *output_dims);

/* Small K: groups = 1 and K = KH * KW * C_in <= QTRAIN_SMALL_K_MAX_K, any kernel, stride and
 * padding: the network's first convolution (mcunet: 3x3, stride 2, 3 input channels, K = 27); it accepts any such shape
 * (a thin pointwise layer too, though there the per-output requantization dominates and the 1x1
 * kernel is as fast without the scratch). The weights are widened to int16 once per call and each pair of output pixels
 * gathered once (im2col), so the inner loop is 2 LDRD + 4 SMLAD per 2 taps (two pixels x two
 * channels). Scratch: 2 * K_pad * (C_out_pad + 2) bytes, K_pad = K and C_out_pad = C_out rounded up
 * to even; a weight slice (master or int8) needs no more. Given (C_out / 2) * (24 + 4 * K_pad) bytes
 * more (no mask, a bias, an even C_out), the assembly loop reads each channel pair's biases and
 * multipliers with its weights; the output does not depend on it.
 * In place: the output may overlap the input when it starts at least
 * qtrain_conv2d_small_k_s8_in_place_gap() bytes before it (input - output >= gap, compared as integers;
 * a negative gap lets the output start after the input's first byte). */
qtrain_status_t qtrain_conv2d_small_k_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                      const qtrain_dims_t *input_dims, const int8_t *input,
                                      const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                      const int32_t *bias, const float *multiplier,
                                      const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask);
int32_t qtrain_conv2d_small_k_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                              const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                              const qtrain_weight_t *weight);
/* The smallest input - output (bytes) at which qtrain_conv2d_small_k_s8 may write over its input: pixel
 * pairs run in raster order, each pair's window gathered into scratch before its outputs are stored,
 * so every stored pair must end at or before the first input byte a later pixel reads. A pure function
 * of the shapes (O(N * OH * OW)); Python mirror: qtrain.targets.armv7em.kernels.small_k_in_place_gap(). */
int32_t qtrain_conv2d_small_k_s8_in_place_gap(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                              const qtrain_dims_t *output_dims);

/* Generic: any kernel size, stride, padding and groups (depthwise with a channel multiplier too).
 * Im2col of two output pixels at a time (int16, x - zx, padding 0) times the int8 weight rows.
 * Scratch: 4 * K_pad bytes (K = KH * KW * C_in / groups, K_pad = K rounded up to 4), plus, when the
 * weight has a slice (master or int8: the kernel merges it into one weight), C_out * K bytes rounded
 * up to 4 and, for a master, C_out * KH * KW * k more rounded up to 4. Never in place (not checked here). */
qtrain_status_t qtrain_conv2d_s8(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                 const qtrain_dims_t *input_dims, const int8_t *input,
                                 const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                 const int32_t *bias, const float *multiplier, const qtrain_dims_t *output_dims,
                                 int8_t *output, uint8_t *mask);
int32_t qtrain_conv2d_s8_get_buffer_size(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                         const qtrain_dims_t *filter_dims, const qtrain_dims_t *output_dims,
                                         const qtrain_weight_t *weight);

/* Requantizing add (numerics.add_with_mask), `count` elements, lhs = the op's first operand:
 *   t = fmaf(fp32(rhs), rhs_multiplier, offset); t = fmaf(fp32(lhs), lhs_multiplier, t);
 *   y = clamp(rint(t), clamp_min, clamp_max)
 * with (lhs_multiplier, rhs_multiplier, offset) = numerics.add_constants(...) precomputed by the
 * generator (r_a, r_b, c). `mask` optional. Output may alias either input. */
void qtrain_add_s8(const int8_t *lhs, const int8_t *rhs, int32_t count, float lhs_multiplier,
                   float rhs_multiplier, float offset, int32_t clamp_min, int32_t clamp_max, int8_t *output,
                   uint8_t *mask);

/* Average pool without padding (numerics.avgpool_with_mask), global when the kernel is H x W:
 *   acc = sum over the kh x kw window of (x - zx)   (exact int32)
 *   y   = clamp(rint(fp32(acc) * multiplier) + zy, -128, 127)
 * multiplier = numerics.avgpool_multiplier(s_x, s_y, kernel) = fp32(s_x / fp32(s_y * fp32(kh * kw))).
 * output_dims = [N, (H - kh) / sh + 1, (W - kw) / sw + 1, C]. `mask` optional. No scratch. */
qtrain_status_t qtrain_avgpool_s8(const qtrain_dims_t *input_dims, const int8_t *input, int32_t kernel_h,
                                  int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t input_zero_point,
                                  float multiplier, int32_t output_zero_point, const qtrain_dims_t *output_dims,
                                  int8_t *output, uint8_t *mask);

/* numerics.quantize: y = clamp(rint(fp32(x / scale)) + zero_point, -128, 127) (one fp32 division;
 * NaN gives -128). */
void qtrain_quantize_f32_s8(const float *input, int32_t count, float scale, int32_t zero_point, int8_t *output);

/* numerics.dequantize: y = fp32(x - zero_point) * scale. */
void qtrain_dequantize_s8_f32(const int8_t *input, int32_t count, float scale, int32_t zero_point, float *output);

/* numerics.requantize_with_mask on an int32 accumulator tensor of `count` elements whose last axis
 * has `channels` entries: y = clamp(rint(fp32(acc) * multiplier[c]) + zero_point, clamp_min,
 * clamp_max); `num_multipliers` is 1 (per tensor) or `channels`. `mask` optional. */
void qtrain_requantize_s32_s8(const int32_t *input, int32_t count, int32_t channels, const float *multiplier,
                              int32_t num_multipliers, int32_t zero_point, int32_t clamp_min, int32_t clamp_max,
                              int8_t *output, uint8_t *mask);

/* numerics.master_to_param for int8: out[i] = clamp(rint(master[i]), -128, 127) (NaN gives -128). */
void qtrain_master_to_s8(const float *master, int32_t count, int8_t *output);

/* ================================================================================================
 * Backward, fp32
 * ============================================================================================== */

/* qtrain.requant_grad (numerics.requant_grad), `count` elements, last axis `channels`:
 *   out[e] = mask bit e set ? fp32(grad[e] * multiplier[c]) : +0.0
 * `mask` NULL means all set; `num_multipliers` is 1 or `channels`. In place allowed (out == grad). */
void qtrain_requant_grad_f32(const float *grad, const uint8_t *mask, int32_t count, int32_t channels,
                             const float *multiplier, int32_t num_multipliers, float *output);

/* qtrain.conv2d_input_grad (numerics.conv2d_input_grad): dL/dx of a convolution, the transposed
 * convolution of g = dL/dacc with the int8 weight the forward used:
 *   gx[n, h, w, ci] = sum over taps (kh, kw), outputs (oh, ow) with oh*sh + kh = h + pt and
 *                     ow*sw + kw = w + pl, and co of ci's group, of g[n, oh, ow, co] * w[co, kh, kw, ci']
 * Input pixels no window reaches get +0. Common arguments:
 *   params       stride, padding, groups (zero points and clamp unused)
 *   grad_dims    [N, OH, OW, C_out]; grad fp32 (the forward output's shape)
 *   filter_dims, weight  as in the forward call (same partially trained weight)
 *   input_dims   [N, H, W, C_in];   input_grad fp32 (the forward input's shape), fully written
 * Order (all three): each gx element is one fp32 accumulator starting at +0, updated with
 * acc = fmaf(g, fp32(w), acc) over its terms: taps (kh, kw) row-major, then co ascending.
 * The wrapper picks (a pure function of the shapes, so is its scratch size): 1x1, groups 1, no padding
 * on any side -> 1x1; depthwise, multiplier 1, KH and KW <= QTRAIN_MAX_DEPTHWISE_KERNEL -> depthwise;
 * anything else -> generic.
 * In place: as the picked kernel allows (see "In place (convolution input gradients)" at the top). */
qtrain_status_t qtrain_conv2d_input_grad_wrapper_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *grad_dims, const float *grad,
                                                     const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                     const qtrain_dims_t *input_dims, float *input_grad);
int32_t qtrain_conv2d_input_grad_wrapper_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                             const qtrain_dims_t *grad_dims,
                                                             const qtrain_dims_t *filter_dims,
                                                             const qtrain_dims_t *input_dims,
                                                             const qtrain_weight_t *weight);
/* The kernel qtrain_conv2d_input_grad_wrapper_f32 picks for these shapes (QTRAIN_CONV_KERNEL_1X1,
 * _DEPTHWISE or _GENERIC; the shapes are not validated). Python mirror:
 * qtrain.targets.armv7em.kernels.conv2d_input_grad_kernel. */
qtrain_conv_kernel_t qtrain_conv2d_input_grad_wrapper_f32_kernel(const qtrain_conv_params_t *params,
                                                                 const qtrain_dims_t *grad_dims,
                                                                 const qtrain_dims_t *filter_dims,
                                                                 const qtrain_dims_t *input_dims);

/* Pointwise (KH = KW = 1, groups = 1, no padding, any stride): gx[p, ci] = sum_co g[p, co] * w[co, ci],
 * four pixels x four input channels per register block. Scratch: C_out * k bytes rounded up to 4 when
 * the weight has an fp32 master, plus 16 * C_out bytes (always: one block's four gradient rows, which
 * the kernel copies there before writing the block when grad and input_grad overlap).
 * In place, stride 1 only: head-aligned when C_in <= C_out, tail-aligned when C_in >= C_out. */
qtrain_status_t qtrain_conv2d_1x1_input_grad_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                 const qtrain_dims_t *grad_dims, const float *grad,
                                                 const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                 const qtrain_dims_t *input_dims, float *input_grad);
int32_t qtrain_conv2d_1x1_input_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                         const qtrain_dims_t *grad_dims,
                                                         const qtrain_dims_t *filter_dims,
                                                         const qtrain_dims_t *input_dims,
                                                         const qtrain_weight_t *weight);

/* Depthwise (groups = C_in = C_out, filter [C, KH, KW, 1]), KH and KW up to
 * QTRAIN_MAX_DEPTHWISE_KERNEL, any stride (2 included) and padding. One channel at a time: its
 * gradient plane is copied into a zero-bordered fp32 plane, and the input pixels of each stride class
 * (iy mod sh, ix mod sw), which all see the same taps, are a stride-1 correlation with that
 * sub-kernel (fully unrolled for 1..7 taps a side).
 * Scratch: 4 * PH * PW bytes, PH = floor((H - 1 + pt) / sh) - floor((pt - KH + 1) / sh) + 1 (the
 * output rows any tap of any input row reaches; PW likewise), plus k * KH * KW bytes rounded up to 4
 * when the weight has an fp32 master.
 * In place: head-aligned when grad_dims == input_dims (each channel's gradient plane is copied before
 * that channel is written). */
qtrain_status_t qtrain_depthwise_conv2d_input_grad_f32(const qtrain_context_t *ctx,
                                                       const qtrain_conv_params_t *params,
                                                       const qtrain_dims_t *grad_dims, const float *grad,
                                                       const qtrain_dims_t *filter_dims,
                                                       const qtrain_weight_t *weight,
                                                       const qtrain_dims_t *input_dims, float *input_grad);
int32_t qtrain_depthwise_conv2d_input_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                               const qtrain_dims_t *grad_dims,
                                                               const qtrain_dims_t *filter_dims,
                                                               const qtrain_dims_t *input_dims,
                                                               const qtrain_weight_t *weight);

/* Generic: any kernel, stride, padding and groups; per input pixel, blocks of four input channels.
 * Scratch: none without a slice; with one (merged once per call) C_out * KH * KW * C_in / groups
 * bytes rounded up to 4, plus, for an fp32 master, C_out * KH * KW * k more rounded up to 4.
 * Never in place (not checked here; the wrapper refuses an overlap). */
qtrain_status_t qtrain_conv2d_input_grad_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                             const qtrain_dims_t *grad_dims, const float *grad,
                                             const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                             const qtrain_dims_t *input_dims, float *input_grad);
int32_t qtrain_conv2d_input_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *grad_dims,
                                                     const qtrain_dims_t *filter_dims,
                                                     const qtrain_dims_t *input_dims, const qtrain_weight_t *weight);

/* qtrain.conv2d_weight_grad (numerics.conv2d_weight_grad), groups = 1 (any kernel, stride, padding;
 * 1x1 is the fast case) or any groups without a slice:
 *   dw[o, kh, kw, c] = sum over n, oh, ow of g[n, oh, ow, o] * fp32(x_pad[n, oh*sh + kh - pt, ow*sw + kw - pl, c] - zx)
 *   params       stride, padding, groups, input_zero_point
 *   input_dims   [N, H, W, k]: the saved layer input, channels [start, stop) of it (k = stop - start)
 *   grad_dims    [N, OH, OW, C_out]; grad = dL/dacc
 *   filter_dims  [C_out, KH, KW, k] (groups = 1) or [C_out, KH, KW, C_in / groups]: the result shape
 *   weight_grad  fp32, filter_dims
 * Order: each dw element is one fp32 accumulator from +0, acc = fmaf(g, fp32(x - zx), acc) over the
 * outputs (n, oh, ow) row-major (padded taps skipped: they contribute 0). Eight output channels x two
 * input channels per register block; no scratch. */
qtrain_status_t qtrain_conv2d_weight_grad_f32(const qtrain_conv_params_t *params, const qtrain_dims_t *input_dims,
                                              const int8_t *input, const qtrain_dims_t *grad_dims, const float *grad,
                                              const qtrain_dims_t *filter_dims, float *weight_grad);

/* The same weight gradient fused with qtrain.sgd_update of the trainable weight: each block of
 * dw is applied as soon as it is complete and never stored (the liveness-driven schedule's way to
 * update a layer without a C_out x KH x KW x k fp32 buffer). groups = 1. The update is exactly
 * qtrain_sgd_update_s8 / _f32 below on the same gradient values, so this equals
 * qtrain_conv2d_weight_grad_f32 followed by that update, bit for bit.
 *   lr, grad_scale, num_grad_scales   as in qtrain_sgd_update_* (per output channel QAS factors)
 *   storage      QTRAIN_STORAGE_S8 (int8 SRAM copy) or QTRAIN_STORAGE_F32 (fp32 master)
 *   param        the SRAM copy, filter_dims = [C_out, KH, KW, k] */
qtrain_status_t qtrain_conv2d_weight_grad_sgd_update(const qtrain_conv_params_t *params,
                                                     const qtrain_dims_t *input_dims, const int8_t *input,
                                                     const qtrain_dims_t *grad_dims, const float *grad,
                                                     const qtrain_dims_t *filter_dims, float lr,
                                                     const float *grad_scale, int32_t num_grad_scales,
                                                     qtrain_storage_t storage, void *param);

/* The same with stochastic rounding (qtrain_sgd_update_s8_stochastic / _s16_stochastic below on the same
 * gradient values, element i of the copy drawing qtrain_noise_u(noise_key, i)).
 *   storage      QTRAIN_STORAGE_S8 (int8 copy) or QTRAIN_STORAGE_S16 (the two planes of an int16 master)
 *   noise_key    qtrain_noise_key(seed, step counter) */
qtrain_status_t qtrain_conv2d_weight_grad_sgd_update_stochastic(const qtrain_conv_params_t *params,
                                                                const qtrain_dims_t *input_dims, const int8_t *input,
                                                                const qtrain_dims_t *grad_dims, const float *grad,
                                                                const qtrain_dims_t *filter_dims, float lr,
                                                                const float *grad_scale, int32_t num_grad_scales,
                                                                qtrain_storage_t storage, void *param,
                                                                uint32_t noise_key);

/* The same with SGD momentum (qtrain_sgd_momentum_update_* below): each finished block of dw first
 * updates its velocity, v = fp32(fp32(momentum * v) + dw), then v is applied as dw is above.
 *   velocity     fp32, filter_dims elements (the update's state), must not overlap anything else */
qtrain_status_t qtrain_conv2d_weight_grad_sgd_momentum_update(const qtrain_conv_params_t *params,
                                                              const qtrain_dims_t *input_dims, const int8_t *input,
                                                              const qtrain_dims_t *grad_dims, const float *grad,
                                                              const qtrain_dims_t *filter_dims, float lr,
                                                              const float *grad_scale, int32_t num_grad_scales,
                                                              qtrain_storage_t storage, void *param, float *velocity,
                                                              float momentum);

/* Depthwise weight gradient (groups = C_out, filter [C_out, KH, KW, 1]) of the channel slice
 * [slice_start, slice_start + k):
 *   input_dims   [N, H, W, k]: the saved input channels [slice_start, slice_start + k)
 *   grad_dims    [N, OH, OW, C_out] (channels slice_start .. slice_start + k - 1 are read)
 *   filter_dims  [k, KH, KW, 1]: the result shape; weight_grad fp32
 * Order: per weight element, acc = fmaf(g, x_pad - zx, acc) over the outputs row-major, padded taps
 * included (as +0 products). Scratch: 4 * N * (R * S + OH * OW) bytes, R = (OH - 1) * sh + KH and
 * S = (OW - 1) * sw + KW: one channel's padded input plane as fp32 and its gathered gradient. */
qtrain_status_t qtrain_depthwise_conv2d_weight_grad_f32(const qtrain_context_t *ctx,
                                                        const qtrain_conv_params_t *params,
                                                        const qtrain_dims_t *input_dims, const int8_t *input,
                                                        const qtrain_dims_t *grad_dims, const float *grad,
                                                        int32_t slice_start, const qtrain_dims_t *filter_dims,
                                                        float *weight_grad);
int32_t qtrain_depthwise_conv2d_weight_grad_f32_get_buffer_size(const qtrain_conv_params_t *params,
                                                                const qtrain_dims_t *input_dims,
                                                                const qtrain_dims_t *grad_dims,
                                                                const qtrain_dims_t *filter_dims);

/* qtrain.bias_grad: out[c] = sum over the `pixels` rows of grad[p, c], fp32 adds in row order from +0. */
void qtrain_bias_grad_f32(const float *grad, int32_t pixels, int32_t channels, float *output);

/* qtrain.avgpool_grad (numerics.avgpool_grad): gx[n, h, w, c] = sum over the windows holding (h, w)
 * of g[n, oh, ow, c]; windows row-major, fp32 adds from +0 (a global pool is a broadcast). Pixels no
 * window covers get +0. grad_dims = the pool's output, input_dims = its input. */
qtrain_status_t qtrain_avgpool_grad_f32(const qtrain_dims_t *grad_dims, const float *grad, int32_t kernel_h,
                                        int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                        const qtrain_dims_t *input_dims, float *input_grad);

/* qtrain.grad_accumulate: out = fp32(lhs + rhs). In place allowed (out == lhs or rhs). */
void qtrain_grad_accumulate_f32(const float *lhs, const float *rhs, int32_t count, float *output);

/* qtrain.channel_slice: out[p, i] = in[p, start + i] for i < stop - start, `pixels` rows of `channels`. */
void qtrain_channel_slice_s8(const int8_t *input, int32_t pixels, int32_t channels, int32_t start, int32_t stop,
                             int8_t *output);
void qtrain_channel_slice_f32(const float *input, int32_t pixels, int32_t channels, int32_t start, int32_t stop,
                              float *output);

/* qtrain.cross_entropy (numerics.cross_entropy) of `num_classes` fp32 logits and a label in
 * [0, num_classes): mx = max; t = x - mx; e = qtrain_expf(t); s = sum e in index order;
 * loss = qtrain_logf(s) - t[label]. When `grad` is not NULL it also writes qtrain.cross_entropy_grad
 * from the same e and s: grad[i] = fp32(e[i] / s), grad[label] = fp32(grad[label] - 1).
 * No scratch (e is kept in `grad` when given, else recomputed). */
float qtrain_cross_entropy_f32(const float *logits, int32_t num_classes, int32_t label, float *grad);

/* qtrain.cross_entropy_grad alone (the gradient above). */
void qtrain_cross_entropy_grad_f32(const float *logits, int32_t num_classes, int32_t label, float *grad);

/* ================================================================================================
 * Backward, activation gradients held as bf16 (qtrain-narrow-gradients; qtrain_gradients_bf16.c and
 * qtrain_conv2d_input_grad_f32.c). A bf16 gradient is a uint16_t array holding the top half of each
 * fp32 pattern. Each kernel computes what its fp32 namesake above computes, in the same fp32
 * operations and order, reading bf16 exactly and rounding each result once to nearest even
 * (qtrain_f32_to_bf16). Suffix _bf16: reads and writes bf16; _IN_OUT: reads IN, writes OUT.
 * No scratch except the conv input gradients'. In place: requant_grad_bf16 and grad_accumulate_bf16
 * (out == an input); requant_grad_f32_bf16 and grad_convert_f32_bf16 with output == grad (the narrower
 * result at the same first byte); requant_grad_bf16_f32 and grad_convert_bf16_f32 with the same last
 * byte (the wider result ends where the input ends); the 1x1 input gradient as stated below.
 * ============================================================================================== */

void qtrain_grad_convert_f32_bf16(const float *input, int32_t count, uint16_t *output);
void qtrain_grad_convert_bf16_f32(const uint16_t *input, int32_t count, float *output);

void qtrain_requant_grad_bf16(const uint16_t *grad, const uint8_t *mask, int32_t count, int32_t channels,
                              const float *multiplier, int32_t num_multipliers, uint16_t *output);
void qtrain_requant_grad_bf16_f32(const uint16_t *grad, const uint8_t *mask, int32_t count, int32_t channels,
                                  const float *multiplier, int32_t num_multipliers, float *output);
void qtrain_requant_grad_f32_bf16(const float *grad, const uint8_t *mask, int32_t count, int32_t channels,
                                  const float *multiplier, int32_t num_multipliers, uint16_t *output);

/* The generic (gather-form) input gradient of any convolution (qtrain_conv2d_input_grad_f32). */
qtrain_status_t qtrain_conv2d_input_grad_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                              const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                              const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                              const qtrain_dims_t *input_dims, uint16_t *input_grad);
qtrain_status_t qtrain_conv2d_input_grad_bf16_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                  const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                  const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                  const qtrain_dims_t *input_dims, float *input_grad);
qtrain_status_t qtrain_conv2d_input_grad_f32_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                  const qtrain_dims_t *grad_dims, const float *grad,
                                                  const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                  const qtrain_dims_t *input_dims, uint16_t *input_grad);

/* A 1x1 convolution's input gradient (stride 1, no padding, groups 1), gx[p, ci] = sum over co
 * ascending of g[p, co] * fp32(w[co, ci]). Scratch: qtrain_conv2d_1x1_input_grad_bf16_get_buffer_size
 * (one gradient row as fp32, then a master slice as int8). In place: input_grad == grad when a result
 * pixel's bytes <= a gradient pixel's ("head"), same last byte when larger ("tail"). */
int32_t qtrain_conv2d_1x1_input_grad_bf16_get_buffer_size(const qtrain_dims_t *filter_dims,
                                                          const qtrain_weight_t *weight);
qtrain_status_t qtrain_conv2d_1x1_input_grad_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                  const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                  const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                  const qtrain_dims_t *input_dims, uint16_t *input_grad);
qtrain_status_t qtrain_conv2d_1x1_input_grad_bf16_f32(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                      const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                      const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                      const qtrain_dims_t *input_dims, float *input_grad);
qtrain_status_t qtrain_conv2d_1x1_input_grad_f32_bf16(const qtrain_context_t *ctx, const qtrain_conv_params_t *params,
                                                      const qtrain_dims_t *grad_dims, const float *grad,
                                                      const qtrain_dims_t *filter_dims, const qtrain_weight_t *weight,
                                                      const qtrain_dims_t *input_dims, uint16_t *input_grad);

/* qtrain.streamed_expansion_input_grad: the input gradient of a frozen 1x1 expansion + depthwise pair
 * from the depthwise conv's g_acc (`grad`, [N, OH, OW, C]), one row of the expanded tensor
 * (`mid_dims`, [N, H, W, C]) at a time in scratch, with the expansion's requant_grad (`mask` over the
 * expanded tensor or NULL, `multiplier` 1 or C values) and, when `bias_grad` is not NULL, its bias
 * gradient (C floats). `params`: the depthwise stride and padding, groups = C. Weights: int8 Flash
 * arrays, dw [C, KH, KW, 1], pw [C, 1, 1, C_in]. Sums in the unfused kernels' orders (see the .c file).
 * Scratch: qtrain_streamed_expansion_input_grad_get_buffer_size (W x C floats). Never in place. */
int32_t qtrain_streamed_expansion_input_grad_get_buffer_size(const qtrain_dims_t *mid_dims);
#define QTRAIN_STREAMED_EXPANSION_INPUT_GRAD(SUFFIX, IN_T, OUT_T)                                                \
    qtrain_status_t qtrain_streamed_expansion_input_grad_##SUFFIX(                                              \
        const qtrain_context_t *ctx, const qtrain_conv_params_t *params, const qtrain_dims_t *grad_dims,        \
        const IN_T *grad, const qtrain_dims_t *dw_dims, const int8_t *dw_weight, const qtrain_dims_t *mid_dims, \
        const uint8_t *mask, const float *multiplier, int32_t num_multipliers, const qtrain_dims_t *pw_dims,    \
        const int8_t *pw_weight, const qtrain_dims_t *input_dims, OUT_T *input_grad, float *bias_grad)
QTRAIN_STREAMED_EXPANSION_INPUT_GRAD(f32, float, float);
QTRAIN_STREAMED_EXPANSION_INPUT_GRAD(bf16, uint16_t, uint16_t);
QTRAIN_STREAMED_EXPANSION_INPUT_GRAD(bf16_f32, uint16_t, float);
QTRAIN_STREAMED_EXPANSION_INPUT_GRAD(f32_bf16, float, uint16_t);

/* A depthwise conv's input gradient (multiplier 1, stride 1, gradient of the input's shape) with bf16
 * gradients and a frozen int8 weight [C, KH, KW, 1]: taps row-major from +0, rounded once. Scratch:
 * qtrain_depthwise_conv2d_input_grad_bf16_get_buffer_size (a ring of KH rows of W x min(C, 8) values).
 * In place: input_grad == grad ("head"). */
int32_t qtrain_depthwise_conv2d_input_grad_bf16_get_buffer_size(const qtrain_dims_t *filter_dims,
                                                                const qtrain_dims_t *input_dims);
qtrain_status_t qtrain_depthwise_conv2d_input_grad_bf16(const qtrain_context_t *ctx,
                                                        const qtrain_conv_params_t *params,
                                                        const qtrain_dims_t *grad_dims, const uint16_t *grad,
                                                        const qtrain_dims_t *filter_dims, const int8_t *weight,
                                                        const qtrain_dims_t *input_dims, uint16_t *input_grad);

void qtrain_bias_grad_bf16(const uint16_t *grad, int32_t pixels, int32_t channels, float *output);

qtrain_status_t qtrain_avgpool_grad_bf16(const qtrain_dims_t *grad_dims, const uint16_t *grad, int32_t kernel_h,
                                         int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                         const qtrain_dims_t *input_dims, uint16_t *input_grad);
qtrain_status_t qtrain_avgpool_grad_bf16_f32(const qtrain_dims_t *grad_dims, const uint16_t *grad, int32_t kernel_h,
                                             int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                             const qtrain_dims_t *input_dims, float *input_grad);
qtrain_status_t qtrain_avgpool_grad_f32_bf16(const qtrain_dims_t *grad_dims, const float *grad, int32_t kernel_h,
                                             int32_t kernel_w, int32_t stride_h, int32_t stride_w,
                                             const qtrain_dims_t *input_dims, uint16_t *input_grad);

void qtrain_grad_accumulate_bf16(const uint16_t *lhs, const uint16_t *rhs, int32_t count, uint16_t *output);

void qtrain_cross_entropy_grad_bf16(const float *logits, int32_t num_classes, int32_t label, uint16_t *grad);

/* ================================================================================================
 * Bilinear resize (qtrain.upsample, align_corners = False; dialects/qtrain/upsample.py states the
 * numerics and both kernels follow it operation for operation)
 * ============================================================================================== */

/* int8 NHWC input_dims [N, h, w, C] -> output_dims [N, H, W, C] (any sizes >= 1):
 *   t = the nested fp32 bilinear interpolation of x - zx at the four taps of each output pixel
 *   y = clamp(rint(fp32(t * multiplier)) + zy, -128, 127),  multiplier = fp32(s_x / s_y)
 * Bit-exact with the golden model. `mask` optional. No scratch; input and output must not overlap. */
qtrain_status_t qtrain_upsample_bilinear_s8(const qtrain_dims_t *input_dims, const int8_t *input,
                                            int32_t input_zero_point, float multiplier, int32_t output_zero_point,
                                            const qtrain_dims_t *output_dims, int8_t *output, uint8_t *mask);

/* qtrain.upsample_grad: input_grad (input_dims, the resize's input) = every output gradient of grad
 * (grad_dims, the resize's output) scattered to its four taps with weight fp32(ly * lx): fp32 adds from
 * +0, output pixels in raster order, taps (y0, x0), (y0, x1), (y1, x0), (y1, x1). No scratch. */
qtrain_status_t qtrain_upsample_bilinear_grad_f32(const qtrain_dims_t *grad_dims, const float *grad,
                                                  const qtrain_dims_t *input_dims, float *input_grad);

/* ================================================================================================
 * Table activations (qtrain.lut: HardSwish, HardSigmoid, Sigmoid, SiLU, requantization;
 * dialects/qtrain/activations.py computes the tables at compile time and states the numerics)
 * ============================================================================================== */

/* output[i] = table[input[i] + 128] (table: 256 int8 entries). In place allowed (output == input). */
void qtrain_lut_s8(const int8_t *input, int32_t count, const int8_t *table, int8_t *output);

/* qtrain.lut_grad: input_grad[i] = fp32(grad[i] * slope[input[i] + 128]) (slope: 256 floats, 0 where the
 * forward table was clamped). In place allowed (input_grad == grad). */
void qtrain_lut_grad_f32(const float *grad, const int8_t *input, int32_t count, const float *slope,
                         float *input_grad);

/* ================================================================================================
 * Multiply (qtrain.mul, onnxruntime's QLinearMul; dialects/qtrain/mul.py)
 * ============================================================================================== */

/* int8 NHWC lhs (dims) times rhs, the same shape or (rhs_broadcast = 1) N x 1 x 1 x C:
 *   t = fp32(fp32(fp32((a - za) * (b - zb)) * multiplier) + fp32(zy));  y = clamp(rint(t), -128, 127)
 * multiplier = fp32(fp32(s_a * s_b) / s_y). Bit-exact with the golden model. `mask` optional. Output may
 * equal lhs (in place). */
qtrain_status_t qtrain_mul_s8(const qtrain_dims_t *dims, const int8_t *lhs, int32_t lhs_zero_point, const int8_t *rhs,
                              int32_t rhs_broadcast, int32_t rhs_zero_point, float multiplier,
                              int32_t output_zero_point, int8_t *output, uint8_t *mask);

/* qtrain.mul_grad: v = fp32(grad * fp32(other - other_zero_point)) over grad_dims, `other` broadcast from
 * N x 1 x 1 x C when other_broadcast; reduce = 0: result = v (grad_dims); reduce = 1: result [N, C] = the
 * sum of v over H, W (fp32 adds from +0, pixels in raster order). */
void qtrain_mul_grad_f32(const qtrain_dims_t *grad_dims, const float *grad, const int8_t *other,
                         int32_t other_broadcast, int32_t other_zero_point, int32_t reduce, float *result);

/* ================================================================================================
 * Max pooling (qtrain.maxpool; dialects/qtrain/maxpool.py)
 * ============================================================================================== */

/* y = the max of the window taps inside the input (padded taps, top/left given, are never read); the
 * output keeps the input's quantization. Every window must hold an input pixel (else ARG_ERROR). */
qtrain_status_t qtrain_maxpool_s8(const qtrain_dims_t *input_dims, const int8_t *input, int32_t kernel_h,
                                  int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t pad_top,
                                  int32_t pad_left, const qtrain_dims_t *output_dims, int8_t *output);

/* qtrain.maxpool_grad: input_grad = +0, then each window's grad added (fp32, windows in raster order) to
 * its first maximal tap in row-major window order, recomputed from the saved int8 input. */
qtrain_status_t qtrain_maxpool_grad_f32(const qtrain_dims_t *input_dims, const int8_t *input,
                                        const qtrain_dims_t *grad_dims, const float *grad, int32_t kernel_h,
                                        int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t pad_top,
                                        int32_t pad_left, float *input_grad);

/* ================================================================================================
 * Channel moves (qtrain.concat, qtrain.gather_channels, qtrain.scatter_channels; dialects/qtrain/channels.py)
 * ============================================================================================== */

/* output[p, offset + c] = input[p, c] for `pixels` rows of `channels` (output rows: output_channels). */
void qtrain_copy_channels_s8(const int8_t *input, int32_t pixels, int32_t channels, int8_t *output,
                             int32_t output_channels, int32_t offset);

/* output[p, k] = input[p, indices[k]], k < output_channels (distinct indices < channels). */
void qtrain_gather_channels_s8(const int8_t *input, int32_t pixels, int32_t channels, const int32_t *indices,
                               int32_t output_channels, int8_t *output);

/* input_grad[p, indices[k]] = grad[p, k]; the other channels +0 (the gradient of the gather). */
void qtrain_scatter_channels_f32(const float *grad, int32_t pixels, int32_t grad_channels, const int32_t *indices,
                                 int32_t channels, float *input_grad);

/* ================================================================================================
 * GroupNorm (qtrain.group_norm, int8 in, fp32 statistics, int8 out; dialects/qtrain/group_norm.py states
 * the numerics and the three kernels follow it operation for operation). dims [N, H, W, C], C divisible
 * by `groups`; `epsilon` is eps_q (eps in the input's integer domain, > 0); gamma and beta are the fp32
 * per-channel parameters in the output's integer domain. Per sample and group: exact integer sums of
 * d = x - zx and d^2, mean = S1 / n, var = (n S2 - S1^2) / n / n, inv_std = 1 / sqrt(var + eps_q).
 * No scratch. Limits: QTRAIN_GROUP_NORM_MAX_GROUP_ELEMENTS.
 * ============================================================================================== */

/* y = clamp(rint(fp32(fp32(d * a[c]) + b[c])) + zy, clamp_min, clamp_max) with a[c] = fp32(inv_std *
 * gamma[c]), b[c] = fp32(beta[c] - fp32(mean * a[c])). `mask` optional. In place: output may be input. */
qtrain_status_t qtrain_group_norm_s8(const qtrain_dims_t *dims, const int8_t *input, int32_t input_zero_point,
                                     int32_t groups, float epsilon, const float *gamma, const float *beta,
                                     int32_t output_zero_point, int32_t clamp_min, int32_t clamp_max, int8_t *output,
                                     uint8_t *mask);

/* qtrain.group_norm_input_grad: from dL/dy `grad` (mask applied) and the saved int8 `input`,
 * xhat = fp32(fp32(d - mean) * inv_std), dxhat = fp32(grad * gamma[c]), A = sum dxhat, B = sum fp32(dxhat *
 * xhat) (fp32 from +0, the group's elements in memory order), input_grad = fp32(inv_std * fp32(fp32(dxhat -
 * fp32(A / n)) - fp32(xhat * fp32(B / n)))). In place: input_grad may be grad. */
qtrain_status_t qtrain_group_norm_input_grad_f32(const qtrain_dims_t *dims, const int8_t *input,
                                                 int32_t input_zero_point, int32_t groups, float epsilon,
                                                 const float *gamma, const float *grad, float *input_grad);

/* qtrain.group_norm_gamma_grad: gamma_grad[c] = sum over pixels (row-major, samples in order) of
 * fp32(grad * xhat), one fp32 accumulator per channel from +0. */
qtrain_status_t qtrain_group_norm_gamma_grad_f32(const qtrain_dims_t *dims, const int8_t *input,
                                                 int32_t input_zero_point, int32_t groups, float epsilon,
                                                 const float *grad, float *gamma_grad);

/* ================================================================================================
 * Update (numerics.sgd_update), in place on a trainable tensor's SRAM copy of `channels` x
 * `channel_size` elements (channels = axis 0, the output channel):
 *   step[c] = fp32(lr * grad_scale[c])     (grad_scale[0] for every c when num_grad_scales = 1)
 *   delta   = fp32(step[c] * g)
 *   s8 / s32:  p = saturate(p - rint(delta))   (rint half to even, exact integer subtraction)
 *   f32:       p = fp32(p - delta)
 * grad_scale holds the QAS factors (s_w[c]^-2 for weights, (s_x * s_w[c])^-2 for biases) or 1.0.
 * With a learning-rate schedule the caller passes lr = fp32(base lr * factor) (numerics.scheduled_lr),
 * the factor from qtrain_lr_schedule_f32, so step[c] = fp32(fp32(base lr * factor) * grad_scale[c]).
 * ============================================================================================== */
void qtrain_sgd_update_s8(int8_t *param, const float *grad, int32_t channels, int32_t channel_size, float lr,
                          const float *grad_scale, int32_t num_grad_scales);
void qtrain_sgd_update_s32(int32_t *param, const float *grad, int32_t channels, int32_t channel_size, float lr,
                           const float *grad_scale, int32_t num_grad_scales);
void qtrain_sgd_update_f32(float *param, const float *grad, int32_t channels, int32_t channel_size, float lr,
                           const float *grad_scale, int32_t num_grad_scales);

/* Stochastic rounding (numerics.sgd_update with a noise key): floor(x + u) instead of rint(x), with
 * u[i] = qtrain_noise_u(noise_key, i) in [0, 1), i the element's flat index in the copy, and
 * noise_key = qtrain_noise_key(seed, step counter) (the generated code passes the parameter's seed and
 * the counter as this step's qtrain_lr_schedule_f32 left it). Unbiased: E[new] = p - delta.
 *   s8:   p = saturate(p + floor(fp32(u - delta)))
 *   s16:  a 16-bit fixed-point master m = 256 * v + f of an int8 weight, kept as two int8 planes of
 *         count = channels * channel_size elements each: param[0 .. count) the value v (what the forward
 *         reads, exactly as an int8 copy), param[count .. 2 count) the fraction f in [-128, 127];
 *         m = clamp(m + floor(fp32(u - fp32(256 * delta))), -32768, 32639), v = floor((m + 128) / 256),
 *         f = m - 256 * v (numerics.fixed16_value / fixed16_master). */
void qtrain_sgd_update_s8_stochastic(int8_t *param, const float *grad, int32_t channels, int32_t channel_size,
                                     float lr, const float *grad_scale, int32_t num_grad_scales, uint32_t noise_key);
void qtrain_sgd_update_s16_stochastic(int8_t *param, const float *grad, int32_t channels, int32_t channel_size,
                                      float lr, const float *grad_scale, int32_t num_grad_scales, uint32_t noise_key);

/* numerics.noise_key: mix32(seed ^ mix32(step)), mix32 = MurmurHash3's 32-bit finalizer. */
uint32_t qtrain_noise_key(uint32_t seed, uint32_t step);

/* SGD with momentum (numerics.momentum_velocity, then the update above with g := v):
 *   v = fp32(fp32(momentum * v) + g)   in place on `velocity` (channels x channel_size fp32, the update's
 *                                      state, zeroed by qtrain_init; must not overlap param or grad)
 *   then step[c], delta = fp32(step[c] * v) and p as above. */
void qtrain_sgd_momentum_update_s8(int8_t *param, const float *grad, float *velocity, float momentum,
                                   int32_t channels, int32_t channel_size, float lr, const float *grad_scale,
                                   int32_t num_grad_scales);
void qtrain_sgd_momentum_update_s32(int32_t *param, const float *grad, float *velocity, float momentum,
                                    int32_t channels, int32_t channel_size, float lr, const float *grad_scale,
                                    int32_t num_grad_scales);
void qtrain_sgd_momentum_update_f32(float *param, const float *grad, float *velocity, float momentum,
                                    int32_t channels, int32_t channel_size, float lr, const float *grad_scale,
                                    int32_t num_grad_scales);

/* ================================================================================================
 * Learning-rate schedule (qtrain.lr_schedule, numerics.lr_schedule_factor)
 * ============================================================================================== */

/* The factor of training step t = *step (0 after qtrain_init), then *step = t + 1 (saturating at
 * UINT32_MAX). W = warmup_steps, T = steps (the horizon; 0: no decay), r = final_ratio; float32:
 *   t < W:        fp32(t + 1) / fp32(W)
 *   W <= t < T:   p = fp32(t - W) / fp32(T - W);  d = 0.5 - 0.5 * qtrain_cospif(p);  1 - fp32(1 - r) * d
 *   otherwise:    r when T > 0, else 1
 * 0 <= W <= 2^24, T = 0 or W < T <= 2^24, 0 <= r <= 1 (the op verifier's limits). */
float qtrain_lr_schedule_f32(uint32_t *step, int32_t warmup_steps, int32_t steps, float final_ratio);

#ifdef __cplusplus
}
#endif

#endif /* QTRAIN_KERNELS_H */
