"""The numpy interpreter of qtrain IR: the golden model every other backend is compared against.

`QtrainFunctions` gives every qtrain op an xDSL interpreter implementation that calls the reference
kernels in `qtrain.lowering.numerics` (the op docstrings there state the exact numerics). Parameters
(`qtrain.param`) are held in a per-interpreter dict keyed by symbol name, initialised from the IR;
`qtrain.get_param` reads it and update ops replace entries in it, which is how state persists across
training steps exactly like the SRAM copies on the device.

Training state, as on the device: `qtrain.sgd_update @p` changes @p's SRAM copy. For a parameter
stored in its own type (i8 weights, i32 biases) that copy *is* the value `qtrain.get_param` reads
(updated in place, rounded and saturated); for `storage(f32)` it is an fp32 master copy of the trained
part and `get_param` reads saturate(rint(master)). A parameter with `channels = [start, stop]` keeps its
frozen part (the Flash value) and only the slice is trained. `sram_copy(interpreter, name)` returns the
SRAM copy in its storage dtype (for a sliced weight just the slice).

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
    mask, whether or not the op returns it)
  - `run_forward(module, images)` -> `(output_q int8 [N, K], logits float32 [N, K])` (relaxed mode:
    `output_q` holds the unrounded float64 codes)
  - `run_train_steps(module, images, labels, steps)` -> `(loss float32 [steps], {trainable name: SRAM copy})`
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
    AvgPoolGradOp,
    AvgPoolOp,
    BiasGradOp,
    ChannelSliceOp,
    Conv2DInputGradOp,
    Conv2DOp,
    Conv2DWeightGradOp,
    CrossEntropyGradOp,
    CrossEntropyOp,
    DequantizeOp,
    FusedPointwiseDepthwiseOp,
    GetParamOp,
    GradAccumulateOp,
    ParamOp,
    Qtrain,
    QuantizeOp,
    QuantParamsAttr,
    RequantGradOp,
    ReshapeOp,
    SGDUpdateOp,
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


# -- interpreter state ---------------------------------------------------------------------------------


def initial_params(module: ModuleOp) -> dict[str, np.ndarray]:
    """Every `qtrain.param`'s value from the IR (the Flash image), by symbol name."""
    return {op.sym_name.data: dense_to_numpy(op.value) for op in module.body.block.ops if isinstance(op, ParamOp)}


def parameter_state(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """The interpreter's current parameter values, by symbol name (initialised from the IR).

    One dict per `Interpreter`; `qtrain.get_param` reads it and update ops (in this or any other
    `InterpreterFunctions` class) replace its entries, so the values persist across calls. For an
    fp32-master parameter the entry is the int8 value read from the master (`master_copies`).
    """
    return interpreter.get_data(QtrainFunctions, "params", lambda: initial_params(interpreter.module))


def master_copies(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """fp32 master copies (trained part only) of `storage(f32)` parameters updated so far, by name."""
    return interpreter.get_data(QtrainFunctions, "masters", dict)


def param_ops(interpreter: Interpreter) -> dict[str, ParamOp]:
    """The module's `qtrain.param` ops by symbol name."""
    return interpreter.get_data(
        QtrainFunctions,
        "param_ops",
        lambda: {op.sym_name.data: op for op in interpreter.module.body.block.ops if isinstance(op, ParamOp)},
    )


def recorded_gradients(interpreter: Interpreter) -> dict[str, np.ndarray]:
    """The gradient operand of every `qtrain.sgd_update` in its latest execution, by parameter name."""
    return interpreter.get_data(QtrainFunctions, "gradients", dict)


def saturation_masks(interpreter: Interpreter) -> dict[Operation, np.ndarray]:
    """The latest saturation mask of every executed conv2d / add / avgpool, with or without a mask result."""
    return interpreter.get_data(QtrainFunctions, "masks", dict)


def dequantized_inputs(interpreter: Interpreter) -> dict[DequantizeOp, np.ndarray]:
    """The int8 input each `qtrain.dequantize` saw in its latest execution (the raw model output)."""
    return interpreter.get_data(QtrainFunctions, "dequantized_inputs", dict)


def _param_op(interpreter: Interpreter, name: str, what: str) -> ParamOp:
    op = param_ops(interpreter).get(name)
    if op is None:
        raise InterpretError(f"{what}: no parameter @{name}")
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
    param = _param_op(interpreter, name, "sram_copy")
    index = trainable_index(param)
    value = parameter_state(interpreter)[name]
    if relaxed:
        return np.asarray(value, dtype=np.float64)[index].copy()
    if param.storage_type == f32 and value.dtype != np.float32:
        master = master_copies(interpreter).get(name)
        return master.copy() if master is not None else value[index].astype(np.float32)
    return value[index].copy()


# -- interpreter functions -----------------------------------------------------------------------------


@register_impls
class QtrainFunctions(InterpreterFunctions):
    """xDSL implementations of every qtrain op on numpy arrays (state: `parameter_state`).

    `relaxed=True` selects the float-relaxed numerics (see the module docstring); `apply_updates=False`
    makes `qtrain.sgd_update` record its gradient (`recorded_gradients`) without changing the parameter.
    """

    def __init__(self, relaxed: bool = False, apply_updates: bool = True):
        self.relaxed = relaxed
        self.apply_updates = apply_updates

    def _masked(self, interpreter: Interpreter, op: Operation, output: np.ndarray, mask: np.ndarray
                ) -> tuple[Any, ...]:
        saturation_masks(interpreter)[op] = mask
        return _results(op, output, mask)

    # -- forward -----------------------------------------------------------------------------------------

    @impl(GetParamOp)
    def run_get_param(self, interpreter: Interpreter, op: GetParamOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        name = op.param.root_reference.data
        params = parameter_state(interpreter)
        if name not in params:
            raise InterpretError(f"qtrain.get_param: no parameter @{name}")
        value = params[name]
        if self.relaxed and value.dtype != np.float64:
            value = params[name] = value.astype(np.float64)
        return (value,)

    @impl(Conv2DOp)
    def run_conv2d(self, interpreter: Interpreter, op: Conv2DOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x, w, *rest = args
        bias = rest[0] if rest else None
        kernel = numerics.conv2d_relaxed if self.relaxed else numerics.conv2d_with_mask
        y, mask = kernel(
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
        return self._masked(interpreter, op, y, mask)

    @impl(FusedPointwiseDepthwiseOp)
    def run_fused_pointwise_depthwise(
        self, interpreter: Interpreter, op: FusedPointwiseDepthwiseOp, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        """The two convolutions the op stands for, with the same kernel as qtrain.conv2d; no mask."""
        x, pw_weight, *rest = args
        pw_bias = rest.pop(0) if op.pw_bias is not None else None
        dw_weight = rest.pop(0)
        dw_bias = rest.pop(0) if op.dw_bias is not None else None
        kernel = numerics.conv2d_relaxed if self.relaxed else numerics.conv2d_with_mask
        mid, _ = kernel(
            x, pw_weight, pw_bias, input_scale=_scale(op.input_q), input_zero_point=op.input_q.zp,
            weight_scales=op.pw_weight_q.scale_array(), output_scale=_scale(op.mid_q),
            output_zero_point=op.mid_q.zp, clamp=clamp_range(op.pw_clamp),
        )
        y, _ = kernel(
            mid, dw_weight, dw_bias, input_scale=_scale(op.mid_q), input_zero_point=op.mid_q.zp,
            weight_scales=op.dw_weight_q.scale_array(), output_scale=_scale(op.output_q),
            output_zero_point=op.output_q.zp, strides=op.dw_strides.get_values(),
            padding=op.dw_padding.get_values(), groups=mid.shape[3], clamp=clamp_range(op.dw_clamp),
        )
        return (y,)

    @impl(AddOp)
    def run_add(self, interpreter: Interpreter, op: AddOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        lhs, rhs = args
        kernel = numerics.add_relaxed if self.relaxed else numerics.add_with_mask
        y, mask = kernel(
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
        return self._masked(interpreter, op, y, mask)

    @impl(AvgPoolOp)
    def run_avgpool(self, interpreter: Interpreter, op: AvgPoolOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        kernel = numerics.avgpool_relaxed if self.relaxed else numerics.avgpool_with_mask
        y, mask = kernel(
            x,
            kernel=op.kernel.get_values(),
            strides=op.strides.get_values(),
            input_scale=_scale(op.input_q),
            input_zero_point=op.input_q.zp,
            output_scale=_scale(op.output_q),
            output_zero_point=op.output_q.zp,
        )
        return self._masked(interpreter, op, y, mask)

    @impl(QuantizeOp)
    def run_quantize(self, interpreter: Interpreter, op: QuantizeOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        kernel = numerics.quantize_relaxed if self.relaxed else numerics.quantize
        return (kernel(x, scale=_scale(op.output_q), zero_point=op.output_q.zp),)

    @impl(DequantizeOp)
    def run_dequantize(self, interpreter: Interpreter, op: DequantizeOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        dequantized_inputs(interpreter)[op] = x
        kernel = numerics.dequantize_relaxed if self.relaxed else numerics.dequantize
        return (kernel(x, scale=_scale(op.input_q), zero_point=op.input_q.zp),)

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
        kernel = numerics.cross_entropy_relaxed if self.relaxed else numerics.cross_entropy
        return (kernel(logits, int(label)),)

    # -- backward ----------------------------------------------------------------------------------------

    @impl(CrossEntropyGradOp)
    def run_cross_entropy_grad(
        self, interpreter: Interpreter, op: CrossEntropyGradOp, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        logits, label = args
        kernel = numerics.cross_entropy_grad_relaxed if self.relaxed else numerics.cross_entropy_grad
        return (kernel(logits, int(label)),)

    @impl(RequantGradOp)
    def run_requant_grad(self, interpreter: Interpreter, op: RequantGradOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        grad, *rest = args
        mask = rest[0] if rest else None
        return (numerics.requant_grad(grad, mask, np.asarray(op.multiplier.get_values(), dtype=np.float32)),)

    @impl(Conv2DInputGradOp)
    def run_conv2d_input_grad(
        self, interpreter: Interpreter, op: Conv2DInputGradOp, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        grad, weight = args
        (strides, padding, groups) = op.conv_geometry()
        shape = _shape(op.result)
        return (numerics.conv2d_input_grad(grad, weight, shape, strides=strides, padding=padding, groups=groups),)

    @impl(Conv2DWeightGradOp)
    def run_conv2d_weight_grad(
        self, interpreter: Interpreter, op: Conv2DWeightGradOp, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        x, grad = args
        (strides, padding, groups) = op.conv_geometry()
        kernel = _shape(op.result)[1:3]
        channels = op.channel_range() if op.channels is not None else None
        dw = numerics.conv2d_weight_grad(
            x, grad, input_zero_point=op.input_q.zp, kernel=kernel, strides=strides, padding=padding, groups=groups,
            channels=channels,
        )
        if dw.shape != _shape(op.result):
            raise InterpretError(f"{op.name}: kernel result {dw.shape} differs from the result type {op.result.type}")
        return (dw,)

    @impl(BiasGradOp)
    def run_bias_grad(self, interpreter: Interpreter, op: BiasGradOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (grad,) = args
        return (numerics.bias_grad(grad),)

    @impl(AvgPoolGradOp)
    def run_avgpool_grad(self, interpreter: Interpreter, op: AvgPoolGradOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (grad,) = args
        return (
            numerics.avgpool_grad(
                grad, _shape(op.result), kernel=op.kernel.get_values(), strides=op.strides.get_values()
            ),
        )

    @impl(GradAccumulateOp)
    def run_grad_accumulate(
        self, interpreter: Interpreter, op: GradAccumulateOp, args: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        lhs, rhs = args
        return (numerics.grad_accumulate(lhs, rhs),)

    @impl(ChannelSliceOp)
    def run_channel_slice(self, interpreter: Interpreter, op: ChannelSliceOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (x,) = args
        start, stop = op.bounds()
        return (numerics.channel_slice(x, start, stop),)

    # -- update ------------------------------------------------------------------------------------------

    @impl(SGDUpdateOp)
    def run_sgd_update(self, interpreter: Interpreter, op: SGDUpdateOp, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (grad,) = args
        name = op.param.root_reference.data
        param = _param_op(interpreter, name, op.name)
        recorded_gradients(interpreter)[name] = grad
        if not self.apply_updates:
            return ()
        lr = op.lr.value.data
        grad_scale = np.asarray(op.grad_scale.get_values(), dtype=np.float32)
        params = parameter_state(interpreter)
        index = trainable_index(param)
        value = params[name].copy()
        if self.relaxed:
            value = value.astype(np.float64)
            value[index] = numerics.sgd_update(value[index], grad, lr=lr, grad_scale=grad_scale)
        elif param.storage_type == f32 and value.dtype != np.float32:
            masters = master_copies(interpreter)
            master = masters.get(name)
            if master is None:
                master = value[index].astype(np.float32)
            masters[name] = numerics.sgd_update(master, grad, lr=lr, grad_scale=grad_scale)
            value[index] = numerics.master_to_param(masters[name], value.dtype)
        else:
            value[index] = numerics.sgd_update(value[index], grad, lr=lr, grad_scale=grad_scale)
        params[name] = value
        return ()


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
