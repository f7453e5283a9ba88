/*
 * runtime_host.c - qtrain_runtime.h for the host build (-DQTRAIN_HOST): stdio files, the console is
 * stderr, counting is CLOCK_MONOTONIC nanoseconds, and the stack is not measured.
 */
#define _POSIX_C_SOURCE 199309L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "qtrain_runtime.h"

#define MAX_FILES 8
static FILE *files[MAX_FILES];

void qtrain_puts(const char *s) {
    fputs(s, stderr);
}

void qtrain_putc(char c) {
    fputc(c, stderr);
}

void qtrain_put_u32(uint32_t value) {
    fprintf(stderr, "%lu", (unsigned long)value);
}

void qtrain_put_hex32(uint32_t value) {
    fprintf(stderr, "0x%08lx", (unsigned long)value);
}

_Noreturn void qtrain_exit(int status) {
    fflush(NULL);
    exit(status);
}

qtrain_file_t qtrain_file_open(const char *path, int mode) {
    for (int i = 0; i < MAX_FILES; i++) {
        if (files[i] == NULL) {
            files[i] = fopen(path, mode == QTRAIN_FILE_UPDATE ? "r+b" : mode == QTRAIN_FILE_WRITE ? "wb" : "rb");
            if (files[i] != NULL && mode == QTRAIN_FILE_UPDATE) {
                setvbuf(files[i], NULL, _IONBF, 0); /* every write reaches the OS at once */
            }
            return files[i] != NULL ? i : -1;
        }
    }
    return -1;
}

static FILE *file_of(qtrain_file_t file) {
    return file >= 0 && file < MAX_FILES ? files[file] : NULL;
}

int qtrain_file_read(qtrain_file_t file, void *buffer, uint32_t size) {
    FILE *f = file_of(file);
    return f != NULL && fread(buffer, 1, size, f) == size ? 0 : -1;
}

int qtrain_file_write(qtrain_file_t file, const void *buffer, uint32_t size) {
    FILE *f = file_of(file);
    return f != NULL && fwrite(buffer, 1, size, f) == size ? 0 : -1;
}

int qtrain_file_seek(qtrain_file_t file, uint32_t offset) {
    FILE *f = file_of(file);
    return f != NULL && fseek(f, (long)offset, SEEK_SET) == 0 ? 0 : -1;
}

int qtrain_file_close(qtrain_file_t file) {
    FILE *f = file_of(file);
    if (f == NULL) {
        return -1;
    }
    files[file] = NULL;
    return fclose(f) == 0 ? 0 : -1;
}

int qtrain_command_line(char *buffer, uint32_t capacity) {
    (void)buffer;
    (void)capacity;
    return -1; /* the host harness takes argv */
}

static uint64_t counter_origin;

static uint64_t monotonic_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

qtrain_counter_kind_t qtrain_counter_kind(void) {
    return QTRAIN_COUNTER_HOST_NS;
}

void qtrain_counter_start(void) {
    counter_origin = monotonic_ns();
}

uint64_t qtrain_counter_read(void) {
    return monotonic_ns() - counter_origin;
}

uint32_t qtrain_stack_size(void) {
    return QTRAIN_STACK_UNKNOWN;
}

void qtrain_stack_paint(void) {
}

uint32_t qtrain_stack_used(void) {
    return QTRAIN_STACK_UNKNOWN;
}
