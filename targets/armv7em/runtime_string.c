/*
 * runtime_string.c - memcpy, memset and memmove for the target (there is no libc).
 *
 * clang lowers struct copies and zero-initialisations to calls to these names, and on ARM EABI
 * also to the __aeabi_mem* helpers (RTABI section 4.3.4), so both are defined. Word-at-a-time when
 * both pointers are word aligned, bytes otherwise: simple, and good enough for the harness and
 * qtrain_init(); the model's hot loops do not call them.
 */
#include <stddef.h>
#include <stdint.h>

void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int value, size_t n);
void __aeabi_memcpy(void *dst, const void *src, size_t n);
void __aeabi_memcpy4(void *dst, const void *src, size_t n);
void __aeabi_memcpy8(void *dst, const void *src, size_t n);
void __aeabi_memmove(void *dst, const void *src, size_t n);
void __aeabi_memmove4(void *dst, const void *src, size_t n);
void __aeabi_memmove8(void *dst, const void *src, size_t n);
void __aeabi_memset(void *dst, size_t n, int value);
void __aeabi_memset4(void *dst, size_t n, int value);
void __aeabi_memset8(void *dst, size_t n, int value);
void __aeabi_memclr(void *dst, size_t n);
void __aeabi_memclr4(void *dst, size_t n);
void __aeabi_memclr8(void *dst, size_t n);

/* The stores are volatile so that the optimizer cannot recognise the loops as memcpy/memset
 * idioms and turn them back into calls to the very functions they implement. */
static void copy_forward(unsigned char *d, const unsigned char *s, size_t n) {
    if ((((uintptr_t)d | (uintptr_t)s) & 3u) == 0) {
        for (; n >= 4; n -= 4, d += 4, s += 4) {
            *(volatile uint32_t *)(void *)d = *(const uint32_t *)(const void *)s;
        }
    }
    for (; n > 0; n--) {
        *(volatile unsigned char *)d++ = *s++;
    }
}

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
    copy_forward((unsigned char *)dst, (const unsigned char *)src, n);
    return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    const unsigned char *s = (const unsigned char *)src;
    if (d <= s || d >= s + n) {
        copy_forward(d, s, n);
    } else {
        while (n > 0) {
            n--;
            *(volatile unsigned char *)(d + n) = s[n];
        }
    }
    return dst;
}

void *memset(void *dst, int value, size_t n) {
    unsigned char *d = (unsigned char *)dst;
    unsigned char byte = (unsigned char)value;
    if (((uintptr_t)d & 3u) == 0) {
        uint32_t word = byte * 0x01010101u;
        for (; n >= 4; n -= 4, d += 4) {
            *(volatile uint32_t *)(void *)d = word;
        }
    }
    for (; n > 0; n--) {
        *(volatile unsigned char *)d++ = byte;
    }
    return dst;
}

void __aeabi_memcpy(void *dst, const void *src, size_t n) {
    memcpy(dst, src, n);
}
void __aeabi_memcpy4(void *dst, const void *src, size_t n) {
    memcpy(dst, src, n);
}
void __aeabi_memcpy8(void *dst, const void *src, size_t n) {
    memcpy(dst, src, n);
}
void __aeabi_memmove(void *dst, const void *src, size_t n) {
    memmove(dst, src, n);
}
void __aeabi_memmove4(void *dst, const void *src, size_t n) {
    memmove(dst, src, n);
}
void __aeabi_memmove8(void *dst, const void *src, size_t n) {
    memmove(dst, src, n);
}
void __aeabi_memset(void *dst, size_t n, int value) {
    memset(dst, value, n);
}
void __aeabi_memset4(void *dst, size_t n, int value) {
    memset(dst, value, n);
}
void __aeabi_memset8(void *dst, size_t n, int value) {
    memset(dst, value, n);
}
void __aeabi_memclr(void *dst, size_t n) {
    memset(dst, 0, n);
}
void __aeabi_memclr4(void *dst, size_t n) {
    memset(dst, 0, n);
}
void __aeabi_memclr8(void *dst, size_t n) {
    memset(dst, 0, n);
}
