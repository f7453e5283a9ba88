/*
 * qtrain_runtime.h - the tiny runtime every qtrain firmware links instead of libc.
 *
 * Two implementations share this interface:
 *   runtime_target.c  thumbv7em: ARM semihosting (BKPT 0xAB) for console and files, the CMSDK APB
 *                     timer (mps2-an500) or DWT cycle counter (STM32F746) for counting, stack painting.
 *   runtime_host.c    the host build: stdio for console and files, CLOCK_MONOTONIC for counting.
 * runtime_math.c (expf/logf/cospif) is shared verbatim so host and target compute bit-identical losses, and
 * runtime_string.c provides memcpy/memset/memmove on the target (the host uses its libc).
 */
#ifndef QTRAIN_RUNTIME_H
#define QTRAIN_RUNTIME_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- exit statuses (the QEMU / host process exit code; qtrain-run maps them to its own) ---- */
#define QTRAIN_EXIT_OK 0
#define QTRAIN_EXIT_FAILURE 1        /* the model or harness reported an error */
#define QTRAIN_EXIT_BAD_INPUT 2      /* the input file is malformed or does not match the model */
#define QTRAIN_EXIT_IO_ERROR 3       /* a file could not be opened, read or written */
#define QTRAIN_EXIT_FAULT 4          /* a CPU fault (HardFault, BusFault, UsageFault, ...) */
#define QTRAIN_EXIT_STACK_OVERFLOW 5 /* the stack ran into its guard region */

/* ---- console and files ---- */
/* Write a NUL-terminated string / one character to the console (the semihosting console, which
 * QEMU prints on its stderr; stderr on the host). */
void qtrain_puts(const char *s);
void qtrain_putc(char c);
/* Write `value` in decimal / as 0x%08x to the console. */
void qtrain_put_u32(uint32_t value);
void qtrain_put_hex32(uint32_t value);
/* Stop the program with `status` (SYS_EXIT_EXTENDED on the target). */
_Noreturn void qtrain_exit(int status);

/* A file handle, or a negative value when open failed. */
typedef int32_t qtrain_file_t;
/* qtrain_file_open modes (all binary): read; create/truncate for writing; read and write an existing
 * file in place (no truncation; each write reaches the operating system before the call returns). */
#define QTRAIN_FILE_READ 0
#define QTRAIN_FILE_WRITE 1
#define QTRAIN_FILE_UPDATE 2
qtrain_file_t qtrain_file_open(const char *path, int mode);
/* Each returns 0 when all `size` bytes were transferred, -1 otherwise. */
int qtrain_file_read(qtrain_file_t file, void *buffer, uint32_t size);
int qtrain_file_write(qtrain_file_t file, const void *buffer, uint32_t size);
/* Move to absolute byte `offset`; 0 on success. */
int qtrain_file_seek(qtrain_file_t file, uint32_t offset);
int qtrain_file_close(qtrain_file_t file);

/* The program's command line (target: SYS_GET_CMDLINE, i.e. QEMU's `-append` or
 * `-semihosting-config arg=`; the first word is the program name). Copies at most `capacity - 1`
 * bytes plus a NUL into `buffer`; returns 0 on success, -1 when there is none. */
int qtrain_command_line(char *buffer, uint32_t capacity);

/* ---- counting ---- */
/* What qtrain_counter_read() counts. */
typedef enum {
    QTRAIN_COUNTER_NONE = 0,
    /* Guest instructions: QEMU with `-icount shift=0` advances its virtual clock 1 ns per
     * instruction, and the mps2 CMSDK APB timer runs at 25 MHz, so one timer tick is 40
     * instructions. Resolution 40 instructions; see README.md for the calibration. */
    QTRAIN_COUNTER_INSTRUCTIONS = 1,
    QTRAIN_COUNTER_CYCLES = 2,  /* core clock cycles (DWT CYCCNT on real silicon) */
    QTRAIN_COUNTER_HOST_NS = 3, /* host build: CLOCK_MONOTONIC nanoseconds */
} qtrain_counter_kind_t;

qtrain_counter_kind_t qtrain_counter_kind(void);
/* Start (or restart) the free-running counter. */
void qtrain_counter_start(void);
/* Count since qtrain_counter_start(). The hardware counters are 32 bits wide and extended in
 * software, so consecutive reads must be less than 2^32 hardware ticks apart (QEMU: 1.7e11
 * instructions; STM32F746 at 216 MHz: 19 s). A difference of two reads includes the second read's
 * own few instructions and is a multiple of 40 on QEMU (exact to one tick: see README.md). */
uint64_t qtrain_counter_read(void);

/* ---- stack ---- */
#define QTRAIN_STACK_UNKNOWN 0xFFFFFFFFu
/* Size of the stack region in bytes (QTRAIN_STACK_UNKNOWN on the host). */
uint32_t qtrain_stack_size(void);
/* Fill the unused part of the stack (below the caller's frame) with a known pattern. */
void qtrain_stack_paint(void);
/* Deepest stack use since the last paint (the reset handler paints everything once), in bytes from
 * the top of the stack region: the lowest word that no longer holds the paint. A paint only covers
 * the stack below its caller, so the caller's depth at that point is always included.
 * QTRAIN_STACK_UNKNOWN on the host. */
uint32_t qtrain_stack_used(void);

/* ---- math (runtime_math.c) ---- */
/* e^x and ln(x) in float, less than 1 ulp from the exact result for every float input (checked over
 * all 2^32: expf max 0.94 ulp, logf max 0.89 ulp; about 99.6% correctly rounded). Special cases as C99
 * Annex F (NaN, +-inf, +-0, x < 0 for logf). Bit-identical on the host and the target. */
float qtrain_expf(float x);
float qtrain_logf(float x);
/* cos(pi * x) for x in [0, 1] (the learning-rate schedule's cosine decay), within 2e-7 of the exact
 * value; numerics.cospi_f32 is the same operations in numpy. Outside [0, 1] the result is unspecified. */
float qtrain_cospif(float x);

#ifdef __cplusplus
}
#endif

#endif /* QTRAIN_RUNTIME_H */
