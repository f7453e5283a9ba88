/*
 * calibrate.c - checks that the CMSDK APB timer counts instructions under `-icount shift=0`.
 *
 * Each measurement is one asm block: load the timer, run a loop of exactly 2 * n instructions
 * (subs + bne per iteration), load the timer again. The timer counts down at F Hz (qtrain_target.h:
 * 25 MHz on the AN500 and AN386, 20 MHz on the AN505) and QEMU's virtual clock advances 1 ns per
 * instruction, so (t0 - t1) * 10^9 / F should be 2 * n, give or take one tick. Prints one line "n=N ticks=T" per loop length, and "api n=N count=C" for the
 * same loop measured through qtrain_counter_read() (what the harness uses).
 */
#include <stdint.h>

#include "qtrain_runtime.h"
#include "qtrain_target.h"

#define CMSDK_TIMER0_VALUE_ADDRESS (QTRAIN_CMSDK_TIMER0_BASE + 4u)

static uint32_t measure_ticks(uint32_t n) {
    uint32_t t0, t1;
    volatile uint32_t *timer_value = (volatile uint32_t *)(uintptr_t)CMSDK_TIMER0_VALUE_ADDRESS;
    __asm__ volatile("ldr %[t0], [%[timer]]\n"
                     "1:\n"
                     "subs %[n], %[n], #1\n"
                     "bne 1b\n"
                     "ldr %[t1], [%[timer]]\n"
                     : [t0] "=&r"(t0), [t1] "=&r"(t1), [n] "+r"(n)
                     : [timer] "r"(timer_value)
                     : "cc", "memory");
    return t0 - t1;
}

static void spin(uint32_t n) {
    __asm__ volatile("1:\n"
                     "subs %[n], %[n], #1\n"
                     "bne 1b\n"
                     : [n] "+r"(n)
                     :
                     : "cc");
}

static void report(const char *label, uint32_t n, const char *key, uint32_t value) {
    qtrain_puts(label);
    qtrain_puts("n=");
    qtrain_put_u32(n);
    qtrain_puts(key);
    qtrain_put_u32(value);
    qtrain_puts("\n");
}

int main(void) {
    static const uint32_t lengths[] = {1000u, 12345u, 100000u, 1000000u, 10000000u};
    qtrain_counter_start();
    for (unsigned i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        report("", lengths[i], " ticks=", measure_ticks(lengths[i]));
    }
    for (unsigned i = 0; i < sizeof(lengths) / sizeof(lengths[0]); i++) {
        uint64_t before = qtrain_counter_read();
        spin(lengths[i]);
        uint64_t count = qtrain_counter_read() - before;
        report("api ", lengths[i], " count=", (uint32_t)count);
    }
    return 0;
}
