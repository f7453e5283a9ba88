/*
 * qtrain_cross_entropy_f32.c - softmax cross-entropy of fp32 logits and its gradient, in
 * numerics.cross_entropy's operation order, with the runtime's qtrain_expf / qtrain_logf (so the host
 * and the Cortex-M7 builds agree bit for bit).
 */
#include "qtrain_kernels_support.h"
#include "qtrain_runtime.h"

static float max_logit(const float *logits, int32_t num_classes) {
    float mx = logits[0];
    for (int32_t i = 1; i < num_classes; i++) {
        mx = logits[i] > mx ? logits[i] : mx;
    }
    return mx;
}

float qtrain_cross_entropy_f32(const float *logits, int32_t num_classes, int32_t label, float *grad) {
    const float mx = max_logit(logits, num_classes);
    float s = 0.0f;
    for (int32_t i = 0; i < num_classes; i++) {
        const float e = qtrain_expf(logits[i] - mx);
        s = i == 0 ? e : s + e; /* s = e[0] + e[1] + ... in index order */
        if (grad != NULL) {
            grad[i] = e;
        }
    }
    if (grad != NULL) {
        for (int32_t i = 0; i < num_classes; i++) {
            grad[i] = grad[i] / s;
        }
        grad[label] = grad[label] - 1.0f;
    }
    return qtrain_logf(s) - (logits[label] - mx);
}

void qtrain_cross_entropy_grad_f32(const float *logits, int32_t num_classes, int32_t label, float *grad) {
    (void)qtrain_cross_entropy_f32(logits, num_classes, label, grad);
}
