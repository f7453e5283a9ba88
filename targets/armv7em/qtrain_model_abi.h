/*
 * qtrain_model_abi.h - the one C interface between a generated model and everything that runs it.
 *
 * The code generator (lowering/, `-t c`) emits one `model.c` + `model.h` per model. `model.c` defines
 * the four entry points of DESIGN.md ("Generated C interface") plus one descriptor, `qtrain_model`,
 * that lets a generic harness (harness.c) drive any model without including model-specific headers:
 *
 *   void  qtrain_init(void);                                  copy trainable tensors Flash -> SRAM
 *   void  qtrain_infer(const int8_t *image, float *logits);   forward; logits dequantized (fp32)
 *   float qtrain_train_step(const int8_t *image, int label);  forward + backward + update, returns loss
 *   extern const qtrain_memory_report_t qtrain_memory;        the planner's static figures
 *   extern const qtrain_model_desc_t    qtrain_model;         shapes, I/O buffers, trainable tensor table
 *   int   qtrain_checkpoint_save(void);                       device state -> the older Flash slot
 *   int   qtrain_checkpoint_restore(void);                    the newest valid slot -> device state
 *   extern const qtrain_state_desc_t    qtrain_state;         what a checkpoint holds
 *
 * Checkpoints (qtrain_checkpoint.h, on the Flash driver of qtrain_flash.h): the device state is a
 * list of buffers, `qtrain_state.buffers`: the step counter (a uint32 advanced once per training step:
 * the learning-rate schedule's "step" region) first, then every other region of
 * `qtrain_training_state` (each trainable tensor's SRAM copy, momentum velocities). The model's
 * qtrain_checkpoint_save/restore pass that list to qtrain_checkpoint_write/read; qtrain_init calls
 * qtrain_checkpoint_restore after copying the Flash originals, so a device resumes where its newest
 * valid checkpoint left it (or from the originals when there is none).
 *
 * Where data lives (the section macros below): const weights in Flash (QTRAIN_WEIGHTS), the planned
 * arena (QTRAIN_ARENA), SRAM copies of trainable tensors (QTRAIN_TRAINABLE) and kernel scratch
 * buffers (QTRAIN_SCRATCH) in SRAM. The linker scripts give each its own output section so the
 * firmware's section sizes can be checked against memory.json (build.py reports them). On the host
 * the macros only align. All SRAM sections are zeroed at reset, like static storage on the host, so
 * host and QEMU builds start from the same bytes.
 *
 * Everything here is C11 and free of libc; the same header compiles for thumbv7em and the host.
 */
#ifndef QTRAIN_MODEL_ABI_H
#define QTRAIN_MODEL_ABI_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct below changes layout; the harness refuses a model built for another.
 * 2: checkpoints (qtrain_state, qtrain_checkpoint_save/restore). */
#define QTRAIN_ABI_VERSION 2u

#if defined(QTRAIN_HOST)
#define QTRAIN_SECTION(name)
#else
#define QTRAIN_SECTION(name) __attribute__((section(name)))
#endif

/* `static const int8_t conv3_weight[...] QTRAIN_WEIGHTS = {...};` - read-only, stays in Flash. */
#define QTRAIN_WEIGHTS QTRAIN_SECTION(".qtrain.weights") __attribute__((aligned(4)))
/* The one static arena the planner lays out (`static uint8_t qtrain_arena[N] QTRAIN_ARENA;`). */
#define QTRAIN_ARENA QTRAIN_SECTION(".qtrain.arena") __attribute__((aligned(8)))
/* SRAM copies (or fp32 masters) of the tensors that learn, and the training state kept between steps
 * (step counter, momentum velocities); filled / zeroed by qtrain_init(). */
#define QTRAIN_TRAINABLE QTRAIN_SECTION(".qtrain.trainable") __attribute__((aligned(8)))
/* Kernel scratch buffers (im2col columns, per-channel accumulators, ...). */
#define QTRAIN_SCRATCH QTRAIN_SECTION(".qtrain.scratch") __attribute__((aligned(8)))

/* The planner's figures, same names and meaning as memory.json (DESIGN.md "Memory accounting"). */
typedef struct {
    uint32_t peak_sram_bytes; /* static SRAM = arena_bytes + trainable_bytes + scratch_bytes */
    uint32_t arena_bytes;     /* arena high-water mark: saved activations, masks, gradients in flight */
    uint32_t trainable_bytes; /* SRAM copies of trainable tensors + training state (step, momentum) */
    uint32_t scratch_bytes;   /* kernel scratch buffers */
    uint32_t flash_bytes;     /* const weights (code is measured from the ELF by build.py) */
} qtrain_memory_report_t;

/* Element type of a trainable tensor as stored on the device (the npz gets the same dtype). */
typedef enum {
    QTRAIN_DTYPE_INT8 = 1,
    QTRAIN_DTYPE_INT32 = 2,
    QTRAIN_DTYPE_FLOAT32 = 3,
    /* a 16-bit fixed-point master m = 256 * v + f of an int8 weight, stored as two int8 planes (all the
     * values v, then all the fractions f); the npz gets int16 m (numerics.fixed16_master) */
    QTRAIN_DTYPE_FIXED16 = 4,
} qtrain_dtype_t;

#define QTRAIN_MAX_RANK 4

/* One tensor that learns: what the harness dumps as `param/<name>` after training. */
typedef struct {
    const char *name;                /* memory.json "name" (npz key is "param/" + name) */
    const void *data;                /* the SRAM copy the update writes, row-major */
    uint32_t dtype;                  /* a qtrain_dtype_t */
    uint32_t rank;                   /* number of used entries in shape[] (0 = scalar) */
    uint32_t shape[QTRAIN_MAX_RANK]; /* as stored (a partially trained weight: its stored slice) */
} qtrain_tensor_desc_t;

/* Everything a generic harness needs to know about a model. One per model, emitted by the generator. */
typedef struct {
    uint32_t abi_version;    /* QTRAIN_ABI_VERSION the model was generated for */
    uint32_t input_shape[3]; /* H, W, C of one int8 NHWC image */
    uint32_t input_bytes;    /* H * W * C */
    uint32_t num_classes;    /* length of the logits vector */
    /* Where the harness puts an image before calling qtrain_infer/qtrain_train_step (the image
     * argument then equals this pointer). It may be the input's slot in the arena (then the image
     * is counted in arena_bytes) or a separate static buffer; the entry points must accept both.
     * The call may overwrite this buffer (the first convolution writes its output over the image
     * rows it has read): put the image here again before every call. An image passed from
     * anywhere else is copied in first and left untouched. */
    int8_t *input;
    /* Where the harness asks qtrain_infer to write the logits: num_classes floats. */
    float *logits;
    /* The raw int8 classifier output of the last qtrain_infer call (num_classes values), i.e. the
     * `output_q` the interpreter writes; usually a slot in the arena. */
    const int8_t *output_q;
    uint64_t macs_per_infer;        /* multiply-accumulates in one forward pass */
    uint64_t macs_per_train_step;   /* ... in one forward + backward + update */
    uint32_t num_trainable;         /* entries in trainable[] */
    const qtrain_tensor_desc_t *trainable;
} qtrain_model_desc_t;

/* One SRAM region of training state: a trainable tensor's SRAM copy, the learning-rate schedule's step
 * counter ("step", a uint32: training steps since qtrain_init), or a momentum velocity
 * ("velocity/<param>", fp32). qtrain_init resets them (copies from Flash, zeros); training changes them;
 * saving and restoring every region's bytes saves and restores the training. */
typedef struct {
    const char *name;
    void *data;
    uint32_t bytes;
} qtrain_state_region_t;

#if defined(QTRAIN_PROFILE)
/* Profile (a model emitted with `qtrain-compile --profile`, every source built with QTRAIN_PROFILE):
 * slot i holds the qtrain_counter_read() advance over one op of the latest qtrain_infer /
 * qtrain_train_step call (lowering/profile.py lists what each slot measures); the harness appends
 * the table to its result file. Uninstrumented builds neither define nor read these. */
extern uint64_t qtrain_profile_counts[];
extern const uint32_t qtrain_profile_slots;
#endif

/* One buffer of device state that a checkpoint saves and restores, byte for byte. */
typedef struct {
    void *data;
    uint32_t bytes;
} qtrain_state_buffer_t;

/* The device state of one model: what qtrain_checkpoint_save writes. */
typedef struct {
    /* Identifies the compiled model (its parameters and this state layout): a checkpoint is restored
     * only into a firmware with the same fingerprint. */
    uint32_t fingerprint;
    uint32_t *step;                        /* training steps done; also buffers[0] */
    uint32_t num_buffers;
    const qtrain_state_buffer_t *buffers;  /* step counter, trainable tensors, recipe state */
} qtrain_state_desc_t;

void qtrain_init(void);
void qtrain_infer(const int8_t *image, float *logits);
float qtrain_train_step(const int8_t *image, int label);
extern const qtrain_memory_report_t qtrain_memory;
extern const qtrain_model_desc_t qtrain_model;
/* QTRAIN_CHECKPOINT_* status codes of qtrain_checkpoint.h. */
int qtrain_checkpoint_save(void);
int qtrain_checkpoint_restore(void);
extern const qtrain_state_desc_t qtrain_state;
/* The training state regions (qtrain_training_state_count entries; generated models only). */
extern const qtrain_state_region_t qtrain_training_state[];
extern const uint32_t qtrain_training_state_count;

#ifdef __cplusplus
}
#endif

#endif /* QTRAIN_MODEL_ABI_H */
