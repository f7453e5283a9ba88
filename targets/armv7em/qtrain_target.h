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

/* The counter of the QEMU boards: CMSDK APB timer 0, its base address and clock. */
#if defined(QTRAIN_BOARD_MPS2_AN500) || defined(QTRAIN_BOARD_MPS2_AN386)
#define QTRAIN_CMSDK_TIMER0_BASE 0x40000000u /* hw/arm/mps2.c */
#define QTRAIN_CMSDK_TIMER_HZ 25000000u      /* SYSCLK */
#elif defined(QTRAIN_BOARD_MPS2_AN505)
#define QTRAIN_CMSDK_TIMER0_BASE 0x50000000u /* hw/arm/armsse.c: the Secure alias of 0x40000000 */
#define QTRAIN_CMSDK_TIMER_HZ 20000000u      /* hw/arm/mps2-tz.c: the AN505's 20 MHz MAINCLK */
#elif !defined(QTRAIN_BOARD_STM32F746) && !defined(QTRAIN_BOARD_NUCLEO_F446RE)
#error "define one QTRAIN_BOARD_* (build.py does)"
#endif

/* MPU regions must be a power of two >= 32 bytes and aligned to their size. */
#define QTRAIN_STACK_GUARD_BYTES 32u
/* The word the free stack is filled with; any other value means "was used". */
#define QTRAIN_STACK_PAINT 0xA5C3A5C3u

static inline uintptr_t qtrain_stack_paint_start(void) {
    return (uintptr_t)__qtrain_stack_limit + QTRAIN_STACK_GUARD_BYTES;
}

#endif /* QTRAIN_TARGET_H */
