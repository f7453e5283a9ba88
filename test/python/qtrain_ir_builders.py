"""Build small qtrain modules programmatically for the interpreter tests (single ops, a MCUNet-like net)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import BytesAttr, DenseIntOrFPElementsAttr, FunctionType, ModuleOp, TensorType, f32, i8, i32
from xdsl.dialects.func import FuncOp, ReturnOp
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue
from xdsl.printer import Printer

from qtrain import numerics
from qtrain.dialects.qtrain import (
    AddOp,
    AvgPoolOp,
    Conv2DOp,
    DequantizeOp,
    GetParamOp,
    ParamOp,
    QuantizeOp,
    QuantParamsAttr,
    ReshapeOp,
)
from qtrain.dialects.qtrain.ops import conv_output_size
from qtrain.interpreter import load_module

_ELEMENT = {np.dtype(np.int8): i8, np.dtype(np.int32): i32, np.dtype(np.float32): f32}


def dense(array: np.ndarray) -> DenseIntOrFPElementsAttr:
    element = _ELEMENT[array.dtype]
    return DenseIntOrFPElementsAttr(TensorType(element, array.shape), BytesAttr(np.ascontiguousarray(array).tobytes()))


def tensor(shape: Sequence[int], element: Attribute = i8) -> TensorType[Attribute]:
    return TensorType(element, list(shape))


class ModuleBuilder:
    """Appends ops to one function body; `param` adds a module-level `qtrain.param` and reads it."""

    def __init__(self, arg_types: Sequence[Attribute]):
        self.block = Block(arg_types=list(arg_types))
        self.params: list[ParamOp] = []

    @property
    def args(self) -> tuple[SSAValue, ...]:
        return tuple(self.block.args)

    def add(self, op: Operation) -> SSAValue:
        self.block.add_op(op)
        return op.results[0]

    def param(self, name: str, value: np.ndarray, trainable: bool = False) -> SSAValue:
        p = ParamOp(name, dense(value), trainable)
        self.params.append(p)
        return self.add(GetParamOp(name, p.tensor_type))

    def conv(
        self,
        x: SSAValue,
        name: str,
        weight: np.ndarray,
        bias: np.ndarray | None,
        *,
        input_q: QuantParamsAttr,
        weight_q: QuantParamsAttr,
        output_q: QuantParamsAttr,
        strides: Sequence[int] = (1, 1),
        padding: Sequence[int] = (0, 0, 0, 0),
        groups: int = 1,
        clamp: Sequence[int] | None = None,
    ) -> SSAValue:
        xt = x.type
        assert isinstance(xt, TensorType)
        n, h, w, _ = xt.get_shape()
        cout, kh, kw, _ = weight.shape
        oh = conv_output_size(h, kh, strides[0], padding[0], padding[2])
        ow = conv_output_size(w, kw, strides[1], padding[1], padding[3])
        wv = self.param(f"{name}_w", weight)
        bv = self.param(f"{name}_b", bias) if bias is not None else None
        return self.add(
            Conv2DOp(
                x,
                wv,
                bv,
                tensor((n, oh, ow, cout)),
                strides=strides,
                padding=padding,
                groups=groups,
                input_q=input_q,
                weight_q=weight_q,
                output_q=output_q,
                clamp=clamp,
            )
        )

    def build(self, results: Sequence[SSAValue], name: str = "forward") -> ModuleOp:
        self.block.add_op(ReturnOp(*results))
        ftype = FunctionType.from_lists([a.type for a in self.block.args], [r.type for r in results])
        func = FuncOp(name, ftype, Region(self.block))
        module = ModuleOp([*self.params, func])
        module.verify()
        return module


def quant(scale: float | Sequence[float], zp: int = 0, axis: int = -1) -> QuantParamsAttr:
    if isinstance(scale, np.floating | float | int):
        return QuantParamsAttr.get(float(scale), int(zp), axis)
    return QuantParamsAttr.get([float(v) for v in scale], int(zp), axis)


def add_op(lhs: SSAValue, rhs: SSAValue, lhs_q: QuantParamsAttr, rhs_q: QuantParamsAttr, output_q: QuantParamsAttr,
           clamp: Sequence[int] | None = None) -> AddOp:
    return AddOp(lhs, rhs, lhs_q=lhs_q, rhs_q=rhs_q, output_q=output_q, clamp=clamp)


def avgpool_op(x: SSAValue, kernel: Sequence[int], strides: Sequence[int], input_q: QuantParamsAttr,
               output_q: QuantParamsAttr) -> AvgPoolOp:
    xt = x.type
    assert isinstance(xt, TensorType)
    n, h, w, c = xt.get_shape()
    out = tensor((n, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c))
    return AvgPoolOp(x, out, kernel=kernel, strides=strides, input_q=input_q, output_q=output_q)


def quantize_op(x: SSAValue, output_q: QuantParamsAttr) -> QuantizeOp:
    xt = x.type
    assert isinstance(xt, TensorType)
    return QuantizeOp(operands=[x], result_types=[tensor(xt.get_shape(), i8)], properties={"output_q": output_q})


def dequantize_op(x: SSAValue, input_q: QuantParamsAttr) -> DequantizeOp:
    return DequantizeOp(x, input_q)


def reshape_op(x: SSAValue, shape: Sequence[int]) -> ReshapeOp:
    xt = x.type
    assert isinstance(xt, TensorType)
    return ReshapeOp(x, tensor(shape, xt.element_type))


# -- a MCUNet-like network ------------------------------------------------------------------------------


def random_conv_params(
    rng: np.random.Generator, cout: int, kh: int, kw: int, cin_g: int, input_scale: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int8 OHWI weights, per-channel scales and int32 biases of plausible magnitude."""
    weight = rng.integers(-127, 128, size=(cout, kh, kw, cin_g), dtype=np.int8)
    w_scales = (rng.uniform(0.5, 1.5, cout) / (127 * np.sqrt(kh * kw * cin_g))).astype(np.float32)
    bias = np.round(rng.normal(0, 0.2, cout) / (input_scale * w_scales)).astype(np.int32)
    return weight, w_scales, bias


def mcunet_like(rng: np.random.Generator, resolution: int = 128, classes: int = 10) -> ModuleOp:
    """A stand-in for mcunet-5fps: 3x3 s2 stem, a depthwise-separable block, 13 inverted-residual blocks
    (1x1 expand, k x k depthwise, 1x1 project, residual adds), global average pool and a 1x1
    classifier: 42 backbone convolutions + the classifier, like the real model."""
    act = quant(0.05, -5)
    relu = (-5, 127)
    b = ModuleBuilder([tensor((1, resolution, resolution, 3))])

    def conv(x: SSAValue, name: str, cout: int, k: int, stride: int = 1, depthwise: bool = False,
             clamp: Sequence[int] | None = relu) -> SSAValue:
        xt = x.type
        assert isinstance(xt, TensorType)
        cin = xt.get_shape()[3]
        w, s, bias = random_conv_params(rng, cout, k, k, 1 if depthwise else cin, act.scale)
        p = k // 2
        pad = (p, p, p, p) if stride == 1 else (p - 1 + k % 2, p - 1 + k % 2, p, p)
        return b.conv(x, name, w, bias, input_q=act, weight_q=quant(s.tolist(), 0, 0), output_q=act,
                      strides=(stride, stride), padding=pad, groups=cin if depthwise else 1, clamp=clamp)

    x = conv(b.args[0], "stem", 16, 3, stride=2)
    x = conv(x, "b0_dw", 16, 3, depthwise=True)
    x = conv(x, "b0_project", 8, 1, clamp=None)
    channels = 8
    # (expand ratio, out channels, kernel, stride)
    plan = [(4, 16, 7, 2), (4, 16, 3, 1), (4, 24, 5, 2), (4, 24, 3, 1), (4, 24, 5, 1), (4, 40, 5, 2),
            (4, 40, 3, 1), (4, 48, 7, 1), (4, 48, 3, 1), (5, 96, 5, 2), (5, 96, 3, 1), (5, 96, 3, 1), (6, 160, 3, 1)]
    for i, (ratio, cout, k, stride) in enumerate(plan, start=1):
        inp = x
        x = conv(x, f"b{i}_expand", channels * ratio, 1)
        x = conv(x, f"b{i}_dw", channels * ratio, k, stride=stride, depthwise=True)
        x = conv(x, f"b{i}_project", cout, 1, clamp=None)
        if stride == 1 and cout == channels:
            x = b.add(add_op(inp, x, act, act, act))
        channels = cout
    xt = x.type
    assert isinstance(xt, TensorType)
    x = b.add(avgpool_op(x, xt.get_shape()[1:3], (1, 1), act, act))
    w, s, bias = random_conv_params(rng, classes, 1, 1, channels, act.scale)
    x = b.conv(x, "classifier", w, bias, input_q=act, weight_q=quant(s.tolist(), 0, 0), output_q=quant(0.1, 3))
    x = b.add(reshape_op(x, (1, classes)))
    return b.build([x])


# -- a small hand-written model shared by the interpreter and CLI tests ---------------------------------

SMALL_MODEL = """
builtin.module {
  qtrain.param @c_w = dense<1> : tensor<3x3x3x2xi8>
  qtrain.param @c_b trainable = dense<[1, 2, 3]> : tensor<3xi32>
  func.func @forward(%x: tensor<1x4x4x2xi8>) -> tensor<1x3xi8> {
    %w = qtrain.get_param @c_w : tensor<3x3x3x2xi8>
    %b = qtrain.get_param @c_b : tensor<3xi32>
    %y = qtrain.conv2d %x, %w, %b {strides = array<i64: 1, 1>, padding = array<i64: 1, 1, 1, 1>, groups = 1 : i64,
        input_q = #qtrain.quant<scales = [0.1], zp = 2>,
        weight_q = #qtrain.quant<scales = [0.01, 0.02, 0.03], zp = 0, axis = 0>,
        output_q = #qtrain.quant<scales = [0.2], zp = -1>, clamp = array<i64: -1, 127>}
        : (tensor<1x4x4x2xi8>, tensor<3x3x3x2xi8>, tensor<3xi32>) -> tensor<1x4x4x3xi8>
    %p = qtrain.avgpool %y {kernel = array<i64: 4, 4>, strides = array<i64: 1, 1>,
        input_q = #qtrain.quant<scales = [0.2], zp = -1>, output_q = #qtrain.quant<scales = [0.05], zp = 3>}
        : tensor<1x4x4x3xi8> -> tensor<1x1x1x3xi8>
    %r = qtrain.reshape %p : tensor<1x1x1x3xi8> -> tensor<1x3xi8>
    func.return %r : tensor<1x3xi8>
  }
}
"""


def small_model_reference(images: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """SMALL_MODEL computed directly with the numerics kernels."""
    bias = np.array([1, 2, 3], np.int32) if bias is None else bias
    y = numerics.conv2d(images, np.ones((3, 3, 3, 2), np.int8), bias, input_scale=0.1, input_zero_point=2,
                        weight_scales=np.array([0.01, 0.02, 0.03], np.float32), output_scale=0.2,
                        output_zero_point=-1, padding=(1, 1, 1, 1), clamp=(-1, 127))
    p = numerics.avgpool(y, kernel=(4, 4), strides=(1, 1), input_scale=0.2, input_zero_point=-1, output_scale=0.05,
                         output_zero_point=3)
    return p.reshape(images.shape[0], 3)


def printed(module: ModuleOp) -> str:
    text = io.StringIO()
    Printer(stream=text).print_op(module)
    return text.getvalue()


def random_images(n: int, shape: tuple[int, ...] = (4, 4, 2), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, size=(n, *shape), dtype=np.int8)


def train_step_module() -> ModuleOp:
    """SMALL_MODEL plus @train_step(image, label) = cross-entropy of its dequantized output (no updates)."""
    body = SMALL_MODEL[SMALL_MODEL.index("    %w = "):SMALL_MODEL.index("    func.return")]
    train = (
        "  func.func @train_step(%x: tensor<1x4x4x2xi8>, %label: i32) -> f32 {\n" + body
        + "    %l = qtrain.dequantize %r {input_q = #qtrain.quant<scales = [0.05], zp = 3>}"
        + " : tensor<1x3xi8> -> tensor<1x3xf32>\n"
        + "    %loss = qtrain.cross_entropy %l, %label : tensor<1x3xf32> -> f32\n"
        + "    func.return %loss : f32\n  }\n"
    )
    end = SMALL_MODEL.rindex("}")
    return load_module(SMALL_MODEL[:end] + train + "}\n")
