"""Sparse update + dead-gradient elimination on the paper's 15 schemes (3 models x 5 budgets)."""

from __future__ import annotations

import json
import math
from functools import cache

import pytest
from testpaths import MODELS, require_shared_models
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation
from xdsl.utils.exceptions import PassFailedException

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    ChannelSliceOp,
    Conv2DInputGradOp,
    Conv2DOp,
    Conv2DWeightGradOp,
    ParamOp,
    SGDUpdateOp,
)
from qtrain.transforms.autodiff import AutodiffPass
from qtrain.transforms.dead_gradient_elim import DeadGradientElimPass
from qtrain.transforms.sparse_update import SparseUpdatePass

SCHEMES_FILE = MODELS / "schemes.json"
MODEL_NAMES = ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"]


@cache
def autodiffed(model: str) -> ModuleOp:
    from qtrain.frontends.tiny_training import import_tiny_training

    module = import_tiny_training(MODELS / f"{model}.pkl", num_classes=10)
    AutodiffPass().apply(Context(), module)
    return module


def schemes() -> list[tuple[str, str]]:
    if not SCHEMES_FILE.is_file():
        return [("missing", "missing")]
    data = json.loads(SCHEMES_FILE.read_text())
    return [(m, b) for m in MODEL_NAMES for b in data[m]]


def pruned(model: str, budget: str) -> ModuleOp:
    module = autodiffed(model).clone()
    ctx = Context()
    SparseUpdatePass(scheme=f"{SCHEMES_FILE}#{model}/{budget}").apply(ctx, module)
    DeadGradientElimPass().apply(ctx, module)
    module.verify()
    return module


def train_step(module: ModuleOp) -> func.FuncOp:
    return next(o for o in module.ops if isinstance(o, func.FuncOp) and o.sym_name.data == "train_step")


def expected_trainable(module: ModuleOp, entry: dict) -> dict[str, tuple[int, int] | None]:
    """The scheme's trainable set, derived from schemes.json's rules and the parameter shapes alone."""
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp)}
    n_layers = sum(1 for name in params if name.endswith(".weight"))
    classifier = n_layers - 1
    expected: dict[str, tuple[int, int] | None] = {
        f"conv{classifier}.weight": None,
        f"conv{classifier}.bias": None,
    }
    for layer in range(classifier - entry["n_bias_update"], classifier):
        expected[f"conv{layer}.bias"] = None
    for layer, ratio in zip(entry["manual_weight_idx"], entry["weight_update_ratio"], strict=True):
        if ratio == 0:
            continue
        shape = params[f"conv{layer}.weight"].tensor_type.get_shape()
        c_in = shape[0] if shape[3] == 1 else shape[3]  # depthwise weights slice their groups
        k = math.ceil(ratio * c_in)
        expected[f"conv{layer}.weight"] = None if k == c_in else (0, k)
    return expected


def backward_cone(function: func.FuncOp) -> set[Operation]:
    """Every op some update or the returned loss depends on."""
    roots = [op for op in function.walk() if isinstance(op, SGDUpdateOp | func.ReturnOp)]
    seen: set[Operation] = set()
    stack = list(roots)
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        seen.add(op)
        stack.extend(o.owner for o in op.operands if isinstance(o.owner, Operation))
    return seen


@pytest.mark.parametrize("model, budget", schemes())
def test_scheme_updates_exactly_its_trainable_set(model: str, budget: str):
    require_shared_models()
    entry = json.loads(SCHEMES_FILE.read_text())[model][budget]
    module = pruned(model, budget)
    fn = train_step(module)
    updates = {u.param.root_reference.data: u for u in fn.walk() if isinstance(u, SGDUpdateOp)}
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp)}
    expected = expected_trainable(module, entry)

    assert set(updates) == set(expected)
    assert {n for n, p in params.items() if p.is_trainable} == set(expected)
    for name, channels in expected.items():
        assert params[name].trainable_slice() == channels, name
        assert updates[name].grad.type.get_shape() == params[name].trainable_shape()

    # Nothing outside the backward cone of the updates (and of the loss) survives.
    cone = backward_cone(fn)
    assert [op.name for op in fn.walk() if op is not fn and op not in cone] == []
    # No saved mask that no gradient reads.
    for op in fn.walk():
        if isinstance(op, Conv2DOp | AddOp | AvgPoolOp) and op.mask is not None:
            assert op.mask.uses, f"unused mask on {op.name}"
    # A partially trained weight's gradient reads only the saved slice of its input.
    for name, channels in expected.items():
        grad_op = updates[name].grad.owner
        if channels is not None:
            assert isinstance(grad_op, Conv2DWeightGradOp)
            saved = grad_op.input.owner
            assert isinstance(saved, ChannelSliceOp) and saved.bounds() == channels
            assert grad_op.input.type.get_shape()[3] == channels[1] - channels[0]
    # Input gradients stop at the earliest trained layer: none of them feeds a layer below it.
    earliest = min(int(n[4:].split(".")[0]) for n in expected)
    convs = [op for op in fn.walk() if isinstance(op, Conv2DOp)]
    input_grads = [op for op in fn.walk() if isinstance(op, Conv2DInputGradOp)]
    weights_with_input_grad = {g.weight for g in input_grads}
    for layer, conv in enumerate(convs):
        if layer <= earliest:
            assert conv.weight not in weights_with_input_grad, f"input gradient through conv{layer}"


def test_mcunet_49kb_matches_reference_graph():
    """schemes.json `_about`: the reference's compiled mcunet-5fps 49kb graph."""
    require_shared_models()
    module = pruned("mcunet-5fps", "49kb")
    fn = train_step(module)
    assert sum(isinstance(op, Conv2DInputGradOp) for op in fn.walk()) == 20
    assert sum(isinstance(op, Conv2DWeightGradOp) for op in fn.walk()) == 4
    params = {p.sym_name.data: p for p in module.ops if isinstance(p, ParamOp) and p.is_trainable}
    assert set(params) == {"conv42.weight", "conv42.bias"} | {f"conv{i}.bias" for i in range(22, 42)} | {
        "conv24.weight", "conv27.weight", "conv30.weight"}
    assert params["conv24.weight"].trainable_slice() == (0, 12)
    assert params["conv27.weight"].trainable_slice() == (0, 24)
    assert params["conv30.weight"].trainable_slice() == (0, 24)
    assert all(params[f"conv{i}.weight"].tensor_type.get_shape()[3] == 48 for i in (24, 27, 30))


def test_bias_only_and_last_k_on_mcunet():
    require_shared_models()
    ctx = Context()
    bias_only = autodiffed("mcunet-5fps").clone()
    SparseUpdatePass(scheme="bias-only").apply(ctx, bias_only)
    DeadGradientElimPass().apply(ctx, bias_only)
    fn = train_step(bias_only)
    assert sum(isinstance(op, Conv2DWeightGradOp) for op in fn.walk()) == 1  # the classifier
    assert sum(isinstance(op, SGDUpdateOp) for op in fn.walk()) == 43 + 1  # 43 biases + classifier weight
    # Every bias down to conv0 learns, so input gradients reach conv1 but never conv0 (the image).
    assert sum(isinstance(op, Conv2DInputGradOp) for op in fn.walk()) == 42

    last2 = autodiffed("mcunet-5fps").clone()
    SparseUpdatePass(scheme="last-k", k=2).apply(ctx, last2)
    DeadGradientElimPass().apply(ctx, last2)
    fn = train_step(last2)
    names = sorted(u.param.root_reference.data for u in fn.walk() if isinstance(u, SGDUpdateOp))
    assert names == ["conv41.bias", "conv41.weight", "conv42.bias", "conv42.weight"]
    assert sum(isinstance(op, Conv2DInputGradOp) for op in fn.walk()) == 1


# -- typed schemes ----------------------------------------------------------------------------------------


def test_typed_scheme_gives_the_graph_of_its_schemes_json_entry():
    """A per-layer `UpdateScheme` given in Python (no file) makes the pipeline build exactly the IR that the
    same entry read from a schemes.json file does; the pass's command-line option stays a string."""
    from testpaths import LIT_INPUTS

    from qtrain.interpreter import load_module
    from qtrain.tools.qtrain_opt import qtrain_pass_summary
    from qtrain.transforms.pipeline import apply_passes, training_passes
    from qtrain.transforms.schemes import SchemeError, UpdateScheme, network_layers, parse_scheme

    text = (LIT_INPUTS / "tiny_model.mlir").read_text()
    file = LIT_INPUTS / "tiny_schemes.json"
    entries = json.loads(file.read_text())["tiny"]
    for budget in ("half", "pointwise"):
        entry = entries[budget]
        typed = UpdateScheme.per_layer(entry["n_bias_update"],
                                       dict(zip(entry["manual_weight_idx"], entry["weight_update_ratio"], strict=True)))
        from_file = apply_passes(load_module(text), training_passes(f"{file}#tiny/{budget}"))
        from_object = apply_passes(load_module(text), training_passes(typed))
        assert str(from_object) == str(from_file), budget
        layers = network_layers(train_step(from_file))
        assert typed.resolve(layers) == parse_scheme(f"{file}#tiny/{budget}").resolve(layers)
    # a typed scheme given to the pass directly; the object is not a pass option
    sparse = SparseUpdatePass.from_scheme(UpdateScheme.per_layer(1, {2: 0.25}, "my scheme"))
    assert sparse.scheme == "my scheme" and sparse.update_scheme is not None
    assert set(sparse.spec(include_default=True).parameters) == {"scheme", "k"}
    assert "update-scheme" not in qtrain_pass_summary()
    # a parsed spec and the same spec given as an object train the same
    named = apply_passes(load_module(text), training_passes("last-k=2"))
    assert str(apply_passes(load_module(text), training_passes(parse_scheme("last-k=2")))) == str(named)
    with pytest.raises(SchemeError, match="within \\[0, 1\\]"):
        UpdateScheme.per_layer(0, {1: 1.5})
    with pytest.raises(PassFailedException, match="my scheme: n_bias_update = 7"):
        module = load_module(text)
        AutodiffPass().apply(Context(), module)
        SparseUpdatePass.from_scheme(UpdateScheme.per_layer(7, {}, "my scheme")).apply(Context(), module)
