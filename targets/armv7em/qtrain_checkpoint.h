/*
 * qtrain_checkpoint.h - device state to Flash and back: two slots (A/B), a sequence number, CRC32.
 *
 * A generated model's qtrain_checkpoint_save() / qtrain_checkpoint_restore() (qtrain_model_abi.h) are
 * these two functions applied to its `qtrain_state`. Slot format (little-endian words):
 *
 *   header, 32 bytes: magic "QTCK", format version 1, sequence number, the model's fingerprint,
 *                     payload bytes, number of buffers, CRC32 of the payload, CRC32 of these 7 words
 *   payload:          every state buffer in order, each padded with zeros to a multiple of 4 bytes
 *
 * Save: erase the slot that does not hold the newest valid checkpoint, program the payload, then the
 * header last, then read the slot back and check it. Until the header's last word is programmed the
 * slot cannot pass the checks below, so a save interrupted anywhere (even inside an erase or a
 * program) leaves the previous checkpoint the newest valid one.
 * Restore: a slot is valid when magic, version, fingerprint, payload size and buffer count match this
 * model and both CRCs hold; the valid slot with the larger sequence number (serial-number order) wins
 * and its payload is copied into the buffers. CRC32 is the IEEE 802.3 one (zlib's crc32).
 */
#ifndef QTRAIN_CHECKPOINT_H
#define QTRAIN_CHECKPOINT_H

#include <stdint.h>

#include "qtrain_model_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

#define QTRAIN_CHECKPOINT_RESTORED 1 /* restore: the newest valid checkpoint is now the device state */
#define QTRAIN_CHECKPOINT_OK 0       /* save: written and verified; restore: no valid checkpoint */
#define QTRAIN_CHECKPOINT_EFLASH (-1)    /* the Flash driver failed, or the slot did not read back */
#define QTRAIN_CHECKPOINT_ETOOLARGE (-2) /* the state does not fit a slot */

#define QTRAIN_CHECKPOINT_MAGIC 0x4B435451u /* "QTCK" */
#define QTRAIN_CHECKPOINT_VERSION 1u
#define QTRAIN_CHECKPOINT_HEADER_BYTES 32u

int qtrain_checkpoint_write(const qtrain_state_desc_t *state);
int qtrain_checkpoint_read(const qtrain_state_desc_t *state);

/* Payload bytes of `state` (each buffer padded to 4); a checkpoint needs the header on top. */
uint32_t qtrain_checkpoint_payload_bytes(const qtrain_state_desc_t *state);
/* The largest payload a slot holds (the smaller slot minus the header). */
uint32_t qtrain_checkpoint_capacity(void);

/* CRC32 (IEEE, reflected, as zlib): continue `crc` (0 to start) over `bytes` bytes. */
uint32_t qtrain_crc32(uint32_t crc, const void *data, uint32_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* QTRAIN_CHECKPOINT_H */
