/*
 * math_accuracy.c (host only) - qtrain_expf / qtrain_logf against libm in double precision.
 *
 * `math_accuracy STRIDE` visits every STRIDE-th float bit pattern (plus the special values) and prints
 *   expf max_ulp=E at=X incorrectly_rounded=P%
 *   logf max_ulp=E at=X incorrectly_rounded=P%
 *   special failures=F
 * where the error is |ours - exact| in units of the last place of the correctly rounded float
 * (exp/log in double are accurate far beyond float precision, so they stand in for "exact").
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qtrain_runtime.h"

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* Error of `got` in ulps of the float binade holding the exact value `want`. */
static double ulp_error(float got, double want) {
    if (isnan(want)) {
        return isnan(got) ? 0.0 : INFINITY;
    }
    float rounded = (float)want;
    if (isinf(rounded) || isinf(got)) {
        return got == rounded ? 0.0 : INFINITY;
    }
    int exponent;
    frexp(want, &exponent);
    double ulp = ldexp(1.0, exponent - 24);
    double smallest = ldexp(1.0, -149);
    return fabs((double)got - want) / (ulp < smallest ? smallest : ulp);
}

typedef struct {
    double max_ulp;
    float worst;
    uint64_t incorrect;
    uint64_t count;
} stats_t;

static void visit(stats_t *s, float got, double want, float x) {
    double e = ulp_error(got, want);
    if (e > s->max_ulp) {
        s->max_ulp = e;
        s->worst = x;
    }
    if (!isnan(want) && got != (float)want) {
        s->incorrect++;
    }
    s->count++;
}

static void print(const char *name, const stats_t *s) {
    printf("%s max_ulp=%.4f at=%a incorrectly_rounded=%.4f%%\n", name, s->max_ulp, (double)s->worst,
           100.0 * (double)s->incorrect / (double)s->count);
}

int main(int argc, char **argv) {
    uint64_t stride = argc > 1 ? strtoull(argv[1], NULL, 10) : 61u;
    stats_t e = {0, 0, 0, 0}, l = {0, 0, 0, 0};
    for (uint64_t u = 0; u <= 0xFFFFFFFFu; u += stride) {
        float x = from_bits((uint32_t)u);
        visit(&e, qtrain_expf(x), exp((double)x), x);
        visit(&l, qtrain_logf(x), log((double)x), x);
    }
    print("expf", &e);
    print("logf", &l);

    int failures = 0;
    const float inf = from_bits(0x7F800000u);
    failures += !(qtrain_expf(0.0f) == 1.0f);
    failures += !(qtrain_expf(-0.0f) == 1.0f);
    failures += !(qtrain_expf(inf) == inf);
    failures += !(qtrain_expf(-inf) == 0.0f);
    failures += !isnan(qtrain_expf(from_bits(0x7FC00000u)));
    failures += !(qtrain_expf(88.72283172607421875f) < inf);           /* largest finite result */
    failures += !(qtrain_expf(88.72283935546875f) == inf);             /* next float overflows */
    failures += !(qtrain_expf(-103.27892303466796875f) == from_bits(1)); /* smallest subnormal */
    failures += !(qtrain_logf(1.0f) == 0.0f);
    failures += !(qtrain_logf(0.0f) == -inf);
    failures += !(qtrain_logf(-0.0f) == -inf);
    failures += !isnan(qtrain_logf(-1.0f));
    failures += !isnan(qtrain_logf(-inf));
    failures += !(qtrain_logf(inf) == inf);
    failures += !isnan(qtrain_logf(from_bits(0x7FC00000u)));
    failures += !(qtrain_logf(from_bits(1)) == (float)log(ldexp(1.0, -149)));
    printf("special failures=%d\n", failures);
    return 0;
}
