"""Bad input, by class, through the tools as a user runs them: every case exits with status 2 and one
short line on stderr naming the input (never a traceback, never exit 0), and no tool writes over an
input, writes a different path than the one given, or leaves a half-done output behind.

Classes (issue 17): sizes; scheme JSON; options out of range; labels and input_q; files that are not
npz; IR that uses a value before defining it and buffers outside the arena; outputs; Ctrl-C and SIGTERM.
The ONNX class is in frontends/onnx/test_onnx_bad_input.py (with the importer's fuzz test); the other
property-based fuzz tests are test_files.py (npz reader), transforms/test_schemes_fuzz.py (scheme reader)
and dialects/test_load_module_fuzz.py (MLIR parser and verifiers, qtrain-opt).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from testpaths import LIT_INPUTS

from qtrain.targets.armv7em.build import have_tools
from qtrain.tools import qtrain_compile, qtrain_interpret, qtrain_opt, qtrain_run, qtrain_search_scheme

TINY = LIT_INPUTS / "tiny_model.mlir"
TINY_INPUT_Q = (0.0078125, 0)  # the @forward's qtrain.input_q

needs_clang = pytest.mark.skipif(not have_tools("clang"), reason="clang is not installed (Debian package 'clang')")


def cli(main: Callable[[list[str]], None], args: list[object], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return int(exit_info.value.code or 0), capsys.readouterr().err


def refused(main: Callable[[list[str]], None], args: list[object], capsys: pytest.CaptureFixture[str],
            *fragments: str) -> str:
    """Runs a tool that must refuse its input: exit 2, one line, the fragments in it, no traceback."""
    code, err = cli(main, args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].split(": error: ")[0].startswith("qtrain-"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny_inputs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "in.npz"
    np.savez(path, image=rng.integers(-128, 128, (3, 8, 8, 3), dtype=np.int8), label=np.array([0, 1, 2]))
    return path


@pytest.fixture(scope="module")
def trainable_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model with @train_step, planned (what qtrain-interpret --entry train_step runs)."""
    from qtrain.interpreter import load_module
    from qtrain.transforms.pipeline import apply_passes, training_passes

    module = load_module(TINY)
    apply_passes(module, training_passes("full"))
    path = tmp_path_factory.mktemp("trainable") / "tiny_train.mlir"
    path.write_text(str(module) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_model compiled for the host (its firmware carries qtrain_input_quant)."""
    if not have_tools("clang"):
        pytest.skip("clang is not installed (Debian package 'clang')")
    out = tmp_path_factory.mktemp("tiny_host") / "build"
    with pytest.raises(SystemExit) as exit_info:
        qtrain_compile.main([str(TINY), "--target", "host", "--scheme", "full", "-o", str(out)])
    assert exit_info.value.code in (0, None)
    return out / "firmware"


# ---- sizes: declared too large for memory, refused before anything is allocated ----

def npz_declaring(path: Path, shape: tuple[int, ...], dtype: str = "|i1", payload: bytes = b"\0" * 16) -> Path:
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    npy = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + payload
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("image.npy", npy)
        buffer = io.BytesIO()
        np.save(buffer, np.array([0]))
        archive.writestr("label.npy", buffer.getvalue())
    return path


def test_sizes_an_npz_declaring_a_huge_array(tmp_path: Path, capsys):
    huge = npz_declaring(tmp_path / "huge.npz", (10**12, 8, 8, 3))
    refused(qtrain_interpret.main, [TINY, "--inputs", huge, "-o", tmp_path / "o.npz"], capsys,
            "huge.npz", "'image' declares int8 [1000000000000, 8, 8, 3]", "more than the 1024 MB")


def test_sizes_ir_declaring_a_huge_tensor(tmp_path: Path, capsys):
    text = TINY.read_text().replace("qtrain.param @conv3.bias = dense<[100, -100, 0]> : tensor<3xi32>",
                                    "qtrain.param @conv3.bias = dense<1> : tensor<3000000000xi32>")
    path = tmp_path / "splat.mlir"
    path.write_text(text)
    refused(qtrain_opt.main, [path, "-p", "qtrain-autodiff"], capsys, "splat.mlir:", "shape 3000000000")
    refused(qtrain_interpret.main, [path, "--inputs", tmp_path / "x.npz", "-o", tmp_path / "o.npz"], capsys,
            "shape 3000000000")


def test_sizes_a_verified_tensor_limit():
    """Tensors the parser lets through (a dense attribute's declared type) are checked after parsing too."""
    from xdsl.utils.exceptions import VerifyException

    from qtrain.dialects import MAX_TENSOR_BYTES, load_module, verify_sizes

    module = load_module(TINY)
    verify_sizes(module)  # the real model passes
    assert MAX_TENSOR_BYTES == 1 << 30
    from xdsl.dialects.builtin import TensorType, i32

    from qtrain.dialects import tensor_bytes

    assert tensor_bytes(TensorType(i32, [1 << 28])) == 1 << 30
    assert tensor_bytes(TensorType(i32, [(1 << 28) + 1])) > MAX_TENSOR_BYTES
    with pytest.raises(VerifyException, match="more than the 1024 MB"):
        from xdsl.dialects.builtin import DenseIntOrFPElementsAttr

        op = next(o for o in module.ops if getattr(o, "sym_name", None) is not None
                  and o.sym_name.data == "conv3.bias")
        op.value = DenseIntOrFPElementsAttr.from_list(TensorType(i32, [(1 << 28) + 1]), [0])  # a splat
        verify_sizes(module)


# ---- scheme JSON of the wrong structure or types ----

SCHEME_CASES = [
    ("[1, 2]", "must hold an object"),
    ("null", "must hold an object"),
    ('{"m": [1]}', "'m' must be an object of budgets"),
    ('{"m": {"b": [1, 2]}}', "the scheme must be an object"),
    ('{"m": {"b": {"n_bias_update": "3", "manual_weight_idx": [0], "weight_update_ratio": [0.5]}}}',
     "n_bias_update must be a whole number"),
    ('{"m": {"b": {"n_bias_update": 2.5, "manual_weight_idx": [0], "weight_update_ratio": [0.5]}}}',
     "n_bias_update must be a whole number"),
    ('{"m": {"b": {"n_bias_update": true, "manual_weight_idx": [0], "weight_update_ratio": [0.5]}}}',
     "n_bias_update must be a whole number"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": ["0"], "weight_update_ratio": [0.5]}}}',
     "manual_weight_idx must be a list of layer indexes"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [1e30], "weight_update_ratio": [0.5]}}}',
     "manual_weight_idx must be a list of layer indexes"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0], "weight_update_ratio": [Infinity]}}}',
     "Infinity is not a number JSON allows"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0], "weight_update_ratio": [NaN]}}}',
     "NaN is not a number JSON allows"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0], "weight_update_ratio": ["0.5"]}}}',
     "weight_update_ratio must be a list of numbers in [0, 1]"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0, 0], "weight_update_ratio": [0.5, 1]}}}',
     "lists layer 0 twice"),
    ('{"m": {"b": {"n_bias_update": 1, "n_bias_update": 2, "manual_weight_idx": [], "weight_update_ratio": []}}}',
     "appears twice"),
    ('{"m": {"b": {"manual_weight_idx": [], "weight_update_ratio": []}}}', "has no n_bias_update"),
    ('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0], "weight_update_ratio": []}}}', "differ in length"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ('{"m": ' + "[" * 100000 + "]" * 100000 + "}", "nested too deeply"),
]


@pytest.mark.parametrize("text, message", SCHEME_CASES, ids=[f"case{i}" for i in range(len(SCHEME_CASES))])
def test_scheme_json_of_the_wrong_structure_or_types(text: str, message: str, tmp_path: Path):
    from qtrain.transforms.schemes import SchemeError, parse_scheme

    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(SchemeError) as error:
        parse_scheme(f"{path}#m/b")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_scheme_json_through_qtrain_compile(tmp_path: Path, capsys):
    path = tmp_path / "s.json"
    path.write_text('{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0, 0], "weight_update_ratio": [1, 1]}}}')
    refused(qtrain_compile.main, [TINY, "--scheme", f"{path}#m/b", "-o", tmp_path / "out"], capsys, "s.json#m/b",
            "lists layer 0 twice")
    assert not (tmp_path / "out").exists()


# ---- options out of range ----

@pytest.mark.parametrize("option, value, message", [
    ("--lr", "1e39", "1e39 is out of range: a learning rate (a float32) must be > 0 and <= 3.40282e+38"),
    ("--lr", "1e-50", "a learning rate must be a positive float32"),
    ("--lr", "nan", "nan is out of range"),
    ("--bias-lr", "-0.1", "-0.1 is out of range"),
    ("--sram-kb", "0", "an SRAM budget in KB must be >= 1"),
    ("--num-classes", "1", "a number of classes must be >= 2 and <= 1000"),
])
def test_options_out_of_range_in_qtrain_compile(option: str, value: str, message: str, tmp_path: Path, capsys):
    refused(qtrain_compile.main, [TINY, option, value, "-o", tmp_path / "out"], capsys, f"argument {option}", message)


@pytest.mark.parametrize("option, value, message", [
    ("--budget-kb", "inf", "an SRAM budget in KB must be > 0 and <= 2097152"),
    ("--budget-kb", "nan", "nan is out of range"),
    ("--val-fraction", "1", "a validation share must be > 0 and < 1"),
    ("--seed", "-1", "a seed must be >= 0"),
])
def test_options_out_of_range_in_the_search(option: str, value: str, message: str, tmp_path: Path, capsys,
                                            tiny_inputs: Path):
    args = [TINY, "--data", tiny_inputs, "--budget-kb", "64", "-o", tmp_path / "s.json", option, value]
    refused(qtrain_search_scheme.main, args, capsys, f"argument {option}", message)


def test_options_out_of_range_of_the_other_tools(tmp_path: Path, capsys, tiny_inputs: Path):
    refused(qtrain_interpret.main, [TINY, "--inputs", tiny_inputs, "-o", tmp_path / "o.npz", "--entry", "train_step",
                                    "--steps", str(10**20)], capsys, "argument --steps", "<= 2147483647")
    refused(qtrain_opt.main, [TINY, "-p", "qtrain-autodiff{lr=1.0e39}"], capsys,
            "lr = 1e+39 is not a usable learning rate")
    refused(qtrain_run.main, [tmp_path / "f.elf", "--timeout", "nan"], capsys, "argument --timeout", "nan")
    refused(qtrain_run.main, [tmp_path / "f.elf", "--steps", str(2**32)], capsys, "argument --steps",
            "<= 4294967295")


# ---- labels: out of range, or wrapping when narrowed to int32; input_q that does not match ----

def test_labels_that_wrap_or_are_out_of_range(tmp_path: Path, capsys, trainable_tiny: Path):
    images = np.zeros((2, 8, 8, 3), np.int8)
    wrapping = tmp_path / "wrap.npz"
    np.savez(wrapping, image=images, label=np.array([0, 2**32 + 1]))  # int32(2^32 + 1) would be class 1
    out_of_range = tmp_path / "range.npz"
    np.savez(out_of_range, image=images, label=np.array([0, 3]))
    for data, message in ((wrapping, "'label' holds 4294967297, which is not a class index"),
                          (out_of_range, "'label' must be class indices in [0, 3), got 0..3")):
        refused(qtrain_interpret.main, [trainable_tiny, "--entry", "train_step", "--steps", "1", "--inputs", data,
                                        "-o", tmp_path / "o.npz"], capsys, data.name, message)
        refused(qtrain_search_scheme.main, [TINY, "--data", data, "--budget-kb", "64", "-o", tmp_path / "s.json"],
                capsys, data.name, message)
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "s.json").exists()


def test_input_q_that_does_not_match_the_model(tmp_path: Path, capsys):
    images = np.zeros((2, 8, 8, 3), np.int8)
    cases = [(np.array([0.5, 3.0]), "quantized with scale 0.5 zero point 3 but the model's input is scale 0.0078125"),
             (np.array(["a", "b"]), "'input_q' must be two numbers"),
             (np.array([]), "'input_q' must be two numbers"),
             (np.array([np.nan, 0.0]), "'input_q' must be finite")]
    for i, (input_q, message) in enumerate(cases):
        data = tmp_path / f"q{i}.npz"
        np.savez(data, image=images, label=np.array([0, 1]), input_q=input_q)
        refused(qtrain_interpret.main, [TINY, "--inputs", data, "-o", tmp_path / "o.npz"], capsys, message)
        refused(qtrain_search_scheme.main, [TINY, "--data", data, "--budget-kb", "64", "-o", tmp_path / "s.json"],
                capsys, message)
    matching = tmp_path / "ok.npz"
    np.savez(matching, image=images, label=np.array([0, 1]), input_q=np.array(TINY_INPUT_Q))
    assert cli(qtrain_interpret.main, [TINY, "--inputs", matching, "-o", tmp_path / "o.npz"], capsys)[0] == 0


@needs_clang
def test_qtrain_run_checks_labels_and_input_q_against_the_firmware(tmp_path: Path, capsys, tiny_host: Path):
    images = np.zeros((2, 8, 8, 3), np.int8)
    data = tmp_path / "d.npz"
    np.savez(data, image=images, label=np.array([0, 2**32 + 2]))
    refused(qtrain_run.main, [tiny_host, "--inputs", data, "--steps", "1"], capsys, "which is not a class index")
    np.savez(data, image=images, label=np.array([0, 7]))
    refused(qtrain_run.main, [tiny_host, "--inputs", data, "--steps", "1"], capsys, "must be class indices in [0, 3)")
    np.savez(data, image=images, label=np.array([0, 1]), input_q=np.array([0.25, 0.0]))
    refused(qtrain_run.main, [tiny_host, "--inputs", data, "--steps", "1"], capsys, "quantized with scale 0.25")
    np.savez(data, image=images, label=np.array([0, 1]))
    before = digest(data)
    refused(qtrain_run.main, [tiny_host, "--inputs", data, "-o", data], capsys, "refusing to write the output")
    refused(qtrain_run.main, [tiny_host, "--inputs", data, "--flash-image", data], capsys,
            "give the Flash image its own file")
    refused(qtrain_run.main, [tiny_host, "--inputs", data, "--flash-image", tiny_host], capsys,
            "give the Flash image its own file")
    assert digest(data) == before


# ---- files that are not npz, members that are not arrays, empty files ----

def not_npz_cases(tmp_path: Path) -> list[tuple[Path, str]]:
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    text = tmp_path / "text.npz"
    text.write_text("image,label\n1,2\n")
    member = tmp_path / "member.npz"
    with zipfile.ZipFile(member, "w") as archive:
        archive.writestr("image.txt", "not an array")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, image=np.array([{"a": 1}], dtype=object))
    truncated = npz_declaring(tmp_path / "truncated.npz", (4, 8, 8, 3), payload=b"\0" * 10)
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    return [(empty, "not an .npz archive"), (text, "not an .npz archive"),
            (member, "member 'image.txt' is not an array"), (pickled, "'image' holds Python objects"),
            (truncated, "'image' is truncated (10 of 768 bytes)"), (folder, "is a directory"),
            (tmp_path / "missing.npz", "no such")]


def test_files_that_are_not_npz(tmp_path: Path, capsys):
    for path, message in not_npz_cases(tmp_path):
        refused(qtrain_interpret.main, [TINY, "--inputs", path, "-o", tmp_path / "o.npz"], capsys, path.name, message)
        refused(qtrain_search_scheme.main, [TINY, "--data", path, "--budget-kb", "64", "-o", tmp_path / "s.json"],
                capsys, path.name, message)


def test_calibration_files_that_are_not_npz(tmp_path: Path, capsys):
    from qtrain.frontends.onnx import OnnxImportError, load_calibration

    for path, message in not_npz_cases(tmp_path):
        with pytest.raises(OnnxImportError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_calibration(path)


# ---- IR that uses a value before defining it; a planned buffer outside the arena ----

def test_ir_using_a_value_before_defining_it(tmp_path: Path, capsys, tiny_inputs: Path):
    lines = TINY.read_text().splitlines()
    use = next(i for i, line in enumerate(lines) if "%x2 = qtrain.conv2d" in line)
    definition = next(i for i, line in enumerate(lines) if "%w1 = qtrain.get_param" in line)
    lines[use], lines[definition] = lines[definition], lines[use]
    path = tmp_path / "use_before_def.mlir"
    path.write_text("\n".join(lines))
    message = "qtrain.conv2d: operand %w1 is used before it is defined"
    refused(qtrain_opt.main, [path], capsys, message)
    refused(qtrain_interpret.main, [path, "--inputs", tiny_inputs, "-o", tmp_path / "o.npz"], capsys, message)
    refused(qtrain_compile.main, [path, "-o", tmp_path / "out"], capsys, message)


def planned_ir() -> str:
    """The first module of the emit_c lit test: planned, with a 40-byte @train_step arena."""
    return (LIT_INPUTS.parent / "lowering" / "emit_c.mlir").read_text().split("// -----")[0]


def test_a_planned_buffer_outside_the_arena(tmp_path: Path, capsys):
    text = planned_ir()
    assert "qtrain.offsets = array<i64: 12>}" in text
    path = tmp_path / "outside.mlir"
    path.write_text(text.replace("qtrain.offsets = array<i64: 12>}", "qtrain.offsets = array<i64: 38>}", 1))
    refused(qtrain_opt.main, [path, "-t", "c"], capsys, "at arena offset 38", "ends past the 40-byte arena")
    path.write_text(text)
    assert cli(qtrain_opt.main, [path, "-t", "c", "-o", tmp_path / "model.c"], capsys)[0] == 0


@needs_clang
def test_the_bounds_checking_debug_build_catches_a_kernel_writing_past_the_arena(tmp_path: Path, capsys):
    """`qtrain-compile --bounds-check`: guard bands around the arena, checked when an entry point returns.
    The debug build runs the model as the normal one does; a write 3 bytes past the arena (put into the
    generated qtrain_infer, standing for an overrunning kernel) stops it with a message."""
    from qtrain.targets.armv7em.build import build_firmware, kernel_sources

    out = tmp_path / "build"
    assert cli(qtrain_compile.main, [TINY, "--target", "host", "--bounds-check", "-o", out], capsys)[0] == 0
    images = tmp_path / "in.npz"
    np.savez(images, image=np.zeros((1, 8, 8, 3), np.int8), label=np.array([0]))
    assert cli(qtrain_run.main, [out / "firmware", "--inputs", images, "--steps", "2"], capsys)[0] == 0
    source = (out / "model.c").read_text()
    infer = source.index("void qtrain_infer(")
    check = source.index("    QTRAIN_GUARDS_CHECK();", infer)
    overrun = "    { volatile int32_t past = 3; qtrain_arena[(int32_t)sizeof qtrain_arena - 1 + past] = 1; }\n"
    (out / "model.c").write_text(source[:check] + overrun + source[check:])
    firmware = build_firmware([out / "model.c", *kernel_sources()], tmp_path / "overrun", "host", include_dirs=[out],
                              defines=["QTRAIN_BOUNDS_CHECK"])
    process = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_run", str(firmware.path), "--inputs",
                              str(images)], capture_output=True, text=True, timeout=120)
    assert process.returncode == 1, process.stderr
    assert "a kernel wrote outside the arena or the scratch buffer (checked at generated code line" in process.stderr


# ---- outputs ----

def test_no_tool_writes_over_its_input(tmp_path: Path, capsys, tiny_inputs: Path):
    model = tmp_path / "model.mlir"
    model.write_text(TINY.read_text())
    before = {p: digest(p) for p in (model, tiny_inputs)}
    refused(qtrain_interpret.main, [model, "--inputs", tiny_inputs, "-o", tiny_inputs], capsys,
            f"refusing to write the output {tiny_inputs} over the input")
    refused(qtrain_interpret.main, [model, "--inputs", tiny_inputs, "-o", model], capsys, "refusing to write")
    refused(qtrain_opt.main, [model, "-o", model], capsys, f"refusing to write the output {model} over the input")
    refused(qtrain_compile.main, [model, "-o", tmp_path / "out", "--memory-report", model], capsys,
            "refusing to write the memory report")
    refused(qtrain_search_scheme.main, [model, "--data", tiny_inputs, "--budget-kb", "64", "-o", model], capsys,
            "refusing to write the schemes file")
    assert {p: digest(p) for p in (model, tiny_inputs)} == before


def test_outputs_go_to_exactly_the_path_given(tmp_path: Path, capsys, tiny_inputs: Path):
    out = tmp_path / "results"  # np.savez(path) would write results.npz
    assert cli(qtrain_interpret.main, [TINY, "--inputs", tiny_inputs, "-o", out], capsys)[0] == 0
    assert out.is_file() and not (tmp_path / "results.npz").exists()
    assert sorted(np.load(out).files) == ["logits", "output_q"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    refused(qtrain_interpret.main, [TINY, "--inputs", tiny_inputs, "-o", tmp_path / "no" / "such" / "o.npz"], capsys,
            "cannot write", "no/such/o.npz")


@needs_clang
def test_qtrain_compile_output_folder(tmp_path: Path, capsys):
    out = tmp_path / "build"
    args = [TINY, "--target", "host", "-o", out]
    assert cli(qtrain_compile.main, args, capsys)[0] == 0
    written = {p.name: digest(p) for p in out.iterdir()}
    assert {"model.mlir", "model.c", "model.h", "memory.json", "firmware", ".qtrain-compile"} <= set(written)
    # A failed compile (over budget) leaves the previous build exactly as it was, and nothing else.
    code, err = cli(qtrain_compile.main, [*args, "--sram-kb", "1"], capsys)
    assert code == 2 and "over the budget" in err.splitlines()[0]
    assert {p.name: digest(p) for p in out.iterdir()} == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]
    # Its own output is replaced; a folder with files it did not write is refused, unless --force.
    assert cli(qtrain_compile.main, [*args, "--scheme", "bias-only"], capsys)[0] == 0
    assert digest(out / "model.c") != written["model.c"]
    (out / "notes.txt").write_text("mine")
    refused(qtrain_compile.main, args, capsys, f"-o {out} holds files qtrain-compile did not write (notes.txt)",
            "--force")
    assert cli(qtrain_compile.main, [*args, "--force"], capsys)[0] == 0
    assert (out / "notes.txt").read_text() == "mine" and digest(out / "model.c") == written["model.c"]
    # An input inside the output folder is never replaced.
    refused(qtrain_compile.main, [out / "model.mlir", "--target", "host", "--force", "-o", out], capsys,
            "would replace the input")
    refused(qtrain_compile.main, [TINY, "-o", TINY], capsys, "exists and is not a folder")


# ---- Ctrl-C and SIGTERM ----

def interrupted(command: list[str], signum: int, after: float, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Runs a tool with TMPDIR in `tmp_path`, sends `signum` after `after` seconds (to the process group,
    as a terminal's Ctrl-C does), and returns the finished process."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    time.sleep(after)
    os.killpg(process.pid, signum)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@needs_clang
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_leaves_no_traceback_and_no_temporary_files(signum: int, tmp_path: Path):
    from testpaths import REPO

    from qtrain.targets.armv7em.build import build_firmware

    stub = REPO / "test" / "python" / "targets" / "armv7em" / "firmware" / "stub_model.c"
    hang = build_firmware([stub], tmp_path / "hang", "host", defines=["STUB_MISBEHAVE=2"]).path
    data = tmp_path / "in.npz"
    np.savez(data, image=np.zeros((2, 4, 4, 2), np.int8), label=np.array([0, 1]))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = interrupted([sys.executable, "-m", "qtrain.tools.qtrain_run", str(hang), "--inputs", str(data),
                           "--steps", "5", "-o", str(tmp_path / "o.npz")], signum, 4.0, temporary)
    assert (process.returncode, process.stderr) == (130, "qtrain-run: interrupted\n")
    assert list(temporary.iterdir()) == [] and not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_compile_leaves_the_folder_as_it_was(signum: int, tmp_path: Path):
    out = tmp_path / "build"
    process = interrupted([sys.executable, "-m", "qtrain.tools.qtrain_compile", str(TINY), "--target", "host", "-o",
                           str(out)], signum, 2.5, tmp_path)
    if process.returncode == 0:
        pytest.skip("the compile finished before the signal (a fast machine)")
    assert (process.returncode, process.stderr) == (130, "qtrain-compile: interrupted\n")
    # (the object cache, in TMPDIR, keeps whole objects only: build.object_cache_dir)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("qtrain-objects-")) == []


def test_an_over_budget_report_starts_with_one_summary_line(tmp_path: Path, capsys):
    code, err = cli(qtrain_compile.main, [TINY, "--sram-kb", "1", "-o", tmp_path / "out"], capsys)
    assert code == 2 and "Traceback" not in err
    first, *rest = err.splitlines()
    assert first.startswith("qtrain-compile: error: qtrain-plan-memory: needs ") and "over the budget of 1024" in first
    assert rest and all(line.startswith("  ") for line in rest)  # the breakdown, indented under it
