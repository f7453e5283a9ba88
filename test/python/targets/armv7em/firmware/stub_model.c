/*
 * stub_model.c - a hand-written model implementing qtrain_model_abi.h, to test the harness, the
 * runtime and qtrain-run without the code generator. test_harness.py has a numpy copy of it.
 *
 * One int8 fully connected layer on a 4x4x2 image, 5 classes, quantized like the real thing:
 *   acc[c] = bias[c] + sum_i (x[i] - ZX) * weight[c][i]
 *   q[c]   = clamp(rint(acc[c] * M[c]) + ZY, -128, 127),  M[c] = (S_X * S_W[c]) / S_Y
 *   logits = (q - ZY) * S_Y
 * Training: cross-entropy on the logits (qtrain_expf/qtrain_logf), gradient masked where q
 * saturated, g_acc[c] = (softmax - onehot)[c] * S_Y * M[c], then
 *   bias_master[c] -= LR_BIAS * g_acc[c];  bias[c] = rint(bias_master[c])      (fp32 master copy)
 *   weight[c][i]   -= rint(LR_WEIGHT * g_acc[c] * (x[i] - ZX)), clamped to [-127, 127]
 * so the trainable tensors cover all three dtypes: int8, int32 and float32.
 * Checkpoints as the generator writes them: the state is the step counter, then the three tensors;
 * qtrain_init restores the newest valid checkpoint after copying the Flash originals.
 *
 * -DSTUB_MISBEHAVE=1 makes qtrain_train_step fault (an undefined instruction) on its second call,
 * -DSTUB_MISBEHAVE=2 makes it loop forever there: the runner's failure paths.
 */
#include <stdint.h>

#include "qtrain_checkpoint.h"
#include "qtrain_model_abi.h"
#include "qtrain_runtime.h"

#define IN_H 4
#define IN_W 4
#define IN_C 2
#define IN_BYTES (IN_H * IN_W * IN_C)
#define CLASSES 5
#define ZX (-3)
#define ZY 4
#define S_X 0.05f
#define S_Y 0.1f
#define LR_BIAS 4000.0f
#define LR_WEIGHT 200.0f

static const float S_W[CLASSES] = {0.010f, 0.012f, 0.008f, 0.015f, 0.011f};

/* weight[c][i] = ((37 c + 11 i) mod 61) - 30 */
static const int8_t fc_weight_flash[CLASSES][IN_BYTES] QTRAIN_WEIGHTS = {
    {-30, -19, -8, 3, 14, 25, -25, -14, -3, 8, 19, 30, -20, -9, 2, 13, 24, -26, -15, -4, 7, 18, 29, -21, -10, 1, 12, 23, -27, -16, -5, 6},
    {7, 18, 29, -21, -10, 1, 12, 23, -27, -16, -5, 6, 17, 28, -22, -11, 0, 11, 22, -28, -17, -6, 5, 16, 27, -23, -12, -1, 10, 21, -29, -18},
    {-17, -6, 5, 16, 27, -23, -12, -1, 10, 21, -29, -18, -7, 4, 15, 26, -24, -13, -2, 9, 20, -30, -19, -8, 3, 14, 25, -25, -14, -3, 8, 19},
    {20, -30, -19, -8, 3, 14, 25, -25, -14, -3, 8, 19, 30, -20, -9, 2, 13, 24, -26, -15, -4, 7, 18, 29, -21, -10, 1, 12, 23, -27, -16, -5},
    {-4, 7, 18, 29, -21, -10, 1, 12, 23, -27, -16, -5, 6, 17, 28, -22, -11, 0, 11, 22, -28, -17, -6, 5, 16, 27, -23, -12, -1, 10, 21, -29},
};
static const int32_t fc_bias_flash[CLASSES] QTRAIN_WEIGHTS = {100, -250, 40, 0, -75};

static int8_t fc_weight[CLASSES][IN_BYTES] QTRAIN_TRAINABLE;
static int32_t fc_bias[CLASSES] QTRAIN_TRAINABLE;
static float fc_bias_master[CLASSES] QTRAIN_TRAINABLE;

/* Arena: the input image at 0, the int8 output at 32, the saturation mask at 40. */
static int8_t arena[48] QTRAIN_ARENA;
#define ARENA_INPUT (&arena[0])
#define ARENA_OUTPUT (&arena[32])
#define ARENA_SATURATED (&arena[40])

static float logits_buffer[CLASSES];
static uint32_t step_counter;

static float multiplier(int c) {
    return (S_X * S_W[c]) / S_Y;
}

static float round_half_even(float v) {
    return __builtin_rintf(v);
}

static void forward(const int8_t *image) {
    for (int c = 0; c < CLASSES; c++) {
        int32_t acc = fc_bias[c];
        for (int i = 0; i < IN_BYTES; i++) {
            acc += (image[i] - ZX) * fc_weight[c][i];
        }
        float v = (float)acc * multiplier(c);
        v = v > 1000.0f ? 1000.0f : v < -1000.0f ? -1000.0f : v;
        int32_t q = (int32_t)round_half_even(v) + ZY;
        ARENA_SATURATED[c] = (int8_t)(q < -128 || q > 127);
        ARENA_OUTPUT[c] = (int8_t)(q < -128 ? -128 : q > 127 ? 127 : q);
    }
}

static void dequantize(float *logits) {
    for (int c = 0; c < CLASSES; c++) {
        logits[c] = (float)(ARENA_OUTPUT[c] - ZY) * S_Y;
    }
}

void qtrain_init(void) {
    for (int c = 0; c < CLASSES; c++) {
        for (int i = 0; i < IN_BYTES; i++) {
            fc_weight[c][i] = fc_weight_flash[c][i];
        }
        fc_bias[c] = fc_bias_flash[c];
        fc_bias_master[c] = (float)fc_bias_flash[c];
    }
    (void)qtrain_checkpoint_restore();
}

void qtrain_infer(const int8_t *image, float *logits) {
    forward(image);
    dequantize(logits);
}

#if defined(STUB_MISBEHAVE)
static void misbehave(void) {
    static int calls;
    if (++calls < 2) {
        return;
    }
#if STUB_MISBEHAVE == 1
    __asm__ volatile("udf #1");
#else
    for (volatile int forever = 1; forever;) {
    }
#endif
}
#endif

float qtrain_train_step(const int8_t *image, int label) {
    float logits[CLASSES];
#if defined(STUB_MISBEHAVE)
    misbehave();
#endif
    forward(image);
    dequantize(logits);
    float max = logits[0];
    for (int c = 1; c < CLASSES; c++) {
        max = logits[c] > max ? logits[c] : max;
    }
    float sum = 0.0f;
    for (int c = 0; c < CLASSES; c++) {
        sum += qtrain_expf(logits[c] - max);
    }
    float log_sum_exp = max + qtrain_logf(sum);
    float loss = log_sum_exp - logits[label];
    for (int c = 0; c < CLASSES; c++) {
        float grad = qtrain_expf(logits[c] - log_sum_exp) - (c == label ? 1.0f : 0.0f);
        float grad_acc = ARENA_SATURATED[c] ? 0.0f : grad * S_Y * multiplier(c);
        fc_bias_master[c] -= LR_BIAS * grad_acc;
        fc_bias[c] = (int32_t)round_half_even(fc_bias_master[c]);
        for (int i = 0; i < IN_BYTES; i++) {
            float step = round_half_even(LR_WEIGHT * (grad_acc * (float)(image[i] - ZX)));
            int32_t w = fc_weight[c][i] - (int32_t)step;
            fc_weight[c][i] = (int8_t)(w < -127 ? -127 : w > 127 ? 127 : w);
        }
    }
    step_counter++;
    return loss;
}

const qtrain_memory_report_t qtrain_memory = {
    .peak_sram_bytes = sizeof(arena) + sizeof(fc_weight) + sizeof(fc_bias) + sizeof(fc_bias_master),
    .arena_bytes = sizeof(arena),
    .trainable_bytes = sizeof(fc_weight) + sizeof(fc_bias) + sizeof(fc_bias_master),
    .scratch_bytes = 0,
    .flash_bytes = sizeof(fc_weight_flash) + sizeof(fc_bias_flash),
};

static const qtrain_tensor_desc_t trainable[] = {
    {"fc.weight", fc_weight, QTRAIN_DTYPE_INT8, 2, {CLASSES, IN_BYTES, 0, 0}},
    {"fc.bias", fc_bias, QTRAIN_DTYPE_INT32, 1, {CLASSES, 0, 0, 0}},
    {"fc.bias_master", fc_bias_master, QTRAIN_DTYPE_FLOAT32, 1, {CLASSES, 0, 0, 0}},
};

const qtrain_model_desc_t qtrain_model = {
    .abi_version = QTRAIN_ABI_VERSION,
    .input_shape = {IN_H, IN_W, IN_C},
    .input_bytes = IN_BYTES,
    .num_classes = CLASSES,
    .input = ARENA_INPUT,
    .logits = logits_buffer,
    .output_q = ARENA_OUTPUT,
    .macs_per_infer = CLASSES * IN_BYTES,
    .macs_per_train_step = 2 * CLASSES * IN_BYTES,
    .num_trainable = sizeof(trainable) / sizeof(trainable[0]),
    .trainable = trainable,
};

static const qtrain_state_buffer_t state_buffers[] = {
    {&step_counter, sizeof(step_counter)},
    {fc_weight, sizeof(fc_weight)},
    {fc_bias, sizeof(fc_bias)},
    {fc_bias_master, sizeof(fc_bias_master)},
};

const qtrain_state_desc_t qtrain_state = {
    .fingerprint = 0x57AB0001u,
    .step = &step_counter,
    .num_buffers = sizeof(state_buffers) / sizeof(state_buffers[0]),
    .buffers = state_buffers,
};

int qtrain_checkpoint_save(void) {
    return qtrain_checkpoint_write(&qtrain_state);
}

int qtrain_checkpoint_restore(void) {
    return qtrain_checkpoint_read(&qtrain_state);
}
