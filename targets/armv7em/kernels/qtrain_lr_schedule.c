/*
 * qtrain_lr_schedule.c - the learning-rate factor of this training step (qtrain.lr_schedule, numerics
 * .lr_schedule_factor): linear warm-up, cosine decay over the horizon, then the final ratio held; the
 * step counter (device state) advances by one. Every line below is one float32 operation, in the order
 * the golden model takes them; the cosine is the runtime's qtrain_cospif (runtime_math.c).
 */
#include "qtrain_kernels_support.h"
#include "qtrain_runtime.h"

float qtrain_lr_schedule_f32(uint32_t *step, int32_t warmup_steps, int32_t steps, float final_ratio) {
    const uint32_t t = *step;
    if (t != UINT32_MAX) { /* saturates: the schedule never wraps back into its warm-up */
        *step = t + 1u;
    }
    const uint32_t w = (uint32_t)warmup_steps;
    if (t < w) {
        return (float)(t + 1u) / (float)w;
    }
    if (steps > 0 && t < (uint32_t)steps) {
        const float p = (float)(t - w) / (float)(steps - warmup_steps);
        const float d = 0.5f - 0.5f * qtrain_cospif(p);
        return 1.0f - (1.0f - final_ratio) * d;
    }
    return steps > 0 ? final_ratio : 1.0f;
}
