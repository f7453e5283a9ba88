/*
 * startup_armv7em.c - vector table, reset and fault handlers for every Arm target (Cortex-M7: QEMU
 * mps2-an500, STM32F746; Cortex-M4F: QEMU mps2-an386, NUCLEO-F446RE; Cortex-M33: QEMU mps2-an505),
 * written in C with a few lines of inline assembly.
 *
 * Reset: switch thread mode to PSP on the application stack (handlers keep MSP, the small handler
 * stack), enable the FPU (the code is built for -mfloat-abi=hard, so nothing may touch an FP register
 * before this), copy .data from Flash, zero .bss and the .qtrain.* SRAM sections, arm the stack
 * guard (ARMv7-M: an MPU no-access region over the stack's lowest 32 bytes; ARMv8-M: the PSPLIM and
 * MSPLIM stack limit registers, as PMSAv8 has no no-access permission), enable the configurable
 * faults, paint the stack, run main() and exit with its status through semihosting. The Cortex-M33
 * runs in Secure state throughout (the reset state; with the SAU off all memory is Secure).
 *
 * Faults: every fault and unexpected exception prints one line through semihosting, e.g.
 *   qtrain: HardFault at pc=0x00000a1c lr=0x000009f3 cfsr=0x00008200 hfsr=0x40000000 addr=0x3ffffffc
 * and exits with QTRAIN_EXIT_FAULT, or QTRAIN_EXIT_STACK_OVERFLOW when the application stack ran
 * into its guard.
 */
#include <stdint.h>

#include "qtrain_runtime.h"
#include "qtrain_target.h"

#if defined(QTRAIN_BOARD_STM32F746)
#define QTRAIN_NUM_IRQ 98 /* RM0385 table 46: IRQ 0..97 */
#elif defined(QTRAIN_BOARD_NUCLEO_F446RE)
#define QTRAIN_NUM_IRQ 97 /* RM0390 table 38: IRQ 0..96 */
#elif defined(QTRAIN_BOARD_MPS2_AN505)
#define QTRAIN_NUM_IRQ 124 /* hw/arm/mps2-tz.c: 92 expansion IRQs + the SSE-200's 32 */
#elif defined(QTRAIN_BOARD_MPS2_AN500) || defined(QTRAIN_BOARD_MPS2_AN386)
#define QTRAIN_NUM_IRQ 32 /* hw/arm/mps2.c: num-irq 32 */
#else
#error "define one QTRAIN_BOARD_* (build.py does)"
#endif

#if defined(__ARM_ARCH_8M_MAIN__)
#define QTRAIN_ARMV8M 1 /* stack limit registers instead of an MPU guard; SecureFault */
#else
#define QTRAIN_ARMV8M 0
#endif

/* The target's name, in a section that takes no memory on the device and that --gc-sections keeps
 * (it is not allocated): qtrain-run reads it to choose the QEMU machine (build.TARGET_SECTION). */
#ifdef QTRAIN_TARGET_NAME
__asm__(".pushsection .qtrain.target, \"\", %progbits\n"
        ".asciz \"" QTRAIN_TARGET_NAME "\"\n"
        ".popsection\n");
#endif

int main(void);
void Reset_Handler(void);
void qtrain_reset(void);
void qtrain_fault_entry(void);
void qtrain_fault_report(const uint32_t *frame, uint32_t exc_return, uint32_t ipsr);

/* ---- vector table ---- */
typedef void (*qtrain_handler_t)(void);

typedef struct {
    uint32_t *initial_sp;
    qtrain_handler_t handlers[15 + QTRAIN_NUM_IRQ];
} qtrain_vector_table_t;

#define F qtrain_fault_entry
#define F4 F, F, F, F
#define F8 F4, F4
#define F16 F8, F8
#define F32 F16, F16
#define F64 F32, F32

/* Placed first in Flash by the linker scripts: the initial MSP, then the exception vectors. All of
 * them but reset end in the fault reporter: the firmware enables no interrupts, so any exception is
 * unexpected. */
__attribute__((section(".vectors"), used)) static const qtrain_vector_table_t qtrain_vector_table = {
    .initial_sp = __qtrain_handler_stack_top,
    .handlers =
        {
            Reset_Handler,
            F, F, F, F, F, /* NMI, HardFault, MemManage, BusFault, UsageFault */
            F, 0, 0, 0,    /* SecureFault on ARMv8-M (reserved on ARMv7-M), reserved */
            F, F, 0, F, F, /* SVCall, DebugMonitor, reserved, PendSV, SysTick */
#if QTRAIN_NUM_IRQ == 32
            F32,
#elif QTRAIN_NUM_IRQ == 97
            F64, F32, F,
#elif QTRAIN_NUM_IRQ == 98
            F64, F32, F, F,
#elif QTRAIN_NUM_IRQ == 124
            F64, F32, F16, F8, F4,
#else
#error "no vector table for this QTRAIN_NUM_IRQ"
#endif
        },
};
_Static_assert(sizeof(qtrain_vector_table) == 4 * (16 + QTRAIN_NUM_IRQ), "vector table size");

/* ---- system control registers (ARMv7-M ARM B3.2) ---- */
#define MMIO32(address) (*(volatile uint32_t *)(uintptr_t)(address))
#define SCB_CPACR MMIO32(0xE000ED88u)
#define SCB_CCR MMIO32(0xE000ED14u)
#define SCB_SHCSR MMIO32(0xE000ED24u)
#define SCB_CFSR MMIO32(0xE000ED28u)
#define SCB_HFSR MMIO32(0xE000ED2Cu)
#define SCB_MMFAR MMIO32(0xE000ED34u)
#define SCB_BFAR MMIO32(0xE000ED38u)
#define MPU_CTRL MMIO32(0xE000ED94u)
#define MPU_RNR MMIO32(0xE000ED98u)
#define MPU_RBAR MMIO32(0xE000ED9Cu)
#define MPU_RASR MMIO32(0xE000EDA0u)

#define CFSR_MSTKERR (1u << 4)
#define CFSR_MMARVALID (1u << 7)
#define CFSR_BFARVALID (1u << 15)
#define CFSR_STKOF (1u << 20) /* ARMv8-M: a stack limit violation */

/* ---- reset ---- */
/* Naked: no prologue may use the stack before PSP is set. CONTROL.SPSEL = 1 makes thread mode use
 * PSP; MSP (from the vector table) stays for the handlers. */
__attribute__((naked, noreturn)) void Reset_Handler(void) {
    __asm__ volatile("movw r0, #:lower16:__qtrain_stack_top\n"
                     "movt r0, #:upper16:__qtrain_stack_top\n"
                     "msr psp, r0\n"
                     "movs r0, #2\n"
                     "msr control, r0\n"
                     "isb\n"
                     "b qtrain_reset\n");
}

#if QTRAIN_ARMV8M
/* ARMv8-M: a push or SP change below PSPLIM faults (UsageFault STKOF) without writing below it; the
 * limit sits at the guard's top, so the guard bytes are never written, as with the MPU guard. */
static void enable_stack_guard(void) {
    uintptr_t psp_limit = qtrain_stack_paint_start();
    uintptr_t msp_limit = (uintptr_t)__qtrain_handler_stack_limit;
    __asm__ volatile("msr psplim, %0\n"
                     "msr msplim, %1\n"
                     "isb" ::"r"(psp_limit),
                     "r"(msp_limit)
                     : "memory");
}
#else
static void enable_stack_guard(void) {
    MPU_RNR = 0u;
    MPU_RBAR = (uint32_t)(uintptr_t)__qtrain_stack_limit;
    /* XN, AP = 000 (no access, privileged or not), SIZE = log2(bytes) - 1, ENABLE. */
    MPU_RASR = (1u << 28) | (0u << 24) | ((uint32_t)(__builtin_ctz(QTRAIN_STACK_GUARD_BYTES) - 1) << 1) | 1u;
    MPU_CTRL = (1u << 2) | 1u; /* PRIVDEFENA: the default map everywhere else; ENABLE */
    __asm__ volatile("dsb\n isb" ::: "memory");
}
#endif

__attribute__((noreturn, used)) void qtrain_reset(void) {
    SCB_CPACR |= 0xFu << 20; /* CP10 and CP11: full access to the FPU */
    __asm__ volatile("dsb\n isb" ::: "memory");

    const volatile uint32_t *from = __qtrain_data_load;
    for (volatile uint32_t *to = __qtrain_data_start; to < __qtrain_data_end;) {
        *to++ = *from++;
    }
    for (volatile uint32_t *to = __qtrain_zero_start; to < __qtrain_zero_end;) {
        *to++ = 0u;
    }

    enable_stack_guard();
    SCB_SHCSR |= (1u << 16) | (1u << 17) | (1u << 18); /* MemManage, BusFault, UsageFault */
#if QTRAIN_ARMV8M
    SCB_SHCSR |= 1u << 19; /* SecureFault */
#endif
    SCB_CCR |= 1u << 4;                               /* DIV_0_TRP: integer division by zero faults */
    __asm__ volatile("dsb\n isb" ::: "memory");

    qtrain_stack_paint();
    qtrain_exit(main());
}

/* ---- faults ---- */
/* r0 = the stacked frame (PSP or MSP, from EXC_RETURN bit 2), r1 = EXC_RETURN, r2 = IPSR. */
__attribute__((naked)) void qtrain_fault_entry(void) {
    __asm__ volatile("tst lr, #4\n"
                     "ite eq\n"
                     "mrseq r0, msp\n"
                     "mrsne r0, psp\n"
                     "mov r1, lr\n"
                     "mrs r2, ipsr\n"
                     "b qtrain_fault_report\n");
}

static const char *exception_name(uint32_t number) {
    switch (number) {
    case 2:
        return "NMI";
    case 3:
        return "HardFault";
    case 4:
        return "MemManage fault";
    case 5:
        return "BusFault";
    case 6:
        return "UsageFault";
    case 7:
        return "SecureFault";
    case 11:
        return "SVCall";
    case 12:
        return "DebugMonitor";
    case 14:
        return "PendSV";
    case 15:
        return "SysTick";
    default:
        return "interrupt";
    }
}

static int in_range(uintptr_t address, uintptr_t start, uintptr_t end) {
    return address >= start && address < end;
}

/* The exception frame can be read only if it lies inside one of the two stacks (below the guard or
 * in it, reading would fault again and lock the core up). */
static int frame_readable(const uint32_t *frame) {
    uintptr_t at = (uintptr_t)frame;
    return (at & 3u) == 0u && (in_range(at, qtrain_stack_paint_start(), (uintptr_t)__qtrain_stack_top - 32u) ||
                               in_range(at, (uintptr_t)__qtrain_handler_stack_limit,
                                        (uintptr_t)__qtrain_handler_stack_top - 32u));
}

__attribute__((noreturn, used)) void qtrain_fault_report(const uint32_t *frame, uint32_t exc_return, uint32_t ipsr) {
    uint32_t cfsr = SCB_CFSR;
    uint32_t hfsr = SCB_HFSR;
    uint32_t number = ipsr & 0x1FFu;
    uintptr_t guard_start = (uintptr_t)__qtrain_stack_limit;
    uintptr_t guard_end = qtrain_stack_paint_start();
    int on_psp = (exc_return & 4u) != 0u;
    int overflow = (on_psp && (uintptr_t)frame < guard_end) || (cfsr & CFSR_MSTKERR) != 0u ||
                   ((cfsr & CFSR_MMARVALID) != 0u && in_range(SCB_MMFAR, guard_start, guard_end)) ||
                   (QTRAIN_ARMV8M && on_psp && (cfsr & CFSR_STKOF) != 0u);
    if (overflow) {
        qtrain_puts("qtrain: stack overflow: the application stack (");
        qtrain_put_u32(qtrain_stack_size());
        qtrain_puts(" bytes) ran into its guard; link with a larger stack\n");
        qtrain_exit(QTRAIN_EXIT_STACK_OVERFLOW);
    }
    qtrain_puts("qtrain: ");
    qtrain_puts(exception_name(number));
    if (number >= 16u) {
        qtrain_puts(" ");
        qtrain_put_u32(number - 16u);
    }
    if (frame_readable(frame)) {
        qtrain_puts(" at pc=");
        qtrain_put_hex32(frame[6]);
        qtrain_puts(" lr=");
        qtrain_put_hex32(frame[5]);
    }
    qtrain_puts(" cfsr=");
    qtrain_put_hex32(cfsr);
    qtrain_puts(" hfsr=");
    qtrain_put_hex32(hfsr);
    if ((cfsr & CFSR_MMARVALID) != 0u) {
        qtrain_puts(" addr=");
        qtrain_put_hex32(SCB_MMFAR);
    } else if ((cfsr & CFSR_BFARVALID) != 0u) {
        qtrain_puts(" addr=");
        qtrain_put_hex32(SCB_BFAR);
    }
    qtrain_puts("\n");
    qtrain_exit(QTRAIN_EXIT_FAULT);
}
