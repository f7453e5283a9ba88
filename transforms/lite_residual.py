"""`qtrain-lite-residual`: inserts TinyTL's lite residual modules (Cai et al., NeurIPS'20) into @forward.

A lite residual module learns a small residual feature map next to a frozen block: it reads the block's
input X and adds its output to the block's main branch after the projection conv, before the identity
shortcut (mit-han-lab/tinyml, `tinytl/model/modules.py`, `LiteResidualModule`):

    X --avgpool r x r, stride r--> conv k x k (groups, the block's stride, "same" padding, no bias, mid
      channels) --> GroupNorm --> ReLU --> conv 1x1 (mid -> C_out, no bias) --> GroupNorm (gamma = 0)
      --> bilinear upsample (align_corners = False) to the block output's H x W --> + main branch

mid = make_divisible(C_in * expand, 8); GroupNorm groups of 8 channels (the largest divisor of C <= 8);
conv groups = the largest divisor of C_in and mid that is <= `groups`. r = `downsample`; the pooled
resolution R = max(1, H // r) decides the kernel: k = `kernel`, shrunk by 2 while R < k; at R = 1 the
pool is global and k = 1 (as TinyTL's `insert_lite_residual`). The upsample is left out when the
branch already has the block output's size.

Block detection (on the int8 forward graph, any importer): a block is
  (a) an inverted residual: a depthwise `qtrain.conv2d` D (groups = C_in = C_out > 1) whose only user is
      a 1x1 groups-1 conv P (the projection); its input X is the input of the 1x1 groups-1 expansion E
      that only feeds D, if there is one, else D's input; or
  (b) a residual block: a `qtrain.add` of X and P where P's conv is reached from X through a chain of
      convs each feeding only the next;
and in both, the `qtrain.add` of X and P's output when there is one is its identity shortcut. Blocks are
numbered 0, 1, ... in forward order of P. `blocks` picks them; absent: every block but the first (TinyTL).
The reference models' MBConv blocks are (a) (the residual ones both); the digits CNN has one of each.

int8 graph and scales (fixed at compile time). Weights: kaiming-normal (fan_out, as TinyTL's
`init_models`) from a generator seeded with (seed, block), quantized symmetric per output channel like
every other weight; GroupNorm gamma 1 (the last: 0) and beta 0, stored as fp32 in the GroupNorm output's
integer domain (`qtrain.group_norm`). Activations: the pool keeps X's quantization; the conv outputs and
the first GroupNorm's (ReLU) output are calibrated, min/max widened to include 0, on calibration images
run through the network (each op's own golden model, `GoldenModelOp.run_golden`) and through the freshly
initialised branch in float64. The last GroupNorm, the upsample and the branch output take P's output
scale with zero point 0, and the add writes P's output quantization, so with gamma = beta = 0 the branch
is exactly 0 and the add returns its lhs bit for bit (r = s_P / s_P = 1, the offset
zy - (za + 1 * 0) = 0, fmaf(a, 1, fmaf(0, 1, 0)) = a): insertion is an exact no-op.

Calibration images: `calibration=FILE.npz` (key `image`, int8 NHWC quantized with the model's input
quantization: the task's training images), the first `calibration-images` of them; in Python
`LiteResidualPass.with_images(images)` or, computed once for many runs, `with_calibration(...)`. Without
any, a warning and `calibration-images` images of seeded uniform int8 noise.

Every inserted op carries `qtrain.lite_residual = <block>` (the module's last GroupNorm also
`qtrain.lite_residual_final`); parameters are named `lite_residual{B}.{conv1.weight, gn1.gamma, gn1.beta,
conv2.weight, gn2.gamma, gn2.beta}`. A block that already has a module is left alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    BytesAttr,
    DenseIntOrFPElementsAttr,
    IntegerAttr,
    ModuleOp,
    TensorType,
    UnitAttr,
    f32,
    i8,
    i64,
)
from xdsl.ir import Attribute, Block, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from qtrain import numerics
from qtrain.dialects.qtrain import AddOp, AvgPoolOp, Conv2DOp, GetParamOp, ParamOp, QuantParamsAttr
from qtrain.dialects.qtrain.contract import (
    FORWARD,
    LITE_RESIDUAL,
    LITE_RESIDUAL_FINAL,
    find_func,
    lite_residual_block,
    param_ops,
)
from qtrain.dialects.qtrain.group_norm import GroupNormOp
from qtrain.dialects.qtrain.interfaces import GoldenModelOp
from qtrain.dialects.qtrain.ops import conv_output_size, shape_of
from qtrain.dialects.qtrain.upsample import UpsampleOp
from qtrain.errors import UserError

CHANNELS_PER_GROUP = 8
"""GroupNorm group size of the branch (TinyTL's `replace_bn_with_gn(net, gn_channel_per_group=8)`)."""
GROUP_NORM_EPSILON = 1e-5
"""nn.GroupNorm's default eps."""
FALLBACK_SEED = 0


class LiteResidualError(UserError):
    """Lite residual modules cannot be inserted (no block found, a bad block index, bad calibration data)."""


class LiteResidualWarning(UserWarning):
    """The branch scales come from a stand-in for the task's images."""


# -- blocks -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class NetworkBlock:
    """A block of the forward graph a module can be added to (see the module docstring)."""

    index: int
    input: SSAValue
    first: Operation
    """the first op of the main branch (where the module's ops go)"""
    projection: Conv2DOp
    shortcut: AddOp | None
    stride: tuple[int, int]


def _is_1x1(op: Operation) -> bool:
    return (isinstance(op, Conv2DOp) and shape_of(op.weight)[1:3] == (1, 1) and op.groups.value.data == 1
            and tuple(op.padding.get_values()) == (0, 0, 0, 0))


def _only_user(value: SSAValue) -> Operation | None:
    users = {u.operation for u in value.uses}
    return next(iter(users)) if len(users) == 1 else None


def _through_module(value: SSAValue) -> SSAValue:
    """The main branch's value behind a module's add (`value` itself when no module is added to it)."""
    owner = value.owner
    if isinstance(owner, AddOp) and lite_residual_block(owner) is not None:
        return owner.lhs
    return value


def _block_output(projection: Conv2DOp) -> SSAValue:
    """The projection's output, with its module's branch added when it has one."""
    user = _only_user(projection.output)
    if isinstance(user, AddOp) and lite_residual_block(user) is not None:
        return user.output
    return projection.output


def _shortcut_of(projection: Conv2DOp, block_input: SSAValue) -> AddOp | None:
    output = _block_output(projection)
    user = _only_user(output)
    if isinstance(user, AddOp) and {user.lhs, user.rhs} == {output, block_input}:
        return user
    return None


def find_blocks(forward: func.FuncOp) -> list[NetworkBlock]:
    """The blocks of @forward in forward order of their projection conv (module docstring, "Block detection")."""
    ops = list(forward.body.block.ops)
    position = {op: i for i, op in enumerate(ops)}
    found: dict[Conv2DOp, tuple[SSAValue, Operation, tuple[int, int]]] = {}
    for op in ops:
        if lite_residual_block(op) is not None:
            continue
        if isinstance(op, Conv2DOp) and op.is_depthwise and shape_of(op.output)[3] == shape_of(op.input)[3]:
            projection = _only_user(op.output)
            if projection is None or not _is_1x1(projection) or lite_residual_block(projection) is not None:
                continue
            expansion = op.input.owner
            if isinstance(expansion, Operation) and _is_1x1(expansion) and _only_user(op.input) is op:
                block_input, first = expansion.operands[0], expansion
            else:
                block_input, first = op.input, op
            sh, sw = op.strides.get_values()
            found.setdefault(projection, (block_input, first, (sh, sw)))  # type: ignore[arg-type]
        elif isinstance(op, AddOp) and lite_residual_block(op) is None:
            for shortcut, main in ((op.lhs, op.rhs), (op.rhs, op.lhs)):
                if _only_user(main) is not op:
                    continue
                main = _through_module(main)
                chain: list[Conv2DOp] = []
                value = main
                while isinstance(value.owner, Conv2DOp) and len(chain) < len(ops):
                    chain.append(value.owner)
                    value = value.owner.input
                    if value is shortcut:
                        break
                    if _only_user(value) is not chain[-1]:
                        chain = []
                        break
                if chain and value is shortcut:
                    sh = math.prod(c.strides.get_values()[0] for c in chain)
                    sw = math.prod(c.strides.get_values()[1] for c in chain)
                    found.setdefault(chain[0], (shortcut, chain[-1], (sh, sw)))
                    break
    blocks: list[NetworkBlock] = []
    for projection in sorted(found, key=lambda p: position[p]):
        block_input, first, stride = found[projection]
        blocks.append(NetworkBlock(len(blocks), block_input, first, projection, _shortcut_of(projection, block_input),
                                   stride))
    return blocks


def has_module(block: NetworkBlock) -> bool:
    """Whether the block's projection output already feeds a lite residual module's add."""
    return any(lite_residual_block(u.operation) is not None for u in block.projection.output.uses)


# -- the branch's shape -------------------------------------------------------------------------------------


def make_divisible(value: float, divisor: int) -> int:
    """TinyTL's / OFA's make_divisible: the nearest multiple of `divisor` (at least `divisor`), not more than
    10% below `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of n that is <= at_most (OFA's min_divisible_value)."""
    return next(d for d in range(min(n, at_most), 0, -1) if n % d == 0)


@dataclass(frozen=True)
class Settings:
    """The options that shape and initialise a module (the pass options of the same names)."""

    downsample: int = 2
    expand: int = 1
    kernel: int = 5
    groups: int = 2
    seed: int = 0


@dataclass(frozen=True)
class BranchGeometry:
    """Where a block's module pools, convolves and upsamples."""

    pool_kernel: tuple[int, int]
    pool_strides: tuple[int, int]
    kernel: int
    stride: tuple[int, int]
    mid: int
    conv_groups: int
    in_channels: int
    out_channels: int
    branch_hw: tuple[int, int]
    output_hw: tuple[int, int]

    @property
    def padding(self) -> tuple[int, int, int, int]:
        p = self.kernel // 2
        return p, p, p, p


def geometry(block: NetworkBlock, settings: Settings) -> BranchGeometry:
    _, h, w, cin = shape_of(block.input)
    _, oh, ow, cout = shape_of(block.projection.output)
    r = settings.downsample
    resolution = max(1, min(h, w) // r)
    if resolution == 1:
        pool_kernel, pool_strides, k = (h, w), (1, 1), 1
    else:
        pool_kernel, pool_strides, k = (r, r), (r, r), settings.kernel
        while resolution < k and k > 1:
            k -= 2
    ph, pw = (h - pool_kernel[0]) // pool_strides[0] + 1, (w - pool_kernel[1]) // pool_strides[1] + 1
    mid = make_divisible(cin * settings.expand, 8)
    groups = largest_divisor(math.gcd(cin, mid), settings.groups)
    p = k // 2
    branch_hw = (conv_output_size(ph, k, block.stride[0], p, p), conv_output_size(pw, k, block.stride[1], p, p))
    return BranchGeometry(pool_kernel, pool_strides, k, block.stride, mid, groups, cin, cout, branch_hw, (oh, ow))


def _kaiming_weights(rng: np.random.Generator, shape: tuple[int, int, int, int]) -> np.ndarray:
    """OHWI float weights, kaiming normal with fan_out = C_out * KH * KW (torch's convention for OIHW)."""
    cout, kh, kw, _ = shape
    return rng.normal(0.0, math.sqrt(2.0 / (cout * kh * kw)), size=shape)


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 (scale max|w| / 127), as the importers quantize weights."""
    peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scales.reshape(-1, 1, 1, 1).astype(np.float64)), -127, 127).astype(np.int8)
    return q, scales


@dataclass(frozen=True)
class BranchWeights:
    conv1: tuple[np.ndarray, np.ndarray]
    conv2: tuple[np.ndarray, np.ndarray]


def initial_weights(block: int, g: BranchGeometry, settings: Settings) -> BranchWeights:
    """The module's int8 weights and their scales, from a generator seeded with (seed, block)."""
    rng = np.random.default_rng([settings.seed, block])
    w1 = _kaiming_weights(rng, (g.mid, g.kernel, g.kernel, g.in_channels // g.conv_groups))
    w2 = _kaiming_weights(rng, (g.out_channels, 1, 1, g.mid))
    return BranchWeights(quantize_weights(w1), quantize_weights(w2))


# -- calibration ---------------------------------------------------------------------------------------------


def range_quant(lo: float, hi: float) -> QuantParamsAttr:
    """Asymmetric int8 quantization covering [lo, hi] widened to include 0 (so 0 is exact)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi == lo:
        return QuantParamsAttr.get(1.0, 0)
    scale = float(np.float32((hi - lo) / 255.0))
    return QuantParamsAttr.get(scale, int(np.clip(np.rint(-128 - lo / scale), -128, 127)))


@dataclass(frozen=True)
class BranchScales:
    """The calibrated int8 quantization (scale, zero point) of a module's two conv outputs and of its first
    GroupNorm's output (plain numbers: a calibration travels to worker processes)."""

    conv1: tuple[float, int]
    norm1: tuple[float, int]
    conv2: tuple[float, int]

    def quants(self) -> tuple[QuantParamsAttr, QuantParamsAttr, QuantParamsAttr]:
        return tuple(QuantParamsAttr.get(s, z) for s, z in (self.conv1, self.norm1, self.conv2))  # type: ignore


@dataclass(frozen=True)
class Calibration:
    """Calibrated scales of the modules of some blocks, for the settings they were computed with."""

    settings: Settings
    scales: Mapping[int, BranchScales]


class _ForwardRun:
    """The `GoldenRun` of a plain forward evaluation (no training state): parameters are their IR values."""

    relaxed = False
    apply_updates = False

    def __init__(self, params: Mapping[str, ParamOp]):
        self.params = params

    def record_mask(self, op: Operation, mask: np.ndarray) -> None:
        pass

    def record_dequantized(self, op: Operation, value: np.ndarray) -> None:
        pass

    def read_param(self, name: str) -> np.ndarray:
        return dense_values(self.params[name].value)

    def sram_copy(self, name: str) -> np.ndarray:
        raise AssertionError("a forward evaluation updates no parameter")

    def write_sram_copy(self, name: str, copy: np.ndarray) -> None:
        raise AssertionError("a forward evaluation updates no parameter")

    def record_gradient(self, name: str, grad: np.ndarray) -> None:
        raise AssertionError("a forward evaluation updates no parameter")


def dense_values(attr: DenseIntOrFPElementsAttr) -> np.ndarray:
    t = attr.get_type()
    assert isinstance(t, TensorType)
    dtype = {i8: np.int8, f32: np.float32}.get(t.element_type, np.int32)
    flat = np.frombuffer(attr.data.data, dtype=dtype)
    shape = tuple(t.get_shape())
    return np.full(shape, flat[0], dtype=dtype) if flat.size == 1 and math.prod(shape) != 1 else flat.reshape(shape)


def block_inputs(module: ModuleOp, forward: func.FuncOp, values: Sequence[SSAValue], images: np.ndarray
                 ) -> list[np.ndarray]:
    """The int8 value of each of `values` for every image ([N, ...] each), by running @forward up to the last
    of them with each op's golden model (GoldenModelOp.run_golden)."""
    run = _ForwardRun(param_ops(module))
    ops = [op for op in forward.body.block.ops if not isinstance(op, func.ReturnOp)]
    wanted = set(values)
    last = max((i for i, op in enumerate(ops) if wanted & set(op.results)), default=-1)
    collected: dict[SSAValue, list[np.ndarray]] = {v: [] for v in values}
    arg = forward.body.block.args[0]
    for image in images:
        env: dict[SSAValue, Any] = {arg: image[None]}
        for op in ops[: last + 1]:
            if not isinstance(op, GoldenModelOp):
                raise LiteResidualError(f"cannot evaluate {op.name} to calibrate the lite residual modules")
            outputs = op.run_golden(run, tuple(env[o] for o in op.operands))  # type: ignore[arg-type]
            env.update(zip(op.results, outputs, strict=False))
        for v in values:
            collected[v].append(np.asarray(env[v])[0])
    return [np.stack(collected[v]) for v in values]


def _group_norm_real(a: np.ndarray, groups: int) -> np.ndarray:
    n, h, w, c = a.shape
    x = a.reshape(n, h * w, groups, c // groups)
    mean = x.mean(axis=(1, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    return ((x - mean) / np.sqrt(var + GROUP_NORM_EPSILON)).reshape(a.shape)


def _real_conv(x_real: np.ndarray, weights: tuple[np.ndarray, np.ndarray], strides: tuple[int, int],
               padding: tuple[int, int, int, int], groups: int) -> np.ndarray:
    """A float64 conv of real-valued NHWC `x_real` with dequantized int8 weights (the exact real-valued conv)."""
    w, scales = weights
    cout, kh, kw, cin_g = w.shape
    n, h, wd, cin = x_real.shape
    oh = conv_output_size(h, kh, strides[0], padding[0], padding[2])
    ow = conv_output_size(wd, kw, strides[1], padding[1], padding[3])
    xp = np.pad(x_real, ((0, 0), (padding[0], padding[2]), (padding[1], padding[3]), (0, 0)))
    wr = w.astype(np.float64) * scales.astype(np.float64).reshape(-1, 1, 1, 1)
    out = np.zeros((n, oh, ow, cout))
    cout_g = cout // groups
    for g in range(groups):
        xg = xp[..., g * cin_g:(g + 1) * cin_g]
        wg = wr[g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                view = xg[:, i:i + (oh - 1) * strides[0] + 1:strides[0], j:j + (ow - 1) * strides[1] + 1:strides[1]]
                out[..., g * cout_g:(g + 1) * cout_g] += view @ wg[:, i, j, :].T
    return out


def branch_scales(x: np.ndarray, x_q: QuantParamsAttr, g: BranchGeometry, weights: BranchWeights) -> BranchScales:
    """A module's calibrated quantization from its block's int8 inputs `x` [N, H, W, C] (module docstring)."""
    pooled = numerics.avgpool(x, kernel=g.pool_kernel, strides=g.pool_strides, input_scale=x_q.scale,
                              input_zero_point=x_q.zp, output_scale=x_q.scale, output_zero_point=x_q.zp)
    real = (pooled.astype(np.float64) - x_q.zp) * float(np.float32(x_q.scale))
    a1 = _real_conv(real, weights.conv1, g.stride, g.padding, g.conv_groups)
    r1 = np.maximum(_group_norm_real(a1, g.mid // largest_divisor(g.mid, CHANNELS_PER_GROUP)), 0.0)
    a2 = _real_conv(r1, weights.conv2, (1, 1), (0, 0, 0, 0), 1)
    scales = (range_quant(a1.min(), a1.max()), range_quant(0.0, r1.max()), range_quant(a2.min(), a2.max()))
    return BranchScales(*((float(q.scale), q.zp) for q in scales))


def calibrate(module: ModuleOp, images: np.ndarray, blocks: Sequence[int] | None = None,
              settings: Settings = Settings()) -> Calibration:  # noqa: B008 (frozen)
    """The scales of the modules of `blocks` (default: every block) from int8 NHWC calibration `images`."""
    forward = _forward(module)
    found = find_blocks(forward)
    chosen = [b for b in found if blocks is None or b.index in set(blocks)]
    images = _check_images(np.asarray(images), forward)
    inputs = block_inputs(module, forward, [b.input for b in chosen], images)
    scales = {}
    for block, x in zip(chosen, inputs, strict=True):
        g = geometry(block, settings)
        x_q = _input_quant(block)
        scales[block.index] = branch_scales(x, x_q, g, initial_weights(block.index, g, settings))
    return Calibration(settings, scales)


def _forward(module: ModuleOp) -> func.FuncOp:
    forward = find_func(module, FORWARD)
    if forward is None:
        raise LiteResidualError(f"the module has no func.func @{FORWARD}")
    return forward


def _input_quant(block: NetworkBlock) -> QuantParamsAttr:
    """X's quantization, as the block's first conv reads it."""
    assert isinstance(block.first, Conv2DOp)
    return block.first.input_q


def _check_images(images: np.ndarray, forward: func.FuncOp) -> np.ndarray:
    want = tuple(shape_of(forward.body.block.args[0])[1:])
    if images.dtype != np.int8 or images.ndim != 4 or tuple(images.shape[1:]) != want:
        raise LiteResidualError(
            f"calibration images must be int8 NHWC [N, {', '.join(map(str, want))}] (quantized with the model's "
            f"input quantization), got {images.dtype} {list(images.shape)}")
    if len(images) == 0:
        raise LiteResidualError("no calibration images")
    return images


def fallback_images(forward: func.FuncOp, count: int) -> np.ndarray:
    """Seeded uniform int8 noise shaped like the model's input: the stand-in for missing calibration images."""
    shape = shape_of(forward.body.block.args[0])[1:]
    return np.random.default_rng(FALLBACK_SEED).integers(-128, 128, (count, *shape), dtype=np.int8)


# -- insertion ----------------------------------------------------------------------------------------------------


def _dense(array: np.ndarray, element_type: Attribute) -> DenseIntOrFPElementsAttr:
    dtype = {i8: "<i1", f32: "<f4"}[element_type]  # type: ignore[index]
    return DenseIntOrFPElementsAttr(TensorType(element_type, list(array.shape)),
                                    BytesAttr(np.ascontiguousarray(array, dtype=dtype).tobytes()))


class _Inserter:
    """Builds one module's ops and parameters and splices them into @forward."""

    def __init__(self, module: ModuleOp, block: NetworkBlock, g: BranchGeometry, scales: BranchScales,
                 weights: BranchWeights):
        self.module = module
        self.block = block
        self.g = g
        self.scales = scales
        self.weights = weights
        self.prefix = f"lite_residual{block.index}"
        self.ops: list[Operation] = []
        self.params: list[ParamOp] = []

    def param(self, name: str, array: np.ndarray, element_type: Attribute) -> SSAValue:
        full = f"{self.prefix}.{name}"
        if full in param_ops(self.module):
            raise LiteResidualError(f"the module already has a parameter @{full}")
        value = _dense(array, element_type)
        self.params.append(ParamOp(full, value))
        read = GetParamOp(full, value.type)
        self.ops.append(read)
        return read.result

    def emit(self, op: Operation, hint: str) -> Operation:
        op.attributes[LITE_RESIDUAL] = IntegerAttr(self.block.index, i64)
        op.results[0].name_hint = f"lr{self.block.index}_{hint}"
        self.ops.append(op)
        return op

    def conv(self, x: SSAValue, x_q: QuantParamsAttr, weights: tuple[np.ndarray, np.ndarray], name: str, *,
             strides: tuple[int, int], padding: tuple[int, int, int, int], groups: int,
             output_q: QuantParamsAttr) -> SSAValue:
        w, scales = weights
        n, h, wd, _ = shape_of(x)
        oh = conv_output_size(h, w.shape[1], strides[0], padding[0], padding[2])
        ow = conv_output_size(wd, w.shape[2], strides[1], padding[1], padding[3])
        weight = self.param(f"{name}.weight", w, i8)
        op = Conv2DOp(x, weight, None, TensorType(i8, [n, oh, ow, w.shape[0]]), strides=strides, padding=padding,
                      groups=groups, input_q=x_q, weight_q=QuantParamsAttr.get([float(s) for s in scales], 0, 0),
                      output_q=output_q)
        return self.emit(op, name).results[0]

    def norm(self, x: SSAValue, x_q: QuantParamsAttr, name: str, *, gamma: float, output_q: QuantParamsAttr,
             relu: bool) -> SSAValue:
        channels = shape_of(x)[3]
        sy = float(np.float32(output_q.scale))
        gamma_value = self.param(f"{name}.gamma", np.full(channels, gamma / sy, np.float32), f32)
        beta_value = self.param(f"{name}.beta", np.zeros(channels, np.float32), f32)
        op = GroupNormOp(x, gamma_value, beta_value, groups=channels // largest_divisor(channels, CHANNELS_PER_GROUP),
                         epsilon=GROUP_NORM_EPSILON, input_q=x_q, output_q=output_q,
                         clamp=(output_q.zp, 127) if relu else None)
        return self.emit(op, name).results[0]

    def build(self) -> None:
        g, block = self.g, self.block
        conv1_q, norm1_q, conv2_q = self.scales.quants()
        x_q = _input_quant(block)
        p_q = block.projection.output_q
        branch_q = QuantParamsAttr.get(p_q.scale, 0)
        n, h, w, c = shape_of(block.input)
        ph = (h - g.pool_kernel[0]) // g.pool_strides[0] + 1
        pw = (w - g.pool_kernel[1]) // g.pool_strides[1] + 1
        pool = AvgPoolOp(block.input, TensorType(i8, [n, ph, pw, c]), kernel=g.pool_kernel, strides=g.pool_strides,
                         input_q=x_q, output_q=x_q)
        pooled = self.emit(pool, "pool").results[0]
        a1 = self.conv(pooled, x_q, self.weights.conv1, "conv1", strides=g.stride, padding=g.padding,
                       groups=g.conv_groups, output_q=conv1_q)
        r1 = self.norm(a1, conv1_q, "gn1", gamma=1.0, output_q=norm1_q, relu=True)
        a2 = self.conv(r1, norm1_q, self.weights.conv2, "conv2", strides=(1, 1), padding=(0, 0, 0, 0), groups=1,
                       output_q=conv2_q)
        r2 = self.norm(a2, conv2_q, "gn2", gamma=0.0, output_q=branch_q, relu=False)
        r2.owner.attributes[LITE_RESIDUAL_FINAL] = UnitAttr()  # type: ignore[union-attr]
        head, self.ops = self.ops, []
        if g.branch_hw != g.output_hw:
            up = UpsampleOp(r2, TensorType(i8, [n, *g.output_hw, g.out_channels]), input_q=branch_q, output_q=branch_q)
            r2 = self.emit(up, "upsample").results[0]
        main = block.projection.output
        add = AddOp(main, r2, lhs_q=p_q, rhs_q=branch_q, output_q=p_q)
        self.emit(add, "add")
        tail = self.ops
        body = block.first.parent_block()
        assert isinstance(body, Block)
        for op in head:
            body.insert_op_before(op, block.first)
        anchor: Operation = block.projection
        for op in tail:
            body.insert_op_after(op, anchor)
            anchor = op
        main.replace_uses_with_if(add.output, lambda use: use.operation is not add)


@dataclass(frozen=True)
class LiteResidualPass(ModulePass):
    """Inserts TinyTL lite residual modules (exact no-ops until trained) into @forward's blocks."""

    name = "qtrain-lite-residual"

    blocks: tuple[int, ...] | None = None
    """block indexes (forward order); absent: every block but the first"""
    downsample: int = 2
    """pooling factor r of the branch"""
    expand: int = 1
    """mid channels = make_divisible(C_in * expand, 8)"""
    kernel: int = 5
    """the branch conv's kernel (shrunk by 2 while the pooled resolution is smaller)"""
    groups: int = 2
    """the branch conv's groups"""
    seed: int = 0
    """seed of the weight initialisation"""
    calibration: str | None = None
    """npz of int8 NHWC calibration images (key image): the task's training images"""
    calibration_images: int = 16
    """how many calibration images (the first ones) set the branch scales"""
    images: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    """images given by `with_images` (not a pass option)"""
    calibrated: Calibration | None = field(default=None, init=False, repr=False, compare=False)
    """scales given by `with_calibration` (not a pass option)"""

    @classmethod
    def with_images(cls, images: np.ndarray, **options: Any) -> LiteResidualPass:
        """The pass calibrating on int8 NHWC `images` (the first `calibration_images` of them)."""
        p = cls(**options)
        object.__setattr__(p, "images", np.asarray(images))  # frozen dataclass, field not in __init__
        return p

    @classmethod
    def with_calibration(cls, calibration: Calibration, **options: Any) -> LiteResidualPass:
        """The pass using scales computed once by `calibrate` (same settings)."""
        s = calibration.settings
        p = cls(downsample=s.downsample, expand=s.expand, kernel=s.kernel, groups=s.groups, seed=s.seed, **options)
        object.__setattr__(p, "calibrated", calibration)
        return p

    def settings(self) -> Settings:
        return Settings(self.downsample, self.expand, self.kernel, self.groups, self.seed)

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        if self.downsample < 1 or self.expand < 1 or self.kernel < 1 or self.kernel % 2 == 0 or self.groups < 1:
            raise PassFailedException(f"{self.name}: downsample, expand, groups >= 1 and an odd kernel >= 1 needed")
        try:
            self._apply(op)
        except LiteResidualError as e:
            raise PassFailedException(f"{self.name}: {e}") from None

    def chosen_blocks(self, blocks: list[NetworkBlock]) -> list[NetworkBlock]:
        if self.blocks is None:
            return blocks[1:]
        bad = sorted(set(self.blocks) - {b.index for b in blocks})
        if bad:
            raise LiteResidualError(f"no block {', '.join(map(str, bad))}: the network has {len(blocks)} blocks "
                                    f"(0..{len(blocks) - 1})")
        return [b for b in blocks if b.index in set(self.blocks)]

    def _apply(self, module: ModuleOp) -> None:
        forward = _forward(module)
        found = find_blocks(forward)
        if not found:
            raise LiteResidualError("found no block to add a module to (an inverted-residual or residual block)")
        chosen = [b for b in self.chosen_blocks(found) if not has_module(b)]
        if not chosen:
            return
        settings = self.settings()
        scales = self._scales(module, forward, [b.index for b in chosen], settings)
        # Last block first: inserting a module redirects every later reader of the block's output to the
        # sum, so the modules of later blocks (inserted already) read their block's input with it too.
        params: list[ParamOp] = []
        for block in reversed(chosen):
            g = geometry(block, settings)
            inserter = _Inserter(module, block, g, scales[block.index], initial_weights(block.index, g, settings))
            inserter.build()
            params = inserter.params + params
        first_func = next(o for o in module.body.block.ops if isinstance(o, func.FuncOp))
        for p in params:
            module.body.block.insert_op_before(p, first_func)

    def _scales(self, module: ModuleOp, forward: func.FuncOp, blocks: list[int], settings: Settings
                ) -> Mapping[int, BranchScales]:
        if self.calibrated is not None:
            if self.calibrated.settings != settings:
                raise LiteResidualError("the calibration was computed with other settings than the pass's")
            missing = sorted(set(blocks) - set(self.calibrated.scales))
            if missing:
                raise LiteResidualError(f"the calibration has no scales for block(s) {missing}")
            return self.calibrated.scales
        images = self.images
        if images is None and self.calibration:
            images = _load_images(Path(self.calibration))
        if images is None:
            warnings.warn(
                f"{self.name}: no calibration images; the branch scales come from {self.calibration_images} "
                f"images of uniform int8 noise (seed {FALLBACK_SEED}): give the task's training images "
                "(calibration=FILE.npz, or qtrain-compile --data) for scales that fit the task",
                LiteResidualWarning, stacklevel=2)
            images = fallback_images(forward, self.calibration_images)
        if self.calibration_images < 1:
            raise LiteResidualError("calibration-images must be at least 1")
        return calibrate(module, np.asarray(images)[: self.calibration_images], blocks, settings).scales


def _load_images(path: Path) -> np.ndarray:
    try:
        with np.load(path) as data:
            if "image" not in data:
                raise LiteResidualError(f"{path}: no 'image' array (keys: {', '.join(data.files) or 'none'})")
            return np.asarray(data["image"])
    except (OSError, ValueError) as e:
        raise LiteResidualError(f"cannot read calibration images {path}: {e}") from None
