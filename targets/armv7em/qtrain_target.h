/*
 * qtrain_target.h - what startup_armv7em.c and runtime_target.c share: the symbols the linker
 * scripts (sections.ld) define and the stack conventions. Target-only; models do not include it.
 *
 * Stack layout: the application stack is the lowest part of SRAM, [__qtrain_stack_limit,
 * __qtrain_stack_top), and the thread code runs on it through PSP. Its lowest
 * QTRAIN_STACK_GUARD_BYTES are an MPU no-access region, so an overflow faults instead of silently
 * running into other data (and, beyond the guard, into the unmapped space below SRAM). Exception
 * handlers run on MSP, a small separate stack at the end of the static SRAM sections, so they can
 * still report an overflow of the application stack.
 */
#ifndef QTRAIN_TARGET_H
#define QTRAIN_TARGET_H

#include <stdint.h>

extern uint32_t __qtrain_data_load[];  /* .data's initial image in Flash */
extern uint32_t __qtrain_data_start[]; /* .data in SRAM */
extern uint32_t __qtrain_data_end[];
extern uint32_t __qtrain_zero_start[]; /* .bss and the .qtrain.* SRAM sections: zeroed at reset */
extern uint32_t __qtrain_zero_end[];
extern uint32_t __qtrain_stack_limit[]; /* lowest address of the application stack (guard) */
extern uint32_t __qtrain_stack_top[];   /* initial PSP */
extern uint32_t __qtrain_handler_stack_limit[]; /* the exception handlers' stack (MSP) */
extern uint32_t __qtrain_handler_stack_top[];   /* initial MSP (vector table entry 0) */

/* MPU regions must be a power of two >= 32 bytes and aligned to their size. */
#define QTRAIN_STACK_GUARD_BYTES 32u
/* The word the free stack is filled with; any other value means "was used". */
#define QTRAIN_STACK_PAINT 0xA5C3A5C3u

static inline uintptr_t qtrain_stack_paint_start(void) {
    return (uintptr_t)__qtrain_stack_limit + QTRAIN_STACK_GUARD_BYTES;
}

#endif /* QTRAIN_TARGET_H */
