"""Sparse-update schemes: which biases and which weight slices of a network learn.

A scheme is named the same way on every command line (DESIGN.md):

- `full`: every weight and bias;
- `bias-only`: every bias, plus the classifier's weight (the classifier is always trained);
- `last-k=K`: weights and biases of the last K conv layers, the classifier being the last one;
- `FILE.json#MODEL/BUDGET`: a per-layer scheme in the format of the MCUNetV3 reference
  (`schemes.json`): the biases of the last `n_bias_update` backbone convs, the weights of the layers in
  `manual_weight_idx` on the first ceil(r * C_in) input channels (`weight_update_ratio` r; r = 0 is
  frozen), and the classifier's weight and bias; an entry may also list `lite_residual_blocks`, blocks
  whose TinyTL lite residual module trains (a qtrain extension, what the scheme search can choose);
- TinyTL (Cai et al., NeurIPS'20): `tinytl-b` (frozen weights; every bias and the classifier train: the
  same tensors as `bias-only`), `tinytl-l` (lite residual modules in every block but the first, and the
  classifier, train), `tinytl-l+b` (both; each module's last GroupNorm beta stays frozen: it duplicates the
  main branch's bias). The L schemes need the modules in the graph: `training_passes` inserts them
  (`qtrain-lite-residual`) before `qtrain-autodiff`.

Layers are numbered as in schemes.json: the learnable layers of the network (each op's
`LayerOp.learnable_layers`: a conv is one, a fused pointwise-depthwise op two) in forward order, first
conv 0, the classifier (the last conv) last. The ops of a lite residual module (marked
`qtrain.lite_residual`) are not layers of that numbering: they train as their module (`ResidualModule`).

In Python a scheme is an `UpdateScheme`: `parse_scheme(spec)` reads one from its command-line form, and
`UpdateScheme.per_layer(n_bias_update, weight_ratios)` builds a per-layer one directly (what the scheme
search does for its candidates), without a schemes.json file. `training_passes(scheme=...)` and
`SparseUpdatePass.from_scheme` take either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdsl.dialects import func

from qtrain.dialects.qtrain.contract import LITE_RESIDUAL_FINAL, lite_residual_block, param_name
from qtrain.dialects.qtrain.interfaces import LayerOp, ParamConsumerOp
from qtrain.dialects.qtrain.ops import shape_of
from qtrain.errors import UserError


class SchemeError(UserError):
    """A scheme that cannot be parsed or does not fit the network."""


@dataclass(frozen=True)
class Layer:
    """One learnable layer of the network, in schemes.json numbering: its weight and bias parameters and
    the input channels a weight slice is taken from (for depthwise: the groups)."""

    index: int
    weight: str
    bias: str | None
    in_channels: int
    is_depthwise: bool
    weight_shape: tuple[int, ...]


@dataclass(frozen=True)
class ResidualModule:
    """The trainable parameters of one lite residual module (`qtrain-lite-residual`), by block: each
    with its role's kind ("weight" | "bias"); `final_beta` is its last GroupNorm's beta."""

    block: int
    params: tuple[tuple[str, str], ...]
    final_beta: str | None
    main_bias: str | None = None
    """the bias of the conv whose output the module is added to (the block's projection)"""


@dataclass(frozen=True)
class TrainableTensor:
    """A tensor the scheme trains: `channels` is the input-channel slice of a partial weight, else None.
    `layer` is its schemes.json layer, -1 for a lite residual module's tensor (`module`: the block)."""

    name: str
    layer: int
    kind: str  # "weight" | "bias"
    channels: tuple[int, int] | None = None
    module: int | None = None


@dataclass(frozen=True)
class UpdateScheme:
    """A parsed scheme, independent of any network until `resolve` is called.

    `spec` is the text it was parsed from (or, for one built by `per_layer`, a description); it names
    the scheme in error messages.
    """

    spec: str
    kind: str  # full | bias-only | last-k | per-layer | tinytl-b | tinytl-l | tinytl-l+b
    k: int = 0
    n_bias_update: int = 0
    weight_ratios: Mapping[int, float] = field(default_factory=dict)
    lite_residual: tuple[int, ...] = ()
    """per-layer: the blocks whose lite residual module trains"""

    def __hash__(self) -> int:
        # The generated hash would fail on the dict; schemes are keys of caches and job tables.
        return hash((self.spec, self.kind, self.k, self.n_bias_update, tuple(sorted(self.weight_ratios.items())),
                     self.lite_residual))

    @classmethod
    def per_layer(cls, n_bias_update: int, weight_ratios: Mapping[int, float], spec: str | None = None,
                  lite_residual: Sequence[int] = ()) -> UpdateScheme:
        """A per-layer scheme from the fields of a schemes.json entry: the biases of the last `n_bias_update`
        backbone convs, the weight of backbone conv i on ratio `weight_ratios[i]` of its input channels
        (0 = frozen), the lite residual modules of blocks `lite_residual`, and the classifier. `spec` names
        it in messages (default: its fields)."""
        ratios = {int(i): float(r) for i, r in weight_ratios.items()}
        blocks = tuple(sorted({int(b) for b in lite_residual}))
        if spec is None:
            weights = ", ".join(f"{i}: {r:g}" for i, r in ratios.items())
            modules = f", lite_residual_blocks={list(blocks)}" if blocks else ""
            spec = f"per-layer{{n_bias_update={n_bias_update}, weight_update_ratio={{{weights}}}{modules}}}"
        if any(not 0 <= r <= 1 for r in ratios.values()):
            raise SchemeError(f"{spec}: weight_update_ratio values must be within [0, 1]")
        if any(b < 0 for b in blocks):
            raise SchemeError(f"{spec}: lite_residual_blocks must be block indexes >= 0")
        return cls(spec, "per-layer", n_bias_update=n_bias_update, weight_ratios=ratios, lite_residual=blocks)

    @property
    def inserts_modules(self) -> bool:
        """Whether the scheme trains lite residual modules (the pipeline inserts them first)."""
        return self.kind in ("tinytl-l", "tinytl-l+b") or bool(self.lite_residual)

    @property
    def module_blocks(self) -> tuple[int, ...] | None:
        """The blocks whose module the scheme trains; None: every block but the first (TinyTL's)."""
        return None if self.kind in ("tinytl-l", "tinytl-l+b") else self.lite_residual

    def resolve(self, layers: list[Layer], modules: Sequence[ResidualModule] = ()) -> dict[str, TrainableTensor]:
        """The trainable tensors of this scheme on `layers` (classifier last) and the network's lite residual
        `modules`, by parameter name."""
        n = len(layers)
        if n == 0:
            raise SchemeError("the network has no qtrain.conv2d layers to train")
        classifier = n - 1
        chosen: dict[str, TrainableTensor] = {}

        def module(m: ResidualModule, with_final_beta: bool) -> None:
            for name, kind in m.params:
                if with_final_beta or name != m.final_beta:
                    chosen[name] = TrainableTensor(name, -1, kind, module=m.block)

        if self.inserts_modules:
            wanted = self.module_blocks
            have = {m.block for m in modules}
            if not modules:
                raise SchemeError(f"{self.spec} trains lite residual modules, but the network has none (insert them "
                                  "with qtrain-lite-residual, which training_passes and the tools do for this scheme)")
            missing = sorted(set(wanted or ()) - have)
            if missing:
                raise SchemeError(f"{self.spec}: no lite residual module in block(s) {missing} "
                                  f"(modules: {sorted(have)})")

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
            for m in modules:
                module(m, with_final_beta=True)
        elif self.kind in ("tinytl-l", "tinytl-l+b"):
            if self.kind == "tinytl-l+b":
                for layer in layers:
                    bias(layer)
            weight(layers[classifier])
            bias(layers[classifier])
        elif self.kind in ("bias-only", "tinytl-b"):
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
        if self.inserts_modules:
            for m in modules:
                if self.module_blocks is None or m.block in self.module_blocks:
                    # The last GroupNorm's beta duplicates the main branch's bias: frozen when that trains.
                    module(m, with_final_beta=m.main_bias is None or m.main_bias not in chosen)
        return chosen


def parse_scheme(spec: str, k: int | None = None) -> UpdateScheme:
    """Parses a scheme as written on a command line (see the module docstring)."""
    spec = spec.strip()
    if spec == "full":
        return UpdateScheme(spec, "full")
    if spec == "bias-only":
        return UpdateScheme(spec, "bias-only")
    if spec in ("tinytl-b", "tinytl-l", "tinytl-l+b"):
        return UpdateScheme(spec, spec)
    if spec == "last-k" or spec.startswith("last-k="):
        text = spec.removeprefix("last-k").removeprefix("=")
        value = k if not text else _int(text, spec)
        if value is None:
            raise SchemeError("last-k needs a layer count: last-k=K (or the option k=K)")
        return UpdateScheme(f"last-k={value}", "last-k", k=value)
    if "#" in spec:
        return _load_per_layer(spec)
    raise SchemeError(
        f"unknown scheme '{spec}': expected full, bias-only, last-k=K, tinytl-b, tinytl-l, tinytl-l+b or "
        "FILE.json#MODEL/BUDGET"
    )


def _int(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SchemeError(f"{spec}: '{text}' is not a whole number") from None


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"the key '{duplicates[0]}' appears twice in one object")
    return dict(pairs)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def read_schemes_json(path: Path, what: str) -> object:
    """A schemes.json-format file parsed strictly (no NaN/Infinity, no duplicate keys, bounded nesting);
    SchemeError naming `what` otherwise."""
    try:
        text = path.read_text()
    except OSError as e:
        raise SchemeError(f"{what}: cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SchemeError(f"{what}: {path} is not a text (JSON) file") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise SchemeError(f"{what}: {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise SchemeError(f"{what}: {path} is nested too deeply to be a schemes file") from None
    except ValueError as e:
        raise SchemeError(f"{what}: {path} is not valid scheme JSON ({e})") from None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
               type(None): "null"}


def _describe(value: object) -> str:
    return f"{json.dumps(value)[:40]} (a JSON {_JSON_TYPES.get(type(value), type(value).__name__)})"


def _load_per_layer(spec: str) -> UpdateScheme:
    path_text, _, key = spec.partition("#")
    model, _, budget = key.partition("/")
    if not model or not budget:
        raise SchemeError(f"{spec}: expected FILE.json#MODEL/BUDGET, e.g. schemes.json#mcunet-5fps/49kb")
    path = Path(path_text)
    data = read_schemes_json(path, spec)
    if not isinstance(data, dict):
        raise SchemeError(f"{spec}: {path} must hold an object {{MODEL: {{BUDGET: scheme}}}}, got {_describe(data)}")
    if model not in data:
        models = ", ".join(k for k in data if not k.startswith("_"))
        raise SchemeError(f"{spec}: no model '{model}' in {path} (it has: {models or 'none'})")
    budgets = data[model]
    if not isinstance(budgets, dict):
        raise SchemeError(f"{spec}: '{model}' must be an object of budgets, got {_describe(budgets)}")
    if budget not in budgets:
        raise SchemeError(f"{spec}: no budget '{budget}' for {model} (it has: {', '.join(budgets) or 'none'})")
    entry = budgets[budget]
    if not isinstance(entry, dict):
        raise SchemeError(f"{spec}: the scheme must be an object, got {_describe(entry)}")
    missing = [k for k in ("n_bias_update", "manual_weight_idx", "weight_update_ratio") if k not in entry]
    if missing:
        raise SchemeError(f"{spec}: the scheme has no {', '.join(missing)}")
    n_bias, indexes, ratios = entry["n_bias_update"], entry["manual_weight_idx"], entry["weight_update_ratio"]
    if not _whole(n_bias) or n_bias < 0:
        raise SchemeError(f"{spec}: n_bias_update must be a whole number >= 0, got {_describe(n_bias)}")
    if not isinstance(indexes, list) or not all(_whole(i) and i >= 0 for i in indexes):
        raise SchemeError(f"{spec}: manual_weight_idx must be a list of layer indexes (whole numbers >= 0), got "
                          f"{_describe(indexes)}")
    if len(set(indexes)) != len(indexes):
        repeated = next(i for i in indexes if indexes.count(i) > 1)
        raise SchemeError(f"{spec}: manual_weight_idx lists layer {repeated} twice")
    if not isinstance(ratios, list) or not all(isinstance(r, int | float) and not isinstance(r, bool)
                                               and 0 <= r <= 1 for r in ratios):
        raise SchemeError(f"{spec}: weight_update_ratio must be a list of numbers in [0, 1], got {_describe(ratios)}")
    blocks = entry.get("lite_residual_blocks", [])
    if not isinstance(blocks, list) or not all(_whole(x) and x >= 0 for x in blocks):
        raise SchemeError(f"{spec}: lite_residual_blocks must be a list of block indexes (whole numbers >= 0), got "
                          f"{_describe(blocks)}")
    if len(indexes) != len(ratios):
        raise SchemeError(f"{spec}: manual_weight_idx and weight_update_ratio differ in length")
    return UpdateScheme.per_layer(n_bias, dict(zip(indexes, ratios, strict=True)), spec, lite_residual=blocks)


def network_layers(function: func.FuncOp) -> list[Layer]:
    """The learnable layers of a function in forward order (schemes.json numbering, classifier last)."""
    layers: list[Layer] = []
    for op in function.walk():
        if not isinstance(op, LayerOp) or lite_residual_block(op) is not None:
            continue
        for spec in op.learnable_layers():
            if spec.fused:
                raise SchemeError(f"layer {len(layers)} is fused with another one ({op.name}): schemes number the "
                                  "layers of the unfused network (run qtrain-fuse-streaming after "
                                  "qtrain-sparse-update)")
            weight = param_name(spec.weight)
            if weight is None:
                raise SchemeError(f"layer {len(layers)}: its weight is not a qtrain.param")
            layers.append(Layer(len(layers), weight, param_name(spec.bias), spec.in_channels, spec.depthwise,
                                shape_of(spec.weight)))
    return layers


def layer_numbers(function: func.FuncOp) -> dict[str, int]:
    """Parameter name -> layer index in schemes.json numbering (as `network_layers`), where a fused op
    still counts as the layers it stands for."""
    layer_of: dict[str, int] = {}
    index = 0
    for op in function.walk():
        if not isinstance(op, LayerOp) or lite_residual_block(op) is not None:
            continue
        for spec in op.learnable_layers():
            for name in (param_name(spec.weight), param_name(spec.bias)):
                if name is not None:
                    layer_of[name] = index
            index += 1
    return layer_of


def lite_residual_modules(function: func.FuncOp) -> list[ResidualModule]:
    """The lite residual modules of a function (ops marked `qtrain.lite_residual`), by block, with the role
    of each parameter their ops read (`ParamConsumerOp.trained_param_role`)."""
    params: dict[int, dict[str, str]] = {}
    final: dict[int, str] = {}
    main_bias: dict[int, str | None] = {}
    for op in function.walk():
        block = lite_residual_block(op)
        if block is not None and len(op.operands) == 2 and not isinstance(op, ParamConsumerOp):
            main = op.operands[0].owner  # the module's add (its one op of two activations): lhs = the main branch
            if isinstance(main, LayerOp) and lite_residual_block(main) is None:
                main_bias[block] = param_name(main.learnable_layers()[-1].bias)
        if block is None or not isinstance(op, ParamConsumerOp):
            continue
        for operand in op.operands:
            name = param_name(operand)
            role = op.trained_param_role(operand, qas=False) if name is not None else None
            if name is None or role is None:
                continue
            params.setdefault(block, {})[name] = role.kind
            if LITE_RESIDUAL_FINAL in op.attributes and role.kind == "bias":
                final[block] = name
    return [ResidualModule(b, tuple(params[b].items()), final.get(b), main_bias.get(b)) for b in sorted(params)]
