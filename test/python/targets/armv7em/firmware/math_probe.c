/*
 * math_probe.c - prints a checksum of qtrain_expf / qtrain_logf / qtrain_cospif over 20000 pseudo-random
 * arguments each, and of rintf / floorf / fminf / fmaxf (one instruction each on FPv5, runtime_math.c's functions on the
 * Cortex-M4's FPv4, libm or SSE on the host) over random values, halves, infinities and quiet NaNs,
 * so a test can check that every target (QEMU) and the host compute bit-identical results.
 * Output: "expf=0x........ logf=0x........ cospif=0x........ rintf=0x........ floorf=0x........
 *          fminmax=0x........" (one line).
 * (fminf / fmaxf of +0 and -0 may return either zero in C; the kernels never depend on which, so the
 * probe leaves that pair out.)
 */
#include <stdint.h>

#include "qtrain_runtime.h"

static uint32_t float_bits(float x) {
    union {
        float f;
        uint32_t u;
    } v = {.f = x};
    return v.u;
}

static float bits_float(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v = {.u = u};
    return v.f;
}

/* FNV-1a over the result's bits. */
static uint32_t mix(uint32_t hash, uint32_t word) {
    for (int i = 0; i < 4; i++) {
        hash = (hash ^ ((word >> (8 * i)) & 0xFFu)) * 16777619u;
    }
    return hash;
}

/* Mostly halves and small values around rounding boundaries, some anything-goes bit patterns. */
static float probe_value(uint32_t r) {
    switch (r & 7u) {
    case 0:
        /* any float; a NaN made quiet: arithmetic never produces a signaling NaN, and minNum of one
         * differs between VMINNM (a NaN) and libm (the other operand) */
        if ((r & 0x7F800000u) == 0x7F800000u && (r & 0x007FFFFFu) != 0u) {
            r |= 0x00400000u;
        }
        return bits_float(r);
    case 1:
        return (float)(int32_t)(r >> 8) * 0.5f - 4194304.0f; /* halves up to 2^22 */
    case 2:
        return 1.0f / 0.0f * ((r & 8u) ? 1.0f : -1.0f);
    case 3:
        return 0.0f / 0.0f; /* quiet NaN */
    default:
        return (float)(int32_t)(r >> 12) * 0.25f - 131072.0f;
    }
}

static int both_zero(float a, float b) {
    return a == 0.0f && b == 0.0f;
}

int main(void) {
    uint32_t state = 12345u;
    uint32_t exp_hash = 2166136261u, log_hash = 2166136261u, cos_hash = 2166136261u;
    uint32_t rint_hash = 2166136261u, floor_hash = 2166136261u, minmax_hash = 2166136261u;
    for (int i = 0; i < 20000; i++) {
        state = state * 1664525u + 1013904223u;
        /* exp: uniform in about [-110, 90]; log: any positive float (random exponent and mantissa). */
        float x = (float)(state >> 8) * (200.0f / 16777216.0f) - 110.0f;
        exp_hash = mix(exp_hash, float_bits(qtrain_expf(x)));
        log_hash = mix(log_hash, float_bits(qtrain_logf(bits_float(state & 0x7FFFFFFFu))));
        /* cospi: its domain [0, 1], every float32 of it reachable (random bit patterns up to 1.0f). */
        cos_hash = mix(cos_hash, float_bits(qtrain_cospif(bits_float((state >> 1) % 0x3F800001u))));
        float a = probe_value(state);
        uint32_t other = state * 2654435761u + 7u;
        float b = (other & 1u) ? probe_value(other) : a; /* equal operands too */
        float r = __builtin_rintf(a);
        rint_hash = mix(rint_hash, r != r ? 0x7FC00000u : float_bits(r)); /* any NaN is the NaN */
        float f = __builtin_floorf(a);
        floor_hash = mix(floor_hash, f != f ? 0x7FC00000u : float_bits(f));
        if (!both_zero(a, b)) {
            float lo = __builtin_fminf(a, b), hi = __builtin_fmaxf(a, b);
            minmax_hash = mix(mix(minmax_hash, lo != lo ? 0x7FC00000u : float_bits(lo)),
                              hi != hi ? 0x7FC00000u : float_bits(hi));
        }
    }
    qtrain_puts("expf=");
    qtrain_put_hex32(exp_hash);
    qtrain_puts(" logf=");
    qtrain_put_hex32(log_hash);
    qtrain_puts(" cospif=");
    qtrain_put_hex32(cos_hash);
    qtrain_puts(" rintf=");
    qtrain_put_hex32(rint_hash);
    qtrain_puts(" floorf=");
    qtrain_put_hex32(floor_hash);
    qtrain_puts(" fminmax=");
    qtrain_put_hex32(minmax_hash);
    qtrain_puts("\n");
    return 0;
}
