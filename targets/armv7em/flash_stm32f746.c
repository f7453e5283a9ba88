/*
 * flash_stm32f746.c - qtrain_flash.h on the STM32F746's embedded Flash (RM0385 section 3).
 *
 * Single bank, 1 MB, on AXIM at 0x08000000; the checkpoint slots are sectors 1-3 (slot A) and
 * sector 4 (slot B), table 3. Operations (3.3.5 - 3.3.7), one at a time with the controller idle:
 *   unlock      FLASH_KEYR <- 0x45670123, 0xCDEF89AB (CR.LOCK clears)
 *   sector erase  CR <- SER | SNB(n) | PSIZE x32, then CR |= STRT, wait while SR.BSY
 *   program     CR <- PG | PSIZE x32, then a 32-bit store to the Flash address, DSB, wait while SR.BSY
 * and after each: errors in SR (OPERR, WRPERR, PGAERR, PGPERR, ERSERR; cleared by writing 1), CR back
 * to 0, and the controller locked again. x32 parallelism needs a 2.7 - 3.6 V supply (table 7).
 * The firmware runs with the caches and the ART accelerator off, so reads of a just-programmed word
 * see the new value. An erase stalls reads from Flash (and so the CPU fetching code) until it ends.
 */
#if defined(QTRAIN_BOARD_STM32F746)

#include <stdint.h>

#include "qtrain_flash.h"

#define FLASH_BASE_ADDRESS 0x08000000u

#define MMIO32(address) (*(volatile uint32_t *)(uintptr_t)(address))
#define FLASH_KEYR MMIO32(0x40023C04u)
#define FLASH_SR MMIO32(0x40023C0Cu)
#define FLASH_CR MMIO32(0x40023C10u)

#define FLASH_KEY1 0x45670123u
#define FLASH_KEY2 0xCDEF89ABu

#define SR_EOP (1u << 0)
#define SR_OPERR (1u << 1)
#define SR_WRPERR (1u << 4)
#define SR_PGAERR (1u << 5)
#define SR_PGPERR (1u << 6)
#define SR_ERSERR (1u << 7)
#define SR_BSY (1u << 16)
#define SR_ERRORS (SR_OPERR | SR_WRPERR | SR_PGAERR | SR_PGPERR | SR_ERSERR)

#define CR_PG (1u << 0)
#define CR_SER (1u << 1)
#define CR_SNB(n) ((uint32_t)(n) << 3)
#define CR_PSIZE_X32 (2u << 8)
#define CR_STRT (1u << 16)
#define CR_LOCK (1u << 31)

/* Sectors 1-3 and 4 (number, offset from the start of Flash, size). */
typedef struct {
    uint32_t number, offset, bytes;
} sector_t;
static const sector_t sectors[] = {
    {1u, 0x08000u, 0x8000u},
    {2u, 0x10000u, 0x8000u},
    {3u, 0x18000u, 0x8000u},
    {4u, 0x20000u, 0x20000u},
};
#define NUM_SECTORS (sizeof(sectors) / sizeof(sectors[0]))

static void wait_idle(void) {
    while ((FLASH_SR & SR_BSY) != 0u) {
    }
}

static void unlock(void) {
    wait_idle();
    if ((FLASH_CR & CR_LOCK) != 0u) {
        FLASH_KEYR = FLASH_KEY1;
        FLASH_KEYR = FLASH_KEY2;
    }
    FLASH_SR = SR_ERRORS | SR_EOP; /* clear stale flags (rc_w1) */
}

/* Waits for the operation to end; QTRAIN_FLASH_OK unless the controller flagged an error. */
static int finish(void) {
    wait_idle();
    uint32_t status = FLASH_SR;
    FLASH_SR = SR_ERRORS | SR_EOP;
    FLASH_CR = 0u;
    FLASH_CR = CR_LOCK;
    return (status & SR_ERRORS) != 0u ? QTRAIN_FLASH_EHW : QTRAIN_FLASH_OK;
}

static uint32_t slot_offset(uint32_t index) {
    return index == 0u ? QTRAIN_FLASH_SLOT_A_OFFSET : QTRAIN_FLASH_SLOT_B_OFFSET;
}

qtrain_flash_slot_t qtrain_flash_slot(uint32_t index) {
    qtrain_flash_slot_t slot = {0, 0u};
    if (index < 2u) {
        slot.data = (const uint8_t *)(uintptr_t)(FLASH_BASE_ADDRESS + slot_offset(index));
        slot.bytes = index == 0u ? QTRAIN_FLASH_SLOT_A_BYTES : QTRAIN_FLASH_SLOT_B_BYTES;
    }
    return slot;
}

int qtrain_flash_erase_slot(uint32_t index) {
    if (index >= 2u) {
        return QTRAIN_FLASH_EBADADDR;
    }
    const uint32_t start = slot_offset(index);
    const uint32_t end = start + (index == 0u ? QTRAIN_FLASH_SLOT_A_BYTES : QTRAIN_FLASH_SLOT_B_BYTES);
    for (uint32_t s = 0; s < NUM_SECTORS; s++) {
        if (sectors[s].offset < start || sectors[s].offset >= end) {
            continue;
        }
        unlock();
        FLASH_CR = CR_SER | CR_SNB(sectors[s].number) | CR_PSIZE_X32;
        FLASH_CR |= CR_STRT;
        __asm__ volatile("dsb" ::: "memory");
        if (finish() != QTRAIN_FLASH_OK) {
            return QTRAIN_FLASH_EHW;
        }
    }
    return QTRAIN_FLASH_OK;
}

int qtrain_flash_program(uint32_t index, uint32_t offset, const void *data, uint32_t bytes) {
    qtrain_flash_slot_t slot = qtrain_flash_slot(index);
    if (slot.data == 0 || offset % QTRAIN_FLASH_WORD != 0u || bytes % QTRAIN_FLASH_WORD != 0u ||
        offset > slot.bytes || bytes > slot.bytes - offset) {
        return QTRAIN_FLASH_EBADADDR;
    }
    const uint8_t *source = (const uint8_t *)data;
    volatile uint32_t *target = (volatile uint32_t *)(uintptr_t)(slot.data + offset);
    for (uint32_t i = 0; i < bytes / QTRAIN_FLASH_WORD; i++) {
        /* The source may be unaligned (a byte buffer): assemble the word. */
        const uint8_t *b = source + QTRAIN_FLASH_WORD * i;
        uint32_t word = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
        unlock();
        FLASH_CR = CR_PG | CR_PSIZE_X32;
        target[i] = word;
        __asm__ volatile("dsb" ::: "memory");
        if (finish() != QTRAIN_FLASH_OK) {
            return QTRAIN_FLASH_EHW;
        }
    }
    return QTRAIN_FLASH_OK;
}

int qtrain_flash_attach(const char *path) {
    (void)path;
    return QTRAIN_FLASH_EHW; /* real Flash: nothing to attach */
}

#endif /* QTRAIN_BOARD_STM32F746 */
