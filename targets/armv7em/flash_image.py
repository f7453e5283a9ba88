"""The Flash image file of the simulated Flash (qtrain_flash.h): the whole 1 MB Flash, offset 0 = its
first byte, as a programmer would read it off the chip.

`prepare(path, firmware)` makes the image a firmware runs with: when the file is missing, the firmware's
Flash contents (its loadable ELF segments by load address; nothing for a host build) with every other
byte erased (0xFF); when it exists, the same firmware contents are written over it (as flashing the
firmware would) and the checkpoint slots are kept. `slots(path)` decodes the two checkpoint slots
(qtrain_checkpoint.h) independently of the C code, for tests and benchmarks.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from qtrain.errors import UserError
from qtrain.targets.armv7em import build

IMAGE_BYTES = 1024 * 1024
SLOT_OFFSETS = (0x08000, 0x20000)
SLOT_BYTES = (96 * 1024, 128 * 1024)
SLOTS_START, SLOTS_END = 0x08000, 0x40000
"""Flash offsets of the two checkpoint slots (STM32F746 sectors 1-3 and 4), as in qtrain_flash.h."""
CHECKPOINT_MAGIC = 0x4B435451
CHECKPOINT_VERSION = 1
HEADER = struct.Struct("<8I")
PT_LOAD = 1


class FlashImageError(UserError):
    """A --flash-image file that is not a Flash image."""


def firmware_contents(firmware: Path) -> dict[int, bytes]:
    """{Flash offset: bytes} of a target firmware's loadable segments (empty for a host build)."""
    data = Path(firmware).read_bytes()
    if build.elf_machine(firmware) != build.EM_ARM:
        return {}
    origin = build.FLASH_ORIGINS["stm32f746"] if _vectors_at(firmware) == build.FLASH_ORIGINS["stm32f746"] \
        else build.FLASH_ORIGINS["qemu"]
    phoff, = struct.unpack_from("<I", data, 0x1C)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x2A)
    contents: dict[int, bytes] = {}
    for i in range(phnum):
        p_type, p_offset, _vaddr, p_paddr, p_filesz, *_ = struct.unpack_from("<8I", data, phoff + i * phentsize)
        if p_type != PT_LOAD or p_filesz == 0 or not origin <= p_paddr < origin + IMAGE_BYTES:
            continue
        contents[p_paddr - origin] = data[p_offset:p_offset + p_filesz]
    return contents


def _vectors_at(firmware: Path) -> int | None:
    return next((s.address for s in build.elf_sections(firmware) if s.name == ".vectors"), None)


def prepare(path: Path, firmware: Path) -> None:
    """Create the image for `firmware`, or write `firmware` into an existing one (slots kept)."""
    contents = firmware_contents(firmware)
    for offset, chunk in contents.items():
        if offset < SLOTS_END and offset + len(chunk) > SLOTS_START:
            raise FlashImageError(f"{firmware} has Flash contents in the checkpoint sectors; rebuild it")
    if path.exists():
        if not path.is_file():
            raise FlashImageError(f"--flash-image {path} is not a file")
        size = path.stat().st_size
        if size != IMAGE_BYTES:
            raise FlashImageError(f"--flash-image {path} is not a Flash image: {size} bytes, expected {IMAGE_BYTES}")
        image = bytearray(path.read_bytes())
        new = bytearray(b"\xff" * IMAGE_BYTES)
        new[SLOTS_START:SLOTS_END] = image[SLOTS_START:SLOTS_END]
    else:
        new = bytearray(b"\xff" * IMAGE_BYTES)
        image = None
    for offset, chunk in contents.items():
        new[offset:offset + len(chunk)] = chunk
    if image is None or new != image:
        try:
            path.write_bytes(bytes(new))
        except OSError as e:
            raise FlashImageError(f"cannot write the Flash image {path}: {e.strerror or e}") from e


@dataclass(frozen=True)
class Slot:
    """What one checkpoint slot holds."""

    index: int
    valid: bool
    """magic, version, sizes and both CRCs hold (the fingerprint is not checked here)."""
    sequence: int | None = None
    fingerprint: int | None = None
    step: int | None = None
    """The step counter (the payload's first word)."""
    payload: bytes = b""


def slots(path: Path) -> list[Slot]:
    """Slots A and B of an image file, checked with zlib's CRC32 (the C code's must agree)."""
    image = Path(path).read_bytes()
    found = []
    for index, (offset, size) in enumerate(zip(SLOT_OFFSETS, SLOT_BYTES, strict=True)):
        raw = image[offset:offset + size]
        magic, version, sequence, fingerprint, payload_bytes, _, payload_crc, header_crc = HEADER.unpack_from(raw)
        ok = (magic == CHECKPOINT_MAGIC and version == CHECKPOINT_VERSION and 4 <= payload_bytes <= size - HEADER.size
              and header_crc == zlib.crc32(raw[:28]))
        payload = raw[HEADER.size:HEADER.size + payload_bytes] if ok else b""
        if not ok or zlib.crc32(payload) != payload_crc:
            found.append(Slot(index, False))
            continue
        found.append(Slot(index, True, sequence, fingerprint, struct.unpack_from("<I", payload)[0], payload))
    return found
