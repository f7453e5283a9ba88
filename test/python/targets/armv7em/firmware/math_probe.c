/*
 * math_probe.c - prints a checksum of qtrain_expf / qtrain_logf / qtrain_cospif over 20000 pseudo-random
 * arguments each, so a test can check that the target (QEMU) and host builds compute bit-identical results.
 * Output: "expf=0x........ logf=0x........ cospif=0x........".
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

int main(void) {
    uint32_t state = 12345u;
    uint32_t exp_hash = 2166136261u, log_hash = 2166136261u, cos_hash = 2166136261u;
    for (int i = 0; i < 20000; i++) {
        state = state * 1664525u + 1013904223u;
        /* exp: uniform in about [-110, 90]; log: any positive float (random exponent and mantissa). */
        float x = (float)(state >> 8) * (200.0f / 16777216.0f) - 110.0f;
        exp_hash = mix(exp_hash, float_bits(qtrain_expf(x)));
        log_hash = mix(log_hash, float_bits(qtrain_logf(bits_float(state & 0x7FFFFFFFu))));
        /* cospi: its domain [0, 1], every float32 of it reachable (random bit patterns up to 1.0f). */
        cos_hash = mix(cos_hash, float_bits(qtrain_cospif(bits_float((state >> 1) % 0x3F800001u))));
    }
    qtrain_puts("expf=");
    qtrain_put_hex32(exp_hash);
    qtrain_puts(" logf=");
    qtrain_put_hex32(log_hash);
    qtrain_puts(" cospif=");
    qtrain_put_hex32(cos_hash);
    qtrain_puts("\n");
    return 0;
}
