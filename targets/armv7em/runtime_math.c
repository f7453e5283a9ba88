/*
 * runtime_math.c - expf, logf and cos(pi x) in single precision, without libm (and, on the targets, the
 * libm functions clang may call for FPv4-SP: rintf, fminf, fmaxf).
 *
 * The same source builds for the target and the host, so the losses of both builds agree bit for
 * bit (with -ffp-contract=off and round-to-nearest, every operation below is one IEEE-754 single
 * operation on both: SSE on x86-64, the single-precision FPU of the Cortex-M7, M4F or M33). Only
 * +, -, *, / and integer bit manipulation are used: no double (the FPUs are single precision), no
 * tables.
 *
 * Accuracy (test/python/targets/armv7em/firmware/math_accuracy.c against libm in double): over all 2^32
 * inputs, expf is within 0.94 ulp and logf within 0.89 ulp of the exact result, and about 99.6% of
 * the results are correctly rounded. test_armv7em_runtime_math.py checks < 1 ulp on every 257th input.
 */
#include <stdint.h>

#include "qtrain_runtime.h"

static inline uint32_t float_bits(float x) {
    union {
        float f;
        uint32_t u;
    } v = {.f = x};
    return v.u;
}

static inline float bits_float(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v = {.u = u};
    return v.f;
}

/* ln 2 split so that k * LN2_HI is exact for |k| < 2^9 (LN2_HI has 9 trailing zero bits). */
static const float LN2_HI = 6.93145751953125e-1f;  /* 0x3f317200 */
static const float LN2_LO = 1.42860676533018704e-6f; /* ln 2 - LN2_HI */
static const float LOG2E = 1.44269502162933349609e+0f;
/* Adding and subtracting 1.5 * 2^23 rounds a float of magnitude < 2^22 to an integer (ties to even). */
static const float ROUND_SHIFTER = 12582912.0f;

/* e^x = 2^k * e^r with k = round(x / ln 2) and |r| <= ln2/2 (+ rounding slack); e^r - 1 by its Taylor
 * polynomial of degree 7 (truncation < 6e-9 relative), so the error is dominated by the final
 * rounding of 1 + p. 2^k is applied exactly, in two steps when the result is subnormal so that it
 * is rounded only once. */
float qtrain_expf(float x) {
    if (x != x) {
        return x + x; /* NaN */
    }
    if (x > 88.72283172607421875f) {
        return bits_float(0x7f800000u); /* overflows: > FLT_MAX after rounding */
    }
    if (x < -103.972084045410156f) {
        return 0.0f; /* below half the smallest subnormal */
    }
    float kf = (x * LOG2E + ROUND_SHIFTER) - ROUND_SHIFTER;
    int k = (int)kf;
    float r_hi = x - kf * LN2_HI; /* exact */
    float r_lo = kf * LN2_LO;
    float r = r_hi - r_lo;
    float r_err = (r_hi - r) - r_lo; /* the rounding error of r (|r_hi| >= |r_lo|, so exact) */
    float q = 1.0f / 5040.0f;
    q = 1.0f / 720.0f + r * q;
    q = 1.0f / 120.0f + r * q;
    q = 1.0f / 24.0f + r * q;
    q = 1.0f / 6.0f + r * q;
    q = 0.5f + r * q;
    float p = r + ((r * r) * q + r_err); /* e^r - 1 */
    float y = 1.0f + p;
    if (k > 127) {
        return (y * 0x1p127f) * bits_float((uint32_t)k << 23); /* k = 128: 2^127 * 2 */
    }
    if (k < -126) {
        /* Scale into the normal range exactly, then one rounding to the subnormal result. */
        return (y * bits_float((uint32_t)(k + 24 + 127) << 23)) * 0x1p-24f;
    }
    return y * bits_float((uint32_t)(k + 127) << 23);
}

/* ln x = k ln 2 + ln(1 + f) with 1 + f in [sqrt(1/2), sqrt(2)). With s = f / (2 + f),
 * ln(1 + f) = 2 atanh(s) = f - (f^2/2 - s (f^2/2 + R)), R = 2 s^2/3 + 2 s^4/5 + ... (Taylor,
 * |s| <= 0.1716, 5 terms: truncation < 1e-9 relative). Written this way the rounding error of s only
 * enters through a term of size ~f^3/4, so the result is within about half an ulp of f - f^2/2 + ...
 * plus the final rounding. */
float qtrain_logf(float x) {
    uint32_t ix = float_bits(x);
    if (ix == 0u || ix == 0x80000000u) {
        return bits_float(0xff800000u); /* -inf for +-0 */
    }
    if (ix >= 0x7f800000u) {
        if (ix == 0x7f800000u) {
            return x; /* +inf */
        }
        if (x != x) {
            return x + x; /* NaN */
        }
        return bits_float(0x7fc00000u); /* x < 0: NaN */
    }
    int k = 0;
    if (ix < 0x00800000u) {
        ix = float_bits(x * 0x1p23f); /* subnormal: make it normal */
        k = -23;
    }
    k += (int)(ix >> 23) - 127;
    ix = (ix & 0x007fffffu) | 0x3f800000u; /* mantissa m in [1, 2) */
    if (ix > 0x3fb504f3u) {                /* m > sqrt(2): use m / 2 */
        ix -= 0x00800000u;
        k += 1;
    }
    float f = bits_float(ix) - 1.0f; /* exact */
    float s = f / (2.0f + f);
    float z = s * s;
    float R = 2.0f / 11.0f;
    R = 2.0f / 9.0f + z * R;
    R = 2.0f / 7.0f + z * R;
    R = 2.0f / 5.0f + z * R;
    R = 2.0f / 3.0f + z * R;
    R = z * R;
    float half_f2 = 0.5f * f * f;
    float kf = (float)k;
    return kf * LN2_HI + (f - ((half_f2 - s * (half_f2 + R)) - kf * LN2_LO));
}

/* cos(pi x) for x in [0, 1]: fold to [0, 1/2] with cos(pi x) = -cos(pi (1 - x)), then the Taylor series
 * of cos(pi x) on [0, 1/4] and of sin(pi u), u = 1/2 - x, on (1/4, 1/2] (degree 10 and 11: truncation
 * below 2e-9). 1 - x and 1/2 - x are exact (Sterbenz), so the only roundings are the polynomial's. The
 * coefficients C_k = (-1)^k pi^2k / (2k)! and S_k = (-1)^k pi^(2k+1) / (2k+1)! are float32 hex literals,
 * the bits numerics.COSPI_TAYLOR / SINPI_TAYLOR pin. */
float qtrain_cospif(float x) {
    const int neg = x > 0.5f;
    if (neg) {
        x = 1.0f - x;
    }
    float y;
    if (x <= 0.25f) {
        const float z = x * x;
        float q = -0x1.a6d1f2p-6f; /* C5 */
        q = 0x1.e1f506p-3f + z * q;
        q = -0x1.55d3c8p+0f + z * q;
        q = 0x1.03c1f0p+2f + z * q;
        q = -0x1.3bd3ccp+2f + z * q; /* C1 */
        y = 1.0f + z * q;
    } else {
        const float u = 0.5f - x;
        const float z = u * u;
        float q = -0x1.e30750p-8f; /* S5 */
        q = 0x1.507834p-4f + z * q;
        q = -0x1.32d2ccp-1f + z * q;
        q = 0x1.466bc6p+1f + z * q;
        q = -0x1.4abbcep+2f + z * q;
        q = 0x1.921fb6p+1f + z * q; /* S0 = pi */
        y = u * q;
    }
    return neg ? -y : y;
}

#if !defined(QTRAIN_HOST)
/* The C names, for code that calls expf/logf directly (there is no libm on the target). */
float expf(float x);
float logf(float x);
float rintf(float x);
float floorf(float x);
float fminf(float a, float b);
float fmaxf(float a, float b);

float expf(float x) {
    return qtrain_expf(x);
}

float logf(float x) {
    return qtrain_logf(x);
}

/* The Cortex-M4's FPv4-SP has no VRINTX, VRINTM, VMINNM or VMAXNM, so clang lowers __builtin_rintf,
 * __builtin_floorf, __builtin_fminf and __builtin_fmaxf to calls of these (on FPv5 they are single instructions and
 * --gc-sections drops the functions). Same results as those instructions and as libm on the host. */

/* Round to integral in the current rounding mode (round half to even at reset): below 2^23, adding
 * and subtracting 2^23 with x's sign rounds away the fraction, and the sign of x is kept so that
 * rint(-0.25) = -0; from 2^23 up every float is an integer already (NaN and infinities pass). */
float rintf(float x) {
    uint32_t bits = float_bits(x);
    uint32_t magnitude = bits & 0x7FFFFFFFu;
    if (magnitude >= 0x4B000000u) { /* |x| >= 2^23, infinity or NaN */
        return x;
    }
    float shifter = (bits >> 31) != 0u ? -8388608.0f : 8388608.0f;
    float r = (x + shifter) - shifter;
    return bits_float(float_bits(r) | (bits & 0x80000000u));
}

/* Round toward minus infinity (VRINTM; the stochastic-rounding updates): rintf, then one down where
 * rounding to nearest went up. Exact: below 2^23 the difference r - x is representable; from 2^23 up
 * (and for infinities and NaN) x is returned as it is; floorf(-0) = -0. */
float floorf(float x) {
    float r = rintf(x);
    return r > x ? r - 1.0f : r;
}

/* IEEE 754-2008 minNum / maxNum as VMINNM / VMAXNM: a quiet NaN operand gives the other operand,
 * and -0 is below +0. */
float fminf(float a, float b) {
    if (a != a) {
        return b;
    }
    if (b != b) {
        return a;
    }
    if (a == b) { /* equal, or +0 and -0: the one with the sign bit */
        return (float_bits(a) & 0x80000000u) != 0u ? a : b;
    }
    return a < b ? a : b;
}

float fmaxf(float a, float b) {
    if (a != a) {
        return b;
    }
    if (b != b) {
        return a;
    }
    if (a == b) {
        return (float_bits(a) & 0x80000000u) != 0u ? b : a;
    }
    return a > b ? a : b;
}
#endif
