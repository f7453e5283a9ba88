"""The numpy interpreter of qtrain IR: the golden model every other backend is compared against.

Every qtrain op runs itself (`GoldenModelOp.run_golden`, calling the reference kernels of
`qtrain.numerics`, whose docstrings state the exact numerics); `QtrainFunctions` registers one xDSL
implementation that dispatches to it for every op of the dialect, and offers the op the interpreter's
state through `GoldenRun`. Parameters (`qtrain.param`) are held in a per-interpreter dict keyed by symbol
name, initialised from the IR; `qtrain.get_param` reads it and update ops replace entries in it, which is
how state persists across training steps exactly like the SRAM copies on the device.

Training state, as on the device: `qtrain.sgd_update @p` changes @p's SRAM copy. For a parameter
stored in its own type (i8 weights, i32 biases) that copy *is* the value `qtrain.get_param` reads
(updated in place, rounded and saturated); for `storage(f32)` it is an fp32 master copy of the trained
part and `get_param` reads saturate(rint(master)); for `storage(i16)` an int16 fixed-point master m
(`get_param` reads `numerics.fixed16_value(m)`, the int8 plane the device keeps next to m's fraction).
A parameter with `channels = [start, stop]` keeps its frozen part (the Flash value) and only the slice
is trained. `sram_copy(interpreter, name)` returns the SRAM copy in its storage dtype (a sliced weight:
just the slice).

Device state, as on the device: an op that keeps training state between steps (`DeviceStateOp`: the
learning-rate schedule's step counter, momentum velocities) gets its buffers from `device_states`, zeros
at first (as qtrain_init leaves them), and updates them in place; they persist across calls.

Two numerics modes (`QtrainFunctions(relaxed=...)`, `ModelInterpreter(module, relaxed=...)`):
  - int8 (default): the contract, bit-exact forward, float32 gradients.
  - relaxed: every op without its rint, in float64 (`numerics.*_relaxed`): activations stay real-valued,
    clamps are kept and masks come from the unrounded values; parameters are float64 values updated
    without rounding or saturation (`storage` is ignored: the stored value is the parameter). The
    train_step graph then computes the exact derivatives of this network (finite differences check
    it), and training in this mode is the "fp32 simulation" int8 training is compared to.

Public API used by tools and tests:
  - `load_module(path_or_text)` -> verified `ModuleOp` (raises `ModelLoadError`)
  - `ModelInterpreter(module, relaxed=False, apply_updates=True)`: `.call(entry, *args)`, `.params`,
    `.entry(name)`, `.sram_copy(name)`, `.gradients` (the gradient each `sgd_update` received in the
    latest call, by parameter name: what tests compare to finite differences; `apply_updates=False`
    records them without changing any parameter), `.saturation_masks` (every requantizing op's latest
    mask, whether or not the op returns it), `.device_state` (training state by name: `step`,
    `velocity/<param>`)
  - `run_forward(module, images)` -> `(output_q int8 [N, K], logits float32 [N, K])` (relaxed mode:
    `output_q` holds the unrounded float64 codes)
  - `run_train_steps(module, images, labels, steps)` -> `(loss float32 [steps], {trainable name: SRAM copy})`
  - `QtrainFunctions` and `parameter_state(interpreter)` for plain `xdsl.interpreter.Interpreter` use
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from xdsl.dialects.builtin import DenseIntOrFPElementsAttr, ModuleOp, TensorType, bf16, f32, i8, i16, i32
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.interpreter import Interpreter, InterpreterFunctions, OpImpl, OpImplResult, register_impls
from xdsl.interpreters.func import FuncFunctions
from xdsl.ir import Attribute, Operation, SSAValue

from qtrain import numerics
from qtrain.dialects import ModelLoadError, load_module, make_context
from qtrain.dialects.qtrain import QTRAIN_OPS, DequantizeOp, ParamOp, QuantParamsAttr
from qtrain.dialects.qtrain.contract import dequantize_of, trainable_params
from qtrain.dialects.qtrain.contract import param_ops as contract_param_ops
from qtrain.dialects.qtrain.interfaces import DeviceState, GoldenModelOp, produced_quant
from qtrain.errors import UserError

__all__ = ["ModelLoadError", "load_module", "make_context"]


class InterpretError(UserError):
    """Base class of the interpreter's user-facing errors (bad inputs, bad entry, unsupported values)."""


class InputError(InterpretError):
    """Inputs do not match the entry function's signature, or the entry does not exist."""


# -- attribute helpers ---------------------------------------------------------------------------------


_NUMPY_DTYPES: dict[Attribute, type[np.generic]] = {i8: np.int8, i32: np.int32, f32: np.float32, bf16: np.float32}
"""bf16 gradients are float32 arrays of bf16 values (numerics.round_bf16)."""


def numpy_dtype(element_type: Attribute) -> type[np.generic]:
    try:
        return _NUMPY_DTYPES[element_type]
    except KeyError:
        raise InterpretError(f"unsupported element type {element_type}") from None


def dense_to_numpy(value: DenseIntOrFPElementsAttr) -> np.ndarray:
    """A dense elements attribute as a fresh numpy array of its element type and shape."""
    t = value.get_type()
    assert isinstance(t, TensorType)
    dtype = numpy_dtype(t.element_type)
    shape = tuple(t.get_shape())
    flat = np.frombuffer(value.data.data, dtype=dtype)
    if value.is_splat() and flat.size == 1 and int(np.prod(shape)) != 1:
        return np.full(shape, flat[0], dtype=dtype)
    return flat.reshape(shape).copy()


# -- interpreter state ---------------------------------------------------------------------------------


def initial_params(module: ModuleOp) -> dict[str, np.ndarray]:
    """Every `qtrain.param`'s value from the IR (the Flash image), by symbol name."""
    return {name: dense_to_numpy(op.value) for name, op in contract_param_ops(module).items()}


def parameter_state(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """The interpreter's current parameter values, by symbol name (initialised from the IR).

    One dict per `Interpreter`; `qtrain.get_param` reads it and update ops (through `GoldenRun`)
    replace its entries, so the values persist across calls. For an fp32-master parameter the entry is
    the int8 value read from the master (`master_copies`).
    """
    return interpreter.get_data(QtrainFunctions, "params", lambda: initial_params(interpreter.module))


def master_copies(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """fp32 master copies (trained part only) of `storage(f32)` parameters updated so far, by name."""
    return interpreter.get_data(QtrainFunctions, "masters", dict)


def param_ops(interpreter: Interpreter) -> dict[str, ParamOp]:
    """The module's `qtrain.param` ops by symbol name."""
    return interpreter.get_data(QtrainFunctions, "param_ops", lambda: contract_param_ops(interpreter.module))


def recorded_gradients(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """The gradient operand of every `qtrain.sgd_update` in its latest execution, by parameter name."""
    return interpreter.get_data(QtrainFunctions, "gradients", dict)


def saturation_masks(interpreter: Interpreter) -> dict[Operation, np.ndarray]:
    """The latest saturation mask of every executed requantizing op, with or without a mask result."""
    return interpreter.get_data(QtrainFunctions, "masks", dict)


def dequantized_inputs(interpreter: Interpreter) -> dict[DequantizeOp, np.ndarray]:
    """The int8 input each `qtrain.dequantize` saw in its latest execution (the raw model output)."""
    return interpreter.get_data(QtrainFunctions, "dequantized_inputs", dict)


def device_states(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """The training state ops keep between steps (`DeviceStateOp`), by state name, flat arrays."""
    return interpreter.get_data(QtrainFunctions, "device_state", dict)


def _param_op(interpreter: Interpreter, name: str) -> ParamOp:
    op = param_ops(interpreter).get(name)
    if op is None:
        raise InterpretError(f"no parameter @{name}")
    return op


def trainable_index(param: ParamOp) -> tuple[slice, ...]:
    """Index of the trained part of a parameter's full value (everything, or its `channels` slice)."""
    ndim = param.tensor_type.get_num_dims()
    sl = param.trainable_slice()
    if sl is None:
        return (slice(None),) * ndim
    axis = param.channel_axis
    return tuple(slice(sl[0], sl[1]) if a == axis else slice(None) for a in range(ndim))


def sram_copy(interpreter: Interpreter, name: str, *, relaxed: bool = False) -> np.ndarray:
    """A copy of trainable parameter @name's SRAM copy, in its storage dtype, trained part only.

    int8 mode: the fp32 master for `storage(f32)`, else the int8 / int32 values; relaxed mode: the
    float64 values.
    """
    param = _param_op(interpreter, name)
    index = trainable_index(param)
    value = parameter_state(interpreter)[name]
    if relaxed:
        return np.asarray(value, dtype=np.float64)[index].copy()
    if param.storage_type == f32 and value.dtype != np.float32:
        master = master_copies(interpreter).get(name)
        return master.copy() if master is not None else value[index].astype(np.float32)
    if param.storage_type == i16:
        master = master_copies(interpreter).get(name)
        return master.copy() if master is not None else numerics.fixed16_master(value[index])
    return value[index].copy()


def write_sram_copy(interpreter: Interpreter, name: str, copy: np.ndarray, *, relaxed: bool = False) -> None:
    """Replaces @name's SRAM copy (trained part, storage dtype; float64 in relaxed mode); the value the
    forward pass reads follows it (an fp32 master is read as saturate(rint(master)))."""
    param = _param_op(interpreter, name)
    index = trainable_index(param)
    params = parameter_state(interpreter)
    value = params[name].copy()
    if relaxed:
        value = value.astype(np.float64)
        value[index] = copy
    elif (param.storage_type == f32 and value.dtype != np.float32) or param.storage_type == i16:
        master_copies(interpreter)[name] = copy
        value[index] = numerics.master_to_param(copy, value.dtype)
    else:
        value[index] = copy
    params[name] = value


# -- interpreter functions -----------------------------------------------------------------------------


class _Run:
    """The `GoldenRun` an op sees: one interpreter's state and mode."""

    def __init__(self, interpreter: Interpreter, functions: QtrainFunctions):
        self.interpreter = interpreter
        self.relaxed = functions.relaxed
        self.apply_updates = functions.apply_updates

    def record_mask(self, op: Operation, mask: np.ndarray) -> None:
        saturation_masks(self.interpreter)[op] = mask

    def record_dequantized(self, op: Operation, value: np.ndarray) -> None:
        dequantized_inputs(self.interpreter)[op] = value  # type: ignore[index]

    def read_param(self, name: str) -> np.ndarray:
        params = parameter_state(self.interpreter)
        if name not in params:
            raise InterpretError(f"qtrain.get_param: no parameter @{name}")
        value = params[name]
        if self.relaxed and value.dtype != np.float64:
            value = params[name] = value.astype(np.float64)
        return value

    def sram_copy(self, name: str) -> np.ndarray:
        return sram_copy(self.interpreter, name, relaxed=self.relaxed)

    def write_sram_copy(self, name: str, copy: np.ndarray) -> None:
        write_sram_copy(self.interpreter, name, copy, relaxed=self.relaxed)

    def record_gradient(self, name: str, grad: np.ndarray) -> None:
        recorded_gradients(self.interpreter)[name] = grad

    def device_state(self, state: DeviceState) -> np.ndarray:
        states = device_states(self.interpreter)
        if state.name not in states:
            dtype = np.float64 if self.relaxed and state.dtype == "f32" else state.numpy_dtype
            states[state.name] = np.zeros(state.count, dtype=dtype)
        return states[state.name]


def _run_golden(functions: QtrainFunctions, interpreter: Interpreter, op: Operation,
                args: tuple[Any, ...]) -> OpImplResult:
    assert isinstance(op, GoldenModelOp)
    return OpImplResult(op.run_golden(_Run(interpreter, functions), args), None)


@register_impls
class QtrainFunctions(InterpreterFunctions):
    """The xDSL implementation of every qtrain op: the op's own `run_golden` (state: `parameter_state`).

    `relaxed=True` selects the float-relaxed numerics (see the module docstring); `apply_updates=False`
    makes update ops record their gradient (`recorded_gradients`) without changing the parameter.
    """

    def __init__(self, relaxed: bool = False, apply_updates: bool = True):
        self.relaxed = relaxed
        self.apply_updates = apply_updates

    @classmethod
    def _impls(cls) -> Iterable[tuple[type[Operation], OpImpl[InterpreterFunctions, Operation]]]:
        return [(op, _run_golden) for op in QTRAIN_OPS if issubclass(op, GoldenModelOp)]  # type: ignore[misc]


def _shape(value: SSAValue) -> tuple[int, ...]:
    t = value.type
    assert isinstance(t, TensorType)
    return tuple(t.get_shape())


# -- running entries -----------------------------------------------------------------------------------


class ModelInterpreter:
    """One interpreter instance over a module: the parameter state lives as long as this object.

    `relaxed`: float-relaxed numerics instead of the int8 contract; `apply_updates=False`: updates only
    record their gradients (`.gradients`), parameters stay as they are.
    """

    def __init__(self, module: ModuleOp, *, relaxed: bool = False, apply_updates: bool = True):
        self.module = module
        self.relaxed = relaxed
        self.interpreter = Interpreter(module)
        self.interpreter.register_implementations(FuncFunctions())
        self.interpreter.register_implementations(QtrainFunctions(relaxed=relaxed, apply_updates=apply_updates))

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Current parameter values by symbol name; assign entries to replace them (for an fp32-master
        parameter that has been updated, the master copy then keeps its own value)."""
        return parameter_state(self.interpreter)

    @property
    def gradients(self) -> dict[str, np.ndarray]:
        """The gradient each `qtrain.sgd_update` received in the latest call, by parameter name."""
        return recorded_gradients(self.interpreter)

    @property
    def saturation_masks(self) -> dict[Operation, np.ndarray]:
        """The latest saturation mask of every executed conv2d / add / avgpool."""
        return saturation_masks(self.interpreter)

    @property
    def device_state(self) -> dict[str, np.ndarray]:
        """Training state kept between steps, by name (`step`: the step counter, `velocity/<param>`: a
        momentum velocity), as flat arrays; absent until the op keeping it first ran."""
        return device_states(self.interpreter)

    def sram_copy(self, name: str) -> np.ndarray:
        """Trainable parameter @name's SRAM copy (storage dtype; float64 in relaxed mode; a slice's part only)."""
        return sram_copy(self.interpreter, name, relaxed=self.relaxed)

    def entry_names(self) -> list[str]:
        return [op.sym_name.data for op in self.module.body.block.ops if isinstance(op, FuncOp)]

    def entry(self, name: str) -> FuncOp:
        for op in self.module.body.block.ops:
            if isinstance(op, FuncOp) and op.sym_name.data == name:
                return op
        available = ", ".join(f"@{n}" for n in self.entry_names()) or "none"
        raise InputError(f"the module has no function @{name} (functions: {available})")

    def call(self, entry: str, *args: Any) -> tuple[Any, ...]:
        func = self.entry(entry)
        inputs = func.function_type.inputs.data
        if len(args) != len(inputs):
            raise InputError(f"@{entry} takes {len(inputs)} arguments, got {len(args)}")
        return tuple(self.interpreter.call_op(entry, args))


def returned_value(func: FuncOp, index: int = 0) -> SSAValue:
    """The SSA value an entry function returns at position `index`."""
    ret = func.body.blocks.first.last_op if func.body.blocks.first else None
    if not isinstance(ret, ReturnOp) or len(ret.arguments) <= index:
        raise InputError(f"@{func.sym_name.data} does not return a value at position {index}")
    return ret.arguments[index]


def prepare_images(images: np.ndarray, arg_type: Attribute, entry: str) -> np.ndarray:
    """Check (and, for float NCHW input to a float entry, transpose) images against the entry's first argument.

    The entry takes one batch-1 NHWC image; images is [N, H, W, C]. int8 entries need int8 images.
    A float32 entry also accepts float NCHW [N, C, H, W] (the DESIGN.md convention for float models).
    """
    if not isinstance(arg_type, TensorType):
        raise InputError(f"@{entry}: first argument is {arg_type}, expected a tensor")
    shape = tuple(arg_type.get_shape())
    elem = arg_type.element_type
    images = np.asarray(images)
    if len(shape) != 4 or shape[0] != 1:
        raise InputError(f"@{entry}: first argument {arg_type} is not a batch-1 NHWC image")
    want = shape[1:]
    expected = f"[N, {', '.join(map(str, want))}]"
    if elem == i8:
        if images.dtype != np.int8:
            raise InputError(f"image must be int8 (quantized with the model's input parameters), got {images.dtype}")
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise InputError(f"image must have shape {expected} (NHWC) for @{entry}, got {list(images.shape)}")
        return images
    if elem == f32:
        if not np.issubdtype(images.dtype, np.floating):
            raise InputError(f"image must be float32 for @{entry} (takes {arg_type}), got {images.dtype}")
        if images.ndim == 4 and tuple(images.shape[1:]) == want:
            return images.astype(np.float32)
        h, w, c = want
        if images.ndim == 4 and tuple(images.shape[1:]) == (c, h, w):
            return np.ascontiguousarray(images.transpose(0, 2, 3, 1)).astype(np.float32)
        raise InputError(
            f"image must have shape {expected} (NHWC) or [N, {c}, {h}, {w}] (NCHW) for @{entry}, "
            f"got {list(images.shape)}"
        )
    raise InputError(f"@{entry}: unsupported image element type {elem}")


def run_forward(
    module: ModuleOp, images: np.ndarray, *, entry: str = "forward", interpreter: ModelInterpreter | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Run the batch-1 `entry` once per image; returns (`output_q` int8 [N, K], `logits` float32 [N, K]).

    The entry returns either the raw int8 output (dequantized here with the quantization it was
    produced with, `produced_quant`) or float32 logits from a `qtrain.dequantize` (whose int8 input
    is then `output_q`). With a relaxed-mode interpreter, `output_q` is the unrounded float64 output
    codes and `logits` their dequantized values.
    """
    runner = interpreter or ModelInterpreter(module)
    func = runner.entry(entry)
    inputs = func.function_type.inputs.data
    if len(inputs) != 1:
        raise InputError(f"@{entry} takes {len(inputs)} arguments; a forward entry takes one image")
    batch = prepare_images(images, inputs[0], entry)
    result = returned_value(func)
    rtype = result.type
    if not isinstance(rtype, TensorType) or rtype.element_type not in (i8, f32):
        raise InputError(f"@{entry} returns {rtype}, expected an int8 or float32 tensor")

    quant: QuantParamsAttr | None = None
    dequantize_op: DequantizeOp | None = None
    if rtype.element_type == i8:
        quant = produced_quant(result)
        if quant is None:
            raise InputError(
                f"@{entry}: cannot tell the quantization of the returned value (not produced by a qtrain op)"
            )
    else:
        dequantize_op = dequantize_of(result)
        if dequantize_op is None:
            raise InputError(f"@{entry} returns float32 values not produced by qtrain.dequantize: no int8 output")

    outputs_q: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    for n in range(batch.shape[0]):
        (out,) = runner.call(entry, batch[n : n + 1])
        out = np.asarray(out)
        if quant is not None:
            outputs_q.append(out.reshape(-1))
            dequantize = numerics.dequantize_relaxed if runner.relaxed else numerics.dequantize
            logits.append(dequantize(out, scale=quant.scale, zero_point=quant.zp).reshape(-1))
        else:
            assert dequantize_op is not None
            logits.append(out.astype(np.float32).reshape(-1))
            outputs_q.append(np.asarray(dequantized_inputs(runner.interpreter)[dequantize_op]).reshape(-1))
    k = int(np.prod(rtype.get_shape()))
    q_dtype = np.float64 if runner.relaxed else np.int8
    out_q = np.stack(outputs_q).astype(q_dtype) if outputs_q else np.zeros((0, k), dtype=q_dtype)
    out_f = np.stack(logits).astype(np.float32) if logits else np.zeros((0, k), dtype=np.float32)
    return out_q, out_f


def trainable_param_names(module: ModuleOp) -> list[str]:
    return list(trainable_params(module))


def run_train_steps(
    module: ModuleOp,
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    *,
    entry: str = "train_step",
    interpreter: ModelInterpreter | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run `steps` calls of `@train_step(image, label) -> loss`, taking samples in order and wrapping
    around; returns (`loss` float32 [steps], {trainable parameter name: its SRAM copy after the last
    step}), the SRAM copy in its storage dtype (`sram_copy`: the fp32 master of a `storage(f32)` weight,
    the int8 / int32 values otherwise, float64 in relaxed mode; for a channel-sliced weight, the slice).

    Parameter updates persist in the interpreter's state between steps (the update ops' implementations
    write to it), exactly like the SRAM copies on the device.
    """
    runner = interpreter or ModelInterpreter(module)
    func = runner.entry(entry)
    inputs = func.function_type.inputs.data
    if len(inputs) != 2 or inputs[1] != i32:
        raise InputError(f"@{entry} must take (image, label: i32), got ({', '.join(map(str, inputs))})")
    batch = prepare_images(images, inputs[0], entry)
    if batch.shape[0] < 1:
        raise InputError("no samples to train on")
    labels = np.asarray(labels)
    if labels.shape != (batch.shape[0],):
        raise InputError(f"label must have shape [{batch.shape[0]}] (one per image), got {list(labels.shape)}")
    losses = np.zeros(steps, dtype=np.float32)
    for step in range(steps):
        n = step % batch.shape[0]
        (loss,) = runner.call(entry, batch[n : n + 1], int(labels[n]))
        losses[step] = np.float32(loss)
    params = {name: runner.sram_copy(name) for name in trainable_param_names(module)}
    return losses, params
