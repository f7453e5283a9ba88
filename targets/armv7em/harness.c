/*
 * harness.c - the generic firmware main: reads a request file, drives any model through
 * qtrain_model_abi.h, writes a result file. The same source runs on QEMU (files through semihosting)
 * and on the host (stdio); `qtrain-run` (tools/qtrain_run.py) writes the request and decodes the
 * result.
 *
 * Command line: `harness IN OUT`. On the target the words come from SYS_GET_CMDLINE (QEMU
 * `-semihosting-config ...,arg=firmware,arg=IN,arg=OUT`); without them the names default to
 * qtrain_in.bin and qtrain_out.bin in QEMU's working directory.
 *
 * Request file (all little-endian, 4-byte fields):
 *   header, 32 bytes:  magic "QTRI", version 1, mode (0 = infer, 1 = train), num_samples N >= 1,
 *                      steps S (train: S steps over the samples in order, wrapping around; infer:
 *                      ignored, every sample runs once), image_bytes B (must equal the model's
 *                      input_bytes), record_bytes R = 4 + B rounded up to 4, reserved 0
 *   N records of R bytes: int32 label (train: must be in [0, num_classes)), int8 image[B] (NHWC,
 *                      already quantized), zero padding
 * Only one record is in SRAM at a time (in the model's input buffer): the harness seeks to it.
 *
 * Result file:
 *   header, 128 bytes (32 uint32): magic "QTRO", version 1, complete (0 until the very end, so a
 *     crashed run is recognisable), mode, records written, num_classes, counter_kind
 *     (qtrain_counter_kind_t), stack_used (bytes, 0xFFFFFFFF = not measured), stack_size,
 *     num_trainable, init_count (u64: lo, hi; the counter over qtrain_init), macs_per_infer (u64),
 *     macs_per_train_step (u64), then qtrain_memory: peak_sram, arena, trainable, scratch, flash
 *     bytes; input_bytes; 10 reserved zeros
 *   records, one per image (infer) or step (train), written as they complete:
 *     infer: float32 logits[num_classes], int8 output_q[num_classes] zero-padded to 4, uint64 count
 *     train: float32 loss, int32 label, uint64 count
 *     where count is the counter over exactly one qtrain_infer / qtrain_train_step call
 *   train only, after the records, one entry per trainable tensor (qtrain_model.trainable order):
 *     uint32 name_bytes, name (no NUL) zero-padded to 4, uint32 dtype (qtrain_dtype_t), uint32 rank,
 *     uint32 shape[4] (unused entries 0), uint32 data_bytes, data zero-padded to 4
 * stack_used covers the whole run: the stack is painted at reset and measured at the end.
 */
#include <stdint.h>

#include "qtrain_model_abi.h"
#include "qtrain_runtime.h"

#define REQUEST_MAGIC 0x49525451u /* "QTRI" */
#define RESULT_MAGIC 0x4F525451u  /* "QTRO" */
#define PROTOCOL_VERSION 1u

enum { MODE_INFER = 0, MODE_TRAIN = 1 };

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t mode;
    uint32_t num_samples;
    uint32_t steps;
    uint32_t image_bytes;
    uint32_t record_bytes;
    uint32_t reserved;
} request_header_t;
_Static_assert(sizeof(request_header_t) == 32, "request header layout");

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
    uint32_t reserved[10];
} result_header_t;
_Static_assert(sizeof(result_header_t) == 128, "result header layout");

static qtrain_file_t result_file = -1;

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

static void read_record(qtrain_file_t request, const request_header_t *header, uint32_t sample, int32_t *label) {
    if (qtrain_file_seek(request, (uint32_t)sizeof(request_header_t) + sample * header->record_bytes) != 0 ||
        qtrain_file_read(request, label, 4u) != 0 ||
        qtrain_file_read(request, qtrain_model.input, header->image_bytes) != 0) {
        fail(QTRAIN_EXIT_BAD_INPUT, "the request file ends early", 0);
    }
}

static int run(const char *request_path, const char *result_path) {
    if (qtrain_model.abi_version != QTRAIN_ABI_VERSION) {
        fail(QTRAIN_EXIT_FAILURE, "the model was generated for another qtrain_model_abi.h version", 0);
    }
    qtrain_file_t request = qtrain_file_open(request_path, 0);
    if (request < 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot open the request file ", request_path);
    }
    request_header_t in;
    if (qtrain_file_read(request, &in, sizeof(in)) != 0 || in.magic != REQUEST_MAGIC) {
        fail(QTRAIN_EXIT_BAD_INPUT, "not a qtrain request file: ", request_path);
    }
    if (in.version != PROTOCOL_VERSION || in.mode > MODE_TRAIN || in.num_samples == 0u ||
        in.record_bytes != 4u + (in.image_bytes + 3u) / 4u * 4u) {
        fail(QTRAIN_EXIT_BAD_INPUT, "unsupported or inconsistent request header", 0);
    }
    if (in.image_bytes != qtrain_model.input_bytes) {
        fail(QTRAIN_EXIT_BAD_INPUT, "the image size does not match the model's input", 0);
    }
    result_file = qtrain_file_open(result_path, 1);
    if (result_file < 0) {
        fail(QTRAIN_EXIT_IO_ERROR, "cannot create the result file ", result_path);
    }

    result_header_t out = {0};
    out.magic = RESULT_MAGIC;
    out.version = PROTOCOL_VERSION;
    out.mode = in.mode;
    out.num_classes = qtrain_model.num_classes;
    qtrain_counter_kind_t counter_kind = qtrain_counter_kind();
    out.counter_kind = (uint32_t)counter_kind;
    out.stack_used = QTRAIN_STACK_UNKNOWN;
    out.stack_size = qtrain_stack_size();
    out.num_trainable = in.mode == MODE_TRAIN ? qtrain_model.num_trainable : 0u;
    split_u64(out.macs_per_infer, qtrain_model.macs_per_infer);
    split_u64(out.macs_per_train_step, qtrain_model.macs_per_train_step);
    out.peak_sram_bytes = qtrain_memory.peak_sram_bytes;
    out.arena_bytes = qtrain_memory.arena_bytes;
    out.trainable_bytes = qtrain_memory.trainable_bytes;
    out.scratch_bytes = qtrain_memory.scratch_bytes;
    out.flash_bytes = qtrain_memory.flash_bytes;
    out.input_bytes = qtrain_model.input_bytes;
    write_result(&out, sizeof(out)); /* complete = 0 until the end */

    qtrain_counter_start();
    uint64_t before = qtrain_counter_read();
    qtrain_init();
    split_u64(out.init_count, qtrain_counter_read() - before);

    uint32_t records = in.mode == MODE_TRAIN ? in.steps : in.num_samples;
    for (uint32_t i = 0; i < records; i++) {
        int32_t label;
        read_record(request, &in, i % in.num_samples, &label);
        if (in.mode == MODE_TRAIN) {
            if (label < 0 || (uint32_t)label >= qtrain_model.num_classes) {
                fail(QTRAIN_EXIT_BAD_INPUT, "a label is outside the model's classes", 0);
            }
            before = qtrain_counter_read();
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
        } else {
            before = qtrain_counter_read();
            qtrain_infer(qtrain_model.input, qtrain_model.logits);
            uint64_t count = qtrain_counter_read() - before;
            uint32_t count_words[2];
            split_u64(count_words, count);
            write_result(qtrain_model.logits, 4u * qtrain_model.num_classes);
            write_result(qtrain_model.output_q, qtrain_model.num_classes);
            write_padding(qtrain_model.num_classes);
            write_result(count_words, sizeof(count_words));
        }
    }
    if (in.mode == MODE_TRAIN) {
        write_trainable_tensors();
    }
    qtrain_file_close(request);

    out.complete = 1u;
    out.records = records;
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
    if (argc != 3) {
        fail(QTRAIN_EXIT_BAD_INPUT, "usage: harness REQUEST RESULT", 0);
    }
    return run(argv[1], argv[2]);
}
#else
/* Splits the semihosting command line "program IN OUT" in place. */
int main(void) {
    static char command_line[256];
    char *words[3] = {0, 0, 0};
    int count = 0;
    if (qtrain_command_line(command_line, sizeof(command_line)) == 0) {
        char *c = command_line;
        while (*c != '\0' && count < 3) {
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
    if (count == 3) {
        return run(words[1], words[2]);
    }
    return run("qtrain_in.bin", "qtrain_out.bin");
}
#endif
