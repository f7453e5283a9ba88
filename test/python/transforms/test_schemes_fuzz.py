"""The schemes.json reader (`parse_scheme("FILE.json#MODEL/BUDGET")`) under fuzzed JSON: any value
(nested objects and arrays, strings for numbers, floats, booleans, null, Infinity/NaN, duplicate keys,
deep nesting) in any place of the file ends in an `UpdateScheme` that resolves on a real network or
raises a `SchemeError`, with one line naming the scheme."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from testpaths import LIT_INPUTS

from qtrain.dialects.qtrain.contract import FORWARD, find_func
from qtrain.interpreter import load_module
from qtrain.transforms.schemes import SchemeError, UpdateScheme, network_layers, parse_scheme

LAYERS = network_layers(find_func(load_module(LIT_INPUTS / "tiny_model.mlir"), FORWARD))  # type: ignore[arg-type]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=4),
                    st.sampled_from(["3", "0.5", "1e3"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                      max_leaves=12)
numbers = st.one_of(st.integers(-3, 8), st.floats(-1, 2, allow_nan=False), st.booleans(), st.text(max_size=2))
entries = st.fixed_dictionaries({}, optional={
    "n_bias_update": st.one_of(numbers, values),
    "manual_weight_idx": st.one_of(st.lists(numbers, max_size=5), values),
    "weight_update_ratio": st.one_of(st.lists(numbers, max_size=5), values),
})


@st.composite
def scheme_files(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(["entry", "budgets", "models", "anything", "special"]))
    if shape == "entry":
        return json.dumps({"m": {"b": draw(entries)}})
    if shape == "budgets":
        return json.dumps({"m": draw(st.dictionaries(st.sampled_from(["b", "c"]), st.one_of(entries, values)))})
    if shape == "models":
        return json.dumps(draw(st.dictionaries(st.sampled_from(["m", "_about", "x"]), values)))
    if shape == "anything":
        return json.dumps(draw(values))
    return draw(st.sampled_from([
        '{"m": {"b": {"n_bias_update": 1, "manual_weight_idx": [0], "weight_update_ratio": [Infinity]}}}',
        '{"m": {"b": {"n_bias_update": NaN, "manual_weight_idx": [], "weight_update_ratio": []}}}',
        '{"m": {"b": {"n_bias_update": 1, "n_bias_update": 1, "manual_weight_idx": [], "weight_update_ratio": []}}}',
        "[" * 50000 + "]" * 50000, '{"m": {"b": ' + "{" * 3000, "", "\x00\xff", '{"m": {"b": 1}}',
    ]))


@FUZZ
@given(text=scheme_files())
def test_fuzz_scheme_reader_accepts_or_raises_a_clean_error(text: str, tmp_path_factory: pytest.TempPathFactory):
    path: Path = tmp_path_factory.mktemp("scheme", numbered=True) / "s.json"
    path.write_text(text, errors="surrogateescape")
    spec = f"{path}#m/b"
    try:
        scheme = parse_scheme(spec)
        assert isinstance(scheme, UpdateScheme)
        chosen = scheme.resolve(LAYERS)
    except SchemeError as e:
        assert str(e) and "\n" not in str(e)
        return
    entry = json.loads(text)["m"]["b"]
    assert isinstance(entry["n_bias_update"], int) and not isinstance(entry["n_bias_update"], bool)
    assert len(set(entry["manual_weight_idx"])) == len(entry["manual_weight_idx"])
    assert all(0 <= r <= 1 for r in entry["weight_update_ratio"])
    assert LAYERS[-1].weight in chosen  # the classifier always trains
