"""The generated C of checkpoints: the device state table and `qtrain_checkpoint_save/restore`.

A checkpoint (targets/armv7em/qtrain_checkpoint.h) saves a list of state buffers byte for byte: the
step counter first (a uint32: the learning-rate schedule's "step" state, which `qtrain.lr_schedule`
advances once per training step), then every region of `qtrain_training_state` besides it: the SRAM copy
of every trainable tensor, then the rest of the training state (momentum velocities). Anything the C
backend adds to `Emitter.state_buffers` joins the checkpoint; nothing else has to change.

The fingerprint names the compiled model: a CRC32 of every parameter's initial value and of the state
layout (names and sizes), so a checkpoint is restored only into the firmware of the same model and
the same trained tensors (another learning rate keeps the fingerprint: the state is the same).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class StateBuffer:
    """One buffer of device state: `pointer` (a C expression) to `bytes` bytes, called `name`."""

    name: str
    pointer: str
    bytes: int


def layout_fingerprint(params_crc: int, buffers: list[StateBuffer]) -> int:
    """`params_crc` (a running zlib.crc32 over the parameters' bytes) continued over the state layout."""
    layout = ";".join(f"{b.name}:{b.bytes}" for b in buffers).encode()
    return zlib.crc32(layout, params_crc)


def checkpoint_c(buffers: list[StateBuffer], step: str, fingerprint: int) -> list[str]:
    """The C lines defining the state table, `qtrain_state` and the two checkpoint entry points; `step`
    (a `uint32_t *` C expression) is the step counter, also `buffers[0]`."""
    rows = [f"    {{{b.pointer}, {b.bytes}u}}, /* {b.name} */" for b in buffers]
    return [
        "/* The device state a checkpoint saves: the step counter, the trainable tensors, recipe state. */",
        f"static const qtrain_state_buffer_t qtrain_state_buffers[{len(buffers)}] = {{",
        *rows,
        "};",
        "",
        "const qtrain_state_desc_t qtrain_state = {",
        f"    0x{fingerprint:08x}u, {step}, {len(buffers)}u, qtrain_state_buffers,",
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
