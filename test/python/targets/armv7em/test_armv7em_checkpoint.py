"""Checkpoints to Flash and power cuts (qtrain_checkpoint.h, qtrain_flash.h, `qtrain-run --flash-image`).

The stub model (firmware/stub_model.c, numpy copy in test_armv7em_qtrain_run.py) gives an independent
reference for the parameters after any number of steps; its checkpoint is the step counter and the
three tensors. Power cuts come from the QEMU plugin (power_cut.py) at exact instruction counts: the
device restored afterwards must hold the reference parameters of the step it restored, a multiple of
the checkpoint interval, and lose at most one interval. The boundary test finds the instruction at
which a checkpoint becomes valid: one instruction earlier its slot is fully written but for the
header, and must not win. The full benchmark (200 cuts on the digits CNN) is
`python -m qtrain.tools.bench_checkpoints`.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from armv7em_testing import needs_clang, needs_qemu
from test_armv7em_qtrain_run import stub_train

from qtrain.targets.armv7em import build, flash_image, power_cut, protocol
from qtrain.tools.qtrain_run import PowerCut, run

EVERY = 4
STEPS = 12


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    return rng.integers(-128, 128, (5, 4, 4, 2), dtype=np.int8), np.array([0, 3, 1, 4, 2], np.int32)


def train(firmware: Path, images: np.ndarray, labels: np.ndarray, steps: int, image: Path | None,
          every: int = 0, cut_at: int | None = None) -> protocol.HarnessResult:
    request = protocol.encode_request(images, labels, protocol.MODE_TRAIN, steps, checkpoint_every=every)
    args = power_cut.plugin_args(cut_at) if cut_at is not None else []
    return run(firmware, request, 120, f"{steps} steps", flash=image, qemu_args=args)[0]


def restore(firmware: Path, images: np.ndarray, labels: np.ndarray, image: Path) -> protocol.HarnessResult:
    """What the device holds after a restart: `--steps 0`."""
    flash_image.prepare(image, firmware)
    return train(firmware, images, labels, 0, image)


_uninterrupted: dict[tuple[Path, int], dict[str, np.ndarray]] = {}


def uninterrupted(firmware: Path, images: np.ndarray, labels: np.ndarray, steps: int) -> dict[str, np.ndarray]:
    """The parameters after `steps` steps of one run without Flash (cached per firmware)."""
    key = (firmware, steps)
    if key not in _uninterrupted:
        _uninterrupted[key] = train(firmware, images, labels, steps, None).params
    return _uninterrupted[key]


def assert_reference(result: protocol.HarnessResult, images: np.ndarray, labels: np.ndarray, step: int,
                     firmware: Path) -> None:
    """The restored device holds, bit for bit, what an uninterrupted run holds after `step` steps (which
    is the numpy copy's trajectory, to fp32 rounding)."""
    assert result.step == step
    expected = uninterrupted(firmware, images, labels, step)
    for name, value in expected.items():
        np.testing.assert_array_equal(result.params[name], value, err_msg=f"{name} at step {step}")
    _, numpy_copy = stub_train(images, labels, step)
    np.testing.assert_array_equal(result.params["fc.weight"], numpy_copy["fc.weight"])
    np.testing.assert_allclose(result.params["fc.bias_master"], numpy_copy["fc.bias_master"], rtol=1e-5)


@needs_qemu
def test_checkpoints_restore_and_resume_the_data_order(stub_qemu: build.BuildResult, data, tmp_path: Path):
    images, labels = data
    image = tmp_path / "flash.bin"
    flash_image.prepare(image, stub_qemu.path)
    first = train(stub_qemu.path, images, labels, 7, image, every=3)
    assert (first.restored_step, first.step, first.checkpoints) == (0, 7, 2)
    slots = flash_image.slots(image)  # zlib's CRC32 agrees with the firmware's
    assert [(s.valid, s.sequence, s.step) for s in slots] == [(True, 1, 3), (True, 2, 6)]
    assert slots[0].fingerprint == slots[1].fingerprint == 0x57AB0001

    restored = restore(stub_qemu.path, images, labels, image)
    assert restored.restored_step == 6
    assert_reference(restored, images, labels, 6, stub_qemu.path)
    # 4 more steps continue with sample 6 mod 5: the same parameters as 10 uninterrupted steps.
    resumed = train(stub_qemu.path, images, labels, 4, image, every=3)
    assert (resumed.restored_step, resumed.checkpoints) == (6, 1)
    np.testing.assert_array_equal(resumed.labels, labels[np.arange(6, 10) % len(labels)])
    assert_reference(resumed, images, labels, 10, stub_qemu.path)
    # The step-9 checkpoint replaced the older slot (A, sequence 1).
    assert [(s.sequence, s.step) for s in flash_image.slots(image)] == [(3, 9), (2, 6)]


@needs_qemu
def test_a_checkpoint_of_another_model_is_ignored(stub_qemu: build.BuildResult, data, tmp_path: Path):
    images, labels = data
    image = tmp_path / "flash.bin"
    flash_image.prepare(image, stub_qemu.path)
    train(stub_qemu.path, images, labels, 3, image, every=3)
    raw = bytearray(image.read_bytes())
    offset = flash_image.SLOT_OFFSETS[0]
    header = list(struct.unpack_from("<8I", raw, offset))
    header[3] ^= 1  # another fingerprint, with consistent CRCs
    header[7] = zlib.crc32(struct.pack("<7I", *header[:7]))
    struct.pack_into("<8I", raw, offset, *header)
    image.write_bytes(bytes(raw))
    assert flash_image.slots(image)[0].valid
    assert_reference(restore(stub_qemu.path, images, labels, image), images, labels, 0, stub_qemu.path)


@needs_qemu
def test_a_corrupted_newest_slot_falls_back_to_the_older(stub_qemu: build.BuildResult, data, tmp_path: Path):
    images, labels = data
    image = tmp_path / "flash.bin"
    flash_image.prepare(image, stub_qemu.path)
    train(stub_qemu.path, images, labels, 6, image, every=3)
    raw = bytearray(image.read_bytes())
    raw[flash_image.SLOT_OFFSETS[1] + 40] ^= 0x10  # one bit of slot B's payload
    image.write_bytes(bytes(raw))
    assert [s.valid for s in flash_image.slots(image)] == [True, False]
    assert_reference(restore(stub_qemu.path, images, labels, image), images, labels, 3, stub_qemu.path)


def newest_valid_step(image: Path) -> int:
    valid = [s for s in flash_image.slots(image) if s.valid]
    if not valid:
        return 0
    return max(valid, key=lambda s: s.sequence or 0).step or 0


@needs_qemu
def test_power_cuts_never_lose_more_than_the_interval(stub_qemu: build.BuildResult, data, tmp_path: Path):
    images, labels = data
    pristine = tmp_path / "pristine.bin"
    flash_image.prepare(pristine, stub_qemu.path)
    request = protocol.encode_request(images, labels, protocol.MODE_TRAIN, STEPS, checkpoint_every=EVERY)
    counted = tmp_path / "counted.bin"
    counted.write_bytes(pristine.read_bytes())
    _, console = run(stub_qemu.path, request, 120, "steps", flash=counted, qemu_args=power_cut.plugin_args(None))
    total = int(next(m for line in console.messages if (m := power_cut.TOTAL_LINE.fullmatch(line)))[1])

    def cut(at: int) -> tuple[Path, int]:
        image = tmp_path / f"cut{at}.bin"
        image.write_bytes(pristine.read_bytes())
        with pytest.raises(PowerCut) as info:
            train(stub_qemu.path, images, labels, STEPS, image, EVERY, cut_at=at)
        assert info.value.instructions == at
        return image, info.value.steps_done

    # The instruction at which the first checkpoint (step 4) becomes valid, by bisection on the image.
    low, high = 0, total  # invalid at low, valid at high
    while high - low > 1:
        middle = (low + high) // 2
        image, _ = cut(middle)
        low, high = (middle, high) if newest_valid_step(image) < EVERY else (low, middle)
        image.unlink()
    before, _ = cut(low)
    slot_a = before.read_bytes()[flash_image.SLOT_OFFSETS[0]:flash_image.SLOT_OFFSETS[0] + flash_image.SLOT_BYTES[0]]
    assert slot_a[:32] == b"\xff" * 32 and slot_a[32:36] == struct.pack("<I", EVERY), \
        "one instruction before it wins, the slot holds the payload but not yet the header"
    assert_reference(restore(stub_qemu.path, images, labels, before), images, labels, 0, stub_qemu.path)
    after, _ = cut(high)
    assert_reference(restore(stub_qemu.path, images, labels, after), images, labels, EVERY, stub_qemu.path)

    # Cuts spread over the whole run (inside steps, erases and programs alike).
    rng = np.random.default_rng(5)
    for at in sorted(rng.integers(0, total, 6).tolist()):
        image, done = cut(at)
        restored = restore(stub_qemu.path, images, labels, image)
        assert restored.step % EVERY == 0 and done - restored.step <= EVERY, (at, done, restored.step)
        assert_reference(restored, images, labels, restored.step, stub_qemu.path)


@needs_clang
def test_the_simulated_flash_on_the_host(stub_host: build.BuildResult, data, tmp_path: Path):
    images, labels = data
    image = tmp_path / "flash.bin"
    flash_image.prepare(image, stub_host.path)
    assert image.read_bytes() == b"\xff" * flash_image.IMAGE_BYTES  # a host build has no Flash contents
    first = train(stub_host.path, images, labels, 5, image, every=2)
    assert [(s.sequence, s.step) for s in flash_image.slots(image)] == [(1, 2), (2, 4)]
    assert first.step == 5
    assert_reference(restore(stub_host.path, images, labels, image), images, labels, 4, stub_host.path)


@needs_qemu
def test_the_image_keeps_the_checkpoints_and_takes_the_new_firmware(stub_qemu: build.BuildResult, data,
                                                                    stack_probe: build.BuildResult, tmp_path: Path):
    images, labels = data
    image = tmp_path / "flash.bin"
    flash_image.prepare(image, stub_qemu.path)
    contents = flash_image.firmware_contents(stub_qemu.path)
    raw = image.read_bytes()
    for offset, chunk in contents.items():
        assert raw[offset:offset + len(chunk)] == chunk
    assert raw[flash_image.SLOTS_START:flash_image.SLOTS_END] == b"\xff" * (flash_image.SLOTS_END -
                                                                           flash_image.SLOTS_START)
    train(stub_qemu.path, images, labels, 3, image, every=3)
    slots_before = image.read_bytes()[flash_image.SLOTS_START:flash_image.SLOTS_END]
    # Another firmware is written over the program sectors (nothing of the old one is left); the slots stay.
    flash_image.prepare(image, stack_probe.path)
    raw = image.read_bytes()
    assert raw[flash_image.SLOTS_START:flash_image.SLOTS_END] == slots_before
    expected = bytearray(b"\xff" * flash_image.IMAGE_BYTES)
    for offset, chunk in flash_image.firmware_contents(stack_probe.path).items():
        expected[offset:offset + len(chunk)] = chunk
    assert raw[:flash_image.SLOTS_START] + raw[flash_image.SLOTS_END:] == \
        bytes(expected[:flash_image.SLOTS_START] + expected[flash_image.SLOTS_END:])


def test_the_crc_and_sector_layout_match_the_c_header():
    header = (build.TARGET_DIR / "qtrain_flash.h").read_text()
    assert f"#define QTRAIN_FLASH_SLOT_A_OFFSET 0x{flash_image.SLOT_OFFSETS[0]:05X}u" in header
    assert f"#define QTRAIN_FLASH_SLOT_B_OFFSET 0x{flash_image.SLOT_OFFSETS[1]:05X}u" in header
    assert f"#define QTRAIN_FLASH_SLOT_A_BYTES ({flash_image.SLOT_BYTES[0] // 1024}u * 1024u)" in header
    assert f"#define QTRAIN_FLASH_SLOT_B_BYTES ({flash_image.SLOT_BYTES[1] // 1024}u * 1024u)" in header




@needs_qemu
def test_a_generated_model_resumes_bit_identically(tmp_path: Path):
    """qtrain-compile's C (tiny_model, every tensor trainable: int32 biases, fp32 masters) through
    `qtrain-run --flash-image --checkpoint-every --power-cut-at-instruction`, then resumed."""
    from testpaths import LIT_INPUTS

    from qtrain.tools import qtrain_compile, qtrain_run

    def cli(main, *args: object) -> None:  # noqa: ANN001
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in args])
        assert exit_info.value.code == 0

    cli(qtrain_compile.main, LIT_INPUTS / "tiny_model.mlir", "--scheme", "full", "-o", tmp_path / "build")
    firmware = tmp_path / "build" / "firmware.elf"
    rng = np.random.default_rng(3)
    inputs = tmp_path / "in.npz"
    np.savez(inputs, image=rng.integers(-128, 128, (5, 8, 8, 3), dtype=np.int8), label=rng.integers(0, 3, 5))
    for steps in (2, 6):
        cli(qtrain_run.main, firmware, "--inputs", inputs, "--steps", steps, "-o", tmp_path / f"ref{steps}.npz")
    counts = np.load(tmp_path / "ref6.npz")["instructions"]
    image = tmp_path / "flash.bin"
    cut_at = int(counts[:3].sum() + counts[3] // 2)  # inside step 4, after the step-2 checkpoint
    cli(qtrain_run.main, firmware, "--inputs", inputs, "--steps", 6, "--flash-image", image, "--checkpoint-every", 2,
        "--power-cut-at-instruction", cut_at, "-o", tmp_path / "never.npz")
    assert not (tmp_path / "never.npz").exists()
    cli(qtrain_run.main, firmware, "--steps", 0, "--flash-image", image, "-o", tmp_path / "restored.npz")
    cli(qtrain_run.main, firmware, "--inputs", inputs, "--steps", 4, "--flash-image", image, "-o",
        tmp_path / "resumed.npz")
    for name, steps in (("restored", 2), ("resumed", 6)):
        got, want = np.load(tmp_path / f"{name}.npz"), np.load(tmp_path / f"ref{steps}.npz")
        assert int(got["step"]) == steps == int(want["step"])
        params = [k for k in want.files if k.startswith("param/")]
        assert len(params) == 8 and sorted(params) == sorted(k for k in got.files if k.startswith("param/"))
        for key in params:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{key} ({name})")
