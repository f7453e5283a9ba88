"""The intermediate graph between ONNX nodes and qtrain ops.

`translate.OnnxImporter` turns ONNX nodes into `Layer`s over NHWC `Edge`s (batch 1), folding what qtrain
has no op for (BatchNormalization, activations, constant adds, Q/DQ pairs) into them; `ptq` runs the
layers in float to calibrate the edges a float model leaves unquantized; `translate` then emits one
qtrain op per layer. Weights stay in real OIHW terms until emission, next to the model's exact integers
when it has them, so folding can rescale them and PTQ can quantize them last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qtrain.dialects.qtrain import QuantParamsAttr


@dataclass(eq=False)
class Edge:
    """An activation tensor of the qtrain graph: NHWC with batch 1, quantized per tensor once known."""

    name: str
    shape: tuple[int, int, int]  # H, W, C
    quant: QuantParamsAttr | None = None
    producer: Layer | None = None

    @property
    def nhwc(self) -> tuple[int, int, int, int]:
        return (1, *self.shape)


@dataclass(eq=False)
class Act:
    """What an ONNX tensor name refers to when it is computed at run time.

    `is_int`: the ONNX tensor holds the quantized integers of `edge` (after QuantizeLinear / QLinear*);
    otherwise it holds real values (a float model's tensor, or the output of a DequantizeLinear).
    `unsigned`: those integers are uint8 in the ONNX model. `flat`: the ONNX view is `[N, C*H*W]`
    (CHW order) rather than `[N, C, H, W]`.
    """

    edge: Edge
    is_int: bool = False
    unsigned: bool = False
    flat: bool = False
    groups: tuple[int, int] | None = None
    """The 5-D view `[N, g, C / g, H, W]` of the channels (a channel shuffle's first reshape), or None."""
    transposed: bool = False
    """With `groups`: the view is `[N, C / g, g, H, W]` (the shuffle's transpose, not yet materialized)."""

    def onnx_shape(self) -> tuple[int, ...]:
        h, w, c = self.edge.shape
        if self.groups is not None:
            g, k = self.groups
            return (1, k, g, h, w) if self.transposed else (1, g, k, h, w)
        return (1, c * h * w) if self.flat else (1, c, h, w)


@dataclass
class QuantizedConst:
    """A constant given as integers: real = scale * centered, per tensor (axis None) or along `axis`."""

    centered: np.ndarray  # int64, the integers minus the zero point
    scale: np.ndarray  # float32, shape [] or [size of axis]
    axis: int | None


@dataclass
class Const:
    """A constant ONNX tensor (initializer, Constant, or computed from constants)."""

    value: np.ndarray
    exact: QuantizedConst | None = None  # set on the output of a DequantizeLinear of a constant


@dataclass(eq=False)
class Layer:
    output: Edge

    def inputs(self) -> list[Edge]:
        raise NotImplementedError


@dataclass(eq=False)
class ConvLayer(Layer):
    """A conv in OIHW real terms; `w_int`/`w_scale` hold the model's exact integers when it has them."""

    input: Edge
    w_real: np.ndarray  # float64 [O, I/g, KH, KW]
    b_real: np.ndarray  # float64 [O]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    groups: int = 1
    act: tuple[float, float] = (-math.inf, math.inf)
    w_int: np.ndarray | None = None  # int64 [O, I/g, KH, KW] within [-128, 127]
    w_scale: np.ndarray | None = None  # float32 [O]
    b_int: np.ndarray | None = None  # int64 [O]
    b_scale: np.ndarray | None = None  # float64 [O]
    source: str = ""

    def inputs(self) -> list[Edge]:
        return [self.input]

    def scale_channels(self, factor: np.ndarray) -> None:
        """Multiplies output channel c by factor[c] (BatchNormalization, Gemm alpha)."""
        factor = np.asarray(factor, dtype=np.float64)
        self.w_real = self.w_real * factor[:, None, None, None]
        self.b_real = self.b_real * factor
        if self.w_int is not None and self.w_scale is not None:
            sign = np.where(factor < 0, -1, 1)
            self.w_int = self.w_int * sign[:, None, None, None]
            self.w_scale = (self.w_scale.astype(np.float64) * np.abs(factor)).astype(np.float32)
            if np.any(self.w_scale <= 0) or not np.all(np.isfinite(self.w_scale)):
                self.w_int = self.w_scale = None
        self.b_int = self.b_scale = None

    def shift_bias(self, delta: np.ndarray) -> None:
        self.b_real = self.b_real + np.asarray(delta, dtype=np.float64)
        self.b_int = self.b_scale = None


@dataclass(eq=False)
class AddLayer(Layer):
    lhs: Edge
    rhs: Edge
    act: tuple[float, float] = (-math.inf, math.inf)

    def inputs(self) -> list[Edge]:
        return [self.lhs, self.rhs]


@dataclass(eq=False)
class PoolLayer(Layer):
    input: Edge
    kernel: tuple[int, int]
    strides: tuple[int, int]

    def inputs(self) -> list[Edge]:
        return [self.input]


@dataclass(eq=False)
class RequantLayer(Layer):
    """Re-expresses a tensor in another quantization (a 1x1 avgpool); `act` must follow from saturation."""

    input: Edge
    act: tuple[float, float] = (-math.inf, math.inf)
    source: str = ""

    def inputs(self) -> list[Edge]:
        return [self.input]


@dataclass(eq=False)
class LutLayer(Layer):
    """An element-wise function run as an int8 table (`qtrain.lut`; `activations.FUNCTIONS`)."""

    input: Edge
    function: str
    params: tuple[float, ...] = ()
    source: str = ""

    def inputs(self) -> list[Edge]:
        return [self.input]


@dataclass(eq=False)
class GroupNormLayer(Layer):
    """GroupNorm of `input` in `groups` groups of consecutive channels, real per-channel gamma / beta (affine
    ops after it folded in); `act` a following ReLU/Clip."""

    input: Edge
    groups: int
    epsilon: float
    gamma: np.ndarray  # float64 [C]
    beta: np.ndarray  # float64 [C]
    act: tuple[float, float] = (-math.inf, math.inf)
    source: str = ""

    def inputs(self) -> list[Edge]:
        return [self.input]


@dataclass(eq=False)
class MulLayer(Layer):
    """lhs * rhs, rhs the same shape or 1 x 1 x C (squeeze-and-excitation)."""

    lhs: Edge
    rhs: Edge

    def inputs(self) -> list[Edge]:
        return [self.lhs, self.rhs]


@dataclass(eq=False)
class MaxPoolLayer(Layer):
    """Max pool; keeps its input's quantization. pads: top, left, bottom, right (ceil_mode included)."""

    input: Edge
    kernel: tuple[int, int]
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]

    def inputs(self) -> list[Edge]:
        return [self.input]


@dataclass(eq=False)
class ConcatLayer(Layer):
    """Channel concatenation; inputs quantized otherwise than the output are requantized first."""

    parts: list[Edge]

    def inputs(self) -> list[Edge]:
        return list(self.parts)


@dataclass(eq=False)
class GatherLayer(Layer):
    """output channel k = input channel indices[k] (a channel slice, split or shuffle); keeps the quantization."""

    input: Edge
    indices: tuple[int, ...]

    def inputs(self) -> list[Edge]:
        return [self.input]


QUANT_PRESERVING = (MaxPoolLayer, GatherLayer)
"""Layers whose output has its input's quantization unless the model says otherwise."""


@dataclass(eq=False)
class GroupedView:
    """An activation seen as `[N, G, C / G * H * W]` through a Reshape: how PyTorch's exporter writes GroupNorm
    (Reshape -> InstanceNormalization -> Reshape back). Only InstanceNormalization and the Reshape back take it."""

    act: Act
    groups: int


Value = Act | Const | GroupedView


def reachable(layers: list[Layer], output: Edge) -> list[Layer]:
    """The layers `output` depends on, in the order of `layers` (dead branches dropped)."""
    needed: set[int] = set()
    stack = [output]
    while stack:
        edge = stack.pop()
        if edge.producer is not None and id(edge.producer) not in needed:
            needed.add(id(edge.producer))
            stack.extend(edge.producer.inputs())
    return [layer for layer in layers if id(layer) in needed]
