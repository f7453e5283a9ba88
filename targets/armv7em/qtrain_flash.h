/*
 * qtrain_flash.h - the Flash driver interface the checkpoint code (qtrain_checkpoint.c) writes through.
 *
 * Only the two checkpoint slots are ever erased or programmed; the driver refuses any other address,
 * so a bug cannot erase the firmware. The slots are Flash sectors of the STM32F746 (RM0385 3.3.1,
 * table 3, single bank, 1 MB; the same offsets on every board, reserved by sections.ld):
 *
 *   sector 0      32 KB  +0x00000  vector table (the chip boots here)
 *   sectors 1-3  3x32 KB  +0x08000  slot A (96 KB)
 *   sector 4     128 KB  +0x20000  slot B (128 KB)
 *   sectors 5-7 3x256 KB  +0x40000  code, weights, .data image
 *
 * Two implementations:
 *   flash_stm32f746.c  the chip: sector erase and word programming through the FLASH registers
 *                      (RM0385 3.3.5 - 3.3.7); reads are plain loads from the memory-mapped Flash.
 *   flash_sim.c        a simulated NOR Flash for QEMU and the host: erase sets every byte to 0xFF,
 *                      programming only clears bits (new = old & data). On QEMU the slots are the same
 *                      addresses of the emulated memory; on the host a static array. Attached to an
 *                      image file (`qtrain_flash_attach`, `qtrain-run --flash-image`), the contents
 *                      persist there across runs, written through as each erase or program proceeds
 *                      (in pieces, like the real operation), so stopping the emulator at any instruction
 *                      leaves the file as a power cut would leave the chip. Not attached, the Flash
 *                      starts erased and forgets everything at exit.
 * The image file is the whole 1 MB Flash, offset 0 = the first byte of Flash.
 */
#ifndef QTRAIN_FLASH_H
#define QTRAIN_FLASH_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QTRAIN_FLASH_OK 0
#define QTRAIN_FLASH_EBADADDR (-1) /* not a checkpoint sector / outside the slots / misaligned */
#define QTRAIN_FLASH_EHW (-2)      /* the controller reported an error (or the image file write failed) */

/* The whole Flash an image file holds (the STM32F746's). */
#define QTRAIN_FLASH_IMAGE_BYTES (1024u * 1024u)
/* The two slots as offsets from the start of Flash (sections.ld reserves the same range). */
#define QTRAIN_FLASH_SLOT_A_OFFSET 0x08000u
#define QTRAIN_FLASH_SLOT_A_BYTES (96u * 1024u)
#define QTRAIN_FLASH_SLOT_B_OFFSET 0x20000u
#define QTRAIN_FLASH_SLOT_B_BYTES (128u * 1024u)
#define QTRAIN_FLASH_SLOTS_END 0x40000u
/* Programming unit: words (PSIZE x32 on the chip). Addresses and lengths are multiples of it. */
#define QTRAIN_FLASH_WORD 4u

typedef struct {
    const uint8_t *data; /* the slot, readable in place */
    uint32_t bytes;
} qtrain_flash_slot_t;

/* Slot 0 (A) or 1 (B). */
qtrain_flash_slot_t qtrain_flash_slot(uint32_t index);

/* Erase every sector of slot `index` (to 0xFF), lowest address first. */
int qtrain_flash_erase_slot(uint32_t index);

/* Program `bytes` (a multiple of QTRAIN_FLASH_WORD) from `data` at `offset` into slot `index`
 * (offset word aligned). The bytes must be erased: programming can only clear bits. */
int qtrain_flash_program(uint32_t index, uint32_t offset, const void *data, uint32_t bytes);

/* Simulated Flash only: persist the Flash in the image file `path` (QTRAIN_FLASH_IMAGE_BYTES long;
 * the slots are read from it now). Returns QTRAIN_FLASH_OK, or QTRAIN_FLASH_EHW when the file cannot
 * be opened or read. The chip's driver has real Flash and returns QTRAIN_FLASH_EHW. */
int qtrain_flash_attach(const char *path);

#ifdef __cplusplus
}
#endif

#endif /* QTRAIN_FLASH_H */
