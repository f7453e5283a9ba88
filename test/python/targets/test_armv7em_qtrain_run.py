"""`qtrain-run` with the stub model (firmware/stub_model.c) on QEMU and on the host.

The stub is checked against a numpy copy of its arithmetic; the QEMU and host builds must agree bit
for bit (same C, same expf/logf, IEEE single precision on both).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from armv7em_testing import STUB_MODEL, needs_qemu

from qtrain.targets.armv7em import build, protocol
from qtrain.tools.qtrain_run import main

# ---- numpy copy of stub_model.c ----
CLASSES, IN_BYTES, ZX, ZY = 5, 32, -3, 4
S_X, S_Y = np.float32(0.05), np.float32(0.1)
S_W = np.array([0.010, 0.012, 0.008, 0.015, 0.011], np.float32)
LR_BIAS, LR_WEIGHT = np.float32(4000.0), np.float32(200.0)
WEIGHT0 = ((37 * np.arange(CLASSES)[:, None] + 11 * np.arange(IN_BYTES)[None, :]) % 61 - 30).astype(np.int8)
BIAS0 = np.array([100, -250, 40, 0, -75], np.int32)
MULTIPLIER = (S_X * S_W) / S_Y  # float32, same order as the C


def stub_forward(image: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output_q int8 [classes], saturated bool [classes])."""
    acc = bias + (image.reshape(-1).astype(np.int32) - ZX) @ weight.astype(np.int32).T
    v = np.clip(acc.astype(np.float32) * MULTIPLIER, np.float32(-1000), np.float32(1000))
    q = np.rint(v).astype(np.int32) + ZY
    return np.clip(q, -128, 127).astype(np.int8), (q < -128) | (q > 127)


def stub_logits(output_q: np.ndarray) -> np.ndarray:
    return (output_q.astype(np.int32) - ZY).astype(np.float32) * S_Y


def stub_train(images: np.ndarray, labels: np.ndarray, steps: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    weight, bias, master = WEIGHT0.copy(), BIAS0.copy(), BIAS0.astype(np.float32)
    losses = []
    for step in range(steps):
        image, label = images[step % len(images)], int(labels[step % len(images)])
        output_q, saturated = stub_forward(image, weight, bias)
        logits = stub_logits(output_q)
        m = logits.max()
        total = np.float32(0)
        for c in range(CLASSES):
            total += np.exp(logits[c] - m)
        log_sum_exp = m + np.log(total)
        losses.append(log_sum_exp - logits[label])
        for c in range(CLASSES):
            grad = np.exp(logits[c] - log_sum_exp) - np.float32(c == label)
            grad_acc = np.float32(0) if saturated[c] else grad * S_Y * MULTIPLIER[c]
            master[c] -= LR_BIAS * grad_acc
            bias[c] = np.int32(np.rint(master[c]))
            x = image.reshape(-1).astype(np.int32) - ZX
            step_w = np.rint(LR_WEIGHT * (grad_acc * x.astype(np.float32)))
            weight[c] = np.clip(weight[c].astype(np.int32) - step_w.astype(np.int32), -127, 127)
    return np.array(losses, np.float32), {"fc.weight": weight, "fc.bias": bias, "fc.bias_master": master}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("inputs") / "in.npz"
    np.savez(path, image=rng.integers(-128, 128, (6, 4, 4, 2), dtype=np.int8), label=np.array([0, 1, 2, 3, 4, 1]))
    return path


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@needs_qemu
@pytest.mark.parametrize("where", ["qemu", "host"])
def test_forward_matches_the_numpy_stub(where: str, stub_qemu: build.BuildResult, stub_host: build.BuildResult,
                                        inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    firmware = stub_qemu if where == "qemu" else stub_host
    code, out, err = run_cli([str(firmware.path), "--inputs", str(inputs), "-o", str(tmp_path / "out.npz")], capsys)
    assert code == 0, err
    with np.load(inputs) as npz:
        images, labels = npz["image"], npz["label"]
    expected_q = np.stack([stub_forward(image, WEIGHT0, BIAS0)[0] for image in images])
    with np.load(tmp_path / "out.npz") as result:
        np.testing.assert_array_equal(result["output_q"], expected_q)
        np.testing.assert_array_equal(result["logits"], stub_logits(expected_q))
        counts = result["instructions" if where == "qemu" else "host_ns"]
    assert counts.shape == (6,) and counts.dtype == np.uint64 and np.all(counts > 0)
    correct = int(np.sum(np.argmax(stub_logits(expected_q), axis=1) == labels))
    assert f"accuracy: {correct}/6" in out


@needs_qemu
def test_train_on_qemu_and_host_agree_bit_for_bit(stub_qemu: build.BuildResult, stub_host: build.BuildResult,
                                                  inputs: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {}
    for where, firmware in (("qemu", stub_qemu), ("host", stub_host)):
        out_npz = tmp_path / f"{where}.npz"
        code, out, err = run_cli([str(firmware.path), "--inputs", str(inputs), "--steps", "9", "-o", str(out_npz)],
                                 capsys)
        assert code == 0, err
        outputs[where] = dict(np.load(out_npz))
        assert out.splitlines()[0].split() == ["step", "label", "loss", "instructions" if where == "qemu" else "host",
                                               *(["ns"] if where == "host" else [])]
        assert len([line for line in out.splitlines() if line.split()[0].isdigit()]) == 9
    qemu, host = outputs["qemu"], outputs["host"]
    assert set(qemu) - {"instructions"} == set(host) - {"host_ns"}
    for key in set(qemu) - {"instructions"}:
        assert qemu[key].dtype == host[key].dtype
        np.testing.assert_array_equal(qemu[key], host[key], err_msg=key)

    with np.load(inputs) as npz:
        loss, params = stub_train(npz["image"], npz["label"], 9)
    # numpy's exp/log may differ from qtrain_expf/logf by an ulp; everything else is exact.
    np.testing.assert_allclose(qemu["loss"], loss, rtol=1e-5, atol=1e-6)
    assert qemu["param/fc.weight"].dtype == np.int8 and qemu["param/fc.weight"].shape == (5, 32)
    assert qemu["param/fc.bias"].dtype == np.int32 and qemu["param/fc.bias_master"].dtype == np.float32
    np.testing.assert_array_equal(qemu["param/fc.weight"], params["fc.weight"])
    np.testing.assert_array_equal(qemu["param/fc.bias"], params["fc.bias"])
    np.testing.assert_allclose(qemu["param/fc.bias_master"], params["fc.bias_master"], rtol=1e-5)
    assert not np.array_equal(qemu["param/fc.weight"], WEIGHT0)  # it did learn
    assert qemu["instructions"].shape == (9,) and np.all(qemu["instructions"] > 1000)


@needs_qemu
def test_json_report(stub_qemu: build.BuildResult, inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([str(stub_qemu.path), "--inputs", str(inputs), "--steps", "4", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["target"] == "qemu" and info["entry"] == "train_step" and info["steps"] == 4
    assert len(info["instructions_per_step"]) == 4 and all(c > 0 for c in info["instructions_per_step"])
    assert info["macs_per_step"] == 2 * CLASSES * IN_BYTES
    memory = stub_qemu.memory
    assert memory is not None
    assert info["flash_bytes"] == memory.flash_bytes
    assert 0 < info["stack_bytes"] < 2048 and info["stack_reserved_bytes"] == 16384
    static = (48 + 5 * 32 + 5 * 4 + 5 * 4)  # stub_model.c's qtrain_memory.peak_sram_bytes
    assert info["static_sram_bytes"] == static and info["sram_bytes"] == static + info["stack_bytes"]
    assert info["init_instructions"] > 0 and len(info["loss"]) == 4


@needs_qemu
def test_console_script_and_default_inputs(stub_qemu: build.BuildResult, inputs: Path, tmp_path: Path) -> None:
    """Runs as a subprocess (the installed entry point's code path) with inputs.npz next to the ELF."""
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / "firmware.elf").write_bytes(stub_qemu.path.read_bytes())
    (folder / "inputs.npz").write_bytes(inputs.read_bytes())
    process = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_run", str(folder / "firmware.elf"),
                              "--json"], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["entry"] == "forward"


@needs_qemu
def test_bad_inputs_exit_2_with_one_line(stub_qemu: build.BuildResult, inputs: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    elf = str(stub_qemu.path)
    nchw = tmp_path / "nchw.npz"
    np.savez(nchw, image=np.zeros((2, 2, 4, 4), np.int8), label=np.array([0, 1]))
    floats = tmp_path / "float.npz"
    np.savez(floats, image=np.zeros((2, 2, 4, 4), np.float32), label=np.array([0, 1]))
    bad_label = tmp_path / "label.npz"
    np.savez(bad_label, image=np.zeros((2, 4, 4, 2), np.int8), label=np.array([0, 5]))
    no_label = tmp_path / "nolabel.npz"
    np.savez(no_label, image=np.zeros((2, 4, 4, 2), np.int8))
    not_npz = tmp_path / "text.npz"
    not_npz.write_text("hello")
    cases = [
        ([str(tmp_path / "missing.elf")], "no such firmware"),
        ([elf, "--inputs", str(tmp_path / "missing.npz")], "no such inputs file"),
        ([elf, "--inputs", str(not_npz)], "cannot read"),
        ([elf, "--inputs", str(nchw)], "images are [2, 4, 4] but the model takes int8 NHWC [4, 4, 2]"),
        ([elf, "--inputs", str(floats)], "'image' must be int8 NHWC"),
        ([elf, "--inputs", str(bad_label), "--steps", "2"], "labels must be in [0, 5), got 0..5"),
        ([elf, "--inputs", str(no_label), "--steps", "2"], "no 'label' array, which training needs"),
        ([elf, "--inputs", str(inputs), "--entry", "forward", "--steps", "2"], "--steps applies to"),
        ([str(inputs), "--inputs", str(inputs)], "is not an ELF file"),
    ]
    for args, message in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert err.startswith("qtrain-run: error: ") and message in err, (args, err)
        assert err.count("\n") == 1 and out == ""


@needs_qemu
def test_stm32_builds_are_refused(stub_qemu: build.BuildResult, inputs: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    stm32 = build.build_firmware([STUB_MODEL], tmp_path / "stm32.elf", "stm32f746")
    code, _, err = run_cli([str(stm32.path), "--inputs", str(inputs)], capsys)
    assert code == 2 and "is not a QEMU mps2-an500 build" in err


@needs_qemu
def test_missing_qemu_is_named(stub_qemu: build.BuildResult, inputs: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", "")
    code, _, err = run_cli([str(stub_qemu.path), "--inputs", str(inputs)], capsys)
    assert code == 2
    assert err == ("qtrain-run: error: qemu-system-arm not found on PATH; install the Debian package "
                   "'qemu-system-arm' (apt-get install qemu-system-arm)\n")


@needs_qemu
def test_firmware_failures_exit_1(inputs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model that faults, and one that never returns (stopped by --timeout)."""
    faulting = build.build_firmware([STUB_MODEL], tmp_path / "fault.elf", defines=["STUB_MISBEHAVE=1"])
    code, _, err = run_cli([str(faulting.path), "--inputs", str(inputs), "--steps", "3"], capsys)
    assert code == 1
    assert err.startswith("qtrain-run: error: fault.elf failed with status 4: qtrain: UsageFault at pc=0x")
    hanging = build.build_firmware([STUB_MODEL], tmp_path / "hang.elf", defines=["STUB_MISBEHAVE=2"])
    code, _, err = run_cli([str(hanging.path), "--inputs", str(inputs), "--steps", "3", "--timeout", "1"], capsys)
    assert code == 1
    assert err == "qtrain-run: error: hang.elf timed out after 1 s (1 of 3 steps done)\n"


def test_protocol_round_trip_of_a_truncated_result() -> None:
    """decode_result keeps the whole records of a result the firmware never finished."""
    header = protocol.RESULT_HEADER.pack(protocol.RESULT_MAGIC, 1, 0, protocol.MODE_TRAIN, 0, 5, 1,
                                         protocol.STACK_UNKNOWN, 1024, 0, *([0] * 22))
    record = np.array([(1.5, 2, 400)], protocol.TRAIN_RECORD).tobytes()
    result = protocol.decode_result(header + record + record[:7])
    assert not result.complete and result.records == 1 and result.loss is not None
    assert result.loss.tolist() == [1.5] and result.counts.tolist() == [400] and result.stack_used is None
    with pytest.raises(protocol.ProtocolError, match="not a qtrain result file"):
        protocol.decode_result(b"QTRX" + header[4:])
    request = protocol.encode_request(np.ones((2, 3, 3, 1), np.int8), np.array([4, 7]), protocol.MODE_INFER)
    assert len(request) == 32 + 2 * (4 + 12)
    assert request[32:36] == (4).to_bytes(4, "little") and request[36:45] == b"\x01" * 9


@needs_qemu
def test_harness_rejects_bad_requests(stub_qemu: build.BuildResult, tmp_path: Path) -> None:
    """What the firmware itself checks (qtrain-run checks first, so call the harness directly)."""
    cases = [
        (protocol.encode_request(np.zeros((1, 4, 4, 3), np.int8), np.array([0]), protocol.MODE_INFER),
         "qtrain-harness: the image size does not match the model's input\n"),
        (protocol.encode_request(np.zeros((2, 4, 4, 2), np.int8), np.array([1, 9]), protocol.MODE_TRAIN, 2),
         "qtrain-harness: a label is outside the model's classes\n"),
        (b"QTRX" + bytes(28), "qtrain-harness: not a qtrain request file: in.bin\n"),
        (protocol.encode_request(np.zeros((2, 4, 4, 2), np.int8), np.array([1, 2]), protocol.MODE_TRAIN, 3)[:-40],
         "qtrain-harness: the request file ends early\n"),
    ]
    for request, message in cases:
        (tmp_path / "in.bin").write_bytes(request)
        process = build.run_firmware(stub_qemu.path, ["in.bin", "out.bin"], timeout=30, cwd=tmp_path)
        assert (process.returncode, process.stderr) == (2, message)
    process = build.run_firmware(stub_qemu.path, ["missing.bin", "out.bin"], timeout=30, cwd=tmp_path)
    assert (process.returncode, process.stderr) == (3, "qtrain-harness: cannot open the request file missing.bin\n")
