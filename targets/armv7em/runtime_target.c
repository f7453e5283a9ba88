/*
 * runtime_target.c - qtrain_runtime.h on the Arm targets (thumbv7em, thumbv8m.main): ARM semihosting,
 * counters, stack measurement.
 *
 * Semihosting (ARM "Semihosting for AArch32 and AArch64", v2): on M-profile a call is `BKPT 0xAB`
 * with the operation in r0 and a pointer to its argument block in r1; the result comes back in r0.
 * QEMU implements it with `-semihosting-config enable=on,target=native` (files are opened relative
 * to QEMU's working directory). On a real STM32F746 the calls need a debug probe that serves them;
 * without one BKPT escalates to HardFault.
 *
 * Board selection (build.py passes one): the QEMU boards QTRAIN_BOARD_MPS2_AN500 (Cortex-M7),
 * QTRAIN_BOARD_MPS2_AN386 (Cortex-M4F) and QTRAIN_BOARD_MPS2_AN505 (Cortex-M33) count instructions
 * with a CMSDK APB timer (qtrain_target.h has its address and clock); the chips
 * QTRAIN_BOARD_STM32F746 and QTRAIN_BOARD_NUCLEO_F446RE count core cycles with DWT CYCCNT.
 */
#include <stdint.h>

#include "qtrain_runtime.h"
#include "qtrain_target.h"


/* ---- semihosting ---- */
enum {
    SYS_OPEN = 0x01,
    SYS_CLOSE = 0x02,
    SYS_WRITEC = 0x03,
    SYS_WRITE0 = 0x04,
    SYS_WRITE = 0x05,
    SYS_READ = 0x06,
    SYS_SEEK = 0x0A,
    SYS_GET_CMDLINE = 0x15,
    SYS_EXIT_EXTENDED = 0x20,
};
/* SYS_OPEN modes are indices into fopen's list "r","rb","r+","r+b","w","wb",... */
enum { OPEN_MODE_RB = 1, OPEN_MODE_RPLUSB = 3, OPEN_MODE_WB = 5 };
enum { ADP_STOPPED_APPLICATION_EXIT = 0x20026 };

static int32_t semihost_call(uint32_t operation, const void *argument) {
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

static uint32_t string_length(const char *s) {
    uint32_t n = 0;
    while (s[n] != '\0') {
        n++;
    }
    return n;
}

void qtrain_puts(const char *s) {
    semihost_call(SYS_WRITE0, s);
}

void qtrain_putc(char c) {
    semihost_call(SYS_WRITEC, &c);
}

void qtrain_put_u32(uint32_t value) {
    char text[11];
    int i = 10;
    text[i] = '\0';
    do {
        text[--i] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    qtrain_puts(&text[i]);
}

void qtrain_put_hex32(uint32_t value) {
    char text[11] = "0x";
    for (int i = 0; i < 8; i++) {
        uint32_t nibble = (value >> (28 - 4 * i)) & 0xFu;
        text[2 + i] = (char)(nibble < 10u ? '0' + nibble : 'a' + nibble - 10u);
    }
    text[10] = '\0';
    qtrain_puts(text);
}

_Noreturn void qtrain_exit(int status) {
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, (uint32_t)status};
    for (;;) {
        semihost_call(SYS_EXIT_EXTENDED, block);
    }
}

qtrain_file_t qtrain_file_open(const char *path, int mode) {
    const uint32_t block[3] = {(uint32_t)(uintptr_t)path,
                               mode == QTRAIN_FILE_UPDATE ? OPEN_MODE_RPLUSB
                               : mode == QTRAIN_FILE_WRITE ? OPEN_MODE_WB
                                                           : OPEN_MODE_RB,
                               string_length(path)};
    return semihost_call(SYS_OPEN, block);
}

/* SYS_READ and SYS_WRITE return the number of bytes *not* transferred. */
int qtrain_file_read(qtrain_file_t file, void *buffer, uint32_t size) {
    const uint32_t block[3] = {(uint32_t)file, (uint32_t)(uintptr_t)buffer, size};
    return semihost_call(SYS_READ, block) == 0 ? 0 : -1;
}

int qtrain_file_write(qtrain_file_t file, const void *buffer, uint32_t size) {
    const uint32_t block[3] = {(uint32_t)file, (uint32_t)(uintptr_t)buffer, size};
    return semihost_call(SYS_WRITE, block) == 0 ? 0 : -1;
}

int qtrain_file_seek(qtrain_file_t file, uint32_t offset) {
    const uint32_t block[2] = {(uint32_t)file, offset};
    return semihost_call(SYS_SEEK, block) == 0 ? 0 : -1;
}

int qtrain_file_close(qtrain_file_t file) {
    const uint32_t block[1] = {(uint32_t)file};
    return semihost_call(SYS_CLOSE, block) == 0 ? 0 : -1;
}

int qtrain_command_line(char *buffer, uint32_t capacity) {
    if (capacity < 2u) {
        return -1;
    }
    uint32_t block[2] = {(uint32_t)(uintptr_t)buffer, capacity - 1u};
    if (semihost_call(SYS_GET_CMDLINE, block) != 0) {
        return -1;
    }
    buffer[block[1] < capacity ? block[1] : capacity - 1u] = '\0';
    return 0;
}

/* ---- counting ---- */
#define MMIO32(address) (*(volatile uint32_t *)(uintptr_t)(address))

static uint32_t counter_last;  /* raw hardware value at the previous read */
static uint64_t counter_ticks; /* hardware ticks since qtrain_counter_start() */

#if defined(QTRAIN_CMSDK_TIMER0_BASE)
/* CMSDK APB timer 0 (qtrain_target.h: its address and clock): a 32-bit down counter that reloads
 * from RELOAD when it reaches zero. */
#define CMSDK_TIMER0_CTRL MMIO32(QTRAIN_CMSDK_TIMER0_BASE)
#define CMSDK_TIMER0_VALUE MMIO32(QTRAIN_CMSDK_TIMER0_BASE + 4u)
#define CMSDK_TIMER0_RELOAD MMIO32(QTRAIN_CMSDK_TIMER0_BASE + 8u)
#define CMSDK_TIMER_CTRL_ENABLE 1u
/* -icount shift=0: 1 ns of virtual time per instruction, so one tick of an F Hz clock is 10^9 / F
 * instructions (25 MHz: 40; 20 MHz: 50). */
#define INSTRUCTIONS_PER_TICK (1000000000u / QTRAIN_CMSDK_TIMER_HZ)

qtrain_counter_kind_t qtrain_counter_kind(void) {
    return QTRAIN_COUNTER_INSTRUCTIONS;
}

void qtrain_counter_start(void) {
    CMSDK_TIMER0_CTRL = 0u;
    CMSDK_TIMER0_RELOAD = 0xFFFFFFFFu;
    CMSDK_TIMER0_VALUE = 0xFFFFFFFFu;
    CMSDK_TIMER0_CTRL = CMSDK_TIMER_CTRL_ENABLE;
    counter_last = CMSDK_TIMER0_VALUE;
    counter_ticks = 0u;
}

uint64_t qtrain_counter_read(void) {
    uint32_t now = CMSDK_TIMER0_VALUE;
    counter_ticks += (uint32_t)(counter_last - now); /* counts down, wraps modulo 2^32 */
    counter_last = now;
    return counter_ticks * INSTRUCTIONS_PER_TICK;
}
#else
/* DWT cycle counter (ARMv7-M ARM C1.8): enable trace (DEMCR.TRCENA), unlock the DWT (the M7 has a
 * lock access register; the M4 has none), then count. */
#define DEMCR MMIO32(0xE000EDFCu)
#define DWT_CTRL MMIO32(0xE0001000u)
#define DWT_CYCCNT MMIO32(0xE0001004u)
#define DWT_LAR MMIO32(0xE0001FB0u)

qtrain_counter_kind_t qtrain_counter_kind(void) {
    return QTRAIN_COUNTER_CYCLES;
}

void qtrain_counter_start(void) {
    DEMCR |= 1u << 24;
#if defined(QTRAIN_BOARD_STM32F746)
    DWT_LAR = 0xC5ACCE55u;
#endif
    DWT_CYCCNT = 0u;
    DWT_CTRL |= 1u;
    counter_last = DWT_CYCCNT;
    counter_ticks = 0u;
}

uint64_t qtrain_counter_read(void) {
    uint32_t now = DWT_CYCCNT;
    counter_ticks += (uint32_t)(now - counter_last); /* counts up */
    counter_last = now;
    return counter_ticks;
}
#endif

/* ---- stack ---- */
uint32_t qtrain_stack_size(void) {
    return (uint32_t)((uintptr_t)__qtrain_stack_top - (uintptr_t)__qtrain_stack_limit);
}

static inline uintptr_t current_sp(void) {
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

/* Paint from just above the guard up to (not including) the caller's stack pointer. No interrupt
 * handler runs on this stack (they use the handler stack), so everything below SP is free. */
void qtrain_stack_paint(void) {
    volatile uint32_t *word = (volatile uint32_t *)(uintptr_t)qtrain_stack_paint_start();
    volatile uint32_t *end = (volatile uint32_t *)(current_sp() & ~(uintptr_t)3u);
    while (word < end) {
        *word++ = QTRAIN_STACK_PAINT;
    }
}

uint32_t qtrain_stack_used(void) {
    const volatile uint32_t *word = (const volatile uint32_t *)(uintptr_t)qtrain_stack_paint_start();
    const volatile uint32_t *top = (const volatile uint32_t *)(uintptr_t)__qtrain_stack_top;
    while (word < top && *word == QTRAIN_STACK_PAINT) {
        word++;
    }
    if (word == (const volatile uint32_t *)(uintptr_t)qtrain_stack_paint_start()) {
        return qtrain_stack_size(); /* reached the guard: all of it */
    }
    return (uint32_t)((uintptr_t)top - (uintptr_t)word);
}
