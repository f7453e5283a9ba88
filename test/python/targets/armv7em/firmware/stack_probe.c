/*
 * stack_probe.c - exercises stack painting and the stack guard. The first semihosting argument
 * selects what to do:
 *   measure    prints "baseline=B small=S large=L size=Z": stack high-water marks (bytes) after a
 *              repaint alone, after calling a function with a 64-byte frame, and after one with a
 *              4096-byte frame
 *   recurse    recurses until the stack runs into its guard (must end in a stack overflow report)
 *   undefined  executes an undefined instruction (must end in a UsageFault report)
 *   divide     divides by zero (must end in a UsageFault report: DIV_0_TRP is on)
 */
#include <stdint.h>

#include "qtrain_runtime.h"

__attribute__((noinline)) static uint32_t use_stack_64(uint32_t seed) {
    volatile uint32_t words[16];
    for (uint32_t i = 0; i < 16u; i++) {
        words[i] = seed + i;
    }
    return words[seed % 16u];
}

__attribute__((noinline)) static uint32_t use_stack_4096(uint32_t seed) {
    volatile uint32_t words[1024];
    for (uint32_t i = 0; i < 1024u; i++) {
        words[i] = seed + i;
    }
    return words[seed % 1024u];
}

/* Stops only at a depth no stack here can hold (about 40 bytes per level). */
__attribute__((noinline)) static uint32_t recurse(uint32_t depth) {
    volatile uint32_t frame[8];
    frame[depth % 8u] = depth;
    if (depth > 1000000u) {
        return frame[0];
    }
    return recurse(depth + 1u) + frame[depth % 8u];
}

static int equals(const char *a, const char *b) {
    while (*a != '\0' && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

static void report(const char *key, uint32_t value) {
    qtrain_puts(key);
    qtrain_puts("=");
    qtrain_put_u32(value);
}

int main(void) {
    static char line[128];
    const char *mode = "measure";
    if (qtrain_command_line(line, sizeof(line)) == 0) {
        char *c = line;
        while (*c != '\0' && *c != ' ') {
            c++;
        }
        while (*c == ' ') {
            c++;
        }
        if (*c != '\0') {
            mode = c;
        }
    }
    if (equals(mode, "measure")) {
        volatile uint32_t sink = 0;
        qtrain_stack_paint();
        uint32_t baseline = qtrain_stack_used();
        sink += use_stack_64(3u);
        uint32_t small = qtrain_stack_used();
        qtrain_stack_paint();
        sink += use_stack_4096(5u);
        uint32_t large = qtrain_stack_used();
        report("baseline", baseline);
        report(" small", small);
        report(" large", large);
        report(" size", qtrain_stack_size());
        qtrain_puts("\n");
        return sink == 0u ? 1 : 0;
    }
    if (equals(mode, "recurse")) {
        return (int)recurse(0u);
    }
    if (equals(mode, "undefined")) {
        __asm__ volatile("udf #0");
        return 0;
    }
    if (equals(mode, "divide")) {
        volatile int32_t zero = 0;
        volatile int32_t x = 7;
        return (int)(x / zero);
    }
    qtrain_puts("stack_probe: unknown mode\n");
    return 1;
}
