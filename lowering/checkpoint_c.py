"""The generated C of checkpoints: the device state table and `qtrain_checkpoint_save/restore`.

A checkpoint (targets/armv7em/qtrain_checkpoint.h) saves a list of state buffers byte for byte: the
step counter `qtrain_step` first (a uint32 that `qtrain_train_step` increments), then the SRAM copy of
every trainable tensor, then whatever state the training recipe keeps on the device. Anything the
C backend adds to `Emitter.state_buffers` joins the checkpoint; nothing else has to change.

The fingerprint names the compiled model: a CRC32 of every parameter's initial value and of the state
layout (names and sizes), so a checkpoint is restored only into the firmware of the same model and
the same trained tensors (another learning rate keeps the fingerprint: the state is the same).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

STEP_COUNTER = "qtrain_step"
"""The C name of the device's step counter."""


@dataclass(frozen=True)
class StateBuffer:
    """One buffer of device state: `pointer` (a C expression) to `bytes` bytes, called `name`."""

    name: str
    pointer: str
    bytes: int


def step_counter() -> StateBuffer:
    return StateBuffer("step", f"&{STEP_COUNTER}", 4)


def layout_fingerprint(params_crc: int, buffers: list[StateBuffer]) -> int:
    """`params_crc` (a running zlib.crc32 over the parameters' bytes) continued over the state layout."""
    layout = ";".join(f"{b.name}:{b.bytes}" for b in buffers).encode()
    return zlib.crc32(layout, params_crc)


def checkpoint_c(buffers: list[StateBuffer], fingerprint: int) -> list[str]:
    """The C lines defining the state table, `qtrain_state` and the two checkpoint entry points."""
    rows = [f"    {{{b.pointer}, {b.bytes}u}}, /* {b.name} */" for b in buffers]
    return [
        "/* The device state a checkpoint saves: the step counter, the trainable tensors, recipe state. */",
        f"static const qtrain_state_buffer_t qtrain_state_buffers[{len(buffers)}] = {{",
        *rows,
        "};",
        "",
        "const qtrain_state_desc_t qtrain_state = {",
        f"    0x{fingerprint:08x}u, &{STEP_COUNTER}, {len(buffers)}u, qtrain_state_buffers,",
        "};",
        "",
        "int qtrain_checkpoint_save(void) {",
        "    return qtrain_checkpoint_write(&qtrain_state);",
        "}",
        "",
        "int qtrain_checkpoint_restore(void) {",
        "    return qtrain_checkpoint_read(&qtrain_state);",
        "}",
        "",
    ]
