"""The static memory plan, checked by an independent verifier over the planned schedule."""

from __future__ import annotations

import json
import math
from functools import cache

import pytest
from testpaths import LIT_INPUTS, MODELS, require_shared_models
from xdsl.dialects import func
from xdsl.dialects.builtin import BFloat16Type, IntegerType, ModuleOp, TensorType
from xdsl.ir import Operation, SSAValue

from qtrain.dialects.qtrain import (
    Conv2DInputGradOp,
    Conv2DOp,
    GetParamOp,
    GradAccumulateOp,
    GradConvertOp,
    ParamOp,
    RequantGradOp,
    ReshapeOp,
    SGDUpdateOp,
)
from qtrain.dialects.qtrain.contract import ARENA_BYTES, MEMORY, OFFSETS, SCRATCH_GAP
from qtrain.interpreter import load_module
from qtrain.targets.armv7em.kernels import in_place_alignment, input_grad_in_place_alignment, small_k_in_place_gap
from qtrain.transforms.pipeline import apply_passes, training_passes


def value_bytes(v: SSAValue) -> int:
    t = v.type
    if not isinstance(t, TensorType):
        return 0
    n = math.prod(t.get_shape())
    e = t.element_type
    if isinstance(e, IntegerType):
        return math.ceil(n / 8) if e.width.data == 1 else n * e.width.data // 8
    return 2 * n if isinstance(e, BFloat16Type) else 4 * n


def bf16_in_place_alignment(op: Operation) -> str | None:
    """Where a kernel reading or writing a bf16 gradient lets its result lie on its dying input
    (qtrain_kernels.h, the bf16 section): an element-wise format change, or the 1x1 input gradient (it
    keeps the current gradient row in scratch), at the same first byte when a result element (pixel)
    is not larger than an input element (pixel), else at the same last byte; the depthwise one (stride 1,
    gradient and result of one shape) at the same first byte; the generic input gradient never."""
    src, out = op.operands[0], op.results[0]
    if isinstance(op, Conv2DInputGradOp):
        c = out.type.get_shape()[3]
        if src.type == out.type and op.groups.value.data == c == op.weight.type.get_shape()[0]:
            return "head"  # depthwise at stride 1, "same": a ring of KH gradient rows in scratch
        pointwise = (tuple(src.type.get_shape()[1:3]) == tuple(out.type.get_shape()[1:3])
                     and tuple(op.weight.type.get_shape()[1:3]) == (1, 1) and op.groups.value.data == 1
                     and tuple(op.padding.get_values()) == (0, 0, 0, 0))
        if not pointwise:
            return None
        per_in, per_out = value_bytes(src) // math.prod(src.type.get_shape()[:3]), \
            value_bytes(out) // math.prod(out.type.get_shape()[:3])
    else:
        per_in, per_out = value_bytes(src) // src.type.element_count(), value_bytes(out) // out.type.element_count()
    return "head" if per_out <= per_in else "tail"


def has_bf16(op: Operation) -> bool:
    return any(isinstance(v.type, TensorType) and isinstance(v.type.element_type, BFloat16Type)
               for v in (*op.operands, *op.results))


def verify_plan(function: func.FuncOp) -> int:
    """Checks that no two simultaneously live values overlap in the arena; returns max(offset + size).

    Independent of the planner: lifetimes are recomputed from the schedule and the offsets recorded in
    the IR. A value is live from its definition to its last use. A reshape result, or the result of an
    elementwise op that the planner placed in its dying operand's bytes, shares its source's offset:
    such pairs are allowed to coincide exactly, nothing else may overlap.
    """
    ops = [o for o in function.body.block.ops if not isinstance(o, func.ReturnOp)]
    pos = {o: i for i, o in enumerate(ops)}
    offset: dict[SSAValue, int] = {}
    for arg in function.body.block.args:
        if value_bytes(arg):
            offset[arg] = 0  # set below from the first op that records it, see arena_args
    for op in ops:
        if OFFSETS in op.attributes:
            for r, off in zip(op.results, op.attributes[OFFSETS].get_values(), strict=True):
                if off >= 0:
                    offset[r] = off
    # The image argument: the planner records its offset on the function.
    if "qtrain.arg_offsets" in function.attributes:
        for a, off in zip(function.body.block.args, function.attributes["qtrain.arg_offsets"].get_values(),
                          strict=True):
            if off >= 0:
                offset[a] = off

    def last_use(v: SSAValue) -> int:
        return max((pos.get(u.operation, len(ops)) for u in v.uses), default=pos.get(v.owner, 0))

    intervals: list[tuple[int, int, int, int, SSAValue]] = []
    for v, off in offset.items():
        owner = v.owner
        start = pos[owner] if isinstance(owner, Operation) else 0
        end = last_use(v)
        for u in v.uses:  # a view keeps its source alive
            if isinstance(u.operation, ReshapeOp):
                end = max(end, last_use(u.operation.output))
        intervals.append((start, end, off, value_bytes(v), v))
    # Alias classes: a view or an in-place result placed exactly on its source joins the source's class.
    parent: dict[SSAValue, SSAValue] = {v: v for v in offset}

    def find(v: SSAValue) -> SSAValue:
        while parent[v] is not v:
            v = parent[v]
        return v

    for v in offset:
        owner = v.owner
        # The kernel library's in-place contract (qtrain_kernels.h "In place"): a conv's output may lie on
        # its dying input, an input gradient dL/dx on its dying dL/dy, at exactly one placement (the
        # small-K stem: starting G or more bytes before its input).
        src, alignment = None, None
        shapes = lambda *vs: (tuple(x.type.get_shape()) for x in vs)  # noqa: E731
        if isinstance(owner, Conv2DOp) and v is owner.output and owner.input in offset:
            src = owner.input
            alignment = in_place_alignment(*shapes(src, owner.weight, v), owner.strides.get_values(),
                                           owner.padding.get_values(), owner.groups.value.data)
        elif (isinstance(owner, Conv2DInputGradOp | RequantGradOp | GradConvertOp) and has_bf16(owner)
              and owner.operands[0] in offset
              and (isinstance(owner, Conv2DInputGradOp) or value_bytes(v) != value_bytes(owner.operands[0]))):
            src = owner.operands[0]
            alignment = bf16_in_place_alignment(owner)
        elif isinstance(owner, Conv2DInputGradOp) and v is owner.result and owner.grad in offset:
            src = owner.grad
            alignment = input_grad_in_place_alignment(*shapes(v, owner.weight, src), owner.strides.get_values(),
                                                      owner.padding.get_values(), owner.groups.value.data)
        if src is not None:
            head = offset[v] == offset[src]
            tail = offset[v] + value_bytes(v) == offset[src] + value_bytes(src)
            overlap = offset[v] < offset[src] + value_bytes(src) and offset[src] < offset[v] + value_bytes(v)
            gap = alignment == "gap" and overlap and offset[src] - offset[v] >= small_k_in_place_gap(
                *shapes(src, v), owner.strides.get_values(), owner.padding.get_values())
            if (alignment == "head" and head) or (alignment == "tail" and tail) or gap:
                assert last_use(src) <= pos[owner], f"{_describe(v)} overwrites {_describe(src)} still in use"
                parent[find(v)] = find(src)
            continue
        if isinstance(owner, ReshapeOp | RequantGradOp | GradAccumulateOp):
            src = owner.operands[0]
            if src in offset and offset[src] == offset[v]:
                if not isinstance(owner, ReshapeOp):  # in place: the source must be dead after this op
                    assert last_use(src) <= pos[owner], f"{_describe(v)} overwrites {_describe(src)} still in use"
                parent[find(v)] = find(src)
    for i, (s1, e1, o1, n1, v1) in enumerate(intervals):
        for s2, e2, o2, n2, v2 in intervals[i + 1:]:
            if s1 <= e2 and s2 <= e1 and o1 < o2 + n2 and o2 < o1 + n1:
                shared = find(v1) is find(v2)
                assert shared, f"{_describe(v1)} [{o1}, {o1 + n1}) and {_describe(v2)} [{o2}, {o2 + n2}) overlap"
    # A scratch gap (kernel scratch in the arena) must not touch any value live while its op runs.
    for op in ops:
        if SCRATCH_GAP in op.attributes:
            lo, size = op.attributes[SCRATCH_GAP].get_values()
            assert lo % 8 == 0 and size > 0
            for s, e, o, n, v in intervals:
                if s <= pos[op] <= e:
                    assert not (lo < o + n and o < lo + size), f"{op.name}'s scratch gap overlaps {_describe(v)}"
    return max((o + n for _, _, o, n, _ in intervals), default=0)


def scratch_gaps(module: ModuleOp) -> list[tuple[int, int]]:
    return [tuple(op.attributes[SCRATCH_GAP].get_values()) for f in module.ops if isinstance(f, func.FuncOp)
            for op in f.body.block.ops if SCRATCH_GAP in op.attributes]


def _describe(v: SSAValue) -> str:
    return f"%{v.name_hint or '?'} ({getattr(v.owner, 'name', 'argument')})"


def storage_bytes(p: ParamOp) -> int:
    shape = list(p.tensor_type.get_shape())
    if p.channels is not None:
        start, stop = p.channels.get_values()
        axis = 0 if len(shape) == 4 and shape[3] == 1 and shape[0] > 1 else 3
        shape[axis] = stop - start
    n = math.prod(shape)
    elem = p.storage if p.storage is not None else p.tensor_type.element_type
    size = n if elem == IntegerType(8) else 4 * n
    return (size + 3) // 4 * 4


@cache
def planned(model: str, scheme: str, reorder: bool, grad_precision: str = "f32", weight_storage: str = "f32"
            ) -> ModuleOp:
    from qtrain.frontends.tiny_training import import_tiny_training

    module = import_tiny_training(MODELS / f"{model}.pkl", num_classes=10)
    return apply_passes(module, training_passes(scheme, reorder=reorder, sram_kb=1 << 20,
                                                grad_precision=grad_precision, weight_storage=weight_storage))


def check_module(module: ModuleOp) -> dict[str, int]:
    memory = {k: v.value.data for k, v in module.attributes[MEMORY].data.items() if hasattr(v, "value")}
    arenas = []
    for f in module.ops:
        if isinstance(f, func.FuncOp) and ARENA_BYTES in f.attributes:
            used = verify_plan(f)
            assert used <= f.attributes[ARENA_BYTES].value.data
            arenas.append(f.attributes[ARENA_BYTES].value.data)
            assert used == f.attributes[ARENA_BYTES].value.data, "the arena is larger than what the plan uses"
    assert memory["arena_bytes"] == max(arenas)
    image_offsets = {f.attributes["qtrain.arg_offsets"].get_values()[0] for f in module.ops
                     if isinstance(f, func.FuncOp) and ARENA_BYTES in f.attributes}
    assert len(image_offsets) == 1, "the image must sit at one offset for every entry point"
    trainable = sum(storage_bytes(p) for p in module.ops if isinstance(p, ParamOp) and p.trainable is not None)
    # Training state: one uint32 step counter per schedule, one fp32 velocity per update with momentum.
    state = sum(4 if op.name == "qtrain.lr_schedule" else
                4 * math.prod(op.operands[0].type.get_shape()) if op.name == "qtrain.sgd_update"
                and "momentum" in op.properties else 0 for f in module.ops for op in f.walk())
    assert memory["state_bytes"] == state
    assert memory["trainable_bytes"] == trainable + state
    assert memory["peak_sram_bytes"] == memory["arena_bytes"] + trainable + state + memory["scratch_bytes"]
    for lo, size in scratch_gaps(module):  # inside the arena, and only where it beats the shared scratch
        assert lo + size <= memory["arena_bytes"] and size > memory["scratch_bytes"]
    return memory


def test_tiny_model_plan_verifies():
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    apply_passes(module, training_passes("full"))
    memory = check_module(module)
    assert memory["arena_bytes"] > 0


@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
@pytest.mark.parametrize("reorder", [False, True])
def test_reference_models_49kb_plans_verify(model: str, reorder: bool):
    require_shared_models()
    budget = "49kb"
    module = planned(model, f"{MODELS / 'schemes.json'}#{model}/{budget}", reorder)
    check_module(module)
    assert scratch_gaps(module), "no op got a scratch gap: the kernels run on the shared scratch alone"


def test_tiny_model_bf16_gradient_plan_verifies():
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    apply_passes(module, training_passes("full", grad_precision="bf16"))
    check_module(module)
    train = next(f for f in module.ops if isinstance(f, func.FuncOp) and f.sym_name.data == "train_step")
    assert any(has_bf16(op) for op in train.body.block.ops)


@pytest.mark.parametrize("model", ["mcunet-5fps", "mbv2-w0.35", "proxyless-w0.3"])
@pytest.mark.parametrize("scheme", ["49kb", "bias-only"])
def test_reference_models_bf16_gradient_plans_verify(model: str, scheme: str):
    """bf16 activation gradients (format-changing kernels in place, head or tail) pass the verifier, and
    plan below the fp32 gradients' figure."""
    require_shared_models()
    spec = scheme if scheme == "bias-only" else f"{MODELS / 'schemes.json'}#{model}/{scheme}"
    narrow = check_module(planned(model, spec, True, "bf16", "i8"))
    wide = check_module(planned(model, spec, True, "f32", "i8"))
    assert narrow["peak_sram_bytes"] < wide["peak_sram_bytes"]


def test_reorder_applies_updates_early_and_frees_gradients():
    require_shared_models()
    scheme = f"{MODELS / 'schemes.json'}#mcunet-5fps/49kb"
    naive = planned("mcunet-5fps", scheme, False)
    reordered = planned("mcunet-5fps", scheme, True)

    def train(m: ModuleOp) -> list[Operation]:
        f = next(o for o in m.ops if isinstance(o, func.FuncOp) and o.sym_name.data == "train_step")
        return list(f.body.block.ops)

    naive_ops, new_ops = train(naive), train(reordered)
    assert sorted(o.name for o in naive_ops) == sorted(o.name for o in new_ops)
    # naive: every update after the last gradient op; reordered: each right after its gradient
    first_update = min(i for i, o in enumerate(new_ops) if isinstance(o, SGDUpdateOp))
    last_input_grad = max(i for i, o in enumerate(new_ops) if o.name == "qtrain.conv2d_input_grad")
    assert first_update < last_input_grad
    naive_first = min(i for i, o in enumerate(naive_ops) if isinstance(o, SGDUpdateOp))
    assert all(not o.name.endswith("_grad") for o in naive_ops[naive_first:] if not isinstance(o, SGDUpdateOp))
    for i, o in enumerate(new_ops):
        if isinstance(o, SGDUpdateOp) and "qtrain.fused_update" in new_ops[i - 1].attributes:
            assert new_ops[i - 1].results[0] is o.grad
    # the in-place update may not precede a read of the parameter's old value
    for i, o in enumerate(new_ops):
        if isinstance(o, SGDUpdateOp):
            name = o.param.root_reference.data
            for later in new_ops[i + 1:]:
                for v in later.operands:
                    assert not (isinstance(v.owner, GetParamOp) and v.owner.param.root_reference.data == name)
    peak = lambda m: m.attributes[MEMORY].data["peak_sram_bytes"].value.data  # noqa: E731
    assert peak(reordered) < peak(naive)


def test_over_budget_error_lists_the_peak(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "m.mlir"
    out.write_text((LIT_INPUTS / "tiny_model.mlir").read_text())
    result = subprocess.run(
        [sys.executable, "-m", "qtrain.tools.qtrain_opt", str(out), "-p",
         "qtrain-autodiff,qtrain-reorder,qtrain-plan-memory{sram-kb=1}"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "qtrain-plan-memory: needs" in result.stderr and "over the budget of 1024" in result.stderr
    assert "live at the peak" in result.stderr and "Traceback" not in result.stderr


def test_memory_report_json(tmp_path):
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    report = tmp_path / "memory.json"
    apply_passes(module, training_passes("bias-only", memory_report=str(report)))
    data = json.loads(report.read_text())
    assert data["peak_sram_bytes"] == data["arena_bytes"] + data["trainable_bytes"] + data["scratch_bytes"]
    # The default recipe keeps one step counter and no momentum velocity.
    assert data["state"] == [{"name": "step", "dtype": "u32", "count": 1, "bytes": 4}]
    assert data["state_bytes"] == 4
    assert data["trainable_bytes"] == sum(t["bytes"] for t in data["trainable"]) + 4
    names = {t["name"]: t for t in data["trainable"]}
    assert set(names) == {"conv0.bias", "conv1.bias", "conv2.bias", "conv3.bias", "conv3.weight"}
    assert names["conv3.weight"] == {"name": "conv3.weight", "layer": 3, "kind": "weight", "shape": [3, 1, 1, 4],
                                     "channels": None, "storage": "f32", "bytes": 48}
    # The buffers the tools draw the plan from: every one inside the arena, kinds from the element types.
    buffers = data["buffers"]
    assert buffers and all(0 <= b["offset"] and b["offset"] + b["bytes"] <= data["arena_bytes"] for b in buffers)
    assert {b["kind"] for b in buffers} >= {"input", "activation", "gradient"}
    assert all(b["start"] <= b["end"] for b in buffers)


def test_mcunet_49kb_plan_is_below_the_reference_engine():
    """The reference engine's static SRAM for mcunet-5fps/49kb was 233,480 B (arena incl. scratch + trainable
    copies); our plan, with fp32 master copies of the trained weights, must stay below it."""
    require_shared_models()
    module = planned("mcunet-5fps", f"{MODELS / 'schemes.json'}#mcunet-5fps/49kb", True)
    memory = check_module(module)
    print(f"\nmcunet-5fps/49kb planned static SRAM: {memory['peak_sram_bytes']} B (reference engine 233,480 B): "
          f"arena {memory['arena_bytes']} + trainable {memory['trainable_bytes']} + scratch {memory['scratch_bytes']}")
    assert memory["peak_sram_bytes"] < 233_480


def test_an_op_the_kernels_cannot_run_fails_the_plan():
    """A trained 13x13 depthwise weight: its gradient kernel takes at most QTRAIN_MAX_DEPTHWISE_KERNEL, so the
    plan fails at compile time naming the op, instead of the firmware stopping at run time."""
    import numpy as np
    from qtrain_ir_builders import ModuleBuilder, avgpool_op, quant, random_conv_params, reshape_op, tensor
    from xdsl.utils.exceptions import PassFailedException

    from qtrain.targets.armv7em.kernels import MAX_DEPTHWISE_KERNEL

    rng = np.random.default_rng(0)
    k = MAX_DEPTHWISE_KERNEL + 2
    act = quant(0.05, -5)
    b = ModuleBuilder([tensor((1, 16, 16, 2))])
    w, s, bias = random_conv_params(rng, 2, k, k, 1, act.scale)
    x = b.conv(b.args[0], "dw", w, bias, input_q=act, weight_q=quant(s.tolist(), 0, 0), output_q=act,
               padding=(k // 2,) * 4, groups=2)
    x = b.add(avgpool_op(x, (16, 16), (1, 1), act, act))
    w, s, bias = random_conv_params(rng, 3, 1, 1, 2, act.scale)
    x = b.conv(x, "fc", w, bias, input_q=act, weight_q=quant(s.tolist(), 0, 0), output_q=quant(0.1, 0))
    module = b.build([b.add(reshape_op(x, (1, 3)))])
    with pytest.raises(PassFailedException, match="kernels cannot run qtrain.conv2d_weight_grad"):
        apply_passes(module, training_passes("full"))


def test_momentum_velocities_are_planned_and_counted(tmp_path):
    """With momentum every update keeps an fp32 velocity of its trainable shape: memory.json lists each as
    training state and counts it in trainable_bytes and the peak; the arena does not change."""
    module = load_module(LIT_INPUTS / "tiny_model.mlir")
    plain, with_momentum = tmp_path / "plain.json", tmp_path / "momentum.json"
    apply_passes(module.clone(), training_passes("bias-only", memory_report=str(plain)))
    apply_passes(module, training_passes("bias-only", momentum=0.9, memory_report=str(with_momentum)))
    before, after = json.loads(plain.read_text()), json.loads(with_momentum.read_text())
    velocity = {s["name"]: s["bytes"] for s in after["state"] if s["name"] != "step"}
    assert velocity == {f"velocity/{t['name']}": 4 * math.prod(t["shape"]) for t in after["trainable"]}
    assert after["state_bytes"] == 4 + sum(velocity.values())
    assert after["trainable_bytes"] == before["trainable_bytes"] + sum(velocity.values())
    assert after["peak_sram_bytes"] == before["peak_sram_bytes"] + sum(velocity.values())
    assert after["arena_bytes"] == before["arena_bytes"]
    check_module(module)


@cache
def mcunet_forward_text() -> str:
    from qtrain.frontends.tiny_training import import_tiny_training

    return str(import_tiny_training(MODELS / "mcunet-5fps.pkl", num_classes=10))


def test_weight_storages_are_counted_byte_for_byte(tmp_path):
    """mcunet-5fps/49kb: every trained weight's SRAM copy is 4 / 2 / 1 bytes per element (f32 / i16 / i8: an
    i16 master is its two int8 planes in one array), biases stay int32, nothing else changes but the scratch
    an fp32 master needs to convert; i8-nearest plans exactly as i8. Pins the figures docs/memory.md reports."""
    from qtrain.transforms.liveness import aligned

    require_shared_models()
    scheme = f"{MODELS / 'schemes.json'}#mcunet-5fps/49kb"
    reports = {}
    for storage in ("f32", "i16", "i8", "i8-nearest"):
        path = tmp_path / f"{storage}.json"
        apply_passes(load_module(mcunet_forward_text()),
                     training_passes(scheme, sram_kb=1 << 20, weight_storage=storage, memory_report=str(path)))
        reports[storage] = json.loads(path.read_text())
    per_element = {"f32": 4, "i16": 2, "i8": 1, "i8-nearest": 1}
    for storage, report in reports.items():
        assert report["peak_sram_bytes"] == report["arena_bytes"] + report["trainable_bytes"] + report["scratch_bytes"]
        assert sum(t["bytes"] for t in report["trainable"]) + report["state_bytes"] == report["trainable_bytes"]
        for t in report["trainable"]:
            n = math.prod(t["shape"])
            if t["kind"] == "weight":
                assert t["storage"] == ("i8" if storage == "i8-nearest" else storage)
                assert t["bytes"] == aligned(per_element[storage] * n)
            else:
                assert (t["storage"], t["bytes"]) == ("i32", aligned(4 * n))
        assert report["arena_bytes"] == reports["f32"]["arena_bytes"]
    assert reports["i8-nearest"] == reports["i8"]
    assert reports["i16"]["scratch_bytes"] == reports["i8"]["scratch_bytes"] <= reports["f32"]["scratch_bytes"]
    peaks = {s: r["peak_sram_bytes"] for s, r in reports.items()}
    assert peaks == {"f32": 173932, "i16": 146156, "i8": 132460, "i8-nearest": 132460}
