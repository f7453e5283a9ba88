/*
 * harness.c - the generic firmware main: reads a request file, drives any model through
 * qtrain_model_abi.h, writes a result file. The same source runs on QEMU (files through semihosting)
 * and on the host (stdio); `qtrain-run` (tools/qtrain_run.py) writes the request and decodes the
 * result (targets/armv7em/protocol.py).
 *
 * Command line: `harness IN OUT [FLASH]`. On the target the words come from SYS_GET_CMDLINE (QEMU
 * `-semihosting-config ...,arg=firmware,arg=IN,arg=OUT`); without them the names default to
 * qtrain_in.bin and qtrain_out.bin in QEMU's working directory. FLASH, an image file of the whole
 * Flash, is attached to the simulated Flash before qtrain_init (qtrain_flash.h), so the checkpoints in
 * it are restored and new ones persist in it.
 *
 * Protocol version 3 (all little-endian, 4-byte fields). Requests of another version are refused
 * with a message naming both versions. Version 3 added checkpoints (checkpoint_every, the step
 * counter) to version 2.
 *
 * Request file:
 *   header, 48 bytes:  magic "QTRI", version 3, mode, num_samples N >= 1, steps S, image_bytes B
 *                      (must equal the model's input_bytes), record_bytes R = 4 + B rounded up to 4,
 *                      num_eval M, eval_every K, checkpoint_every C, 2 reserved zeros
 *     mode 0 = infer:  every one of the N samples runs qtrain_infer once; S is ignored, M, K must be 0
 *     mode 1 = train:  S steps of qtrain_train_step over the N samples in order, wrapping around;
 *                      M, K must be 0. The device's step counter t (qtrain_state.step: 0, or where
 *                      the restored checkpoint left it) picks the sample: step t trains on sample
 *                      t mod N, so a resumed run continues the data order of the interrupted one.
 *                      C >= 1: qtrain_checkpoint_save after every step that leaves t a multiple of C.
 *     mode 2 = train + evaluate: M >= 1 evaluation records follow the N training records. The
 *                      harness runs an evaluation pass (qtrain_infer on each of the M records) before
 *                      the first step, after every K-th step (K = 0: never) and after the last step:
 *                      passes at steps 0, K, 2K, ... (< S) and S (S = 0: two passes at step 0)
 *   N (+ M) records of R bytes: int32 label, int8 image[B] (NHWC, already quantized), zero padding.
 *     A training label must be in [0, num_classes); an evaluation label too, or -1 (unlabelled).
 * Only one record is in SRAM at a time (in the model's input buffer): the harness seeks to it.
 *
 * Result file:
 *   header, 128 bytes (32 uint32): magic "QTRO", version 3, complete (0 until the very end, so a
 *     crashed run is recognisable), mode, records (set at the end: images for mode 0, steps for
 *     modes 1/2), num_classes, counter_kind (qtrain_counter_kind_t), stack_used (bytes, 0xFFFFFFFF =
 *     not measured), stack_size, num_trainable, init_count (u64: lo, hi; the counter over
 *     qtrain_init), macs_per_infer (u64), macs_per_train_step (u64), then qtrain_memory: peak_sram,
 *     arena, trainable, scratch, flash bytes; input_bytes; num_eval M; eval_every K; steps S (as
 *     requested); eval_passes (set at the end); restored_step (the step counter after qtrain_init);
 *     step (the step counter at the end, set at the end); checkpoints (saved in this run; set at the
 *     end); 1 reserved zero; features (bit 0: a profile table ends the file); profile_slots P (0
 *     without a profile)
 *   records, written as they complete, in the order they run:
 *     infer record (mode 0: one per image; mode 2: M per evaluation pass):
 *       float32 logits[num_classes], int8 output_q[num_classes] zero-padded to 4, uint64 count
 *     train record (one per step): float32 loss, int32 label, uint64 count
 *     where count is the counter over exactly one qtrain_infer / qtrain_train_step call.
 *     Mode 2 interleaves them: pass (step 0), steps 1..K, pass (step K), ..., steps ..S, pass (step S).
 *   modes 1/2 only, after the records, one entry per trainable tensor (qtrain_model.trainable order):
 *     uint32 name_bytes, name (no NUL) zero-padded to 4, uint32 dtype (qtrain_dtype_t), uint32 rank,
 *     uint32 shape[4] (unused entries 0), uint32 data_bytes, data zero-padded to 4
 *   a firmware built with QTRAIN_PROFILE (`qtrain-compile --profile`) ends the file with its profile:
 *     uint64 count[P], slot i the counter over one op of the last qtrain_infer / qtrain_train_step
 *     call (qtrain_model_abi.h, "Profile"); features bit 0 and P say so. Readers that predate
 *     the profile ignore both (the reserved words and the bytes after what they read).
 * stack_used covers the whole run: the stack is painted at reset and measured at the end.
 *
 * Progress: one console line (semihosting console = QEMU's stderr; stderr on the host) per image
 * (mode 0), per training step and per evaluation pass, printed after its records are written and
 * outside the counted calls:
 *   qtrain: image 3/10
 *   qtrain: step 12/400 loss 0.8123          (steps done / S; loss with 4 decimals, nan, inf)
 *   qtrain: eval 10/400 correct 37/50        (after step 10 of 400: 37 of the 50 labelled records)
 * Errors are one line starting "qtrain-harness: " (faults: "qtrain: <Fault> at ..."), then the exit.
 */
#include <stdint.h>

#include "qtrain_checkpoint.h"
#include "qtrain_flash.h"
#include "qtrain_model_abi.h"
#include "qtrain_runtime.h"

#define REQUEST_MAGIC 0x49525451u /* "QTRI" */
#define RESULT_MAGIC 0x4F525451u  /* "QTRO" */
#define PROTOCOL_VERSION 3u

enum { MODE_INFER = 0, MODE_TRAIN = 1, MODE_TRAIN_EVAL = 2 };

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t mode;
    uint32_t num_samples;
    uint32_t steps;
    uint32_t image_bytes;
    uint32_t record_bytes;
    uint32_t num_eval;
    uint32_t eval_every;
    uint32_t checkpoint_every;
    uint32_t reserved[2];
} request_header_t;
_Static_assert(sizeof(request_header_t) == 48, "request header layout");

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t complete;
    uint32_t mode;
    uint32_t records;
    uint32_t num_classes;
    uint32_t counter_kind;
    uint32_t stack_used;
    uint32_t stack_size;
    uint32_t num_trainable;
    uint32_t init_count[2];
    uint32_t macs_per_infer[2];
    uint32_t macs_per_train_step[2];
    uint32_t peak_sram_bytes;
    uint32_t arena_bytes;
    uint32_t trainable_bytes;
    uint32_t scratch_bytes;
    uint32_t flash_bytes;
    uint32_t input_bytes;
    uint32_t num_eval;
    uint32_t eval_every;
    uint32_t steps;
    uint32_t eval_passes;
    uint32_t restored_step;
    uint32_t step;
    uint32_t checkpoints;
    uint32_t reserved[1];
    uint32_t features;
    uint32_t profile_slots;
} result_header_t;
_Static_assert(sizeof(result_header_t) == 128, "result header layout");

static qtrain_file_t result_file = -1;

/* ---- one console line, built in a buffer and written with a single qtrain_puts ---- */

typedef struct {
    char text[96];
    uint32_t length;
} line_t;

static void line_str(line_t *line, const char *s) {
    while (*s != '\0' && line->length + 1u < sizeof(line->text)) {
        line->text[line->length++] = *s++;
    }
    line->text[line->length] = '\0';
}

static void line_u32(line_t *line, uint32_t value) {
    char digits[11];
    uint32_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    char text[11];
    for (uint32_t i = 0; i < n; i++) {
        text[i] = digits[n - 1u - i];
    }
    text[n] = '\0';
    line_str(line, text);
}

/* `value` with 4 decimals (rounded half to even), "nan", "inf"/"-inf"; from 1e9 on as d.ddddeN. */
static void line_fixed4(line_t *line, float value) {
    if (value != value) {
        line_str(line, "nan");
        return;
    }
    if (value < 0.0f) {
        line_str(line, "-");
        value = -value;
    }
    if (value > 3.4028235e38f) {
        line_str(line, "inf");
        return;
    }
    uint32_t exponent = 0;
    if (value >= 1e9f) {
        while (value >= 10.0f) {
            value /= 10.0f;
            exponent++;
        }
    }
    uint32_t whole = (uint32_t)value;
    uint32_t fraction = (uint32_t)__builtin_rintf((value - (float)whole) * 10000.0f);
    if (fraction >= 10000u) {
        whole++;
        fraction -= 10000u;
    }
    line_u32(line, whole);
    char decimals[6] = {'.', 0, 0, 0, 0, '\0'};
    for (int i = 4; i >= 1; i--) {
        decimals[i] = (char)('0' + fraction % 10u);
        fraction /= 10u;
    }
    line_str(line, decimals);
    if (exponent != 0u) {
        line_str(line, "e");
        line_u32(line, exponent);
    }
}

static void line_print(line_t *line) {
    line_str(line, "\n");
    qtrain_puts(line->text);
}

/* The progress lines. Not inlined, so their line buffer is not on the stack while the model runs
 * (the measured stack_used is the model's plus the harness's own few frames). */
__attribute__((noinline)) static void progress(const char *what, uint32_t done, uint32_t total) {
    line_t line = {{0}, 0u};
    line_str(&line, "qtrain: ");
    line_str(&line, what);
    line_str(&line, " ");
    line_u32(&line, done);
    line_str(&line, "/");
    line_u32(&line, total);
    line_print(&line);
}

__attribute__((noinline)) static void progress_step(uint32_t done, uint32_t total, float loss) {
    line_t line = {{0}, 0u};
    line_str(&line, "qtrain: step ");
    line_u32(&line, done);
    line_str(&line, "/");
    line_u32(&line, total);
    line_str(&line, " loss ");
    line_fixed4(&line, loss);
    line_print(&line);
}

__attribute__((noinline)) static void progress_eval(uint32_t step, uint32_t total, uint32_t correct,
                                                    uint32_t labelled) {
    line_t line = {{0}, 0u};
    line_str(&line, "qtrain: eval ");
    line_u32(&line, step);
    line_str(&line, "/");
    line_u32(&line, total);
    line_str(&line, " correct ");
    line_u32(&line, correct);
    line_str(&line, "/");
    line_u32(&line, labelled);
    line_print(&line);
}

static _Noreturn void fail(int status, const char *message, const char *detail) {
    qtrain_puts("qtrain-harness: ");
    qtrain_puts(message);
    if (detail != 0) {
        qtrain_puts(detail);
    }
    qtrain_putc('\n');
    if (result_file >= 0) {
        qtrain_file_close(result_file);
    }
    qtrain_exit(status);
}

static void write_result(const void *data, uint32_t size) {
    if (qtrain_file_write(result_file, data, size) != 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot write the result file", 0);
    }
}

static void write_padding(uint32_t size) {
    static const uint8_t zeros[4] = {0, 0, 0, 0};
    if (size % 4u != 0u) {
        write_result(zeros, 4u - size % 4u);
    }
}

static void split_u64(uint32_t out[2], uint64_t value) {
    out[0] = (uint32_t)value;
    out[1] = (uint32_t)(value >> 32);
}

static uint32_t dtype_bytes(uint32_t dtype) {
    switch (dtype) {
    case QTRAIN_DTYPE_INT8:
        return 1u;
    case QTRAIN_DTYPE_FIXED16:
        return 2u;
    case QTRAIN_DTYPE_INT32:
    case QTRAIN_DTYPE_FLOAT32:
        return 4u;
    default:
        return 0u;
    }
}

static uint32_t string_length(const char *s) {
    uint32_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}

static void write_trainable_tensors(void) {
    for (uint32_t i = 0; i < qtrain_model.num_trainable; i++) {
        const qtrain_tensor_desc_t *tensor = &qtrain_model.trainable[i];
        uint32_t elements = 1u;
        uint32_t entry[7] = {tensor->dtype, tensor->rank, 0u, 0u, 0u, 0u, 0u};
        if (tensor->rank > QTRAIN_MAX_RANK || dtype_bytes(tensor->dtype) == 0u) {
            fail(QTRAIN_EXIT_FAILURE, "bad trainable tensor descriptor: ", tensor->name);
        }
        for (uint32_t d = 0; d < tensor->rank; d++) {
            entry[2 + d] = tensor->shape[d];
            elements *= tensor->shape[d];
        }
        entry[6] = elements * dtype_bytes(tensor->dtype);
        uint32_t name_bytes = string_length(tensor->name);
        write_result(&name_bytes, 4u);
        write_result(tensor->name, name_bytes);
        write_padding(name_bytes);
        write_result(entry, sizeof(entry));
        write_result(tensor->data, entry[6]);
        write_padding(entry[6]);
    }
}

/* Record `index` counts training records first, then evaluation records. */
static void read_record(qtrain_file_t request, const request_header_t *header, uint32_t index, int32_t *label) {
    if (qtrain_file_seek(request, (uint32_t)sizeof(request_header_t) + index * header->record_bytes) != 0 ||
        qtrain_file_read(request, label, 4u) != 0 ||
        qtrain_file_read(request, qtrain_model.input, header->image_bytes) != 0) {
        fail(QTRAIN_EXIT_BAD_INPUT, "the request file ends early", 0);
    }
}

/* qtrain_infer on the image in the model's input buffer; writes one infer record, returns the argmax. */
static uint32_t infer_record(void) {
    uint64_t before = qtrain_counter_read();
    qtrain_infer(qtrain_model.input, qtrain_model.logits);
    uint64_t count = qtrain_counter_read() - before;
    uint32_t count_words[2];
    split_u64(count_words, count);
    write_result(qtrain_model.logits, 4u * qtrain_model.num_classes);
    write_result(qtrain_model.output_q, qtrain_model.num_classes);
    write_padding(qtrain_model.num_classes);
    write_result(count_words, sizeof(count_words));
    uint32_t best = 0;
    for (uint32_t c = 1; c < qtrain_model.num_classes; c++) {
        if (qtrain_model.logits[c] > qtrain_model.logits[best]) {
            best = c;
        }
    }
    return best;
}

/* One training step (the `step`-th of this run) on sample t mod N, t = the device's step counter;
 * writes its train record and the progress line. */
static void train_record(qtrain_file_t request, const request_header_t *in, uint32_t step) {
    int32_t label;
    read_record(request, in, *qtrain_state.step % in->num_samples, &label);
    if (label < 0 || (uint32_t)label >= qtrain_model.num_classes) {
        fail(QTRAIN_EXIT_BAD_INPUT, "a label is outside the model's classes", 0);
    }
    uint64_t before = qtrain_counter_read();
    float loss = qtrain_train_step(qtrain_model.input, (int)label);
    uint64_t count = qtrain_counter_read() - before;
    struct {
        float loss;
        int32_t label;
        uint32_t count[2];
    } record = {loss, label, {0u, 0u}};
    _Static_assert(sizeof(record) == 16, "train record layout");
    split_u64(record.count, count);
    write_result(&record, sizeof(record));
    progress_step(step + 1u, in->steps, loss);
}

/* An evaluation pass after `step` training steps: qtrain_infer on every evaluation record. */
static void eval_pass(qtrain_file_t request, const request_header_t *in, uint32_t step) {
    uint32_t labelled = 0, correct = 0;
    for (uint32_t i = 0; i < in->num_eval; i++) {
        int32_t label;
        read_record(request, in, in->num_samples + i, &label);
        if (label < -1 || (label >= 0 && (uint32_t)label >= qtrain_model.num_classes)) {
            fail(QTRAIN_EXIT_BAD_INPUT, "an evaluation label is outside the model's classes (or -1)", 0);
        }
        uint32_t predicted = infer_record();
        if (label >= 0) {
            labelled++;
            correct += predicted == (uint32_t)label ? 1u : 0u;
        }
    }
    progress_eval(step, in->steps, correct, labelled);
}

/* The request header: magic and version first (8 bytes), then the rest. */
static void read_request_header(qtrain_file_t request, request_header_t *in, const char *request_path) {
    if (qtrain_file_read(request, in, 8u) != 0 || in->magic != REQUEST_MAGIC) {
        fail(QTRAIN_EXIT_BAD_INPUT, "not a qtrain request file: ", request_path);
    }
    if (in->version != PROTOCOL_VERSION) {
        line_t line = {{0}, 0u};
        line_str(&line, "the request is protocol version ");
        line_u32(&line, in->version);
        line_str(&line, " but this harness speaks version ");
        line_u32(&line, PROTOCOL_VERSION);
        fail(QTRAIN_EXIT_BAD_INPUT, line.text, 0);
    }
    if (qtrain_file_read(request, &in->mode, (uint32_t)sizeof(*in) - 8u) != 0) {
        fail(QTRAIN_EXIT_BAD_INPUT, "the request file ends early", 0);
    }
    uint64_t total_bytes = (uint64_t)sizeof(request_header_t) +
                           ((uint64_t)in->num_samples + in->num_eval) * in->record_bytes;
    int with_eval = in->mode == MODE_TRAIN_EVAL;
    if (in->mode > MODE_TRAIN_EVAL || in->num_samples == 0u ||
        in->record_bytes != 4u + (in->image_bytes + 3u) / 4u * 4u || total_bytes > 0xFFFFFFFFu ||
        (with_eval ? in->num_eval == 0u : (in->num_eval != 0u || in->eval_every != 0u)) ||
        (in->checkpoint_every != 0u && in->mode == MODE_INFER) || in->reserved[0] != 0u ||
        in->reserved[1] != 0u) {
        fail(QTRAIN_EXIT_BAD_INPUT, "unsupported or inconsistent request header", 0);
    }
    if (in->image_bytes != qtrain_model.input_bytes) {
        fail(QTRAIN_EXIT_BAD_INPUT, "the image size does not match the model's input", 0);
    }
}

/* After a training step: a checkpoint when the step counter reached a multiple of C. */
static void maybe_checkpoint(const request_header_t *in, result_header_t *out) {
    if (in->checkpoint_every == 0u || *qtrain_state.step % in->checkpoint_every != 0u) {
        return;
    }
    int status = qtrain_checkpoint_save();
    if (status == QTRAIN_CHECKPOINT_ETOOLARGE) {
        line_t line = {{0}, 0u};
        line_str(&line, "the checkpoint (");
        line_u32(&line, qtrain_checkpoint_payload_bytes(&qtrain_state));
        line_str(&line, " bytes) does not fit a Flash slot (");
        line_u32(&line, qtrain_checkpoint_capacity());
        line_str(&line, ")");
        fail(QTRAIN_EXIT_FAILURE, line.text, 0);
    }
    if (status != QTRAIN_CHECKPOINT_OK) {
        fail(QTRAIN_EXIT_FAILURE, "a checkpoint could not be written to Flash", 0);
    }
    out->checkpoints++;
}

static int run(const char *request_path, const char *result_path, const char *flash_path) {
    if (qtrain_model.abi_version != QTRAIN_ABI_VERSION) {
        fail(QTRAIN_EXIT_FAILURE, "the model was generated for another qtrain_model_abi.h version", 0);
    }
    qtrain_file_t request = qtrain_file_open(request_path, 0);
    if (request < 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot open the request file ", request_path);
    }
    request_header_t in;
    read_request_header(request, &in, request_path);
    result_file = qtrain_file_open(result_path, 1);
    if (result_file < 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot create the result file ", result_path);
    }

    int trains = in.mode != MODE_INFER;
    result_header_t out = {0};
    out.magic = RESULT_MAGIC;
    out.version = PROTOCOL_VERSION;
    out.mode = in.mode;
    out.num_classes = qtrain_model.num_classes;
    qtrain_counter_kind_t counter_kind = qtrain_counter_kind();
    out.counter_kind = (uint32_t)counter_kind;
    out.stack_used = QTRAIN_STACK_UNKNOWN;
    out.stack_size = qtrain_stack_size();
    out.num_trainable = trains ? qtrain_model.num_trainable : 0u;
    split_u64(out.macs_per_infer, qtrain_model.macs_per_infer);
    split_u64(out.macs_per_train_step, qtrain_model.macs_per_train_step);
    out.peak_sram_bytes = qtrain_memory.peak_sram_bytes;
    out.arena_bytes = qtrain_memory.arena_bytes;
    out.trainable_bytes = qtrain_memory.trainable_bytes;
    out.scratch_bytes = qtrain_memory.scratch_bytes;
    out.flash_bytes = qtrain_memory.flash_bytes;
    out.input_bytes = qtrain_model.input_bytes;
    out.num_eval = in.num_eval;
    out.eval_every = in.eval_every;
    out.steps = trains ? in.steps : 0u;
    write_result(&out, sizeof(out)); /* complete = 0 until the end */

    if (flash_path != 0 && qtrain_flash_attach(flash_path) != QTRAIN_FLASH_OK) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot use the Flash image ", flash_path);
    }
    qtrain_counter_start();
    uint64_t before = qtrain_counter_read();
    qtrain_init();
    split_u64(out.init_count, qtrain_counter_read() - before);
    out.restored_step = *qtrain_state.step;

    if (in.mode == MODE_INFER) {
        for (uint32_t i = 0; i < in.num_samples; i++) {
            int32_t label;
            read_record(request, &in, i, &label);
            (void)infer_record();
            progress("image", i + 1u, in.num_samples);
        }
        out.records = in.num_samples;
    } else {
        if (in.mode == MODE_TRAIN_EVAL) {
            eval_pass(request, &in, 0u);
            out.eval_passes++;
        }
        for (uint32_t step = 0; step < in.steps; step++) {
            train_record(request, &in, step);
            maybe_checkpoint(&in, &out);
            uint32_t done = step + 1u;
            if (in.mode == MODE_TRAIN_EVAL && in.eval_every != 0u && done % in.eval_every == 0u &&
                done != in.steps) {
                eval_pass(request, &in, done);
                out.eval_passes++;
            }
        }
        if (in.mode == MODE_TRAIN_EVAL) {
            eval_pass(request, &in, in.steps);
            out.eval_passes++;
        }
        write_trainable_tensors();
        out.records = in.steps;
    }
    qtrain_file_close(request);
#if defined(QTRAIN_PROFILE)
    out.features |= 1u;
    out.profile_slots = qtrain_profile_slots;
    write_result(qtrain_profile_counts, 8u * qtrain_profile_slots);
#endif

    out.complete = 1u;
    out.step = *qtrain_state.step;
    out.stack_used = qtrain_stack_used();
    if (qtrain_file_seek(result_file, 0u) != 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot rewind the result file", 0);
    }
    write_result(&out, sizeof(out));
    if (qtrain_file_close(result_file) != 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot close the result file", 0);
    }
    return QTRAIN_EXIT_OK;
}

#if defined(QTRAIN_HOST)
int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fail(QTRAIN_EXIT_BAD_INPUT, "usage: harness REQUEST RESULT [FLASH_IMAGE]", 0);
    }
    return run(argv[1], argv[2], argc == 4 ? argv[3] : 0);
}
#else
/* Splits the semihosting command line "program IN OUT [FLASH]" in place. */
int main(void) {
    static char command_line[256];
    char *words[4] = {0, 0, 0, 0};
    int count = 0;
    if (qtrain_command_line(command_line, sizeof(command_line)) == 0) {
        char *c = command_line;
        while (*c != '\0' && count < 4) {
            while (*c == ' ') {
                *c++ = '\0';
            }
            if (*c == '\0') {
                break;
            }
            words[count++] = c;
            while (*c != '\0' && *c != ' ') {
                c++;
            }
        }
    }
    if (count >= 3) {
        return run(words[1], words[2], count == 4 ? words[3] : 0);
    }
    return run("qtrain_in.bin", "qtrain_out.bin", 0);
}
#endif
