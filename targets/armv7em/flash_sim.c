/*
 * flash_sim.c - qtrain_flash.h as a simulated NOR Flash, for QEMU and the host (not the STM32F746,
 * which has flash_stm32f746.c).
 *
 * NOR rules: an erase sets a whole sector to 0xFF, programming only clears bits (new = old & data);
 * the sector geometry is the STM32F746's (qtrain_flash.h). On QEMU the slots live at their addresses
 * in the emulated memory that stands for Flash (sections.ld reserves them, the firmware is loaded
 * around them); on the host in a static array. Never attached, the slots start as whatever that
 * memory holds (zeros: no valid checkpoint) and nothing assumes them erased before erasing them.
 *
 * Persistence: qtrain_flash_attach(path) reads the slots from the image file and from then on writes
 * every change through to it (semihosting files on QEMU, stdio on the host), in pieces of at most
 * PIECE_BYTES, in address order, each piece after its bytes changed in memory: an erase or a program
 * interrupted between two pieces leaves the file half done, as a power cut leaves a real sector. The
 * pieces are written from the Flash memory itself, so the driver needs no SRAM buffer.
 */
#if !defined(QTRAIN_BOARD_STM32F746)

#include <stdint.h>

#include "qtrain_flash.h"
#include "qtrain_runtime.h"

/* Erase (and program) progress that reaches the image file in one write. */
#define PIECE_BYTES 1024u

#if defined(QTRAIN_HOST)
static _Alignas(4) uint8_t host_slots[QTRAIN_FLASH_SLOTS_END - QTRAIN_FLASH_SLOT_A_OFFSET];
#define SLOTS_BASE (host_slots)
#else
extern uint8_t __qtrain_checkpoint_start[]; /* sections.ld: Flash origin + QTRAIN_FLASH_SLOT_A_OFFSET */
#define SLOTS_BASE (__qtrain_checkpoint_start)
#endif

/* STM32F746 sectors 1-3 (slot A) and 4 (slot B), as offsets from the start of Flash. */
static const uint32_t sector_start[] = {0x08000u, 0x10000u, 0x18000u, 0x20000u};
static const uint32_t sector_bytes[] = {0x8000u, 0x8000u, 0x8000u, 0x20000u};
#define NUM_SECTORS (sizeof(sector_start) / sizeof(sector_start[0]))

static qtrain_file_t image = -1;

static uint8_t *flash_at(uint32_t offset) {
    return SLOTS_BASE + (offset - QTRAIN_FLASH_SLOT_A_OFFSET);
}

/* Writes Flash bytes [offset, offset + bytes) through to the image file, if attached. */
static int write_through(uint32_t offset, uint32_t bytes) {
    if (image < 0) {
        return QTRAIN_FLASH_OK;
    }
    if (qtrain_file_seek(image, offset) != 0 || qtrain_file_write(image, flash_at(offset), bytes) != 0) {
        return QTRAIN_FLASH_EHW;
    }
    return QTRAIN_FLASH_OK;
}

static uint32_t slot_offset(uint32_t index) {
    return index == 0u ? QTRAIN_FLASH_SLOT_A_OFFSET : QTRAIN_FLASH_SLOT_B_OFFSET;
}

qtrain_flash_slot_t qtrain_flash_slot(uint32_t index) {
    qtrain_flash_slot_t slot = {0, 0u};
    if (index < 2u) {
        slot.data = flash_at(slot_offset(index));
        slot.bytes = index == 0u ? QTRAIN_FLASH_SLOT_A_BYTES : QTRAIN_FLASH_SLOT_B_BYTES;
    }
    return slot;
}

int qtrain_flash_erase_slot(uint32_t index) {
    qtrain_flash_slot_t slot = qtrain_flash_slot(index);
    if (slot.data == 0) {
        return QTRAIN_FLASH_EBADADDR;
    }
    const uint32_t start = slot_offset(index), end = start + slot.bytes;
    for (uint32_t s = 0; s < NUM_SECTORS; s++) {
        if (sector_start[s] < start || sector_start[s] >= end) {
            continue;
        }
        for (uint32_t done = 0; done < sector_bytes[s]; done += PIECE_BYTES) {
            uint32_t *piece = (uint32_t *)(void *)flash_at(sector_start[s] + done); /* sector: word aligned */
            for (uint32_t i = 0; i < PIECE_BYTES / 4u; i++) {
                piece[i] = 0xFFFFFFFFu;
            }
            if (write_through(sector_start[s] + done, PIECE_BYTES) != QTRAIN_FLASH_OK) {
                return QTRAIN_FLASH_EHW;
            }
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
    const uint32_t base = slot_offset(index) + offset;
    for (uint32_t done = 0; done < bytes; done += PIECE_BYTES) {
        uint32_t n = bytes - done < PIECE_BYTES ? bytes - done : PIECE_BYTES;
        uint8_t *target = flash_at(base + done);
        for (uint32_t i = 0; i < n; i++) {
            target[i] &= source[done + i];
        }
        if (write_through(base + done, n) != QTRAIN_FLASH_OK) {
            return QTRAIN_FLASH_EHW;
        }
    }
    return QTRAIN_FLASH_OK;
}

int qtrain_flash_attach(const char *path) {
    if (image >= 0) {
        qtrain_file_close(image);
        image = -1;
    }
    qtrain_file_t file = qtrain_file_open(path, QTRAIN_FILE_UPDATE);
    if (file < 0) {
        return QTRAIN_FLASH_EHW;
    }
    if (qtrain_file_seek(file, QTRAIN_FLASH_SLOT_A_OFFSET) != 0 ||
        qtrain_file_read(file, SLOTS_BASE, QTRAIN_FLASH_SLOTS_END - QTRAIN_FLASH_SLOT_A_OFFSET) != 0) {
        qtrain_file_close(file);
        return QTRAIN_FLASH_EHW;
    }
    image = file;
    return QTRAIN_FLASH_OK;
}

#endif /* !QTRAIN_BOARD_STM32F746 */
