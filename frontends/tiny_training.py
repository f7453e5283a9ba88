"""Importer for the int8 reference models of the MCUNetV3 paper (mit-han-lab/tiny-training).

The models (`mcunet-5fps.pkl`, `mbv2-w0.35.pkl`, `proxyless-w0.3.pkl`) are torch zip-pickles of plain
dicts of numpy arrays: `first_conv`, `blocks` (each with `pointwise1` (optional), `depthwise`,
`pointwise2`, `residual`, `se`), `feature_mix` and `classifier`. Every conv carries int8 OIHW weights,
int32 biases, per-output-channel float32 weight scales and the per-tensor (scale, zero point) of its
input and output; a residual carries its shortcut's and its sum's quantization.

Forward semantics of the reference training code (mit-han-lab/tiny-training,
`algorithm/quantize/quantized_ops_diff.py`, `custom_quantized_format.py`) and how they map to qtrain:
- conv: `clamp(round_half_even((sum((x - zx) * w) + b) * s_x*s_w[c]/s_y) + zy, -128, 127)` with
  padding `(k - 1) // 2` on every side (filled with the input zero point). The only clamp is the
  int8 range (`_TruncateActivationRange`): ReLU/ReLU6 are implicit in the output quantization (those
  layers have `y_zero = -128`, the int8 floor is real 0), so no `clamp` property is set. The
  reference's multiplier is float32(double(s_x) * s_w / double(s_y)) from the pickle's double
  scales; qtrain's is computed in float32 from float32 scales, one ulp apart on 41-46% of the channels.
- residual: the block input (shortcut, `lhs`) plus the block's last conv (`rhs`), requantized to the
  residual's output quantization: `round_half_even(((x1 - z1)*s1 + (x2 - z2)*s2) / s_y) + z_y`,
  clamped to int8. `qtrain.add` computes the same real value with the zero points folded into one
  float32 offset (onnxruntime's QLinearAdd): it rounds differently on 5 of the 1,966,080 possible
  input pairs of the 30 residual adds of the three models, by one unit.
- global average pool: the mean of the int8 codes rounded half to even, no requantization (output
  quantization = input quantization). `qtrain.avgpool` rounds `mean(x - zx)` and adds `zx` back, which
  differs by one unit on exact .5 ties when `zx` is odd (mcunet-5fps: zx = -1; see
  `avgpool_tie_note`).
- classifier: a 1x1 conv on the pooled `1x1xC` tensor; a reshape turns `1x1x1xK` into `1xK`. The
  `K`-class head is either `head="new"` (what fine-tuning on a new task starts from, and what the tools
  use: every weight and bias zero, on the int8 grid of the first `K` ImageNet rows' weight scales, with
  the ImageNet classifier's input/output quantization) or `head="imagenet"` (the first `K` rows of the
  ImageNet classifier as they are: the reference network, for checking its numerics; the library
  default). Why zero: the ImageNet rows score ImageNet classes (tench, goldfish, ...), not the task's, so
  their first, large and meaningless gradients flow back into the pretrained features and wreck them
  (mbv2-w0.35 never learned the 128x128 digits task from them at any learning rate); a zero head sends
  no gradient into the backbone until it has learned something, the "linear probe, then fine-tune"
  order (Kumar et al., ICLR 2022), with no random initialisation to seed. The reference's compilation
  script also starts from a fresh head (random, with the output scale left at 1).
- int32 accumulators: the reference accumulates in float and never overflows. A few dead channels
  (weight scale ~4e-9) carry saturated biases (+-2^31) whose int32 sum with the conv could wrap; the
  importer pulls those biases in by the largest possible |conv sum|, which leaves every output of the
  reference arithmetic unchanged (`int32_safe_bias`, `bias_adjustment_is_exact`).

Layer numbering follows `schemes.json` (`_about`): first conv = 0, then per block its pointwise1 (if
any), depthwise, pointwise2, then feature_mix (if any); the classifier comes last (conv42 for
mcunet-5fps). Parameters are module-level `qtrain.param` symbols `conv{L}.weight` (int8 OHWI) and
`conv{L}.bias` (int32). The IR is built by `frontends/builder.py`, as the ONNX importer's is; each layer
must read its input with the quantization the previous layer writes it with (TinyTrainingFormatError
otherwise), so the module passes `qtrain-verify-quant-chain`.

The model's input quantization (the first conv's `x_scale`, `x_zero`) is recorded on `@forward` as the
discardable attribute `qtrain.input_q`: images must be quantized with it (`q = round(x / s) + zp`;
for these models s = 2/255, zp = 0, i.e. real inputs in [-1, 1]).

`qtrain.lowering.onnx_export.export_onnx` writes the imported network as an ONNX QOperator model;
onnxruntime computes it bit for bit like qtrain's interpreter (the acceptance test).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.ir import SSAValue

from qtrain.dialects.qtrain import AvgPoolOp, QuantParamsAttr
from qtrain.dialects.qtrain.contract import FORWARD, find_func
from qtrain.errors import UserError
from qtrain.frontends.builder import INPUT_Q_ATTR, ForwardBuilder


class TinyTrainingFormatError(UserError):
    """The file is not a readable, supported tiny-training reference model."""


# -- loading -------------------------------------------------------------------------------------------

_ALLOWED_CLASSES = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers of numpy arrays and nothing else (a pickle can run arbitrary code);
    maps numpy 1.x module paths (`numpy.core.*`) to numpy 2 (`numpy._core.*`)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _ALLOWED_CLASSES:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain numpy data is accepted")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("the pickle references torch tensor storages; expected plain numpy arrays")


def load_pkl(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a tiny-training model pickle (`archive/data.pkl` inside a torch zip) without torch.

    Raises FileNotFoundError/OSError for unreadable paths and TinyTrainingFormatError for anything that
    is not such a pickle (not a zip, truncated, corrupt, not a dict)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise TinyTrainingFormatError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if not names:
                raise TinyTrainingFormatError(f"{path}: no data.pkl inside; not a torch zip-pickle")
            data = archive.read(names[0])
        model = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except TinyTrainingFormatError:
        raise
    except zipfile.BadZipFile as e:
        reason = "truncated, or not a torch zip-pickle" if "not a zip file" in str(e) else str(e)
        raise TinyTrainingFormatError(f"{path}: not a readable tiny-training model pickle ({reason})") from e
    except ( zlib.error, EOFError, pickle.UnpicklingError, ValueError, TypeError,
            AttributeError, ImportError, IndexError, KeyError, NotImplementedError) as e:
        raise TinyTrainingFormatError(f"{path}: not a readable tiny-training model pickle ({e})") from e
    if not isinstance(model, dict):
        raise TinyTrainingFormatError(f"{path}: the pickle holds a {type(model).__name__}, expected a model dict")
    return model


# -- the model, validated and typed ------------------------------------------------------------------


@dataclass(frozen=True)
class QuantConv:
    """One conv of a reference model, as stored in the pickle (weights OIHW)."""

    where: str
    weight: np.ndarray  # int8 [O, I/groups, KH, KW]
    bias: np.ndarray  # int32 [O]
    w_scales: np.ndarray  # float32 [O]
    x_scale: float
    x_zero: int
    y_scale: float
    y_zero: int
    stride: int
    groups: int
    out_shape: int | None = None  # the spatial output size the pickle states, checked on import

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """[top, left, bottom, right] = (k - 1) // 2, as the reference's conv builder."""
        ph, pw = (self.kernel[0] - 1) // 2, (self.kernel[1] - 1) // 2
        return ph, pw, ph, pw

    def output_size(self, size: int) -> int:
        pt, _, pb, _ = self.padding
        return (size + pt + pb - self.kernel[0]) // self.stride + 1


@dataclass(frozen=True)
class Residual:
    """The requantizing add closing a block: shortcut (block input) + the block's last conv."""

    x_scale: float
    x_zero: int
    y_scale: float
    y_zero: int


@dataclass(frozen=True)
class Block:
    pointwise1: QuantConv | None
    depthwise: QuantConv
    pointwise2: QuantConv
    residual: Residual | None

    def convs(self) -> list[QuantConv]:
        return [c for c in (self.pointwise1, self.depthwise, self.pointwise2) if c is not None]


@dataclass(frozen=True)
class ReferenceModel:
    first_conv: QuantConv
    blocks: list[Block]
    feature_mix: QuantConv | None
    classifier: QuantConv
    input_size: int
    input_channels: int

    def backbone_convs(self) -> list[QuantConv]:
        """The convs in the numbering of schemes.json: index L is `conv{L}`; the classifier is next."""
        convs = [self.first_conv]
        for b in self.blocks:
            convs.extend(b.convs())
        if self.feature_mix is not None:
            convs.append(self.feature_mix)
        return convs

    def all_convs(self) -> list[QuantConv]:
        return [*self.backbone_convs(), self.classifier]

    @property
    def num_imagenet_classes(self) -> int:
        return self.classifier.out_channels


def _fail(where: str, message: str) -> TinyTrainingFormatError:
    return TinyTrainingFormatError(f"{where}: {message}")


def _get(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise _fail(where, f"expected a dict, got {type(d).__name__}")
    if key not in d:
        raise _fail(where, f"missing '{key}'")
    return d[key]


def _number(d: Any, key: str, where: str, kind: type) -> Any:
    v = _get(d, key, where)
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, np.generic):
        v = v.item()
    if kind is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if kind is float and isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    raise _fail(f"{where}.{key}", f"expected a {kind.__name__}, got {v!r}")


def _array(d: Any, key: str, where: str, dtype: type, ndim: int) -> np.ndarray:
    v = _get(d, key, where)
    if not isinstance(v, np.ndarray) or v.dtype != dtype or v.ndim != ndim:
        got = f"{v.dtype} array of rank {v.ndim}" if isinstance(v, np.ndarray) else type(v).__name__
        raise _fail(f"{where}.{key}", f"expected a rank-{ndim} {np.dtype(dtype)} array, got {got}")
    return v


def _conv(cfg: Any, where: str) -> QuantConv:
    p = _get(cfg, "params", where)
    pw = f"{where}.params"
    weight = _array(p, "weight", pw, np.int8, 4)
    cout = weight.shape[0]
    bias = _array(p, "bias", pw, np.int32, 1)
    w_scales = _array(p, "w_scales", pw, np.float32, 1)
    if bias.shape != (cout,) or w_scales.shape != (cout,):
        raise _fail(pw, f"bias {bias.shape} and w_scales {w_scales.shape} must have {cout} entries (output channels)")
    groups = _number(cfg, "groups", where, int) if "groups" in cfg else 1
    stride = _number(cfg, "stride", where, int) if "stride" in cfg else 1
    if groups < 1 or stride < 1:
        raise _fail(where, f"groups ({groups}) and stride ({stride}) must be >= 1")
    kernel = cfg.get("kernel_size")
    if kernel is not None:
        k = tuple(kernel) if isinstance(kernel, list | tuple) else (kernel, kernel)
        if tuple(int(x) for x in k) != weight.shape[2:]:
            raise _fail(where, f"kernel_size {k} does not match the weight shape {weight.shape}")
    if cout % groups:
        raise _fail(where, f"groups = {groups} does not divide the {cout} output channels")
    conv = QuantConv(
        where=where,
        weight=weight,
        bias=bias,
        w_scales=w_scales,
        x_scale=_number(p, "x_scale", pw, float),
        x_zero=_number(p, "x_zero", pw, int),
        y_scale=_number(p, "y_scale", pw, float),
        y_zero=_number(p, "y_zero", pw, int),
        stride=stride,
        groups=groups,
        out_shape=cfg["out_shape"] if isinstance(cfg.get("out_shape"), int) else None,
    )
    for what, v in (("in_channel", conv.in_channels), ("out_channel", conv.out_channels)):
        if what in cfg and cfg[what] != v:
            raise _fail(where, f"{what} = {cfg[what]} but the weight {weight.shape} with groups {groups} implies {v}")
    if not (np.all(np.isfinite(w_scales)) and np.all(w_scales > 0) and conv.x_scale > 0 and conv.y_scale > 0):
        raise _fail(pw, "scales must be positive and finite")
    return conv


def parse_model(model: dict[str, Any]) -> ReferenceModel:
    """Validates a loaded pickle and returns its typed form (raises TinyTrainingFormatError)."""
    for key in ("first_conv", "blocks", "classifier"):
        if key not in model:
            keys = ", ".join(sorted(map(str, model))[:8])
            raise TinyTrainingFormatError(f"missing '{key}': not a tiny-training model (keys: {keys})")
    first = _conv(model["first_conv"], "first_conv")
    blocks_cfg = model["blocks"]
    if not isinstance(blocks_cfg, list | tuple):
        raise _fail("blocks", f"expected a list, got {type(blocks_cfg).__name__}")
    blocks: list[Block] = []
    for i, b in enumerate(blocks_cfg):
        where = f"blocks[{i}]"
        if not isinstance(b, dict):
            raise _fail(where, f"expected a dict, got {type(b).__name__}")
        if b.get("se") is not None:
            raise _fail(where, "squeeze-and-excitation blocks are not supported (nor by the reference training code)")
        pw1 = None if b.get("pointwise1") is None else _conv(b["pointwise1"], f"{where}.pointwise1")
        dw = _conv(_get(b, "depthwise", where), f"{where}.depthwise")
        pw2 = _conv(_get(b, "pointwise2", where), f"{where}.pointwise2")
        residual = None
        r = b.get("residual")
        if r is not None:
            if isinstance(r, dict) and "kernel_size" in r:
                raise _fail(f"{where}.residual", "a conv on the shortcut is not supported; none of the models has one")
            rp = _get(r, "params", f"{where}.residual")
            rw = f"{where}.residual.params"
            residual = Residual(
                x_scale=_number(rp, "x_scale", rw, float),
                x_zero=_number(rp, "x_zero", rw, int),
                y_scale=_number(rp, "y_scale", rw, float),
                y_zero=_number(rp, "y_zero", rw, int),
            )
        blocks.append(Block(pw1, dw, pw2, residual))
    feature_mix = None if model.get("feature_mix") is None else _conv(model["feature_mix"], "feature_mix")
    classifier = _conv(model["classifier"], "classifier")
    if classifier.kernel != (1, 1) or classifier.groups != 1:
        raise _fail(
            "classifier", f"expected a dense 1x1 conv, got kernel {classifier.kernel}, groups {classifier.groups}"
        )
    size = _number(model["first_conv"], "in_shape", "first_conv", int)
    return ReferenceModel(first, blocks, feature_mix, classifier, size, first.in_channels)


# -- IR construction -----------------------------------------------------------------------------------


def accumulator_bound(c: QuantConv) -> np.ndarray:
    """Per output channel, the largest possible |sum((x - zx) * w)| over all int8 inputs (int64)."""
    worst_x = max(abs(-128 - c.x_zero), abs(127 - c.x_zero))
    return np.abs(c.weight.astype(np.int64)).reshape(c.out_channels, -1).sum(axis=1) * worst_x


def int32_safe_bias(c: QuantConv) -> np.ndarray:
    """The biases, pulled in just far enough that `sum((x - zx) * w) + b` cannot overflow int32.

    The reference computes the accumulator in float and never overflows; int32 backends (onnxruntime,
    CMSIS-style C) wrap around. Some dead channels of the reference models carry saturated biases
    (+-2^31, their weight scale is ~4e-9), e.g. conv0 channel 6 of mcunet-5fps: with a negative sum the
    int32 accumulator would wrap to the other sign. On those channels the output is the same constant for
    every input, before and after the adjustment (checked by `bias_adjustment_is_exact`)."""
    bound = accumulator_bound(c)
    lo = np.int64(-(2**31)) + bound
    hi = np.int64(2**31 - 1) - bound
    return np.clip(c.bias.astype(np.int64), lo, hi).astype(np.int32)


def bias_adjustment_is_exact(c: QuantConv) -> bool:
    """True when `int32_safe_bias` changes no output of the reference's (overflow-free) arithmetic: on
    every adjusted channel, the int8 output at both ends of the accumulator range is the same with the
    original and with the adjusted bias, so (the output being monotonic in the sum) it is one constant."""
    safe = int32_safe_bias(c).astype(np.float64)
    bias = c.bias.astype(np.float64)
    bound = accumulator_bound(c).astype(np.float64)
    m = np.float64(c.x_scale) * c.w_scales.astype(np.float64) / np.float64(c.y_scale)
    for ch in np.nonzero(safe != bias)[0]:
        ends = [(s + b) * m[ch] for b in (bias[ch], safe[ch]) for s in (-bound[ch], bound[ch])]
        if len({float(np.clip(np.rint(v) + c.y_zero, -128, 127)) for v in ends}) != 1:
            return False
    return True


def _q(scale: float, zero: int) -> QuantParamsAttr:
    return QuantParamsAttr.get(scale, zero)


def _reads(b: ForwardBuilder, x: SSAValue, q: QuantParamsAttr, where: str) -> None:
    """The pickle states the quantization each layer reads its input with; it must be the one the
    previous layer wrote (a consistent chain, as `qtrain-verify-quant-chain` requires)."""
    if b.quant[x] != q:
        raise _fail(where, f"reads its input as {q}, but the previous layer writes {b.quant[x]}")


def _emit_conv(b: ForwardBuilder, c: QuantConv, x: SSAValue, out_rows: int | None = None,
               zero: bool = False) -> SSAValue:
    """`c` as the next `qtrain.conv2d`; `out_rows` keeps only the first output channels (the head);
    `zero`: all weights and biases zero (a new head), on the same weight scales."""
    xt = x.type
    assert isinstance(xt, TensorType)
    _, h, wd, cin = xt.get_shape()
    if cin != c.in_channels:
        raise _fail(c.where, f"takes {c.in_channels} input channels, but the previous layer gives {cin}")
    oh = c.output_size(h)
    if c.out_shape is not None and c.out_shape != oh:
        raise _fail(c.where, f"out_shape = {c.out_shape}, but a {h}x{wd} input with padding {c.padding} gives {oh}")
    _reads(b, x, _q(c.x_scale, c.x_zero), c.where)
    rows = slice(0, out_rows if out_rows is not None else c.out_channels)
    weight = np.ascontiguousarray(c.weight[rows].transpose(0, 2, 3, 1))  # OIHW -> OHWI
    bias = np.ascontiguousarray(int32_safe_bias(c)[rows])
    if zero:
        weight, bias = np.zeros_like(weight), np.zeros_like(bias)
    return b.conv2d(
        x,
        weight,
        c.w_scales[rows].tolist(),
        bias,
        strides=[c.stride, c.stride],
        padding=c.padding,
        groups=c.groups,
        output_q=_q(c.y_scale, c.y_zero),
    )


HEADS = ("new", "imagenet")
"""The classifier heads a model imports with: a zero-initialised one for a new task, or the ImageNet rows."""
DEFAULT_HEAD = "new"
"""The head the tools (qtrain-compile, -demo, -search-scheme, -import-tiny-training) give a .pkl model."""


def build_forward(model: ReferenceModel, num_classes: int, head: str = "imagenet") -> ModuleOp:
    """The forward-only module: convs numbered as in schemes.json (`ForwardBuilder` counts them in this
    order), residual adds, the global average pool and a `num_classes`-row classifier (`head`: see the
    module docstring)."""
    if head not in HEADS:
        raise UserError(f"unknown head '{head}' (expected one of: {', '.join(HEADS)})")
    first = model.first_conv
    b = ForwardBuilder(
        [1, model.input_size, model.input_size, model.input_channels], _q(first.x_scale, first.x_zero), arg_name=None
    )
    x = _emit_conv(b, first, b.image)
    for i, block in enumerate(model.blocks):
        shortcut = x
        for c in block.convs():
            x = _emit_conv(b, c, x)
        if block.residual is not None:
            r = block.residual
            _reads(b, shortcut, _q(r.x_scale, r.x_zero), f"blocks[{i}].residual")
            x = b.add(shortcut, x, output_q=_q(r.y_scale, r.y_zero))
    if model.feature_mix is not None:
        x = _emit_conv(b, model.feature_mix, x)
    # Global average pool: the reference rounds the mean of the codes, no requantization.
    xt = x.type
    assert isinstance(xt, TensorType)
    _, h, w, _ = xt.get_shape()
    pooled = b.avgpool(x, kernel=[h, w], strides=[1, 1], output_q=b.quant[x])
    logits = _emit_conv(b, model.classifier, pooled, out_rows=num_classes, zero=head == "new")
    # No qtrain.output_q: the classifier's output_q already says how the logits dequantize (what
    # run_forward reads), and this importer's IR has never carried the copy.
    return b.finish(logits, record_output_q=False)


def import_tiny_training(source: str | os.PathLike[str] | dict[str, Any], num_classes: int = 10,
                         head: str = "imagenet") -> ModuleOp:
    """Builds forward-only qtrain IR (`@forward: tensor<1x128x128x3xi8> -> tensor<1xKxi8>`) for a
    reference model given as a .pkl path or an already loaded dict. K = num_classes rows of the
    classifier: the first K ImageNet rows (`head="imagenet"`) or a zero head on their scales
    (`head="new"`, what the tools use: `DEFAULT_HEAD`). Raises TinyTrainingFormatError (a
    `qtrain.errors.UserError`) for a bad model, a `UserError` for `num_classes` out of range or an unknown
    `head`."""
    raw = source if isinstance(source, dict) else load_pkl(source)
    try:
        model = parse_model(raw)
    except TinyTrainingFormatError as e:
        if isinstance(source, dict):
            raise
        raise TinyTrainingFormatError(f"{source}: {e}") from e
    if not isinstance(num_classes, int) or not 2 <= num_classes <= model.num_imagenet_classes:
        raise UserError(
            f"the number of classes must be between 2 and {model.num_imagenet_classes} "
            f"(the ImageNet classifier's rows), got {num_classes}"
        )
    return build_forward(model, num_classes, head)


def forward_function(module: ModuleOp) -> func.FuncOp:
    fn = find_func(module, FORWARD)
    if fn is None:
        raise ValueError("the module has no func.func @forward")
    return fn


def input_quant(module: ModuleOp) -> QuantParamsAttr:
    """The quantization the model's int8 input must be in (`qtrain.input_q` on @forward)."""
    q = forward_function(module).attributes.get(INPUT_Q_ATTR)
    if not isinstance(q, QuantParamsAttr):
        raise ValueError(f"@forward has no {INPUT_Q_ATTR} attribute")
    return q


def avgpool_tie_note(module: ModuleOp) -> str | None:
    """Where qtrain's global average pool can differ from the reference's: it rounds
    `mean(x - zx) + zx`, the reference rounds `mean(x)`; these disagree by one on exact .5 ties
    (the sum of the window is an odd multiple of half the window size) when `zx` is odd."""
    for op in forward_function(module).walk():
        if isinstance(op, AvgPoolOp) and op.input_q.zp % 2:
            kh, kw = op.kernel.get_values()
            return (
                f"global average pool over {kh}x{kw} with zero point {op.input_q.zp} (odd): on a channel whose "
                f"sum of codes is an odd multiple of {kh * kw // 2}, qtrain rounds to the other neighbour "
                "than the reference (one unit apart)"
            )
    return None
