/*
 * qtrain_sgd_update.c - SGD with the QAS gradient scaling, in place on a trainable tensor's SRAM copy
 * (numerics.sgd_update): step[c] = fp32(lr * grad_scale[c]), delta = fp32(step[c] * g), then
 * int8 / int32: p = saturate(p - rint(delta)); fp32 master: p = fp32(p - delta); the _stochastic variants
 * round floor(x + u) with counter-based noise u (int8 in place, or an int16 master as two int8 planes).
 * The momentum variants first update the velocity, v = fp32(fp32(momentum * v) + g)
 * (numerics.momentum_velocity), and apply v instead of g.
 */
#include "qtrain_kernels_support.h"

void qtrain_sgd_update_s8(int8_t *param, const float *grad, int32_t channels, int32_t channel_size, float lr,
                          const float *grad_scale, int32_t num_grad_scales) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = qtrain_sgd_s8(param[i], step * grad[i]);
        }
    }
}

void qtrain_sgd_update_s32(int32_t *param, const float *grad, int32_t channels, int32_t channel_size, float lr,
                           const float *grad_scale, int32_t num_grad_scales) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = qtrain_sgd_s32(param[i], step * grad[i]);
        }
    }
}

void qtrain_sgd_update_f32(float *param, const float *grad, int32_t channels, int32_t channel_size, float lr,
                           const float *grad_scale, int32_t num_grad_scales) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = param[i] - step * grad[i];
        }
    }
}

uint32_t qtrain_noise_key(uint32_t seed, uint32_t step) {
    return qtrain_mix32(seed ^ qtrain_mix32(step));
}

void qtrain_sgd_update_s8_stochastic(int8_t *param, const float *grad, int32_t channels, int32_t channel_size,
                                     float lr, const float *grad_scale, int32_t num_grad_scales, uint32_t noise_key) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = qtrain_sgd_s8_stochastic(param[i], step * grad[i], qtrain_noise_u(noise_key, (uint32_t)i));
        }
    }
}

void qtrain_sgd_update_s16_stochastic(int8_t *param, const float *grad, int32_t channels, int32_t channel_size,
                                      float lr, const float *grad_scale, int32_t num_grad_scales, uint32_t noise_key) {
    int8_t *fraction = param + channels * channel_size;
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            qtrain_sgd_s16_stochastic(&param[i], &fraction[i], step * grad[i], qtrain_noise_u(noise_key, (uint32_t)i));
        }
    }
}

/* v = fp32(fp32(momentum * v) + g) over one output channel's elements [begin, end); g := v. */
QTRAIN_INLINE float qtrain_momentum(float *velocity, int32_t i, float momentum, float g) {
    const float v = momentum * velocity[i] + g;
    velocity[i] = v;
    return v;
}

void qtrain_sgd_momentum_update_s8(int8_t *param, const float *grad, float *velocity, float momentum,
                                   int32_t channels, int32_t channel_size, float lr, const float *grad_scale,
                                   int32_t num_grad_scales) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = qtrain_sgd_s8(param[i], step * qtrain_momentum(velocity, i, momentum, grad[i]));
        }
    }
}

void qtrain_sgd_momentum_update_s32(int32_t *param, const float *grad, float *velocity, float momentum,
                                    int32_t channels, int32_t channel_size, float lr, const float *grad_scale,
                                    int32_t num_grad_scales) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = qtrain_sgd_s32(param[i], step * qtrain_momentum(velocity, i, momentum, grad[i]));
        }
    }
}

void qtrain_sgd_momentum_update_f32(float *param, const float *grad, float *velocity, float momentum,
                                    int32_t channels, int32_t channel_size, float lr, const float *grad_scale,
                                    int32_t num_grad_scales) {
    for (int32_t c = 0; c < channels; c++) {
        const float step = qtrain_sgd_step(lr, grad_scale, num_grad_scales, c);
        for (int32_t i = c * channel_size; i < (c + 1) * channel_size; i++) {
            param[i] = param[i] - step * qtrain_momentum(velocity, i, momentum, grad[i]);
        }
    }
}
