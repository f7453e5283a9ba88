"""`qtrain-run` with the stub model (firmware/stub_model.c) on QEMU and on the host.

The stub is checked against a numpy copy of its arithmetic; the QEMU and host builds must agree bit
for bit (same C, same expf/logf, IEEE single precision on both).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from armv7em_testing import FIRMWARE_SOURCES, STUB_MODEL, needs_clang, needs_qemu
from testpaths import LIT_INPUTS

from qtrain.targets.armv7em import build, protocol
from qtrain.tools.plumbing import ProgressBar, format_duration
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
        ([elf, "--inputs", str(bad_label), "--steps", "2"],
         "label.npz: 'label' must be class indices in [0, 5), got 0..5"),
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
    header = protocol.RESULT_HEADER.pack(protocol.RESULT_MAGIC, protocol.VERSION, 0, protocol.MODE_TRAIN, 0, 5, 1,
                                         protocol.STACK_UNKNOWN, 1024, 0, *([0] * 14), 3, *([0] * 7))
    record = np.array([(1.5, 2, 400)], protocol.TRAIN_RECORD).tobytes()
    result = protocol.decode_result(header + record + record[:7])
    assert not result.complete and result.records == 1 and result.loss is not None
    assert result.loss.tolist() == [1.5] and result.counts.tolist() == [400] and result.stack_used is None
    with pytest.raises(protocol.ProtocolError, match="not a qtrain result file"):
        protocol.decode_result(b"QTRX" + header[4:])
    with pytest.raises(protocol.ProtocolError, match="result file version 1, expected 3"):
        protocol.decode_result(header[:4] + (1).to_bytes(4, "little") + header[8:])
    request = protocol.encode_request(np.ones((2, 3, 3, 1), np.int8), np.array([4, 7]), protocol.MODE_INFER)
    assert len(request) == 48 + 2 * (4 + 12)
    assert request[48:52] == (4).to_bytes(4, "little") and request[52:61] == b"\x01" * 9


@needs_qemu
def test_harness_rejects_bad_requests(stub_qemu: build.BuildResult, tmp_path: Path) -> None:
    """What the firmware itself checks (qtrain-run checks first, so call the harness directly)."""
    images = np.zeros((2, 4, 4, 2), np.int8)
    train_eval = protocol.encode_request(images, np.array([1, 2]), protocol.MODE_TRAIN_EVAL, 2,
                                         eval_images=images, eval_labels=np.array([0, 1]))
    v1 = struct.pack("<4s7I", b"QTRI", 1, protocol.MODE_TRAIN, 2, 2, 32, 36, 0) + bytes(2 * 36)

    def patched(request: bytes, field: int, value: int) -> bytes:
        """`request` with header word `field` (0 = magic) set to `value`."""
        return request[:4 * field] + struct.pack("<I", value) + request[4 * field + 4:]

    inconsistent = "qtrain-harness: unsupported or inconsistent request header\n"
    cases = [
        (protocol.encode_request(np.zeros((1, 4, 4, 3), np.int8), np.array([0]), protocol.MODE_INFER),
         "qtrain-harness: the image size does not match the model's input\n"),
        (protocol.encode_request(images, np.array([9, 1]), protocol.MODE_TRAIN, 2),
         "qtrain-harness: a label is outside the model's classes\n"),
        (protocol.encode_request(images, np.array([1, 2]), protocol.MODE_TRAIN_EVAL, 2, eval_images=images[:1],
                                 eval_labels=np.array([5])),
         "qtrain-harness: an evaluation label is outside the model's classes (or -1)\n"),
        (b"QTRX" + bytes(44), "qtrain-harness: not a qtrain request file: in.bin\n"),
        (v1, "qtrain-harness: the request is protocol version 1 but this harness speaks version 3\n"),
        (v1[:20], "qtrain-harness: the request is protocol version 1 but this harness speaks version 3\n"),
        (patched(train_eval, 1, 2), "qtrain-harness: the request is protocol version 2 but this harness speaks "
                                    "version 3\n"),
        (train_eval[:30], "qtrain-harness: the request file ends early\n"),
        (patched(train_eval, 7, 0), inconsistent),  # mode 2 without evaluation records
        (patched(train_eval, 2, 3), inconsistent),  # unknown mode
        (patched(patched(patched(train_eval, 2, protocol.MODE_TRAIN), 7, 0), 8, 3), inconsistent),  # K in mode 1
        (patched(train_eval, 2, protocol.MODE_INFER), inconsistent),  # mode 0 with evaluation records
        (patched(train_eval, 11, 1), inconsistent),  # reserved word
        (patched(protocol.encode_request(images, np.array([1, 2]), protocol.MODE_INFER), 9, 2),
         inconsistent),  # checkpoints while inferring
        (patched(train_eval, 7, 0x7FFFFFFF), inconsistent),  # more records than 32-bit offsets reach
        (protocol.encode_request(images, np.array([1, 2]), protocol.MODE_TRAIN, 3)[:-40],
         "qtrain-harness: the request file ends early\n"),
    ]
    for request, message in cases:
        (tmp_path / "in.bin").write_bytes(request)
        process = build.run_firmware(stub_qemu.path, ["in.bin", "out.bin"], timeout=30, cwd=tmp_path)
        assert (process.returncode, process.stderr) == (2, message), request[:48]
    process = build.run_firmware(stub_qemu.path, ["missing.bin", "out.bin"], timeout=30, cwd=tmp_path)
    assert (process.returncode, process.stderr) == (3, "qtrain-harness: cannot open the request file missing.bin\n")


# ---- train + evaluate (protocol mode 2), progress lines ----

EVAL_STEPS, EVAL_EVERY = 9, 4
"""Passes after steps 0, 4, 8 and 9."""


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A task file: 6 training images, 7 test images (labels 0..4)."""
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("task") / "task.npz"
    np.savez(path, image=rng.integers(-128, 128, (6, 4, 4, 2), dtype=np.int8), label=np.array([0, 1, 2, 3, 4, 1]),
             test_image=rng.integers(-128, 128, (7, 4, 4, 2), dtype=np.int8),
             test_label=np.array([4, 0, 2, 2, 1, 3, 0]))
    return path


def accuracy(output_q: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(stub_logits(output_q), axis=1) == labels))


@needs_qemu
@pytest.mark.parametrize("where", ["qemu", "host"])
def test_train_eval_matches_forward_before_and_after_training(
        where: str, stub_qemu: build.BuildResult, stub_host: build.BuildResult, task: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The evaluation passes equal the stub's forward pass with the parameters of that moment, and the
    training itself is the same as without evaluation (same losses and parameters, bit for bit)."""
    firmware = str((stub_qemu if where == "qemu" else stub_host).path)
    code, out, err = run_cli([firmware, "--inputs", str(task), "--eval", "same", "--steps", str(EVAL_STEPS),
                              "--eval-every", str(EVAL_EVERY), "-o", str(tmp_path / "eval.npz")], capsys)
    assert code == 0 and err == "", err
    code, _, err = run_cli([firmware, "--inputs", str(task), "--steps", str(EVAL_STEPS), "-o",
                            str(tmp_path / "train.npz")], capsys)
    assert code == 0, err
    with np.load(task) as npz:
        images, labels, test_images, test_labels = npz["image"], npz["label"], npz["test_image"], npz["test_label"]
    with np.load(tmp_path / "eval.npz") as npz:
        result = dict(npz)
    with np.load(tmp_path / "train.npz") as npz:
        train_only = dict(npz)

    counter = "instructions" if where == "qemu" else "host_ns"
    assert set(result) == set(train_only) | {"eval_logits_before", "eval_output_q_before", "eval_logits_after",
                                             "eval_output_q_after", f"eval_{counter}", "eval_accuracy_curve"}
    for key in train_only.keys() - {counter}:
        np.testing.assert_array_equal(result[key], train_only[key], err_msg=key)

    before = np.stack([stub_forward(image, WEIGHT0, BIAS0)[0] for image in test_images])
    trained = np.stack([stub_forward(image, result["param/fc.weight"], result["param/fc.bias"])[0]
                        for image in test_images])
    assert not np.array_equal(before, trained)  # training changed the answers
    np.testing.assert_array_equal(result["eval_output_q_before"], before)
    np.testing.assert_array_equal(result["eval_logits_before"], stub_logits(before))
    np.testing.assert_array_equal(result["eval_output_q_after"], trained)
    np.testing.assert_array_equal(result["eval_logits_after"], stub_logits(trained))

    curve = result["eval_accuracy_curve"]
    assert curve.dtype == np.float64 and curve[:, 0].tolist() == [0, 4, 8, 9]
    expected = []
    for steps in (0, 4, 8, 9):
        _, params = stub_train(images, labels, steps)
        output_q = np.stack([stub_forward(image, params["fc.weight"], params["fc.bias"])[0] for image in test_images])
        expected.append(accuracy(output_q, test_labels))
    assert curve[:, 1].tolist() == expected
    assert result[f"eval_{counter}"].shape == (4, 7) and np.all(result[f"eval_{counter}"] > 0)

    m = len(test_labels)
    correct_before, correct_after = round(expected[0] * m), round(expected[-1] * m)
    assert f"eval accuracy before: {correct_before}/{m} ({100 * expected[0]:.1f}%)" in out
    assert f"eval accuracy after: {correct_after}/{m} ({100 * expected[-1]:.1f}%) at step 9" in out
    assert len([line for line in out.splitlines() if line.split()[0].isdigit()]) == EVAL_STEPS + 4


@needs_qemu
def test_train_eval_on_qemu_and_host_agree_bit_for_bit(stub_qemu: build.BuildResult, stub_host: build.BuildResult,
                                                       task: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {}
    for where, firmware in (("qemu", stub_qemu), ("host", stub_host)):
        code, _, err = run_cli([str(firmware.path), "--inputs", str(task), "--eval", str(task), "--steps", "13",
                                "--eval-every", "5", "-o", str(tmp_path / f"{where}.npz")], capsys)
        assert code == 0, err
        with np.load(tmp_path / f"{where}.npz") as npz:
            outputs[where] = {k: v for k, v in npz.items() if "instructions" not in k and "host_ns" not in k}
    assert outputs["qemu"].keys() == outputs["host"].keys()
    for key, value in outputs["qemu"].items():
        np.testing.assert_array_equal(value, outputs["host"][key], err_msg=key)
    assert outputs["qemu"]["eval_accuracy_curve"][:, 0].tolist() == [0, 5, 10, 13]


@needs_qemu
def test_eval_file_layouts(stub_host: build.BuildResult, task: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    """`--eval same`, `--eval TASK.npz` (the --inputs file), a separate EVAL.npz with image/label and one
    with only test_image/test_label all evaluate on the same images; unlabelled ones give no accuracy."""
    with np.load(task) as npz:
        test_image, test_label = npz["test_image"], npz["test_label"]
    separate, test_only, unlabelled = tmp_path / "eval.npz", tmp_path / "test_only.npz", tmp_path / "nolabel.npz"
    np.savez(separate, image=test_image, label=test_label)
    np.savez(test_only, test_image=test_image, test_label=test_label)
    np.savez(unlabelled, image=test_image)
    results = []
    for spec in ("same", str(task), str(separate), str(test_only)):
        code, out, err = run_cli([str(stub_host.path), "--inputs", str(task), "--eval", spec, "--steps", "5", "--json",
                                  "-o", str(tmp_path / "out.npz")], capsys)
        assert code == 0, err
        info = json.loads(out)
        with np.load(tmp_path / "out.npz") as npz:
            results.append((info["eval_accuracy_before"], info["eval_accuracy_after"],
                            npz["eval_output_q_before"].tolist(), npz["eval_output_q_after"].tolist()))
        assert info["eval_images"] == 7 and info["eval_accuracy_curve"] is None
        assert info["entry"] == "train_step" and len(info["loss"]) == 5
    assert all(r == results[0] for r in results)
    code, out, err = run_cli([str(stub_host.path), "--inputs", str(task), "--eval", str(unlabelled), "--steps", "5",
                              "-o", str(tmp_path / "out.npz")], capsys)
    assert code == 0, err
    assert "eval accuracy: no labels" in out
    with np.load(tmp_path / "out.npz") as npz:
        assert npz["eval_output_q_after"].tolist() == results[0][3] and "eval_accuracy_curve" not in npz
    # --eval without --steps: one step per training image
    code, out, err = run_cli([str(stub_host.path), "--inputs", str(task), "--eval", "same", "--json"], capsys)
    assert code == 0 and len(json.loads(out)["loss"]) == 6


@needs_qemu
def test_train_eval_json_report(stub_qemu: build.BuildResult, task: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli([str(stub_qemu.path), "--inputs", str(task), "--eval", "same", "--steps", "6",
                              "--eval-every", "3", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["entry"] == "train_step" and info["steps"] == 6 and len(info["instructions_per_step"]) == 6
    assert info["eval_images"] == 7 and info["eval_instructions_per_image"] > 0
    assert [step for step, _ in info["eval_accuracy_curve"]] == [0, 3, 6]
    assert info["eval_accuracy_curve"][0][1] == info["eval_accuracy_before"]
    assert info["eval_accuracy_curve"][-1][1] == info["eval_accuracy_after"]
    assert 0 < info["stack_bytes"] < 2048


@needs_qemu
def test_harness_progress_lines(stub_qemu: build.BuildResult, task: Path, tmp_path: Path) -> None:
    """The console of a train + evaluate run holds exactly one progress line per step and pass, and
    they agree with the result file."""
    with np.load(task) as npz:
        images, labels, test_images = npz["image"], npz["label"], npz["test_image"]
    test_labels = np.array([4, -1, 2, 2, 1, -1, 0])  # two unlabelled
    (tmp_path / "in.bin").write_bytes(protocol.encode_request(
        images, labels, protocol.MODE_TRAIN_EVAL, 7, eval_images=test_images, eval_labels=test_labels,
        eval_every=3))
    process = build.run_firmware(stub_qemu.path, ["in.bin", "out.bin"], timeout=30, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    result = protocol.decode_result((tmp_path / "out.bin").read_bytes())
    assert result.loss is not None and result.eval_logits is not None and result.eval_steps is not None
    events = [protocol.parse_progress(line) for line in process.stderr.splitlines()]
    assert None not in events
    kinds = "".join("s" if e is not None and e.kind == "step" else "e" for e in events)
    assert kinds == "e" + "ssse" + "ssse" + "se"
    steps = [e for e in events if e is not None and e.kind == "step"]
    assert [(e.done, e.total) for e in steps] == [(i, 7) for i in range(1, 8)]
    np.testing.assert_allclose([e.loss for e in steps], result.loss, atol=5.01e-5, rtol=0)
    passes = [e for e in events if e is not None and e.kind == "eval"]
    labelled = test_labels >= 0
    for event, step, logits in zip(passes, result.eval_steps, result.eval_logits, strict=True):
        correct = int(np.sum(np.argmax(logits, axis=1)[labelled] == test_labels[labelled]))
        assert (event.done, event.total, event.correct, event.labelled) == (step, 7, correct, 5)
    # mode 0 prints one line per image
    (tmp_path / "in.bin").write_bytes(protocol.encode_request(images, labels, protocol.MODE_INFER))
    process = build.run_firmware(stub_qemu.path, ["in.bin", "out.bin"], timeout=30, cwd=tmp_path)
    assert process.stderr.splitlines() == [f"qtrain: image {i}/6" for i in range(1, 7)]


@needs_clang
def test_progress_number_format(tmp_path: Path) -> None:
    """harness.c's loss formatting on values no model produces, read back by protocol.parse_progress."""
    probe = build.build_firmware([FIRMWARE_SOURCES / "progress_format.c", STUB_MODEL], tmp_path / "probe", "host",
                                 harness=False)
    process = subprocess.run([str(probe.path)], capture_output=True, text=True, timeout=30)
    assert process.returncode == 0, process.stderr
    lines = process.stderr.splitlines()
    events = [protocol.parse_progress(line) for line in lines]
    assert None not in events
    losses = [e.loss for e in events if e is not None and e.kind == "step"]
    texts = [line.rsplit(" ", 1)[1] for line in lines[:len(losses)]]
    assert texts == ["0.0000", "0.0000", "1.0000", "1.5000", "1.0000", "0.0001", "0.0000", "12.3457", "-3.1416",
                     "1.0000e9", "1.0000e12", "3.4028e38", "inf", "-inf", "nan"]
    assert losses[12] == float("inf") and losses[13] == float("-inf") and losses[14] != losses[14]
    assert events[-2] == protocol.ProgressLine("eval", 7, 4000000000, correct=0, labelled=4294967295)
    assert events[-1] == protocol.ProgressLine("image", 1, 1)
    assert protocol.parse_progress("qtrain: UsageFault at pc=0x0000036a lr=0x20004009") is None
    assert protocol.parse_progress("qtrain: step 1/2 loss 1.5") is None  # not the harness's format


@needs_qemu
def test_progress_bar(stub_qemu: build.BuildResult, task: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    """--progress draws the bar on stderr (not a terminal here: whole lines), --quiet and the default
    (stderr not a terminal) do not; stdout is the same either way."""
    args = [str(stub_qemu.path), "--inputs", str(task), "--eval", "same", "--steps", "9", "--eval-every", "4"]
    code, out, err = run_cli([*args, "--progress"], capsys)
    assert code == 0
    lines = err.splitlines()
    assert lines and all(line.startswith("qtrain-run: [") for line in lines)
    assert "\r" not in err
    # every evaluation pass is drawn (passes after steps 0, 4, 8, 9), the last one with the final state
    assert [line.split(" @")[1].split(")")[0] for line in lines if " @" in line][-4:] == ["0", "4", "8", "9"]
    assert lines[-1].startswith("qtrain-run: [########################] step 9/9  loss ")
    assert "ETA 0s" in lines[-1] and "elapsed " in lines[-1]
    for extra in ([], ["--quiet"]):
        code, quiet_out, quiet_err = run_cli([*args, *extra], capsys)
        assert code == 0 and quiet_err == "" and quiet_out == out


def test_progress_bar_on_a_terminal() -> None:
    """The bar's text, in-place redraws, ticks and ETA, with a fake clock."""
    import io

    now = [100.0]
    stream = io.StringIO()
    bar = ProgressBar("qtrain-run", stream, True, 4, "step", eval_steps=[0, 4], clock=lambda: now[0])
    now[0] = 100.5
    bar.tick()
    assert stream.getvalue() == ""  # nothing for the first second
    now[0] = 101.0
    bar.tick()
    assert stream.getvalue() == ("\rqtrain-run: [------------------------] step 0/4  evaluating (1/2)  elapsed 1s  "
                                 "ETA ?\x1b[K")
    now[0] = 101.5
    bar.evaluated(0, correct=1, labelled=4)
    for t, done, loss in ((103.5, 1, 2.0), (105.5, 2, 1.0)):
        now[0] = t
        bar.advance(done, loss)
    assert stream.getvalue().count("\r") == 4
    assert stream.getvalue().endswith("\r" + "qtrain-run: [############------------] step 2/4  loss 1.5000  "
                                      "eval 25.0% (1/4 @0)  elapsed 6s  ETA 6s\x1b[K")  # 2 steps x 2 s + 1 pass x 1.5 s
    now[0] = 105.51
    bar.advance(3, 0.0)  # within 0.1 s: not drawn yet
    assert stream.getvalue().count("\r") == 4
    bar.close()  # draws the last state, ends the line
    assert stream.getvalue().count("\r") == 5 and stream.getvalue().endswith("\x1b[K\n")
    assert "step 3/4  loss 1.0000" in stream.getvalue().rsplit("\r", 1)[1]
    assert format_duration(59.6) == "1m00s" and format_duration(3725) == "1h02m"


@needs_qemu
def test_train_eval_usage_errors_exit_2_with_one_line(stub_qemu: build.BuildResult, inputs: Path, task: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = str(stub_qemu.path)
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, image=np.zeros((2, 4, 4, 3), np.int8), label=np.array([0, 1]))
    wrong_label = tmp_path / "label.npz"
    np.savez(wrong_label, image=np.zeros((2, 4, 4, 2), np.int8), label=np.array([0, 7]))
    unlabelled = tmp_path / "nolabel.npz"
    np.savez(unlabelled, image=np.zeros((2, 4, 4, 2), np.int8))
    cases = [
        ([elf, "--inputs", str(inputs), "--steps", "2", "--eval-every", "3"], "--eval-every needs --eval"),
        ([elf, "--inputs", str(task), "--eval", "same", "--eval-every", "0"],
         "argument --eval-every: 0 is out of range"),
        ([elf, "--inputs", str(task), "--eval", "same", "--entry", "forward"], "--eval applies to training"),
        ([elf, "--inputs", str(inputs), "--eval", "same"], "has no 'test_image' array"),
        ([elf, "--inputs", str(task), "--eval", str(tmp_path / "missing.npz")], "no such evaluation file"),
        ([elf, "--inputs", str(task), "--eval", str(wrong_shape)],
         "images are [4, 4, 3] but the model takes int8 NHWC [4, 4, 2]"),
        ([elf, "--inputs", str(task), "--eval", str(wrong_label)],
         "label.npz: 'label' must be class indices in [0, 5), got 0..7"),
        ([elf, "--inputs", str(task), "--eval", str(unlabelled), "--eval-every", "2"],
         "has no labels, which the --eval-every accuracy curve needs"),
        ([elf, "--inputs", str(task), "--progress", "--quiet"], "not allowed with argument"),
        ([elf, "--inputs", str(task), "--eval-every"], "expected one argument"),
    ]
    for args, message in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert err.startswith("qtrain-run: error: ") and message in err, (args, err)
        assert err.count("\n") == 1 and out == "", (args, err)


def test_protocol_train_eval_round_trip_of_a_truncated_result() -> None:
    """A mode-2 result cut anywhere decodes to the steps and the whole evaluation passes before the cut."""
    classes, m, steps, every = 3, 2, 5, 2
    eval_record = protocol.infer_record(classes)
    header = protocol.RESULT_HEADER.pack(protocol.RESULT_MAGIC, 3, 1, protocol.MODE_TRAIN_EVAL, steps, classes, 1,
                                         600, 1024, 0, *([0] * 11), 4, m, every, steps, 4, *([0] * 6))
    body, order = b"", []
    for kind, count, step in protocol._train_eval_segments(steps, every):
        if kind == "train":
            rows = np.zeros(count, protocol.TRAIN_RECORD)
            rows["loss"] = np.arange(step - count, step) + 0.5
            order += [("step", i) for i in range(step - count, step)]
        else:
            rows = np.zeros(m, eval_record)
            rows["logits"] = step
            order += [("eval", step)]
        body += rows.tobytes()
    assert [entry for entry in order if entry[0] == "eval"] == [("eval", 0), ("eval", 2), ("eval", 4), ("eval", 5)]
    complete = protocol.decode_result(header + body)
    assert complete.complete and complete.loss is not None and complete.eval_steps is not None
    assert complete.loss.tolist() == [0.5, 1.5, 2.5, 3.5, 4.5] and complete.eval_steps.tolist() == [0, 2, 4, 5]
    assert complete.eval_logits is not None and complete.eval_logits[:, 0, 0].tolist() == [0, 2, 4, 5]
    incomplete_header = header[:8] + bytes(4) + header[12:]
    for cut in range(len(body) + 1):
        partial = protocol.decode_result(incomplete_header + body[:cut])
        assert partial.loss is not None and partial.eval_steps is not None and not partial.complete
        assert partial.loss.tolist() == complete.loss[:partial.records].tolist()
        assert partial.eval_steps.tolist() == complete.eval_steps[:len(partial.eval_steps)].tolist()
    with pytest.raises(protocol.ProtocolError, match="ends inside its records"):
        protocol.decode_result(header + body[:-1])
    with pytest.raises(protocol.ProtocolError, match="holds 4 steps of 5"):
        protocol.decode_result(header[:16] + struct.pack("<I", 4) + header[20:] + body)


# ---- a generated model against the interpreter (the golden model) ----

TINY_MODEL = LIT_INPUTS / "tiny_model.mlir"


@pytest.fixture(scope="module", params=["qemu", "host"])
def tiny_build(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model.mlir, firmware) of `qtrain-compile tiny_model.mlir --target qemu|host` (every tensor trainable)."""
    if not build.have_tools("clang", "ld.lld"):
        pytest.skip("clang or ld.lld is not installed (Debian packages 'clang', 'lld')")
    target: str = request.param
    out = tmp_path_factory.mktemp(f"tiny-{target}")
    process = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_compile", str(TINY_MODEL), "--target",
                              target, "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    return out / "model.mlir", out / ("firmware.elf" if target == "qemu" else "firmware")


@needs_qemu
def test_generated_model_train_eval_matches_the_interpreter(tiny_build: tuple[Path, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Evaluation before / during / after training on the device equals qtrain-interpret's forward pass
    with the parameters of that moment (the interpreter trained with the same steps), and the before
    pass equals a separate `qtrain-run --entry forward`."""
    from qtrain.interpreter import ModelInterpreter, load_module, run_forward, run_train_steps

    model, firmware = tiny_build
    rng = np.random.default_rng(3)
    images, labels = rng.integers(-128, 128, (8, 8, 8, 3), dtype=np.int8), rng.integers(0, 3, 8)
    test_images, test_labels = rng.integers(-128, 128, (10, 8, 8, 3), dtype=np.int8), rng.integers(0, 3, 10)
    task = tmp_path / "task.npz"
    np.savez(task, image=images, label=labels, test_image=test_images, test_label=test_labels)
    steps, every = 25, 10
    code, out, err = run_cli([str(firmware), "--inputs", str(task), "--eval", "same", "--steps", str(steps),
                              "--eval-every", str(every), "-o", str(tmp_path / "device.npz"), "--progress"], capsys)
    assert code == 0, err
    assert err.splitlines()[-1].startswith(f"qtrain-run: [########################] step {steps}/{steps}  loss ")
    with np.load(tmp_path / "device.npz") as npz:
        device = dict(npz)

    module = load_module(model)
    interpreter = ModelInterpreter(module)
    output_q, logits = run_forward(module, test_images, interpreter=interpreter)
    np.testing.assert_array_equal(device["eval_output_q_before"], output_q)
    np.testing.assert_array_equal(device["eval_logits_before"], logits)
    curve, losses, done = [float(np.mean(np.argmax(logits, axis=1) == test_labels))], [], 0
    for step in (10, 20, 25):
        order = np.arange(done, step) % len(images)  # the device's samples for these steps
        loss, params = run_train_steps(module, images[order], labels[order], step - done, interpreter=interpreter)
        losses.append(loss)
        done = step
        output_q, logits = run_forward(module, test_images, interpreter=interpreter)
        curve.append(float(np.mean(np.argmax(logits, axis=1) == test_labels)))
    assert not np.array_equal(device["eval_output_q_before"], device["eval_output_q_after"])  # it learned
    np.testing.assert_array_equal(device["eval_output_q_after"], output_q)
    np.testing.assert_array_equal(device["eval_logits_after"], logits)
    assert device["eval_accuracy_curve"].tolist() == [[0, curve[0]], [10, curve[1]], [20, curve[2]], [25, curve[3]]]
    np.testing.assert_allclose(device["loss"], np.concatenate(losses), rtol=1e-4)
    for name, value in params.items():  # DESIGN.md "Numerics": fp32 masters within 1e-4 relative
        scale = max(float(np.abs(value).max()), 1e-6)
        assert np.abs(device[f"param/{name}"].astype(np.float64) - value).max() <= 1e-4 * scale, name

    code, _, err = run_cli([str(firmware), "--inputs", str(task), "--eval", "same", "--steps", "0", "-o",
                            str(tmp_path / "zero.npz")], capsys)
    assert code == 0, err
    separate = tmp_path / "test.npz"
    np.savez(separate, image=test_images, label=test_labels)
    code, _, err = run_cli([str(firmware), "--entry", "forward", "--inputs", str(separate), "-o",
                            str(tmp_path / "forward.npz")], capsys)
    assert code == 0, err
    with np.load(tmp_path / "zero.npz") as zero, np.load(tmp_path / "forward.npz") as forward:
        for when in ("before", "after"):  # no steps: both passes equal the plain forward run
            np.testing.assert_array_equal(zero[f"eval_output_q_{when}"], forward["output_q"])
            np.testing.assert_array_equal(zero[f"eval_logits_{when}"], forward["logits"])
        np.testing.assert_array_equal(zero["eval_output_q_before"], device["eval_output_q_before"])
        assert zero["loss"].shape == (0,)
