"""The per-op profile: `qtrain-compile --profile` + `qtrain-run --profile` (lowering/profile.py,
tools/profile_report.py).

What must hold: every op with kernel calls gets one slot, named with its layer (schemes.json numbering)
and kind; the slots' MACs add up to the model's; the counts of a profiled run add up to the call's
measured total within 1%; instrumenting changes no result; an uninstrumented firmware has no trace of it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from testpaths import LIT_INPUTS

from qtrain.dialects.qtrain.contract import FORWARD, TRAIN_STEP, find_func
from qtrain.interpreter import load_module
from qtrain.lowering.emit_c import emit_model, profile_definitions
from qtrain.lowering.profile import IMAGE_COPY, LOGITS, profile_slots
from qtrain.targets.armv7em import build, protocol
from qtrain.transforms.pipeline import apply_passes, training_passes
from qtrain.transforms.schemes import layer_numbers

MODEL = LIT_INPUTS / "inverted_residual.mlir"
SCHEME = "last-k=2"
"""The expansion stays frozen, so one fused pointwise-depthwise op holds two layers."""


@pytest.fixture(scope="module")
def planned():  # noqa: ANN201
    module = load_module(MODEL)
    apply_passes(module, training_passes(SCHEME))
    return module


def test_one_slot_per_op_with_calls_and_their_macs_add_up(planned) -> None:  # noqa: ANN001
    slots = profile_slots(planned)
    source, _ = emit_model(planned, profile=True)
    marks = [int(m) for m in re.findall(r"qtrain_profile_mark\((\d+)u\);", source)]
    assert marks == list(range(len(slots)))
    assert f"uint64_t qtrain_profile_counts[{len(slots)}];" in source
    macs = re.search(r"(\d+)ull, (\d+)ull,", source)
    assert macs is not None
    for entry, total in ((FORWARD, int(macs[1])), (TRAIN_STEP, int(macs[2]))):
        mine = [s for s in slots if s.entry == entry]
        assert mine[0].op == IMAGE_COPY
        assert sum(s.macs for s in mine) == total > 0
    assert slots[len([s for s in slots if s.entry == FORWARD]) - 1].op == LOGITS


def test_layers_and_kinds(planned) -> None:  # noqa: ANN001
    slots = [s for s in profile_slots(planned) if s.entry == TRAIN_STEP]
    layer_of = layer_numbers(find_func(planned, TRAIN_STEP))  # type: ignore[arg-type]
    layers = sorted(set(layer_of.values()))
    kinds = [s.kind for s in slots]
    # forward first (up to the loss), then backward and updates only
    loss = next(i for i, s in enumerate(slots) if s.op == "cross_entropy")
    assert set(kinds[:loss + 1]) == {"forward"} and "forward" not in kinds[loss + 1:]
    fused = [s for s in slots if s.op == "fused_pointwise_depthwise"]
    assert len(fused) == 1 and len(fused[0].layers) == 2
    forward_convs = [s for s in slots[:loss] if s.op in ("conv2d", "fused_pointwise_depthwise")]
    assert sorted(x for s in forward_convs for x in s.layers) == layers
    # every gradient op of the trained layers names one of them
    trained = {layer_of[n] for n in layer_of if "weight" in n or "bias" in n}
    for s in slots[loss + 1:]:
        if s.op.startswith(("conv2d_weight_grad", "bias_grad", "conv2d_input_grad")):
            assert len(s.layers) == 1 and s.layers[0] in trained, s
    assert any(s.op.endswith("+update") for s in slots)


def test_without_profile_the_c_has_no_instrumentation(planned) -> None:  # noqa: ANN001
    plain, _ = emit_model(planned)
    assert "qtrain_profile" not in plain
    instrumented, _ = emit_model(planned, profile=True)
    # the same program plus the slot definitions and the counter reads
    block = "\n".join(profile_definitions(len(profile_slots(planned))))
    assert block in instrumented
    stripped = instrumented.replace(block + "\n", "")
    assert [line for line in stripped.splitlines() if "qtrain_profile" not in line] == plain.splitlines()


needs_qemu = pytest.mark.skipif(not build.have_tools("clang", "ld.lld", "qemu-system-arm"),
                                reason="clang, ld.lld and qemu-system-arm are needed")


def tool(name: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"qtrain.tools.{name}", *(str(a) for a in args)],
                          capture_output=True, text=True, timeout=600)


@needs_qemu
@pytest.mark.parametrize("target", ["qemu", "host"])
def test_profiled_run_adds_up_and_changes_nothing(target: str, tmp_path: Path) -> None:
    firmware_name = "firmware.elf" if target == "qemu" else "firmware"
    for name, extra in (("plain", []), ("profiled", ["--profile"])):
        result = tool("qtrain_compile", MODEL, "--scheme", SCHEME, "--target", target, "-o", tmp_path / name, *extra)
        assert result.returncode == 0, result.stderr
    assert not (tmp_path / "plain" / "profile.json").exists()
    assert build.elf_symbol_bytes(tmp_path / "plain" / firmware_name, "qtrain_profile_slots") is None
    rng = np.random.default_rng(1)
    npz = tmp_path / "in.npz"
    np.savez(npz, image=rng.integers(-128, 128, (3, 16, 16, 3), dtype=np.int8), label=np.array([0, 2, 1]))

    runs = {}
    for name in ("plain", "profiled"):
        extra = ["--profile", "--profile-chart", tmp_path / "profile.png"] if name == "profiled" else []
        result = tool("qtrain_run", tmp_path / name / firmware_name, "--inputs", npz, "--steps", "3", "--json",
                      "-o", tmp_path / f"{name}.npz", *extra)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads(result.stdout)
        with np.load(tmp_path / f"{name}.npz") as out:
            runs[name]["npz"] = dict(out)
    plain, profiled = runs["plain"], runs["profiled"]
    assert plain["loss"] == profiled["loss"]
    for key, value in plain["npz"].items():
        if key.startswith("param/"):
            np.testing.assert_array_equal(profiled["npz"][key], value)
    assert "profile" not in plain

    unit = "instructions" if target == "qemu" else "host_ns"
    slots = json.loads((tmp_path / "profiled" / "profile.json").read_text())["slots"]
    for entry in ("train_step", "forward"):
        report = profiled["profile"][entry]
        assert report["unit"] == unit
        counts = [row[unit] for row in report["ops"]]
        assert len(counts) == sum(1 for s in slots if s["entry"] == entry)
        assert sum(counts) == report["ops_total"] <= report["total"]
        assert report["ops_total"] >= 0.99 * report["total"]
        assert report["macs"] == sum(row["macs"] for row in report["ops"]) > 0
        convs = [row for row in report["ops"] if row["macs"]]
        assert all(row[unit] > 0 for row in convs)
        by_kind = report["by_kind"]
        assert sum(k[unit] for k in by_kind.values()) == report["ops_total"]
    if target == "qemu":
        # instrumenting costs one counter read per op: a few dozen instructions each
        assert profiled["profile"]["train_step"]["total"] == profiled["instructions_per_step"][-1]
        extra = profiled["instructions_per_step"][-1] - plain["instructions_per_step"][-1]
        assert 0 < extra <= 80 * len(slots)
    assert (tmp_path / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = tool("qtrain_run", tmp_path / "profiled" / firmware_name, "--inputs", npz, "--steps", "1", "--profile")
    assert table.returncode == 0, table.stderr
    assert "profile of one training step" in table.stdout and "profile of one inference" in table.stdout
    assert re.search(r"fused_pointwise_depthwise +\d\+\d forward", table.stdout)

    refused = tool("qtrain_run", tmp_path / "plain" / firmware_name, "--inputs", npz, "--steps", "1", "--profile")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"qtrain-run: error: {tmp_path / 'plain' / firmware_name} has no per-op counters; compile it with "
        f"`qtrain-compile --profile`"]


def test_protocol_reads_the_profile_trailer() -> None:
    """A result with features bit 0 ends with the table; without the bit the same bytes
    are not a profile (and a reader that predates the profile ignores the trailer)."""
    header = list(protocol.RESULT_HEADER.unpack(bytes(protocol.RESULT_HEADER.size)))
    header[0] = protocol.RESULT_MAGIC
    # version, complete, mode 0, 1 record, 3 classes
    header[1:10] = [protocol.VERSION, 1, 0, 1, 3, 1, 0xFFFFFFFF, 0xFFFFFFFF, 0]
    record = np.zeros(1, protocol.infer_record(3))
    record["count"] = 1000
    table = np.array([10, 900, 60], "<u8").tobytes()
    header[-2:] = [protocol.FEATURE_PROFILE, 3]
    result = protocol.decode_result(protocol.RESULT_HEADER.pack(*header) + record.tobytes() + table)
    assert result.profile is not None and result.profile.tolist() == [10, 900, 60]
    assert result.counts.tolist() == [1000]
    header[-2:] = [0, 0]
    plain = protocol.decode_result(protocol.RESULT_HEADER.pack(*header) + record.tobytes())
    assert plain.profile is None
    header[-2:] = [protocol.FEATURE_PROFILE, 30]
    with pytest.raises(protocol.ProtocolError, match="profile table"):
        protocol.decode_result(protocol.RESULT_HEADER.pack(*header) + record.tobytes())
