"""Kernel calls described once, then run on the host (ctypes, see `host`) or emitted as C.

A `Call` names a function of qtrain_kernels.h and lists its arguments in order, each one of the
`Arg` kinds below (shape structs, conv parameters, weight descriptors, scratch, const arrays,
output arrays, pointers into an output array (`At`, for in-place calls), scalars, NULL).
`run_host` executes it in a loaded host library and returns the return value and the output
arrays; `c_program` turns named calls into one C program for a target build that either checks
every output against expected bytes (printing `ok NAME` / `FAIL NAME`) or prints the instruction
count of each call (`count NAME N`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from qtrain import numerics

Returns = Literal["status", "i32", "f32", "void"]


class Arg:
    """One argument of a kernel call."""


@dataclass(frozen=True)
class Dims(Arg):
    shape: tuple[int, int, int, int]


@dataclass(frozen=True)
class ConvParams(Arg):
    input_zero_point: int = 0
    output_zero_point: int = 0
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # top, left
    groups: int = 1
    clamp: tuple[int, int] = (-128, 127)


@dataclass(frozen=True)
class Weight(Arg):
    data: np.ndarray
    master: np.ndarray | None = None
    slice: np.ndarray | None = None
    start: int = 0
    stop: int = 0


@dataclass(frozen=True)
class Scratch(Arg):
    """A qtrain_context_t with `size` bytes (NULL when size is 0 and `null_when_empty`); `misalign`
    offsets the buffer from its 8-byte alignment (host only, to test the kernels' refusal)."""

    size: int
    null_when_empty: bool = True
    misalign: int = 0


@dataclass(frozen=True)
class In(Arg):
    """A const input array."""

    array: np.ndarray


@dataclass
class Out(Arg):
    """An output (or in/out) array, starting as `initial` (zeros of shape/dtype when None)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    initial: np.ndarray | None = None

    def start(self) -> np.ndarray:
        if self.initial is not None:
            return np.ascontiguousarray(self.initial, dtype=self.dtype).reshape(self.shape).copy()
        return np.zeros(self.shape, dtype=self.dtype)


@dataclass(frozen=True, eq=False)
class At(Arg):
    """A pointer `offset` bytes into the array of `buffer` (an `Out` that need not be an argument itself):
    several `At` of one buffer make an in-place call (e.g. a convolution's input and output in one
    buffer). The buffer is one of the call's outputs, returned whole."""

    buffer: Out
    offset: int = 0


@dataclass(frozen=True)
class I32(Arg):
    value: int


@dataclass(frozen=True)
class F32(Arg):
    value: float


@dataclass(frozen=True)
class Null(Arg):
    pass


@dataclass
class Call:
    function: str
    args: list[Arg]
    returns: Returns = "status"
    outputs: list[Out] = field(init=False)

    def __post_init__(self) -> None:
        """The output arrays in order of first mention (an `Out`, or the buffer of an `At`), each once."""
        self.outputs = []
        for a in self.args:
            out = a.buffer if isinstance(a, At) else a
            if isinstance(out, Out) and not any(o is out for o in self.outputs):
                self.outputs.append(out)


def mask_bytes(count: int) -> int:
    return (count + 7) // 8


# ---------------------------------------------------------------------------------------------------
# host (ctypes)
# ---------------------------------------------------------------------------------------------------


class _Dims(ctypes.Structure):
    _fields_ = [("n", ctypes.c_int32), ("h", ctypes.c_int32), ("w", ctypes.c_int32), ("c", ctypes.c_int32)]


class _Context(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_void_p), ("size", ctypes.c_int32)]


class _ConvParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in (
        "input_zero_point", "output_zero_point", "stride_h", "stride_w", "pad_top", "pad_left", "groups",
        "clamp_min", "clamp_max")]


class _Weight(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("master", ctypes.c_void_p), ("slice", ctypes.c_void_p),
                ("slice_start", ctypes.c_int32), ("slice_stop", ctypes.c_int32)]


def _pointer(array: np.ndarray | None, keep: list[object]) -> ctypes.c_void_p | None:
    if array is None:
        return None
    contiguous = np.ascontiguousarray(array)
    keep.append(contiguous)
    return ctypes.c_void_p(contiguous.ctypes.data)


def run_host(library: ctypes.CDLL, call: Call) -> tuple[int | float | None, list[np.ndarray]]:
    """Run `call` in a host build of the library; returns (return value, output arrays in order)."""
    keep: list[object] = []
    values: list[object] = []
    types: list[type] = []
    outputs = [o.start() for o in call.outputs]

    def output_array(out: Out) -> np.ndarray:
        return next(a for o, a in zip(call.outputs, outputs, strict=True) if o is out)

    for arg in call.args:
        if isinstance(arg, Dims):
            struct = _Dims(*arg.shape)
            keep.append(struct)
            values.append(ctypes.byref(struct))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, ConvParams):
            struct = _ConvParams(arg.input_zero_point, arg.output_zero_point, *arg.strides, *arg.padding, arg.groups,
                                 *arg.clamp)
            keep.append(struct)
            values.append(ctypes.byref(struct))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, Weight):
            struct = _Weight(_pointer(arg.data, keep), _pointer(arg.master, keep), _pointer(arg.slice, keep),
                             arg.start, arg.stop)
            keep.append(struct)
            values.append(ctypes.byref(struct))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, Scratch):
            if arg.size == 0 and arg.null_when_empty:
                values.append(None)
            else:
                buffer = np.full(max(arg.size, 4) // 4 + 4, 0x7FC0DEAD, dtype=np.uint32)  # poisoned, aligned
                keep.append(buffer)
                struct = _Context(buffer.ctypes.data + arg.misalign, arg.size)
                keep.append(struct)
                values.append(ctypes.byref(struct))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, In):
            values.append(_pointer(arg.array, keep))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, Out):
            values.append(ctypes.c_void_p(output_array(arg).ctypes.data))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, At):
            array = output_array(arg.buffer)
            if not 0 <= arg.offset <= array.nbytes:
                raise ValueError(f"offset {arg.offset} outside a buffer of {array.nbytes} bytes")
            values.append(ctypes.c_void_p(array.ctypes.data + arg.offset))
            types.append(ctypes.c_void_p)
        elif isinstance(arg, I32):
            values.append(int(arg.value))
            types.append(ctypes.c_int32)
        elif isinstance(arg, F32):
            values.append(float(np.float32(arg.value)))
            types.append(ctypes.c_float)
        elif isinstance(arg, Null):
            values.append(None)
            types.append(ctypes.c_void_p)
        else:
            raise TypeError(f"unknown argument {arg!r}")
    function = getattr(library, call.function)
    function.argtypes = types
    function.restype = {"status": ctypes.c_int32, "i32": ctypes.c_int32, "f32": ctypes.c_float,
                        "void": None}[call.returns]
    result = function(*values)
    return result, outputs


# ---------------------------------------------------------------------------------------------------
# C
# ---------------------------------------------------------------------------------------------------


def c_float(value: float) -> str:
    """An exact C literal of float32(value)."""
    v = float(np.float32(value))
    if not np.isfinite(v):
        raise ValueError(f"cannot write {value} as a C float literal")
    return f"{v.hex()}f"


def _bytes_literal(data: bytes) -> str:
    lines = []
    for i in range(0, len(data), 32):
        lines.append("    " + ",".join(str(b) for b in data[i:i + 32]) + ",")
    return "{\n" + "\n".join(lines) + "\n}"


class _Emitter:
    def __init__(self) -> None:
        self.decls: list[str] = []
        self.count = 0
        self.scratch = 0

    def array(self, data: bytes, const: bool) -> str:
        self.count += 1
        name = f"data{self.count}"
        qualifier = "static const" if const else "static"
        body = _bytes_literal(data) if data.strip(b"\0") else "{0}"
        self.decls.append(f"{qualifier} uint8_t {name}[{max(len(data), 1)}] __attribute__((aligned(8))) = {body};")
        return name

    def pointer(self, array: np.ndarray | None) -> str:
        if array is None:
            return "NULL"
        return self.array(np.ascontiguousarray(array).tobytes(), const=True)

    def argument(self, arg: Arg, outputs: list[tuple[Out, str, int]]) -> str:
        if isinstance(arg, Dims):
            return "&(qtrain_dims_t){" + ", ".join(str(int(d)) for d in arg.shape) + "}"
        if isinstance(arg, ConvParams):
            return ("&(qtrain_conv_params_t){"
                    f".input_zero_point = {arg.input_zero_point}, .output_zero_point = {arg.output_zero_point}, "
                    f".stride_h = {arg.strides[0]}, .stride_w = {arg.strides[1]}, .pad_top = {arg.padding[0]}, "
                    f".pad_left = {arg.padding[1]}, .groups = {arg.groups}, .clamp_min = {arg.clamp[0]}, "
                    f".clamp_max = {arg.clamp[1]}}}")
        if isinstance(arg, Weight):
            return ("&(qtrain_weight_t){"
                    f".data = (const int8_t *){self.pointer(arg.data)}, "
                    f".master = (const float *)(const void *){self.pointer(arg.master)}, "
                    f".slice = (const int8_t *){self.pointer(arg.slice)}, "
                    f".slice_start = {arg.start}, .slice_stop = {arg.stop}}}")
        if isinstance(arg, Scratch):
            if arg.size == 0 and arg.null_when_empty:
                return "NULL"
            self.scratch = max(self.scratch, arg.size)
            return f"&(qtrain_context_t){{scratch, {arg.size}}}"
        if isinstance(arg, In):
            return f"(const void *){self.pointer(arg.array)}"
        if isinstance(arg, Out | At):
            out = arg.buffer if isinstance(arg, At) else arg
            found = [(name, nbytes) for o, name, nbytes in outputs if o is out]
            if found:
                name, nbytes = found[0]
            else:
                start = out.start()
                name, nbytes = self.array(start.tobytes(), const=False), start.nbytes
                outputs.append((out, name, nbytes))
            if isinstance(arg, At):
                if not 0 <= arg.offset <= nbytes:
                    raise ValueError(f"offset {arg.offset} outside a buffer of {nbytes} bytes")
                return f"(void *)({name} + {arg.offset})"
            return f"(void *){name}"
        if isinstance(arg, I32):
            return str(int(arg.value))
        if isinstance(arg, F32):
            return c_float(arg.value)
        if isinstance(arg, Null):
            return "NULL"
        raise TypeError(f"unknown argument {arg!r}")


def c_program(cases: Sequence[tuple[str, Call, Sequence[np.ndarray] | None]], *, count: bool = False) -> str:
    """A C program running each (name, call, expected outputs) case once, in order.

    With expected outputs it compares the call's outputs (and, for a call returning a float, that
    value as one more output) byte for byte and prints `ok NAME` or `FAIL NAME output=I byte=B`; with
    `count` it prints `count NAME N` (instructions on QEMU). A call returning a status prints
    `FAIL NAME status=S` when it is not 0. Exit status: 1 if anything failed. Names must be C-string
    safe.
    """
    emitter = _Emitter()
    body: list[str] = []
    for name, call, expected in cases:
        named: list[tuple[Out, str, int]] = []
        arguments = ", ".join(emitter.argument(a, named) for a in call.args)
        outputs = [(out_name, nbytes) for _, out_name, nbytes in named]  # call.outputs' order
        invocation = f"{call.function}({arguments})"
        body.append(f"    /* {name} */")
        body.append("    before = qtrain_counter_read();")
        if call.returns == "status":
            body.append(f"    status = {invocation};")
        elif call.returns == "f32":
            # the returned float becomes one more output, compared like the others
            returned = emitter.array(b"\0\0\0\0", const=False)
            body.append(f"    {{ float value = {invocation}; __builtin_memcpy({returned}, &value, 4); }}")
        else:
            body.append(f"    (void){invocation};")
        body.append("    after = qtrain_counter_read();")
        if call.returns == "status":
            body.append(f'    if (status != 0) {{ report("FAIL ", "{name}", " status=", (uint32_t)-status); '
                        "failed = 1; }")
        if count:
            body.append(f'    report("count ", "{name}", " ", (uint32_t)(after - before));')
        if call.returns == "f32":
            outputs.append((returned, 4))
        if expected is not None:
            if len(expected) != len(outputs):
                raise ValueError(f"{name}: {len(outputs)} outputs but {len(expected)} expected arrays")
            checks = []
            for i, ((out_name, nbytes), want) in enumerate(zip(outputs, expected, strict=True)):
                data = np.ascontiguousarray(want).tobytes()
                if len(data) != nbytes:
                    raise ValueError(f"{name}: output {i} has {nbytes} bytes, expected array {len(data)}")
                want_name = emitter.array(data, const=True)
                checks.append(f"check({out_name}, {want_name}, {nbytes}, {i})")
            body.append(f'    if ({" & ".join(checks) if checks else "1"}) {{ report("ok ", "{name}", "", 0); }}'
                        f' else {{ report_mismatch("{name}"); failed = 1; }}')
    scratch = max(emitter.scratch, 4)
    return "\n".join([
        "/* Generated by qtrain.targets.armv7em.kernels.calls.c_program. */",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        '#include "qtrain_kernels.h"',
        '#include "qtrain_runtime.h"',
        "",
        f"static __attribute__((unused, aligned(8))) uint8_t scratch[{scratch}];",
        *emitter.decls,
        "",
        "static uint32_t mismatch_output, mismatch_byte;",
        "",
        "static __attribute__((unused)) int check(const uint8_t *got, const uint8_t *want, uint32_t n,",
        "                                         uint32_t output) {",
        "    for (uint32_t i = 0; i < n; i++) {",
        "        if (got[i] != want[i]) {",
        "            mismatch_output = output;",
        "            mismatch_byte = i;",
        "            return 0;",
        "        }",
        "    }",
        "    return 1;",
        "}",
        "",
        "static void report(const char *what, const char *name, const char *key, uint32_t value) {",
        "    qtrain_puts(what);",
        "    qtrain_puts(name);",
        "    if (key[0] != 0) {",
        "        qtrain_puts(key);",
        "        qtrain_put_u32(value);",
        "    }",
        '    qtrain_puts("\\n");',
        "}",
        "",
        "static __attribute__((unused)) void report_mismatch(const char *name) {",
        '    qtrain_puts("FAIL ");',
        "    qtrain_puts(name);",
        '    qtrain_puts(" output=");',
        "    qtrain_put_u32(mismatch_output);",
        '    qtrain_puts(" byte=");',
        "    qtrain_put_u32(mismatch_byte);",
        '    qtrain_puts("\\n");',
        "}",
        "",
        "int main(void) {",
        "    int failed = 0;",
        "    int32_t status = 0;",
        "    uint64_t before, after;",
        "    (void)status;",
        "    (void)before;",
        "    (void)after;",
        "    qtrain_counter_start();",
        *body,
        "    return failed;",
        "}",
        "",
    ])


# ---------------------------------------------------------------------------------------------------
# builders for the common calls
# ---------------------------------------------------------------------------------------------------

CONV2D_FUNCTIONS = {
    "wrapper": "qtrain_conv2d_wrapper_s8",
    "1x1": "qtrain_conv2d_1x1_s8",
    "depthwise": "qtrain_depthwise_conv2d_s8",
    "small_k": "qtrain_conv2d_small_k_s8",
    "generic": "qtrain_conv2d_s8",
}
INPUT_GRAD_FUNCTIONS = {
    "wrapper": "qtrain_conv2d_input_grad_wrapper_f32",
    "1x1": "qtrain_conv2d_1x1_input_grad_f32",
    "depthwise": "qtrain_depthwise_conv2d_input_grad_f32",
    "generic": "qtrain_conv2d_input_grad_f32",
}


CONV_KERNELS = ("1x1", "depthwise", "small_k", "generic")
"""The kernels of `qtrain_conv_kernel_t` by value (QTRAIN_CONV_KERNEL_1X1 = 0, ...), named as
`kernels.conv2d_kernel` and `kernels.conv2d_input_grad_kernel` name them."""


def _shape4(shape: Sequence[int]) -> tuple[int, int, int, int]:
    n, h, w, c = (int(d) for d in shape)
    return n, h, w, c


def conv2d(kernel: str, x: np.ndarray, weight: Weight, bias: np.ndarray | None, multiplier: np.ndarray,
           params: ConvParams, output_shape: Sequence[int], scratch: int, *, mask: bool = True) -> Call:
    """A forward convolution: outputs (int8 NHWC output, packed mask when `mask`)."""
    count = int(np.prod(output_shape))
    return Call(CONV2D_FUNCTIONS[kernel], [
        Scratch(scratch), params, Dims(_shape4(x.shape)), In(x.astype(np.int8)), Dims(_shape4(weight.data.shape)),
        weight, In(bias.astype(np.int32)) if bias is not None else Null(), In(np.asarray(multiplier, np.float32)),
        Dims(_shape4(output_shape)), Out(tuple(output_shape), np.dtype(np.int8)),
        Out((mask_bytes(count),), np.dtype(np.uint8)) if mask else Null()])


def conv2d_wrapper_kernel(params: ConvParams, input_shape: Sequence[int], filter_shape: Sequence[int],
                          output_shape: Sequence[int]) -> Call:
    """`qtrain_conv2d_wrapper_s8_kernel`: returns the picked kernel's index in CONV_KERNELS."""
    return Call("qtrain_conv2d_wrapper_s8_kernel", [params, Dims(_shape4(input_shape)), Dims(_shape4(filter_shape)),
                                                    Dims(_shape4(output_shape))], returns="i32")


def conv2d_input_grad_wrapper_kernel(params: ConvParams, grad_shape: Sequence[int], filter_shape: Sequence[int],
                                     input_shape: Sequence[int]) -> Call:
    """`qtrain_conv2d_input_grad_wrapper_f32_kernel`: returns the picked kernel's index in CONV_KERNELS."""
    return Call("qtrain_conv2d_input_grad_wrapper_f32_kernel", [
        params, Dims(_shape4(grad_shape)), Dims(_shape4(filter_shape)), Dims(_shape4(input_shape))], returns="i32")


def conv2d_input_grad(kernel: str, grad: np.ndarray, weight: Weight, params: ConvParams,
                      input_shape: Sequence[int], scratch: int) -> Call:
    return Call(INPUT_GRAD_FUNCTIONS[kernel], [
        Scratch(scratch), params, Dims(_shape4(grad.shape)), In(grad.astype(np.float32)),
        Dims(_shape4(weight.data.shape)), weight, Dims(_shape4(input_shape)),
        Out(tuple(input_shape), np.dtype(np.float32))])


def conv2d_weight_grad(x: np.ndarray, grad: np.ndarray, params: ConvParams, filter_shape: Sequence[int]) -> Call:
    return Call("qtrain_conv2d_weight_grad_f32", [
        params, Dims(_shape4(x.shape)), In(x.astype(np.int8)), Dims(_shape4(grad.shape)), In(grad.astype(np.float32)),
        Dims(_shape4(filter_shape)), Out(tuple(filter_shape), np.dtype(np.float32))])


STORAGE = {np.dtype(np.int8): 1, np.dtype(np.int32): 2, np.dtype(np.float32): 3}


def conv2d_weight_grad_sgd_update(x: np.ndarray, grad: np.ndarray, params: ConvParams, param: np.ndarray, lr: float,
                                  grad_scale: np.ndarray) -> Call:
    """Fused weight gradient + update of `param` (int8 or fp32, the trainable shape); output: the new param."""
    scale = np.atleast_1d(np.asarray(grad_scale, np.float32))
    return Call("qtrain_conv2d_weight_grad_sgd_update", [
        params, Dims(_shape4(x.shape)), In(x.astype(np.int8)), Dims(_shape4(grad.shape)), In(grad.astype(np.float32)),
        Dims(_shape4(param.shape)), F32(lr), In(scale), I32(scale.size), I32(STORAGE[param.dtype]),
        Out(param.shape, param.dtype, param)])


def _key_i32(noise_key: int) -> I32:
    """A uint32 noise key as the int32 of the same bits (what ctypes passes for I32)."""
    return I32(noise_key - 2**32 if noise_key >= 2**31 else noise_key)


def _planes(param: np.ndarray) -> np.ndarray:
    """An int16 master as the device keeps it: its int8 value plane, then its int8 fraction plane."""
    value = numerics.fixed16_value(param)
    return np.stack([value, (param.astype(np.int32) - 256 * value.astype(np.int32)).astype(np.int8)])


def from_planes(planes: np.ndarray) -> np.ndarray:
    """The int16 master of a (2, ...) int8 plane pair."""
    return numerics.fixed16_master(planes[0], planes[1])


def conv2d_weight_grad_sgd_update_stochastic(x: np.ndarray, grad: np.ndarray, params: ConvParams, param: np.ndarray,
                                             lr: float, grad_scale: np.ndarray, noise_key: int) -> Call:
    """Fused weight gradient + stochastic update of `param` (int8, or an int16 master: output its planes,
    `from_planes` gives the master)."""
    scale = np.atleast_1d(np.asarray(grad_scale, np.float32))
    stored = _planes(param) if param.dtype == np.int16 else param
    return Call("qtrain_conv2d_weight_grad_sgd_update_stochastic", [
        params, Dims(_shape4(x.shape)), In(x.astype(np.int8)), Dims(_shape4(grad.shape)), In(grad.astype(np.float32)),
        Dims(_shape4(param.shape)), F32(lr), In(scale), I32(scale.size), I32(4 if param.dtype == np.int16 else 1),
        Out(stored.shape, stored.dtype, stored), _key_i32(noise_key)])


def sgd_update_stochastic(param: np.ndarray, grad: np.ndarray, lr: float, grad_scale: np.ndarray,
                          noise_key: int) -> Call:
    """int8 in place, or an int16 master (output: its planes)."""
    suffix = "s16" if param.dtype == np.int16 else "s8"
    stored = _planes(param) if param.dtype == np.int16 else param
    scale = np.atleast_1d(np.asarray(grad_scale, np.float32))
    channels = param.shape[0]
    return Call(f"qtrain_sgd_update_{suffix}_stochastic", [
        Out(stored.shape, stored.dtype, stored), In(grad.astype(np.float32)), I32(channels),
        I32(param.size // channels), F32(lr), In(scale), I32(scale.size), _key_i32(noise_key)], returns="void")


def depthwise_weight_grad(x: np.ndarray, grad: np.ndarray, params: ConvParams, slice_start: int,
                          filter_shape: Sequence[int], scratch: int) -> Call:
    return Call("qtrain_depthwise_conv2d_weight_grad_f32", [
        Scratch(scratch), params, Dims(_shape4(x.shape)), In(x.astype(np.int8)), Dims(_shape4(grad.shape)),
        In(grad.astype(np.float32)), I32(slice_start), Dims(_shape4(filter_shape)),
        Out(tuple(filter_shape), np.dtype(np.float32))])


def sgd_update(param: np.ndarray, grad: np.ndarray, lr: float, grad_scale: np.ndarray) -> Call:
    suffix = {np.dtype(np.int8): "s8", np.dtype(np.int32): "s32", np.dtype(np.float32): "f32"}[param.dtype]
    scale = np.atleast_1d(np.asarray(grad_scale, np.float32))
    channels = param.shape[0]
    return Call(f"qtrain_sgd_update_{suffix}", [
        Out(param.shape, param.dtype, param), In(grad.astype(np.float32)), I32(channels),
        I32(param.size // channels), F32(lr), In(scale), I32(scale.size)], returns="void")


def requant_grad(grad: np.ndarray, mask: np.ndarray | None, multiplier: np.ndarray) -> Call:
    """`mask`: a boolean array of grad's shape (packed here), or None."""
    m = np.atleast_1d(np.asarray(multiplier, np.float32))
    packed = In(np.packbits(mask.reshape(-1), bitorder="little")) if mask is not None else Null()
    return Call("qtrain_requant_grad_f32", [
        In(grad.astype(np.float32)), packed, I32(grad.size), I32(grad.shape[-1]), In(m), I32(m.size),
        Out(grad.shape, np.dtype(np.float32))], returns="void")


def unpack_mask(packed: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The boolean mask of `shape` a kernel wrote (bit e of byte e // 8, least significant first)."""
    count = int(np.prod(shape))
    return np.unpackbits(packed, bitorder="little")[:count].reshape(tuple(shape)).astype(bool)


def fused_pointwise_depthwise(x: np.ndarray, pw_weight: np.ndarray, pw_bias: np.ndarray | None,
                              pw_multiplier: np.ndarray, pw_params: ConvParams, dw_weight: np.ndarray,
                              dw_bias: np.ndarray | None, dw_multiplier: np.ndarray, dw_params: ConvParams,
                              output_shape: Sequence[int], scratch: int) -> Call:
    """`qtrain_fused_pointwise_depthwise_s8` (frozen int8 weights): output the int8 NHWC output."""
    def bias(b: np.ndarray | None) -> Arg:
        return In(b.astype(np.int32)) if b is not None else Null()

    return Call("qtrain_fused_pointwise_depthwise_s8", [
        Scratch(scratch), pw_params, Dims(_shape4(x.shape)), In(x.astype(np.int8)), Dims(_shape4(pw_weight.shape)),
        In(pw_weight.astype(np.int8)), bias(pw_bias), In(np.asarray(pw_multiplier, np.float32)), dw_params,
        Dims(_shape4(dw_weight.shape)), In(dw_weight.astype(np.int8)), bias(dw_bias),
        In(np.asarray(dw_multiplier, np.float32)), Dims(_shape4(output_shape)),
        Out(tuple(output_shape), np.dtype(np.int8))])
