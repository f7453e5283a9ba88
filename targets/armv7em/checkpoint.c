/*
 * checkpoint.c - qtrain_checkpoint.h: A/B slots with a sequence number and CRC32, written through
 * the Flash driver (qtrain_flash.h). The format and the rules are in the header.
 */
#include <stdint.h>

#include "qtrain_checkpoint.h"
#include "qtrain_flash.h"

enum {
    H_MAGIC = 0,
    H_VERSION,
    H_SEQUENCE,
    H_FINGERPRINT,
    H_PAYLOAD_BYTES,
    H_NUM_BUFFERS,
    H_PAYLOAD_CRC,
    H_HEADER_CRC,
    HEADER_WORDS
};
_Static_assert(HEADER_WORDS * 4 == QTRAIN_CHECKPOINT_HEADER_BYTES, "header layout");

/* Which slot holds the newest valid checkpoint of this model, once known (a restore or a save). */
static int newest_known;
static uint32_t newest_slot;
static uint32_t newest_sequence;

/* Half-byte table: 16 words of Flash instead of 1 KB, two lookups per byte. */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t qtrain_crc32(uint32_t crc, const void *data, uint32_t bytes) {
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    for (uint32_t i = 0; i < bytes; i++) {
        crc ^= p[i];
        crc = (crc >> 4) ^ crc_nibble[crc & 0xFu];
        crc = (crc >> 4) ^ crc_nibble[crc & 0xFu];
    }
    return ~crc;
}

static uint32_t padded(uint32_t bytes) {
    return (bytes + 3u) & ~3u;
}

uint32_t qtrain_checkpoint_payload_bytes(const qtrain_state_desc_t *state) {
    uint32_t total = 0;
    for (uint32_t i = 0; i < state->num_buffers; i++) {
        uint32_t bytes = padded(state->buffers[i].bytes);
        if (bytes < state->buffers[i].bytes || total + bytes < total) {
            return UINT32_MAX;
        }
        total += bytes;
    }
    return total;
}

uint32_t qtrain_checkpoint_capacity(void) {
    uint32_t a = qtrain_flash_slot(0).bytes, b = qtrain_flash_slot(1).bytes;
    return (a < b ? a : b) - QTRAIN_CHECKPOINT_HEADER_BYTES;
}

static uint32_t load_word(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Whether slot `index` holds a complete checkpoint of `state`'s model; its sequence number if so. */
static int slot_valid(const qtrain_state_desc_t *state, uint32_t index, uint32_t *sequence) {
    qtrain_flash_slot_t slot = qtrain_flash_slot(index);
    uint32_t header[HEADER_WORDS];
    for (uint32_t w = 0; w < HEADER_WORDS; w++) {
        header[w] = load_word(slot.data + 4u * w);
    }
    uint32_t payload_bytes = qtrain_checkpoint_payload_bytes(state);
    if (header[H_MAGIC] != QTRAIN_CHECKPOINT_MAGIC || header[H_VERSION] != QTRAIN_CHECKPOINT_VERSION ||
        header[H_FINGERPRINT] != state->fingerprint || header[H_PAYLOAD_BYTES] != payload_bytes ||
        header[H_NUM_BUFFERS] != state->num_buffers ||
        payload_bytes > slot.bytes - QTRAIN_CHECKPOINT_HEADER_BYTES ||
        header[H_HEADER_CRC] != qtrain_crc32(0u, header, 4u * H_HEADER_CRC) ||
        header[H_PAYLOAD_CRC] != qtrain_crc32(0u, slot.data + QTRAIN_CHECKPOINT_HEADER_BYTES, payload_bytes)) {
        return 0;
    }
    *sequence = header[H_SEQUENCE];
    return 1;
}

/* Finds the newest valid slot (serial-number order of the sequence numbers). */
static void find_newest(const qtrain_state_desc_t *state) {
    uint32_t sequence[2];
    int valid[2];
    for (uint32_t s = 0; s < 2u; s++) {
        valid[s] = slot_valid(state, s, &sequence[s]);
    }
    newest_known = valid[0] || valid[1];
    if (valid[0] && valid[1]) {
        newest_slot = (int32_t)(sequence[1] - sequence[0]) > 0 ? 1u : 0u;
    } else {
        newest_slot = valid[1] ? 1u : 0u;
    }
    newest_sequence = newest_known ? sequence[newest_slot] : 0u;
}

int qtrain_checkpoint_read(const qtrain_state_desc_t *state) {
    find_newest(state);
    if (!newest_known) {
        return QTRAIN_CHECKPOINT_OK;
    }
    const uint8_t *payload = qtrain_flash_slot(newest_slot).data + QTRAIN_CHECKPOINT_HEADER_BYTES;
    for (uint32_t i = 0; i < state->num_buffers; i++) {
        uint8_t *target = (uint8_t *)state->buffers[i].data;
        for (uint32_t k = 0; k < state->buffers[i].bytes; k++) {
            target[k] = payload[k];
        }
        payload += padded(state->buffers[i].bytes);
    }
    return QTRAIN_CHECKPOINT_RESTORED;
}

int qtrain_checkpoint_write(const qtrain_state_desc_t *state) {
    uint32_t payload_bytes = qtrain_checkpoint_payload_bytes(state);
    if (payload_bytes > qtrain_checkpoint_capacity()) {
        return QTRAIN_CHECKPOINT_ETOOLARGE;
    }
    if (!newest_known) {
        find_newest(state);
    }
    const uint32_t slot = newest_known ? 1u - newest_slot : 0u;
    const uint32_t sequence = newest_known ? newest_sequence + 1u : 1u;
    if (qtrain_flash_erase_slot(slot) != QTRAIN_FLASH_OK) {
        return QTRAIN_CHECKPOINT_EFLASH;
    }
    uint32_t offset = QTRAIN_CHECKPOINT_HEADER_BYTES, crc = 0u;
    for (uint32_t i = 0; i < state->num_buffers; i++) {
        const uint8_t *data = (const uint8_t *)state->buffers[i].data;
        const uint32_t bytes = state->buffers[i].bytes, whole = bytes & ~3u;
        if (whole != 0u && qtrain_flash_program(slot, offset, data, whole) != QTRAIN_FLASH_OK) {
            return QTRAIN_CHECKPOINT_EFLASH;
        }
        crc = qtrain_crc32(crc, data, whole);
        offset += whole;
        if (whole != bytes) {
            uint8_t tail[4] = {0u, 0u, 0u, 0u};
            for (uint32_t k = 0; k < bytes - whole; k++) {
                tail[k] = data[whole + k];
            }
            if (qtrain_flash_program(slot, offset, tail, 4u) != QTRAIN_FLASH_OK) {
                return QTRAIN_CHECKPOINT_EFLASH;
            }
            crc = qtrain_crc32(crc, tail, 4u);
            offset += 4u;
        }
    }
    uint32_t header[HEADER_WORDS] = {QTRAIN_CHECKPOINT_MAGIC, QTRAIN_CHECKPOINT_VERSION, sequence,
                                     state->fingerprint, payload_bytes, state->num_buffers, crc, 0u};
    header[H_HEADER_CRC] = qtrain_crc32(0u, header, 4u * H_HEADER_CRC);
    if (qtrain_flash_program(slot, 0u, header, QTRAIN_CHECKPOINT_HEADER_BYTES) != QTRAIN_FLASH_OK) {
        return QTRAIN_CHECKPOINT_EFLASH;
    }
    uint32_t check;
    if (!slot_valid(state, slot, &check) || check != sequence) {
        return QTRAIN_CHECKPOINT_EFLASH;
    }
    newest_known = 1;
    newest_slot = slot;
    newest_sequence = sequence;
    return QTRAIN_CHECKPOINT_OK;
}
