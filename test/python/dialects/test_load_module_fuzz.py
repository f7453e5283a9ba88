"""`qtrain.dialects.load_module` (parser, verifiers, dominance and size checks) and `qtrain-opt` under
fuzzed IR: mutations of a real model (lines deleted, duplicated or swapped, numbers and names replaced,
text cut short, characters inserted) end in a verified module or a `ModelLoadError`, and qtrain-opt exits
with 0 or 2 and one error line, never a traceback."""

from __future__ import annotations

import re

import pytest
from fuzzing import FUZZ
from hypothesis import given, settings
from hypothesis import strategies as st
from testpaths import LIT_INPUTS
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects import ModelLoadError, load_module
from qtrain.tools import qtrain_opt

SOURCE = (LIT_INPUTS / "tiny_model.mlir").read_text()
LINES = SOURCE.splitlines()
NUMBER = re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?")
NAME = re.compile(r"%[a-z0-9_]+")
NAMES = sorted(set(NAME.findall(SOURCE)))
NUMBERS = st.one_of(st.integers(-2**40, 2**40).map(str), st.sampled_from(["0", "-1", "1e39", "nan", "4294967296",
                                                                        "3000000000", "0.5", "-0.0"]))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "name", "insert", "cut"]))
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "number":
            spans = [m.span() for m in NUMBER.finditer(lines[i])]
            if spans:
                start, end = draw(st.sampled_from(spans))
                lines[i] = lines[i][:start] + draw(NUMBERS) + lines[i][end:]
        elif kind == "name":
            spans = [m.span() for m in NAME.finditer(lines[i])]
            if spans:
                start, end = draw(st.sampled_from(spans))
                lines[i] = lines[i][:start] + draw(st.sampled_from(NAMES)) + lines[i][end:]
        elif kind == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.text(alphabet="{}()<>[],:=%@#\"x0123456789-. ", max_size=6)) \
                + lines[i][at:]
        else:
            text = "\n".join(lines)
            return text[:draw(st.integers(0, len(text)))]
        if not lines:
            return ""
    return "\n".join(lines)


@FUZZ
@given(text=mutated())
def test_fuzz_load_module_verifies_or_raises_a_clean_error(text: str):
    try:
        module = load_module(text + "\n{" if "{" not in text and "\n" not in text else text)
    except ModelLoadError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert isinstance(module, ModuleOp)
    module.verify()


@settings(FUZZ, max_examples=50)  # each example runs the whole tool: fewer, to stay fast
@given(text=mutated())
def test_fuzz_qtrain_opt_exits_0_or_2(text: str, tmp_path_factory: pytest.TempPathFactory,
                                     capsys: pytest.CaptureFixture[str]):
    path = tmp_path_factory.mktemp("opt", numbered=True) / "m.mlir"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        qtrain_opt.main([str(path), "-p", "qtrain-verify-quant-chain"])
    err = capsys.readouterr().err
    assert exit_info.value.code in (0, 2, None), err
    assert "Traceback" not in err
    if exit_info.value.code == 2:
        assert err.startswith("qtrain-opt: error: ")
        assert all(line.startswith("  at: ") for line in err.splitlines()[1:]), err


def test_a_string_literal_cut_short_is_refused_before_xdsl_lexes_it():
    # xDSL 0.74's string regex backtracks exponentially on this (hours); check_string_literals is linear.
    text = 'builtin.module {\n  "test.op"() {value = dense<"0x' + "0A" * 20 + '> : tensor<20xi8>} : () -> ()\n}\n'
    with pytest.raises(ModelLoadError, match=":2: a string literal does not end on its line"):
        load_module(text)
    with pytest.raises(ModelLoadError, match="does not end before the end of the file"):
        load_module('builtin.module {\n  "test.op')
