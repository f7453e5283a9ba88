"""Attributes of the qtrain dialect.

`#qtrain.quant<scales = [...], zp = Z[, axis = A]>` describes an affine int8 quantization
`real = scale * (q - zp)`. Scales are float32 values (the importers round them to float32 and the
printer writes the shortest decimal that reads back to the same float32), so every backend computes
with exactly the same numbers. `axis = -1` (the default, not printed) means one scale for the whole
tensor; `axis >= 0` means one scale per index along that dimension (per-output-channel weights use
`axis = 0` with the OHWI layout).
"""


import functools
from collections.abc import Sequence

import numpy as np
from xdsl.dialects.builtin import ArrayAttr, FloatData, IntAttr
from xdsl.ir import Attribute, ParametrizedAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException


def f32_literal(x: float) -> str:
    """The shortest decimal that reads back to the same float32, spelled as an MLIR float literal."""
    text = str(np.float32(x))
    mantissa, _, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


@irdl_attr_definition
class QuantParamsAttr(ParametrizedAttribute):
    """Affine quantization `real = scale * (q - zero_point)`; axis = -1 means per-tensor."""

    name = "qtrain.quant"
    scales: ArrayAttr[FloatData]
    zero_point: IntAttr
    axis: IntAttr

    @staticmethod
    def get(scales: Sequence[float] | float, zero_point: int = 0, axis: int = -1) -> "QuantParamsAttr":
        """Build from Python/numpy values, rounding the scales to float32."""
        values = [scales] if isinstance(scales, int | float) else list(scales)
        f32 = [float(np.float32(s)) for s in values]
        return QuantParamsAttr(ArrayAttr(FloatData(s) for s in f32), IntAttr(int(zero_point)), IntAttr(int(axis)))

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            parser.parse_keyword("scales")
            parser.parse_punctuation("=")
            scales = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_float)
            parser.parse_punctuation(",")
            parser.parse_keyword("zp")
            parser.parse_punctuation("=")
            zero_point = parser.parse_integer()
            axis = -1
            if parser.parse_optional_punctuation(","):
                parser.parse_keyword("axis")
                parser.parse_punctuation("=")
                axis = parser.parse_integer()
        return ArrayAttr(FloatData(float(np.float32(s))) for s in scales), IntAttr(zero_point), IntAttr(axis)

    def print_parameters(self, printer: Printer) -> None:
        scales = ", ".join(f32_literal(s.data) for s in self.scales)
        printer.print_string(f"<scales = [{scales}], zp = {self.zero_point.data}")
        if self.axis.data >= 0:
            printer.print_string(f", axis = {self.axis.data}")
        printer.print_string(">")

    def verify(self) -> None:
        if len(self.scales) == 0:
            raise VerifyException("#qtrain.quant needs at least one scale")
        for s in self.scales:
            if not (s.data > 0 and np.isfinite(s.data)):
                raise VerifyException(f"#qtrain.quant scales must be positive and finite, got {s.data}")
        if self.axis.data < -1:
            raise VerifyException(f"#qtrain.quant axis must be -1 (per-tensor) or >= 0, got {self.axis.data}")
        if self.axis.data == -1 and len(self.scales) != 1:
            raise VerifyException(
                f"a per-tensor #qtrain.quant (no axis) has exactly one scale, got {len(self.scales)}"
            )
        if not -128 <= self.zero_point.data <= 127:
            raise VerifyException(f"#qtrain.quant zero point {self.zero_point.data} is outside the int8 range")

    # -- convenience accessors used by passes, the interpreter and the C emitter --------------------
    @property
    def per_tensor(self) -> bool:
        return self.axis.data == -1

    @property
    def zp(self) -> int:
        return self.zero_point.data

    def scale_array(self) -> np.ndarray:
        """The scales as a float32 numpy array (length 1 for per-tensor)."""
        return np.array([s.data for s in self.scales], dtype=np.float32)

    @property
    def scale(self) -> float:
        """The single scale of a per-tensor quantization."""
        assert self.per_tensor, "scale of a per-channel quantization is ambiguous"
        return self.scales.data[0].data


@irdl_attr_definition
class F32ArrayAttr(ParametrizedAttribute):
    """A list of float32 constants, printed exactly: `#qtrain.f32<[0.25, 4.6029251e+08]>`.

    (xDSL 0.74 prints some `array<f32: ...>` values as hex integers that its parser then rejects, so
    gradient multipliers and QAS factors use this attribute.)
    """

    name = "qtrain.f32"
    values: ArrayAttr[FloatData]

    @staticmethod
    def get(values: Sequence[float]) -> "F32ArrayAttr":
        # Keyed by the float32 bits: -0.0 and 0.0 (equal as floats) stay distinct, NaNs are found again.
        return _f32_array(np.asarray(values, dtype=np.float32).tobytes())

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        with parser.in_angle_brackets():
            values = parser.parse_comma_separated_list(parser.Delimiter.SQUARE, parser.parse_float)
        return (ArrayAttr(FloatData(float(np.float32(v))) for v in values),)

    def print_parameters(self, printer: Printer) -> None:
        printer.print_string(f"<[{', '.join(f32_literal(v.data) for v in self.values)}]>")

    def verify(self) -> None:
        if not all(np.isfinite(v.data) for v in self.values):
            raise VerifyException("#qtrain.f32 values must be finite")

    def get_values(self) -> tuple[float, ...]:
        return tuple(v.data for v in self.values)

    def as_array(self) -> np.ndarray:
        return np.array(self.get_values(), dtype=np.float32)


@functools.lru_cache(maxsize=4096)
def _f32_array(bits: bytes) -> F32ArrayAttr:
    # Attributes are immutable, so ops may share one: autodiff builds the same QAS factors (one per element
    # of a layer's output channels) for every candidate the scheme search plans.
    return F32ArrayAttr(ArrayAttr(FloatData(v) for v in np.frombuffer(bits, dtype=np.float32).tolist()))
