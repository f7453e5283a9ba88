"""Fused forward operations of the qtrain dialect (introduced by passes, never by the frontends).

`qtrain.fused_pointwise_depthwise` is the first half of an inverted-residual block, a 1x1 expansion
conv followed by a depthwise conv, as one op whose intermediate tensor never exists whole: the C
kernel streams the pointwise rows through a ring of KH rows (MCUNetV2-style patch/row streaming).
`qtrain-fuse-streaming` creates it where nothing reads the intermediate tensor but the depthwise conv
(no gradient flows through the two layers, neither layer trains).

The op keeps both convolutions' properties, prefixed `pw_` / `dw_`, so it can always be split back
into the two `qtrain.conv2d` ops it stands for; the pointwise conv's output quantization and the
depthwise conv's input quantization are one property, `mid_q`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.dialects.builtin import I64, DenseArrayBase, IntegerAttr, TensorType, i8, i32, i64
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.irdl import (
    AttrSizedOperandSegments,
    IRDLOperation,
    ParsePropInAttrDict,
    irdl_op_definition,
    operand_def,
    opt_operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.traits import Pure
from xdsl.utils.exceptions import VerifyException

from qtrain import numerics
from qtrain.dialects.qtrain import kernel_call as kc
from qtrain.dialects.qtrain.attrs import QuantParamsAttr
from qtrain.dialects.qtrain.interfaces import GoldenModelOp, GoldenRun, KernelCallOp, LayerOp, LayerSpec, QuantizedOp
from qtrain.dialects.qtrain.ops import (
    clamp_range,
    conv_output_size,
    expect_element,
    expect_per_tensor,
    expect_rank,
    i64_array,
    pair,
    shape_of,
    tensor_type,
    verify_clamp,
)


def _shape(t: TensorType[Attribute]) -> str:
    return "x".join(str(d) for d in t.get_shape())


@irdl_op_definition
class FusedPointwiseDepthwiseOp(IRDLOperation, QuantizedOp, LayerOp, GoldenModelOp, KernelCallOp):
    """Exactly `qtrain.conv2d`(pw) then `qtrain.conv2d`(dw) on the int8 intermediate tensor (mid_q), bit for bit."""

    name = "qtrain.fused_pointwise_depthwise"
    input = operand_def(TensorType)
    pw_weight = operand_def(TensorType)
    pw_bias = opt_operand_def(TensorType)
    dw_weight = operand_def(TensorType)
    dw_bias = opt_operand_def(TensorType)
    output = result_def(TensorType)

    pw_strides = prop_def(DenseArrayBase.constr(i64))
    """The pointwise conv's strides: [1, 1]."""
    pw_padding = prop_def(DenseArrayBase.constr(i64))
    """The pointwise conv's padding: [0, 0, 0, 0]."""
    pw_groups = prop_def(IntegerAttr[I64])
    """The pointwise conv's groups: 1."""
    input_q = prop_def(QuantParamsAttr)
    pw_weight_q = prop_def(QuantParamsAttr)
    mid_q = prop_def(QuantParamsAttr)
    """The intermediate tensor's quantization: the pointwise conv's output_q and the depthwise conv's input_q."""
    pw_clamp = opt_prop_def(DenseArrayBase.constr(i64))
    dw_strides = prop_def(DenseArrayBase.constr(i64))
    dw_padding = prop_def(DenseArrayBase.constr(i64))
    """[top, left, bottom, right], padded with mid_q's zero point."""
    dw_groups = prop_def(IntegerAttr[I64])
    """The depthwise conv's groups: C_mid."""
    dw_weight_q = prop_def(QuantParamsAttr)
    output_q = prop_def(QuantParamsAttr)
    dw_clamp = opt_prop_def(DenseArrayBase.constr(i64))

    traits = traits_def(Pure())
    irdl_options = (AttrSizedOperandSegments(as_property=True), ParsePropInAttrDict())
    assembly_format = (
        "$input `,` `pw` `(` $pw_weight (`,` $pw_bias^)? `)` `,` `dw` `(` $dw_weight (`,` $dw_bias^)? `)` "
        "attr-dict `:` `(` type($input) `,` `pw` `(` type($pw_weight) (`,` type($pw_bias)^)? `)` `,` "
        "`dw` `(` type($dw_weight) (`,` type($dw_bias)^)? `)` `)` `->` type($output)"
    )

    def __init__(
        self,
        input: SSAValue | Operation,
        pw_weight: SSAValue | Operation,
        pw_bias: SSAValue | Operation | None,
        dw_weight: SSAValue | Operation,
        dw_bias: SSAValue | Operation | None,
        output_type: Attribute,
        *,
        input_q: QuantParamsAttr,
        pw_weight_q: QuantParamsAttr,
        mid_q: QuantParamsAttr,
        dw_weight_q: QuantParamsAttr,
        output_q: QuantParamsAttr,
        dw_strides: Sequence[int],
        dw_padding: Sequence[int],
        dw_groups: int,
        pw_clamp: Sequence[int] | None = None,
        dw_clamp: Sequence[int] | None = None,
        pw_strides: Sequence[int] = (1, 1),
        pw_padding: Sequence[int] = (0, 0, 0, 0),
        pw_groups: int = 1,
    ):
        props: dict[str, Attribute] = {
            "pw_strides": i64_array(pw_strides),
            "pw_padding": i64_array(pw_padding),
            "pw_groups": IntegerAttr(pw_groups, i64),
            "input_q": input_q,
            "pw_weight_q": pw_weight_q,
            "mid_q": mid_q,
            "dw_strides": i64_array(dw_strides),
            "dw_padding": i64_array(dw_padding),
            "dw_groups": IntegerAttr(dw_groups, i64),
            "dw_weight_q": dw_weight_q,
            "output_q": output_q,
        }
        if pw_clamp is not None:
            props["pw_clamp"] = i64_array(pw_clamp)
        if dw_clamp is not None:
            props["dw_clamp"] = i64_array(dw_clamp)
        super().__init__(
            operands=[input, pw_weight, pw_bias if pw_bias is not None else [], dw_weight,
                      dw_bias if dw_bias is not None else []],
            result_types=[output_type],
            properties=props,
        )

    def mid_shape(self) -> tuple[int, int, int, int]:
        """Shape of the intermediate tensor (the pointwise conv's output): [N, H, W, C_mid]."""
        n, h, w, _ = tensor_type(self.input, "input", self).get_shape()
        c_mid = tensor_type(self.pw_weight, "pw_weight", self).get_shape()[0]
        return n, h, w, c_mid

    def multipliers(self) -> tuple[np.ndarray, np.ndarray]:
        """The two convolutions' requantization multipliers, per intermediate channel."""
        c_mid = self.mid_shape()[3]
        pw = numerics.conv2d_multiplier(self.input_q.scale, self.pw_weight_q.scale_array(), self.mid_q.scale)
        dw = numerics.conv2d_multiplier(self.mid_q.scale, self.dw_weight_q.scale_array(), self.output_q.scale)
        return np.broadcast_to(pw, (c_mid,)), np.broadcast_to(dw, (c_mid,))

    def result_quant(self, result: SSAValue) -> QuantParamsAttr | None:
        return self.output_q

    def operand_quants(self) -> Sequence[tuple[str, SSAValue, QuantParamsAttr]]:
        return (("input_q", self.input, self.input_q),)

    def learnable_layers(self) -> Sequence[LayerSpec]:
        """The two convolutions it stands for (schemes.json numbers them separately)."""
        c_in, c_mid = shape_of(self.input)[3], self.mid_shape()[3]
        return (LayerSpec(self.pw_weight, self.pw_bias, c_in, False, fused=True),
                LayerSpec(self.dw_weight, self.dw_bias, c_mid, True, fused=True))

    def run_golden(self, run: GoldenRun, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """The two convolutions the op stands for, with qtrain.conv2d's kernel; no mask."""
        x, pw_weight, *rest = args
        pw_bias = rest.pop(0) if self.pw_bias is not None else None
        dw_weight = rest.pop(0)
        dw_bias = rest.pop(0) if self.dw_bias is not None else None
        kernel = numerics.conv2d_relaxed if run.relaxed else numerics.conv2d_with_mask
        mid, _ = kernel(
            x, pw_weight, pw_bias, input_scale=np.float32(self.input_q.scale), input_zero_point=self.input_q.zp,
            weight_scales=self.pw_weight_q.scale_array(), output_scale=np.float32(self.mid_q.scale),
            output_zero_point=self.mid_q.zp, clamp=clamp_range(self.pw_clamp),
        )
        y, _ = kernel(
            mid, dw_weight, dw_bias, input_scale=np.float32(self.mid_q.scale), input_zero_point=self.mid_q.zp,
            weight_scales=self.dw_weight_q.scale_array(), output_scale=np.float32(self.output_q.scale),
            output_zero_point=self.output_q.zp, strides=self.dw_strides.get_values(),
            padding=self.dw_padding.get_values(), groups=mid.shape[3], clamp=clamp_range(self.dw_clamp),
        )
        return (y,)

    def kernel_calls(self) -> Sequence[kc.KernelCall]:
        """One qtrain_fused_pointwise_depthwise_s8 call: the 1x1 conv streamed into the depthwise conv."""
        x, pw, dw, y = (shape_of(v) for v in (self.input, self.pw_weight, self.dw_weight, self.output))
        c_mid = pw[0]
        pw_m, dw_m = self.multipliers()
        pw_geometry = kc.ConvGeometry(self.input_q.zp, self.mid_q.zp, (1, 1), (0, 0, 0, 0), 1,
                                      clamp_range(self.pw_clamp))
        sh, sw = self.dw_strides.get_values()
        pt, pl, pb, pr = self.dw_padding.get_values()
        dw_geometry = kc.ConvGeometry(self.mid_q.zp, self.output_q.zp, (sh, sw), (pt, pl, pb, pr), c_mid,
                                      clamp_range(self.dw_clamp))
        return (kc.KernelCall(
            "qtrain_fused_pointwise_depthwise_s8",
            (kc.Scratch(), pw_geometry, kc.Shape(x), kc.Tensor(self.input), kc.Shape(pw),
             kc.FrozenWeight(self.pw_weight), kc.Bias(self.pw_bias), kc.Floats("multiplier", pw_m.tolist()),
             dw_geometry, kc.Shape(dw), kc.FrozenWeight(self.dw_weight), kc.Bias(self.dw_bias),
             kc.Floats("multiplier", dw_m.tolist()), kc.Shape(y), kc.Tensor(self.output)),
            macs=math.prod(self.mid_shape()) * math.prod(pw[1:]) + math.prod(y) * math.prod(dw[1:]),
        ),)

    def verify_(self) -> None:
        x = tensor_type(self.input, "input", self)
        pw = tensor_type(self.pw_weight, "pw_weight", self)
        dw = tensor_type(self.dw_weight, "dw_weight", self)
        y = tensor_type(self.output, "output", self)
        for t, what in ((x, "input"), (pw, "pw_weight"), (dw, "dw_weight"), (y, "output")):
            expect_element(t, i8, what, self)
        expect_rank(x, 4, "input", self, "NHWC")
        expect_rank(pw, 4, "pw_weight", self, "OHWI")
        expect_rank(dw, 4, "dw_weight", self, "OHWI")
        expect_rank(y, 4, "output", self, "NHWC")
        n, h, w, cin = x.get_shape()

        # The pointwise conv: 1x1, stride 1, no padding, groups 1.
        c_mid, pkh, pkw, pcin = pw.get_shape()
        if (pkh, pkw) != (1, 1):
            raise VerifyException(f"{self.name}: pw_weight must be a 1x1 kernel [C_mid, 1, 1, C_in], got {pw}")
        if pcin != cin:
            raise VerifyException(f"{self.name}: pw_weight has {pcin} input channels, the input has {cin}")
        if pair(self.pw_strides, 2, "pw_strides", self) != (1, 1):
            raise VerifyException(f"{self.name}: pw_strides must be [1, 1], got {list(self.pw_strides.get_values())}")
        if pair(self.pw_padding, 4, "pw_padding", self) != (0, 0, 0, 0):
            raise VerifyException(
                f"{self.name}: pw_padding must be [0, 0, 0, 0], got {list(self.pw_padding.get_values())}"
            )
        if self.pw_groups.value.data != 1:
            raise VerifyException(f"{self.name}: pw_groups must be 1, got {self.pw_groups.value.data}")
        self._verify_bias(self.pw_bias, c_mid, "pw_bias")

        # The depthwise conv on the [N, H, W, C_mid] intermediate tensor.
        dc, kh, kw, dcin = dw.get_shape()
        if dc != c_mid or dcin != 1:
            raise VerifyException(
                f"{self.name}: dw_weight must be a depthwise weight [C_mid, KH, KW, 1] = [{c_mid}, KH, KW, 1], got {dw}"
            )
        if self.dw_groups.value.data != c_mid:
            raise VerifyException(
                f"{self.name}: dw_groups must be C_mid = {c_mid} (depthwise), got {self.dw_groups.value.data}"
            )
        self._verify_bias(self.dw_bias, c_mid, "dw_bias")
        sh, sw = pair(self.dw_strides, 2, "dw_strides", self)
        pt, pl, pb, pr = pair(self.dw_padding, 4, "dw_padding [top, left, bottom, right]", self)
        if sh < 1 or sw < 1:
            raise VerifyException(f"{self.name}: dw_strides must be >= 1, got [{sh}, {sw}]")
        if min(pt, pl, pb, pr) < 0:
            raise VerifyException(f"{self.name}: dw_padding must be >= 0")
        if h + pt + pb < kh or w + pl + pr < kw:
            raise VerifyException(
                f"{self.name}: dw kernel {kh}x{kw} is larger than the padded intermediate tensor {h}x{w}"
            )
        oh, ow = conv_output_size(h, kh, sh, pt, pb), conv_output_size(w, kw, sw, pl, pr)
        if y.get_shape() != (n, oh, ow, c_mid):
            raise VerifyException(
                f"{self.name}: output must be tensor<{n}x{oh}x{ow}x{c_mid}xi8> for this input, kernels, stride and "
                f"padding, got tensor<{_shape(y)}xi8>"
            )

        # Quantization.
        for q, what in ((self.input_q, "input_q"), (self.mid_q, "mid_q"), (self.output_q, "output_q")):
            expect_per_tensor(q, what, self)
        for q, what, count in ((self.pw_weight_q, "pw_weight_q", c_mid), (self.dw_weight_q, "dw_weight_q", c_mid)):
            if q.zp != 0:
                raise VerifyException(f"{self.name}: weights are symmetric, {what} zero point must be 0, got {q.zp}")
            if not q.per_tensor:
                if q.axis.data != 0:
                    raise VerifyException(f"{self.name}: per-channel {what} must use axis = 0 (output channels)")
                if len(q.scales) != count:
                    raise VerifyException(
                        f"{self.name}: {what} has {len(q.scales)} scales, need one per channel ({count})"
                    )
        verify_clamp(self, self.pw_clamp)
        verify_clamp(self, self.dw_clamp)

    def _verify_bias(self, bias: SSAValue | None, channels: int, what: str) -> None:
        if bias is None:
            return
        b = tensor_type(bias, what, self)
        expect_element(b, i32, what, self)
        if b.get_shape() != (channels,):
            raise VerifyException(
                f"{self.name}: {what} must be tensor<{channels}xi32> (one per channel), got {b}"
            )


FUSED_OPS: list[type[IRDLOperation]] = [FusedPointwiseDepthwiseOp]
