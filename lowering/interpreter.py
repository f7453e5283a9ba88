"""The numpy interpreter of qtrain IR: the golden model every other backend is compared against.

`QtrainFunctions` gives every qtrain op an xDSL interpreter implementation that calls the reference
kernels in `qtrain.lowering.numerics` (the op docstrings there state the exact numerics). Parameters
(`qtrain.param`) are held in a per-interpreter dict keyed by symbol name, initialised from the IR;
`qtrain.get_param` reads it and update ops replace entries in it, which is how state persists across
training steps exactly like the SRAM copies on the device.

Public API used by tools and tests:
  - `load_module(path_or_text)` -> verified `ModuleOp` (raises `ModelLoadError`)
  - `ModelInterpreter(module)`: `.call(entry, *args)`, `.params`, `.entry(name)`
  - `run_forward(module, images)` -> `(output_q int8 [N, K], logits float32 [N, K])`
  - `run_train_steps(module, images, labels, steps)` -> `(loss float32 [steps], {trainable name: value})`
  - `QtrainFunctions` and `parameter_state(interpreter)` for plain `xdsl.interpreter.Interpreter` use
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, DenseIntOrFPElementsAttr, ModuleOp, TensorType, f32, i8, i32
from xdsl.dialects.func import Func, FuncOp, ReturnOp
from xdsl.interpreter import Interpreter, InterpreterFunctions, impl, register_impls
from xdsl.interpreters.func import FuncFunctions
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.parser import Parser
from xdsl.utils.exceptions import DiagnosticException, ParseError, VerifyException

from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    CrossEntropyOp,
    DequantizeOp,
    GetParamOp,
    ParamOp,
    Qtrain,
    QuantizeOp,
    QuantParamsAttr,
    ReshapeOp,
)
from qtrain.dialects.qtrain.ops import clamp_range, produced_quant
from qtrain.lowering import numerics


class InterpretError(Exception):
    """Base class of the interpreter's user-facing errors (bad model, bad inputs, bad entry)."""


class ModelLoadError(InterpretError):
    """The model file is missing, does not parse, or does not verify."""


class InputError(InterpretError):
    """Inputs do not match the entry function's signature, or the entry does not exist."""


# -- loading -------------------------------------------------------------------------------------------


def make_context() -> Context:
    ctx = Context()
    ctx.load_dialect(Builtin)
    ctx.load_dialect(Func)
    ctx.load_dialect(Qtrain)
    return ctx


def load_module(path_or_text: str | os.PathLike[str]) -> ModuleOp:
    """Parse and verify a qtrain module given as a path or as IR text.

    A `str` containing `{` or a newline is IR text (every module has a body); anything else is a path.
    """
    if isinstance(path_or_text, str) and ("{" in path_or_text or "\n" in path_or_text):
        text, name = path_or_text, "<string>"
    else:
        path = Path(path_or_text)
        try:
            text = path.read_text()
        except OSError as e:
            raise ModelLoadError(f"cannot read {path}: {e.strerror or e}") from e
        name = str(path)
    try:
        module = Parser(make_context(), text, name).parse_module()
    except ParseError as e:
        raise ModelLoadError(f"{name}: parse error: {_first_line(str(e))}") from e
    except Exception as e:  # xDSL raises assorted errors for malformed attributes
        raise ModelLoadError(f"{name}: parse error: {_first_line(str(e)) or type(e).__name__}") from e
    try:
        module.verify()
    except (VerifyException, DiagnosticException) as e:
        raise ModelLoadError(f"{name}: verification failed: {_first_line(str(e))}") from e
    return module


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


# -- attribute helpers ---------------------------------------------------------------------------------


_NUMPY_DTYPES: dict[Attribute, type[np.generic]] = {i8: np.int8, i32: np.int32, f32: np.float32}


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


def _scale(q: QuantParamsAttr) -> np.float32:
    return np.float32(q.scale)


def _results(op: Operation, output: np.ndarray, mask: np.ndarray) -> tuple[Any, ...]:
    """The op's results: the output, plus the saturation mask (bool, i1) when the op has a mask result
    (training graphs save it in forward for the backward pass)."""
    return (output, mask) if len(op.results) == 2 else (output,)


# -- interpreter functions -----------------------------------------------------------------------------


def initial_params(module: ModuleOp) -> dict[str, np.ndarray]:
    """Every `qtrain.param`'s value from the IR (the Flash image), by symbol name."""
    return {op.sym_name.data: dense_to_numpy(op.value) for op in module.body.block.ops if isinstance(op, ParamOp)}


def parameter_state(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """The interpreter's current parameter values, by symbol name (initialised from the IR).

    One dict per `Interpreter`; `qtrain.get_param` reads it and update ops (in this or any other
    `InterpreterFunctions` class) replace its entries, so the values persist across calls.
    """
    return interpreter.get_data(QtrainFunctions, "params", lambda: initial_params(interpreter.module))


def dequantized_inputs(interpreter: Interpreter) -> dict[DequantizeOp, np.ndarray]:
    """The int8 input each `qtrain.dequantize` saw in its latest execution (the raw model output)."""
    return interpreter.get_data(QtrainFunctions, "dequantized_inputs", dict)


@register_impls
class QtrainFunctions(InterpreterFunctions):
    """xDSL implementations of the qtrain forward ops on numpy arrays (state: `parameter_state`)."""

    @impl(GetParamOp)
    def run_get_param(self, interpreter: Interpreter, op: GetParamOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        name = op.param.root_reference.data
        params = parameter_state(interpreter)
        if name not in params:
            raise InterpretError(f"qtrain.get_param: no parameter @{name}")
        return (params[name],)

    @impl(Conv2DOp)
    def run_conv2d(self, interpreter: Interpreter, op: Conv2DOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, w, *rest = args
        bias = rest[0] if rest else None
        y, mask = numerics.conv2d_with_mask(
            x,
            w,
            bias,
            input_scale=_scale(op.input_q),
            input_zero_point=op.input_q.zp,
            weight_scales=op.weight_q.scale_array(),
            output_scale=_scale(op.output_q),
            output_zero_point=op.output_q.zp,
            strides=op.strides.get_values(),
            padding=op.padding.get_values(),
            groups=op.groups.value.data,
            clamp=clamp_range(op.clamp),
        )
        return _results(op, y, mask)

    @impl(AddOp)
    def run_add(self, interpreter: Interpreter, op: AddOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        lhs, rhs = args
        y, mask = numerics.add_with_mask(
            lhs,
            rhs,
            lhs_scale=_scale(op.lhs_q),
            lhs_zero_point=op.lhs_q.zp,
            rhs_scale=_scale(op.rhs_q),
            rhs_zero_point=op.rhs_q.zp,
            output_scale=_scale(op.output_q),
            output_zero_point=op.output_q.zp,
            clamp=clamp_range(op.clamp),
        )
        return _results(op, y, mask)

    @impl(AvgPoolOp)
    def run_avgpool(self, interpreter: Interpreter, op: AvgPoolOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        y, mask = numerics.avgpool_with_mask(
            x,
            kernel=op.kernel.get_values(),
            strides=op.strides.get_values(),
            input_scale=_scale(op.input_q),
            input_zero_point=op.input_q.zp,
            output_scale=_scale(op.output_q),
            output_zero_point=op.output_q.zp,
        )
        return _results(op, y, mask)

    @impl(QuantizeOp)
    def run_quantize(self, interpreter: Interpreter, op: QuantizeOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        return (numerics.quantize(x, scale=_scale(op.output_q), zero_point=op.output_q.zp),)

    @impl(DequantizeOp)
    def run_dequantize(self, interpreter: Interpreter, op: DequantizeOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        dequantized_inputs(interpreter)[op] = x
        return (numerics.dequantize(x, scale=_scale(op.input_q), zero_point=op.input_q.zp),)

    @impl(ReshapeOp)
    def run_reshape(self, interpreter: Interpreter, op: ReshapeOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        t = op.output.type
        assert isinstance(t, TensorType)
        return (np.reshape(x, tuple(t.get_shape())),)

    @impl(CrossEntropyOp)
    def run_cross_entropy(
        self, interpreter: Interpreter, op: CrossEntropyOp, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        logits, label = args
        return (numerics.cross_entropy(logits, int(label)),)


# -- running entries -----------------------------------------------------------------------------------


class ModelInterpreter:
    """One interpreter instance over a module: the parameter state lives as long as this object."""

    def __init__(self, module: ModuleOp):
        self.module = module
        self.interpreter = Interpreter(module)
        self.interpreter.register_implementations(FuncFunctions())
        self.interpreter.register_implementations(QtrainFunctions())

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Current parameter values by symbol name; assign entries to replace them."""
        return parameter_state(self.interpreter)

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
    is then `output_q`).
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
        owner = result.owner
        while isinstance(owner, ReshapeOp):
            owner = owner.input.owner
        if not isinstance(owner, DequantizeOp):
            raise InputError(f"@{entry} returns float32 values not produced by qtrain.dequantize: no int8 output")
        dequantize_op = owner

    outputs_q: list[np.ndarray] = []
    logits: list[np.ndarray] = []
    for n in range(batch.shape[0]):
        (out,) = runner.call(entry, batch[n : n + 1])
        out = np.asarray(out)
        if quant is not None:
            outputs_q.append(out.reshape(-1))
            logits.append(numerics.dequantize(out, scale=quant.scale, zero_point=quant.zp).reshape(-1))
        else:
            assert dequantize_op is not None
            logits.append(out.astype(np.float32).reshape(-1))
            outputs_q.append(np.asarray(dequantized_inputs(runner.interpreter)[dequantize_op]).reshape(-1))
    k = int(np.prod(rtype.get_shape()))
    out_q = np.stack(outputs_q).astype(np.int8) if outputs_q else np.zeros((0, k), dtype=np.int8)
    out_f = np.stack(logits).astype(np.float32) if logits else np.zeros((0, k), dtype=np.float32)
    return out_q, out_f


def trainable_param_names(module: ModuleOp) -> list[str]:
    return [op.sym_name.data for op in module.body.block.ops if isinstance(op, ParamOp) and op.trainable is not None]


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
    around; returns (`loss` float32 [steps], {trainable parameter name: value after the last step}).

    Parameter updates persist in the interpreter's parameter dict between steps (the update ops'
    implementations write to it), exactly like the SRAM copies on the device.
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
    params = {name: runner.params[name].copy() for name in trainable_param_names(module)}
    return losses, params
