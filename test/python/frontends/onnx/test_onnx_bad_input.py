"""ONNX models the importer must refuse (issue 17's ONNX class), through `qtrain-import-onnx` as a user
runs it, and the importer under fuzzed models.

Each case breaks one thing of `small_cnn` (onnx_testing.py): a tensor of the wrong dtype, an attribute
that contradicts the tensors (kernel_shape vs the weight, auto_pad together with pads, Clip bounds that
are not finite scalars, negative BN variance), an output that is not logits, a shape too large for
memory. The fuzz test mutates attributes, initializer dtypes and shapes, input dims, Clip bounds and the
serialized bytes: `import_onnx` returns a module or raises `OnnxImportError`, never anything else.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx_testing import images, small_cnn
from xdsl.dialects.builtin import ModuleOp

from qtrain.frontends.onnx import OnnxImportError, import_onnx
from qtrain.tools import qtrain_import_onnx


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def set_attribute(model: onnx.ModelProto, node_name: str, name: str, value: object) -> None:
    target = node(model, node_name)
    kept = [a for a in target.attribute if a.name != name]
    del target.attribute[:]
    target.attribute.extend([*kept, helper.make_attribute(name, value)])


def with_array(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    initializer(model, name).CopyFrom(numpy_helper.from_array(value, name))


def broken(kind: str) -> onnx.ModelProto:
    model = small_cnn()
    if kind == "int64 weight":
        with_array(model, "w1", numpy_helper.to_array(initializer(model, "w1")).astype(np.int64))
    elif kind == "float64 variance":
        with_array(model, "v1", numpy_helper.to_array(initializer(model, "v1")).astype(np.float64))
    elif kind == "kernel_shape":
        set_attribute(model, "conv1", "kernel_shape", [5, 5])
    elif kind == "auto_pad with pads":
        set_attribute(model, "conv1", "auto_pad", "SAME_UPPER")
    elif kind == "Clip NaN":
        with_array(model, "lo", np.array(np.nan, np.float32))
    elif kind == "Clip infinity":
        with_array(model, "hi", np.array(np.inf, np.float32))
    elif kind == "Clip vector":
        with_array(model, "hi", np.array([6.0, 5.0], np.float32))
    elif kind == "negative variance":
        with_array(model, "v1", -np.ones(8, np.float32))
    elif kind == "NaN weight":
        w = numpy_helper.to_array(initializer(model, "w3")).copy()
        w[0, 0, 0, 0] = np.nan
        with_array(model, "w3", w)
    elif kind == "not logits":
        names = ("gap", "flatten", "fc")
        kept = [n for n in model.graph.node if n.name not in names]
        del model.graph.node[:]
        model.graph.node.extend(kept)
        model.graph.output[0].CopyFrom(helper.make_tensor_value_info("ra", TensorProto.FLOAT, [1, 8, 4, 4]))
    elif kind == "huge input":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_value = dims[3].dim_value = 100000
    else:
        raise AssertionError(kind)
    return model


CASES = {
    "int64 weight": "W typestr: T, has unsupported type: tensor(int64)",
    "float64 variance": "var has inconsistent type tensor(double)",
    "kernel_shape": "Conv 'conv1': kernel_shape [5, 5] contradicts the weight's [3, 3]",
    "auto_pad with pads": "Conv 'conv1': auto_pad SAME_UPPER together with pads [1, 1, 1, 1]",
    "Clip NaN": "Clip 'relu6': min is nan; a Clip bound must be a finite number",
    "Clip infinity": "Clip 'relu6': max is inf",
    "Clip vector": "Clip 'relu6': max must be a scalar, got shape [2]",
    "negative variance": "var + epsilon must be positive",
    "NaN weight": "the weight holds NaN or infinite values",
    "not logits": "graph output 'ra' is [1, 8, 4, 4], not logits",
    "huge input": "input 'x' of shape [1, 1, 100000, 100000] is too large",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_onnx_models_are_refused_in_one_line(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "bad.onnx"
    onnx.save(broken(kind), path)
    calibration = tmp_path / "cal.npz"
    np.savez(calibration, image=images(4))
    with pytest.raises(SystemExit) as exit_info:
        qtrain_import_onnx.main([str(path), "--calibration", str(calibration), "-o", str(tmp_path / "out.mlir")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("qtrain-import-onnx: warning: ")]
    assert exit_info.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("qtrain-import-onnx: error: ") and CASES[kind] in lines[0], lines[0]
    assert not (tmp_path / "out.mlir").exists()


def test_the_unbroken_model_imports(tmp_path: Path):
    assert isinstance(import_onnx(small_cnn(), calibration=images(4), classifier=True), ModuleOp)


# ---- fuzz ----

ATTRIBUTES = ["kernel_shape", "pads", "strides", "group", "dilations", "auto_pad", "axis", "transB", "alpha",
              "epsilon", "ceil_mode", "count_include_pad"]
# Lists are never empty: onnx.helper.make_attribute cannot tell the type of [].
attribute_values = st.one_of(
    st.lists(st.integers(-3, 9), min_size=1, max_size=5), st.integers(-5, 20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET", "bogus"]),
)
dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.bool_])


@st.composite
def mutated_models(draw: st.DrawFn) -> onnx.ModelProto | bytes:
    model = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attribute", "dtype", "shape", "input", "value", "drop", "rewire", "bytes"]))
        if kind == "attribute":
            target = draw(st.sampled_from([n.name for n in model.graph.node]))
            set_attribute(model, target, draw(st.sampled_from(ATTRIBUTES)), draw(attribute_values))
        elif kind in ("dtype", "shape", "value"):
            tensor = draw(st.sampled_from(list(model.graph.initializer)))
            value = numpy_helper.to_array(tensor)
            if kind == "dtype":
                value = value.astype(draw(dtypes))
            elif kind == "shape":
                flat = value.reshape(-1)
                value = flat[:draw(st.integers(0, flat.size))].copy()
                if value.size and draw(st.booleans()):
                    value = value.reshape(1, -1)
            else:
                value = np.full(value.shape, draw(st.floats(allow_nan=True, allow_infinity=True, width=32)),
                                np.float32)
            with_array(model, tensor.name, value)
        elif kind == "input":
            dims = model.graph.input[0].type.tensor_type.shape.dim
            d = dims[draw(st.integers(0, len(dims) - 1))]
            if draw(st.booleans()):
                d.dim_value = draw(st.integers(-2, 10**6))
            else:
                d.dim_param = "dynamic"
        elif kind == "drop":
            del model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]
        elif kind == "rewire":
            target = model.graph.node[draw(st.integers(0, len(model.graph.node) - 1))]
            names = [i.name for i in model.graph.initializer] + [o for n in model.graph.node for o in n.output] + ["x"]
            if target.input:
                target.input[draw(st.integers(0, len(target.input) - 1))] = draw(st.sampled_from(names))
        else:
            data = model.SerializeToString()
            cut = draw(st.integers(0, len(data)))
            return data[:cut] + draw(st.binary(max_size=8))
    return model


BASE = small_cnn()


@FUZZ
@given(model=mutated_models())
def test_fuzz_the_onnx_importer_succeeds_or_raises_a_clean_error(model: onnx.ModelProto | bytes,
                                                                tmp_path_factory: pytest.TempPathFactory):
    if isinstance(model, bytes):
        path = tmp_path_factory.mktemp("onnx", numbered=True) / "m.onnx"
        path.write_bytes(model)
        source: onnx.ModelProto | Path = path
    else:
        source = model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = import_onnx(source, calibration=images(2), classifier=True)
        except OnnxImportError as e:
            assert str(e) and "\n" not in str(e)
            return
    assert isinstance(module, ModuleOp)
    module.verify()
