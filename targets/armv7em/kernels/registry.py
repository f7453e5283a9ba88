"""The kernel registry: what the planner must know of a kernel beyond its C signature.

Keyed by the C function name an op's `kernel_calls()` names, an entry gives

- `scratch(call, weights)`: the bytes of scratch the call needs (the mirror of the kernel's
  `*_get_buffer_size()`, in `qtrain.targets.armv7em.kernels`); `weights(value)` tells the trained
  slice width and storage of a weight operand, which some kernels convert in scratch;
- `in_place(call)`: how the kernel lets its output lie on its (dying) input, word for word the
  "In place" contract of qtrain_kernels.h: "head", "tail", "gap" (with `gap(call)` giving G) or None;
- `limits(call)`: whether the call's shapes are within what the kernel accepts (False: do not build
  an op that needs it).

A kernel that needs no scratch, never works in place and takes any shape the op verifier allows needs
no entry. Arguments are read by position, as the C signature lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xdsl.ir import SSAValue

from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.targets.armv7em import kernels as k

WeightInfo = Callable[[SSAValue], tuple[int | None, bool]]
"""(trained slice width or None, fp32 master?) of a weight operand."""


def _shape(call: kc.KernelCall, index: int) -> tuple[int, ...]:
    arg = call.args[index]
    assert isinstance(arg, kc.Shape), f"{call.function}: argument {index} is not a shape"
    return arg.dims


def _geometry(call: kc.KernelCall, index: int) -> kc.ConvGeometry:
    arg = call.args[index]
    assert isinstance(arg, kc.ConvGeometry), f"{call.function}: argument {index} is not a conv geometry"
    return arg


def _weight(call: kc.KernelCall, index: int, weights: WeightInfo) -> tuple[int | None, bool]:
    arg = call.args[index]
    assert isinstance(arg, kc.Weight), f"{call.function}: argument {index} is not a weight"
    return weights(arg.value)


@dataclass(frozen=True)
class KernelEntry:
    scratch: Callable[[kc.KernelCall, WeightInfo], int] | None = None
    in_place: Callable[[kc.KernelCall], k.Alignment | None] | None = None
    gap: Callable[[kc.KernelCall], int] | None = None
    limits: Callable[[kc.KernelCall], bool] | None = None


# -- qtrain_conv2d_wrapper_s8(ctx, params, input_dims, input, filter_dims, weight, bias, multipliers,
#                             output_dims, output, mask)

def _conv_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    g = _geometry(call, 1)
    width, master = _weight(call, 5, weights)
    return k.buffer_size_conv2d_wrapper(_shape(call, 2), _shape(call, 4), _shape(call, 8), g.strides, g.padding,
                                        g.groups, slice_channels=width, master=master)


def _conv_in_place(call: kc.KernelCall) -> k.Alignment | None:
    g = _geometry(call, 1)
    return k.in_place_alignment(_shape(call, 2), _shape(call, 4), _shape(call, 8), g.strides, g.padding, g.groups)


def _conv_gap(call: kc.KernelCall) -> int:
    g = _geometry(call, 1)
    return k.small_k_in_place_gap(_shape(call, 2), _shape(call, 8), g.strides, g.padding)


# -- qtrain_conv2d_input_grad_wrapper_f32(ctx, params, grad_dims, grad, filter_dims, weight, input_dims,
#                                         input_grad)

def _input_grad_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    g = _geometry(call, 1)
    width, master = _weight(call, 5, weights)
    return k.buffer_size_conv2d_input_grad_wrapper(_shape(call, 6), _shape(call, 4), _shape(call, 2), g.strides,
                                                   g.padding, g.groups, slice_channels=width, master=master)


def _input_grad_in_place(call: kc.KernelCall) -> k.Alignment | None:
    g = _geometry(call, 1)
    return k.input_grad_in_place_alignment(_shape(call, 6), _shape(call, 4), _shape(call, 2), g.strides, g.padding,
                                           g.groups)


# -- qtrain_conv2d_input_grad_{bf16,bf16_f32,f32_bf16}: the generic kernel on bf16 gradients (same arguments)

def _generic_input_grad_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    width, master = _weight(call, 5, weights)
    return k.buffer_size_conv2d_input_grad("generic", _shape(call, 4), slice_channels=width, master=master)


# -- qtrain_conv2d_1x1_input_grad_{bf16,bf16_f32,f32_bf16}: same arguments; the gradient row in scratch

def _input_grad_1x1_bf16_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    width, master = _weight(call, 5, weights)
    return k.buffer_size_conv2d_1x1_input_grad_bf16(_shape(call, 4), slice_channels=width, master=master)


def _pixel_bytes(call: kc.KernelCall, position: int, shape: tuple[int, ...]) -> int:
    """Bytes of one pixel of the call's gradient (position 0) or result (1), by the suffix's formats."""
    formats = call.function.rsplit("_grad_", 1)[1].split("_")
    return shape[-1] * (2 if formats[min(position, len(formats) - 1)] == "bf16" else 4)


def _input_grad_1x1_bf16_in_place(call: kc.KernelCall) -> k.Alignment | None:
    grad, result = _pixel_bytes(call, 0, _shape(call, 2)), _pixel_bytes(call, 1, _shape(call, 6))
    return "head" if result <= grad else "tail"


def _narrowing_in_place(call: kc.KernelCall) -> k.Alignment | None:
    """A format-changing element-wise kernel: the narrower result at the input's first byte, the wider
    one ending at its last byte (both safe reading and writing forwards)."""
    return "tail" if call.function.endswith("bf16_f32") else "head"


# -- qtrain_streamed_expansion_input_grad_*(ctx, params, grad_dims, grad, dw_dims, dw_weight, mid_dims, mask,
#        multiplier, num_multipliers, pw_dims, pw_weight, input_dims, input_grad, bias_grad)

def _streamed_expansion_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    return k.buffer_size_streamed_expansion_input_grad(_shape(call, 6))


# -- qtrain_depthwise_conv2d_input_grad_bf16(ctx, params, grad_dims, grad, filter_dims, weight, input_dims,
#                                            input_grad): a ring of KH gradient rows; in place at the same byte

def _depthwise_bf16_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    return k.buffer_size_depthwise_input_grad_bf16(_shape(call, 4), _shape(call, 6))


# -- qtrain_fused_pointwise_depthwise_s8(ctx, pw_params, input_dims, input, pw_filter_dims, pw_weight,
#        pw_bias, pw_multipliers, dw_params, dw_filter_dims, dw_weight, dw_bias, dw_multipliers,
#        output_dims, output)

def _fused_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    return k.buffer_size_fused_pointwise_depthwise(_shape(call, 2), _shape(call, 4), _shape(call, 9),
                                                   _shape(call, 13), _geometry(call, 8).strides)


def _fused_limits(call: kc.KernelCall) -> bool:
    return k.depthwise_kernel_fits(_shape(call, 9))


# -- qtrain_depthwise_conv2d_weight_grad_f32(ctx, params, input_dims, input, grad_dims, grad, start,
#                                            filter_dims, weight_grad)

def _depthwise_weight_grad_scratch(call: kc.KernelCall, weights: WeightInfo) -> int:
    return k.buffer_size_depthwise_weight_grad(_shape(call, 2), _shape(call, 4), _shape(call, 7),
                                               _geometry(call, 1).strides)


def _depthwise_weight_grad_limits(call: kc.KernelCall) -> bool:
    return k.depthwise_kernel_fits(_shape(call, 7))


# -- qtrain_group_norm_s8 / _input_grad_f32 / _gamma_grad_f32(dims, input, input_zero_point, groups, ...)

def _group_norm_limits(call: kc.KernelCall) -> bool:
    groups = call.args[3]
    assert isinstance(groups, kc.I32), f"{call.function}: argument 3 is not the group count"
    return k.group_norm_fits(_shape(call, 0), groups.value)


KERNELS: dict[str, KernelEntry] = {
    "qtrain_conv2d_wrapper_s8": KernelEntry(scratch=_conv_scratch, in_place=_conv_in_place, gap=_conv_gap),
    "qtrain_conv2d_input_grad_wrapper_f32": KernelEntry(scratch=_input_grad_scratch, in_place=_input_grad_in_place),
    **{f"qtrain_conv2d_input_grad_{formats}": KernelEntry(scratch=_generic_input_grad_scratch)
       for formats in ("bf16", "bf16_f32", "f32_bf16")},
    **{f"qtrain_conv2d_1x1_input_grad_{formats}": KernelEntry(scratch=_input_grad_1x1_bf16_scratch,
                                                               in_place=_input_grad_1x1_bf16_in_place)
       for formats in ("bf16", "bf16_f32", "f32_bf16")},
    **{f"qtrain_{kind}_{formats}": KernelEntry(in_place=_narrowing_in_place)
       for kind in ("requant_grad", "grad_convert") for formats in ("bf16_f32", "f32_bf16")},
    **{f"qtrain_streamed_expansion_input_grad_{formats}": KernelEntry(scratch=_streamed_expansion_scratch)
       for formats in ("f32", "bf16", "bf16_f32", "f32_bf16")},
    "qtrain_depthwise_conv2d_input_grad_bf16": KernelEntry(scratch=_depthwise_bf16_scratch,
                                                           in_place=lambda call: "head"),
    "qtrain_fused_pointwise_depthwise_s8": KernelEntry(scratch=_fused_scratch, limits=_fused_limits),
    "qtrain_depthwise_conv2d_weight_grad_f32": KernelEntry(scratch=_depthwise_weight_grad_scratch,
                                                           limits=_depthwise_weight_grad_limits),
    **{f"qtrain_group_norm{kind}": KernelEntry(limits=_group_norm_limits)
       for kind in ("_s8", "_input_grad_f32", "_gamma_grad_f32")},
}
