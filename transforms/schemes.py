"""Sparse-update schemes: which biases and which weight slices of a network learn.

A scheme is named the same way on every command line (DESIGN.md):

- `full`: every weight and bias;
- `bias-only`: every bias, plus the classifier's weight (the classifier is always trained);
- `last-k=K`: weights and biases of the last K conv layers, the classifier being the last one;
- `FILE.json#MODEL/BUDGET`: a per-layer scheme in the format of the MCUNetV3 reference
  (`schemes.json`): the biases of the last `n_bias_update` backbone convs, the weights of the layers in
  `manual_weight_idx` on the first ceil(r * C_in) input channels (`weight_update_ratio` r; r = 0 is
  frozen), and the classifier's weight and bias.

Layers are numbered as in schemes.json: the conv2d ops of the network in forward order, first conv 0,
the classifier (the last conv) last.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects import func

from qtrain.dialects.qtrain import Conv2DOp, FusedPointwiseDepthwiseOp, GetParamOp


class SchemeError(ValueError):
    """A scheme that cannot be parsed or does not fit the network."""


@dataclass(frozen=True)
class Layer:
    """One conv layer of the network, in schemes.json numbering."""

    index: int
    conv: Conv2DOp
    weight: str
    bias: str | None

    @property
    def in_channels(self) -> int:
        """Input channels a weight slice is taken from (for depthwise: the groups)."""
        return self.conv.input.type.get_shape()[3]  # type: ignore[attr-defined]

    @property
    def is_depthwise(self) -> bool:
        return self.conv.is_depthwise


@dataclass(frozen=True)
class TrainableTensor:
    """A tensor the scheme trains: `channels` is the input-channel slice of a partial weight, else None."""

    name: str
    layer: int
    kind: str  # "weight" | "bias"
    channels: tuple[int, int] | None = None


@dataclass(frozen=True)
class UpdateScheme:
    """A parsed scheme, independent of any network until `resolve` is called."""

    spec: str
    kind: str  # full | bias-only | last-k | per-layer
    k: int = 0
    n_bias_update: int = 0
    weight_ratios: Mapping[int, float] = field(default_factory=dict)

    def resolve(self, layers: list[Layer]) -> dict[str, TrainableTensor]:
        """The trainable tensors of this scheme on `layers` (classifier last), by parameter name."""
        n = len(layers)
        if n == 0:
            raise SchemeError("the network has no qtrain.conv2d layers to train")
        classifier = n - 1
        chosen: dict[str, TrainableTensor] = {}

        def weight(layer: Layer, ratio: float = 1.0) -> None:
            c = layer.in_channels
            k = min(c, max(1, math.ceil(ratio * c)))
            chosen[layer.weight] = TrainableTensor(layer.weight, layer.index, "weight", None if k == c else (0, k))

        def bias(layer: Layer) -> None:
            if layer.bias is not None:
                chosen[layer.bias] = TrainableTensor(layer.bias, layer.index, "bias")

        if self.kind == "full":
            for layer in layers:
                weight(layer)
                bias(layer)
        elif self.kind == "bias-only":
            for layer in layers:
                bias(layer)
            weight(layers[classifier])
        elif self.kind == "last-k":
            if not 1 <= self.k <= n:
                raise SchemeError(f"last-k={self.k}: k must be between 1 and the number of conv layers ({n})")
            for layer in layers[n - self.k:]:
                weight(layer)
                bias(layer)
        else:
            backbone = n - 1
            if not 0 <= self.n_bias_update <= backbone:
                raise SchemeError(
                    f"{self.spec}: n_bias_update = {self.n_bias_update} but the network has {backbone} backbone convs"
                )
            for layer in layers[backbone - self.n_bias_update:backbone]:
                bias(layer)
            for index, ratio in self.weight_ratios.items():
                if not 0 <= index < backbone:
                    raise SchemeError(f"{self.spec}: weight layer {index} is not a backbone conv (0..{backbone - 1})")
                if ratio > 0:
                    weight(layers[index], ratio)
            weight(layers[classifier])
            bias(layers[classifier])
        return chosen


def parse_scheme(spec: str, k: int | None = None) -> UpdateScheme:
    """Parses a scheme as written on a command line (see the module docstring)."""
    spec = spec.strip()
    if spec == "full":
        return UpdateScheme(spec, "full")
    if spec == "bias-only":
        return UpdateScheme(spec, "bias-only")
    if spec == "last-k" or spec.startswith("last-k="):
        text = spec.removeprefix("last-k").removeprefix("=")
        value = k if not text else _int(text, spec)
        if value is None:
            raise SchemeError("last-k needs a layer count: last-k=K (or the option k=K)")
        return UpdateScheme(f"last-k={value}", "last-k", k=value)
    if "#" in spec:
        return _load_per_layer(spec)
    raise SchemeError(
        f"unknown scheme '{spec}': expected full, bias-only, last-k=K or FILE.json#MODEL/BUDGET"
    )


def _int(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SchemeError(f"{spec}: '{text}' is not a whole number") from None


def _load_per_layer(spec: str) -> UpdateScheme:
    path_text, _, key = spec.partition("#")
    model, _, budget = key.partition("/")
    if not model or not budget:
        raise SchemeError(f"{spec}: expected FILE.json#MODEL/BUDGET, e.g. schemes.json#mcunet-5fps/49kb")
    path = Path(path_text)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise SchemeError(f"{spec}: cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise SchemeError(f"{spec}: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if model not in data:
        models = ", ".join(k for k in data if not k.startswith("_"))
        raise SchemeError(f"{spec}: no model '{model}' in {path} (it has: {models})")
    if budget not in data[model]:
        raise SchemeError(f"{spec}: no budget '{budget}' for {model} (it has: {', '.join(data[model])})")
    entry = data[model][budget]
    try:
        indexes = [int(i) for i in entry["manual_weight_idx"]]
        ratios = [float(r) for r in entry["weight_update_ratio"]]
        n_bias = int(entry["n_bias_update"])
    except (KeyError, TypeError, ValueError) as e:
        raise SchemeError(f"{spec}: malformed entry ({e})") from None
    if len(indexes) != len(ratios):
        raise SchemeError(f"{spec}: manual_weight_idx and weight_update_ratio differ in length")
    if any(not 0 <= r <= 1 for r in ratios):
        raise SchemeError(f"{spec}: weight_update_ratio values must be within [0, 1]")
    return UpdateScheme(spec, "per-layer", n_bias_update=n_bias, weight_ratios=dict(zip(indexes, ratios, strict=True)))


def network_layers(function: func.FuncOp) -> list[Layer]:
    """The conv layers of a function in forward order (schemes.json numbering, classifier last)."""
    layers: list[Layer] = []
    for op in function.walk():
        if isinstance(op, FusedPointwiseDepthwiseOp):
            raise SchemeError(f"conv layer {len(layers)} is fused with the next one ({op.name}): schemes number the "
                              "layers of the unfused network (run qtrain-fuse-streaming after qtrain-sparse-update)")
        if isinstance(op, Conv2DOp):
            weight = _param_of(op.weight)
            if weight is None:
                raise SchemeError(f"conv layer {len(layers)}: its weight is not a qtrain.param")
            bias = _param_of(op.bias) if op.bias is not None else None
            layers.append(Layer(len(layers), op, weight, bias))
    return layers


def _param_of(value: object) -> str | None:
    owner = getattr(value, "owner", None)
    return owner.param.root_reference.data if isinstance(owner, GetParamOp) else None


def layer_numbers(function: func.FuncOp) -> dict[str, int]:
    """Parameter name -> layer index in schemes.json numbering (as `network_layers`), where a
    `qtrain.fused_pointwise_depthwise` still counts as the two conv layers it stands for."""
    layer_of: dict[str, int] = {}
    index = 0
    for op in function.walk():
        if isinstance(op, Conv2DOp):
            members = [[op.weight, op.bias]]
        elif isinstance(op, FusedPointwiseDepthwiseOp):
            members = [[op.pw_weight, op.pw_bias], [op.dw_weight, op.dw_bias]]
        else:
            continue
        for values in members:
            for v in values:
                name = _param_of(v) if v is not None else None
                if name is not None:
                    layer_of[name] = index
            index += 1
    return layer_of
