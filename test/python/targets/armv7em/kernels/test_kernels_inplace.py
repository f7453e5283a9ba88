"""Forward convolutions writing their output over their input ("In place" in qtrain_kernels.h).

For each case the kernel runs once with disjoint buffers and once in place: one buffer holding the
input at the aligned position (head: output == input; tail: both end at the same byte), with guard
bytes on either side. The in-place buffer must then be the initial buffer with exactly the output
region replaced by the out-of-place output (which itself equals qtrain.numerics), and the masks must be
equal. Every case runs through the chosen kernel and the wrapper, in the portable and the DSP host
builds. `kernels.in_place_alignment` (the planner's view) must agree with what the C accepts: the
placements it names are accepted and correct, the others (and every overlap for the small-K and
generic kernels) are refused with nothing written.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import pytest
from armv7em_testing import needs_clang
from test_kernels_forward import ConvCase, ConvData, make_conv, mirror_size

from qtrain.targets.armv7em import kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import At, Call, Dims, In, Null, Out, Scratch

pytestmark = needs_clang

GUARD = 8  # bytes before and after the shared buffer that no kernel may touch


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


# ---------------------------------------------------------------------------------------------------
# in-place calls
# ---------------------------------------------------------------------------------------------------


def placement(data: ConvData, alignment: str, gap: int = 0) -> tuple[int, int, int]:
    """(buffer bytes, input offset, output offset) of a shared buffer for `alignment` ("head", "tail",
    "shift": the output one byte after the input, an overlap no kernel allows, or "gap": input - output
    == `gap` bytes, the small-K kernel's placement)."""
    in_bytes, out_bytes = data.x.size, int(np.prod(data.output_shape))
    if alignment == "gap":
        in_offset, out_offset = GUARD + max(gap, 0), GUARD + max(-gap, 0)
        return max(in_offset + in_bytes, out_offset + out_bytes) + GUARD, in_offset, out_offset
    size = max(in_bytes, out_bytes)
    if alignment == "head":
        return size + 2 * GUARD, GUARD, GUARD
    if alignment == "tail":
        return size + 2 * GUARD, GUARD + size - in_bytes, GUARD + size - out_bytes
    if alignment == "shift":
        return size + 1 + 2 * GUARD, GUARD, GUARD + 1
    raise ValueError(alignment)


def in_place_call(data: ConvData, kernel: str, alignment: str, *, mask: bool = True,
                  seed: int = 0, gap: int = 0, extra: int = 0) -> tuple[Call, np.ndarray]:
    """The call of `kernel` ("wrapper", "1x1", ...) with its input and output in one buffer placed as
    `alignment`, and that buffer's initial contents (input at its offset, random bytes elsewhere)."""
    size, in_offset, out_offset = placement(data, alignment, gap)
    initial = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    initial[in_offset:in_offset + data.x.size] = data.x.reshape(-1).view(np.uint8)
    buffer = Out((size,), np.dtype(np.uint8), initial)
    scratch = mirror_size(data, kernels.conv2d_kernel(data.x.shape, data.effective.shape, data.output_shape,
                                                      data.case.strides, data.case.padding, data.case.groups)
                          if kernel == "wrapper" else kernel) + extra
    count = int(np.prod(data.output_shape))
    call = Call(calls.CONV2D_FUNCTIONS[kernel], [
        Scratch(scratch), data.params, Dims(data.x.shape), At(buffer, in_offset), Dims(data.effective.shape),
        data.weight, In(data.bias) if data.bias is not None else Null(), In(data.multiplier),
        Dims(data.output_shape), At(buffer, out_offset),
        Out((calls.mask_bytes(count),), np.dtype(np.uint8)) if mask else Null()])
    return call, initial


def expected_buffer(data: ConvData, alignment: str, initial: np.ndarray, gap: int = 0) -> np.ndarray:
    """The shared buffer after a correct in-place call: the output at its offset, everything else as it was."""
    _, _, out_offset = placement(data, alignment, gap)
    want = initial.copy()
    want[out_offset:out_offset + data.y.size] = data.y.reshape(-1).view(np.uint8)
    return want


def packed_mask(data: ConvData) -> np.ndarray:
    return np.packbits(data.mask.reshape(-1), bitorder="little")


def mirror(case: ConvCase, data: ConvData) -> str | None:
    return kernels.in_place_alignment(data.x.shape, data.effective.shape, data.output_shape, case.strides,
                                      case.padding, case.groups)


# ---------------------------------------------------------------------------------------------------
# cases: random shapes of every kind the contract covers
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InPlaceCase:
    conv: ConvCase
    alignment: str  # what in_place_alignment must say
    mask: bool


def random_slice(rng: np.random.Generator, channels: int, kind: str | None) -> tuple[int, int, str] | None:
    """A random trained-weight slice [start, stop) of `channels` stored as `kind` (None: no slice)."""
    if kind is None:
        return None
    start = int(rng.integers(0, channels))
    stop = int(rng.integers(start + 1, channels + 1))
    return start, stop, kind


def _cases() -> list[InPlaceCase]:
    rng = np.random.default_rng(20240607)
    out: list[InPlaceCase] = []
    slices = [None, "int8", "master"]
    i = 0
    # pointwise: C_out > C_in (tail, stride 1), C_out < C_in (head, stride 1 and 2), C_out == C_in
    for relation, alignment, strides in [(">", "tail", (1, 1)), ("<", "head", (1, 1)), ("<", "head", (2, 2)),
                                         ("<", "head", (1, 2)), ("=", "head", (1, 1)), ("=", "head", (2, 1))]:
        for batch in (1, 2):
            for kind in slices:
                i += 1
                cin = int(rng.integers(5, 40))
                cout = {">": int(rng.integers(cin + 1, 3 * cin)), "<": int(rng.integers(1, cin)), "=": cin}[relation]
                h, w = (int(v) for v in rng.integers(1, 9, 2))
                mask = i % 3 != 0
                conv = ConvCase(f"1x1 {batch}x{h}x{w}x{cin}->{cout} s{strides[0]}{strides[1]} {kind or 'plain'}"
                                f"{' mask' if mask else ''}", (batch, h, w, cin), cout, (1, 1), strides=strides,
                                zx=int(rng.integers(-128, 128)), zy=int(rng.integers(-60, 60)), bias=i % 4 != 1,
                                slice=random_slice(rng, cin, kind))
                out.append(InPlaceCase(conv, alignment, mask))
    # depthwise: 3x3, 5x5, 7x7, stride 1 and 2, "same" / TF-style / asymmetric padding
    for k in (3, 5, 7):
        for stride in (1, 2):
            for pad_kind in ("same", "tf", "asym"):
                batch = 1 + (i % 2)
                kind = slices[i % 3]
                i += 1
                c = int(rng.integers(2, 20))  # (one channel is groups 1: the wrapper picks small-K)
                # "same" also on images smaller than the kernel; the others need H, W >= K
                h, w = (int(v) for v in rng.integers(1 if pad_kind == "same" else k, 13, 2))
                p = k // 2
                padding = {"same": (p, p, p, p),
                           "tf": (p - 1, p - 1, p + 1, p + 1) if stride == 1 else (p - 1, p - 1, p, p),
                           "asym": (p, 0, 0, k - 1)}[pad_kind]  # top, left, bottom, right
                mask = i % 4 != 0
                conv = ConvCase(f"dw {k}x{k}/{stride} {pad_kind} {batch}x{h}x{w}x{c} {kind or 'plain'}"
                                f"{' mask' if mask else ''}", (batch, h, w, c), c, (k, k), strides=(stride, stride),
                                padding=padding, groups=c, zx=int(rng.integers(-128, 128)),
                                zy=int(rng.integers(-60, 60)), clamp=(-128, 127) if i % 2 else (-128, 40),
                                bias=i % 5 != 2, slice=random_slice(rng, c, kind))
                out.append(InPlaceCase(conv, "head", mask))
    # non-square depthwise kernels and strides
    for k, stride, padding in [((3, 5), (1, 2), (1, 2, 1, 2)), ((5, 3), (2, 1), (2, 0, 2, 2)),
                               ((1, 3), (1, 1), (0, 1, 0, 1)), ((3, 1), (3, 3), (0, 0, 0, 0))]:
        i += 1
        c = int(rng.integers(2, 12))
        conv = ConvCase(f"dw {k[0]}x{k[1]}/{stride[0]}{stride[1]} 1x9x10x{c}", (1, 9, 10, c), c, k, strides=stride,
                        padding=padding, groups=c, slice=random_slice(rng, c, slices[i % 3]))
        out.append(InPlaceCase(conv, "head", True))
    return out


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.conv.name)
def test_in_place_equals_out_of_place(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    data = make_conv(case.conv)
    assert mirror(case.conv, data) == case.alignment
    kernel = kernels.conv2d_kernel(data.x.shape, data.effective.shape, data.output_shape, case.conv.strides,
                                   case.conv.padding, case.conv.groups)
    assert kernel == ("1x1" if case.conv.kernel == (1, 1) else "depthwise")
    placements = [case.alignment]
    if data.x.size == data.y.size:
        placements = ["head", "tail"]  # the same placement (output == input) reached both ways
    for name in (kernel, "wrapper"):
        # out of place: the golden result
        reference = calls.conv2d(name, data.x, data.weight, data.bias, data.multiplier, data.params,
                                 data.output_shape, mirror_size(data, kernel), mask=case.mask)
        status, outputs = calls.run_host(lib, reference)
        assert status == 0
        np.testing.assert_array_equal(outputs[0], data.y)
        if case.mask:
            np.testing.assert_array_equal(outputs[1], packed_mask(data))
        for alignment in placements:
            call, initial = in_place_call(data, name, alignment, mask=case.mask)
            status, outputs = calls.run_host(lib, call)
            assert status == 0, (name, alignment)
            np.testing.assert_array_equal(outputs[0], expected_buffer(data, alignment, initial),
                                          err_msg=f"{name} {alignment}")
            if case.mask:
                np.testing.assert_array_equal(outputs[1], packed_mask(data), err_msg=f"{name} {alignment}")


@pytest.mark.parametrize("extra", [3000, 12000, 65536])
def test_depthwise_in_place_with_more_scratch(lib: ctypes.CDLL, extra: int) -> None:
    """With more scratch the depthwise kernel takes four channels at a time, over whole planes or over bands of
    output rows through a ring of input rows; in place (output row oy over input row oy), the same bytes."""
    from test_kernels_forward import BAND_CASES

    for conv in [*BAND_CASES, *(c.conv for c in CASES if c.conv.kernel != (1, 1))][:12]:
        data = make_conv(conv, seed=2)
        if mirror(conv, data) != "head":
            continue
        for mask in (True, False):
            call, initial = in_place_call(data, "depthwise", "head", mask=mask, seed=3, extra=extra)
            status, outputs = calls.run_host(lib, call)
            assert status == 0, conv.name
            np.testing.assert_array_equal(outputs[0], expected_buffer(data, "head", initial), err_msg=conv.name)
            if mask:
                np.testing.assert_array_equal(outputs[1], packed_mask(data), err_msg=conv.name)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.conv.name)
def test_other_placements_are_refused(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    data = make_conv(case.conv)
    refused = ["shift"]
    if data.x.size != data.y.size:
        refused.append("tail" if case.alignment == "head" else "head")
    kernel = "1x1" if case.conv.kernel == (1, 1) else "depthwise"
    for name in (kernel, "wrapper"):
        for alignment in refused:
            call, initial = in_place_call(data, name, alignment, mask=case.mask)
            status, outputs = calls.run_host(lib, call)
            assert status == -1, (name, alignment)
            np.testing.assert_array_equal(outputs[0], initial)  # nothing written


def test_cases_cover_the_contract() -> None:
    """Both kernels, both alignments, strides 1 and 2, batches 1 and 2, masks, slices of both kinds."""
    convs = [c.conv for c in CASES]
    assert {(c.kernel == (1, 1), a) for c, a in zip(convs, (c.alignment for c in CASES), strict=True)} == {
        (True, "head"), (True, "tail"), (False, "head")}
    for size in (3, 5, 7):
        for stride in (1, 2):
            assert any(c.kernel == (size, size) and c.strides == (stride, stride) and c.padding != (0, 0, 0, 0)
                       for c in convs)
    one = [c for c in convs if c.kernel == (1, 1)]
    assert any(c.cout > c.input_shape[3] for c in one) and any(c.cout < c.input_shape[3] for c in one)
    assert any(c.cout == c.input_shape[3] for c in one)
    assert {c.input_shape[0] for c in convs} == {1, 2}
    assert {c.slice[2] if c.slice else None for c in convs} == {None, "int8", "master"}
    assert {c.mask for c in CASES} == {True, False}
    # some outputs saturate (the mask bits are not all alike)
    bits = np.concatenate([make_conv(c).mask.reshape(-1) for c in convs])
    assert 0.05 < bits.mean() < 0.98


# ---------------------------------------------------------------------------------------------------
# shapes whose kernel does not run in place
# ---------------------------------------------------------------------------------------------------

NOT_IN_PLACE = [
    ConvCase("generic 3x3", (1, 6, 6, 8), 8, (3, 3), padding=(1, 1, 1, 1)),
    ConvCase("generic 1x1 padded", (1, 4, 4, 8), 8, (1, 1), padding=(1, 1, 1, 1)),
    ConvCase("generic 1x1 bottom padding", (1, 4, 4, 8), 8, (1, 1), padding=(0, 0, 1, 0)),
    ConvCase("generic grouped", (1, 6, 5, 8), 8, (3, 3), padding=(1, 1, 1, 1), groups=2),
    ConvCase("generic depthwise multiplier 2", (1, 6, 6, 4), 8, (3, 3), padding=(1, 1, 1, 1), groups=4),
    ConvCase("generic depthwise 13x13", (1, 14, 14, 4), 4, (13, 13), padding=(6, 6, 6, 6), groups=4),
    ConvCase("1x1 stride 2 C_out > C_in", (1, 6, 6, 8), 12, (1, 1), strides=(2, 2)),
    ConvCase("1x1 stride (1, 2) C_out > C_in", (1, 6, 6, 8), 12, (1, 1), strides=(1, 2)),
    ConvCase("dw pad_top = KH", (1, 8, 8, 4), 4, (3, 3), padding=(3, 1, 0, 1), groups=4),
    ConvCase("dw output taller than input", (1, 6, 6, 4), 4, (3, 3), padding=(1, 1, 3, 1), groups=4),
    ConvCase("dw output wider than input", (2, 6, 6, 4), 4, (3, 3), padding=(1, 1, 1, 3), groups=4),
]


@pytest.mark.parametrize("conv", NOT_IN_PLACE, ids=lambda c: c.name)
def test_no_alignment_for_uncovered_shapes(lib: ctypes.CDLL, conv: ConvCase) -> None:
    """in_place_alignment is None, and the wrapper refuses every overlap (nothing written) but runs the
    same call with disjoint buffers."""
    data = make_conv(conv)
    assert mirror(conv, data) is None
    for alignment in ("head", "tail", "shift"):
        call, initial = in_place_call(data, "wrapper", alignment)
        status, outputs = calls.run_host(lib, call)
        assert status == -1, alignment
        np.testing.assert_array_equal(outputs[0], initial)
    status, outputs = calls.run_host(lib, calls.conv2d("wrapper", data.x, data.weight, data.bias, data.multiplier,
                                                       data.params, data.output_shape,
                                                       mirror_size(data, kernels.conv2d_kernel(
                                                           data.x.shape, data.effective.shape, data.output_shape,
                                                           conv.strides, conv.padding, conv.groups))))
    assert status == 0
    np.testing.assert_array_equal(outputs[0], data.y)


def random_geometry(rng: np.random.Generator, i: int) -> tuple[int, int, int, int, int, int, int, int]:
    """(N, H, W, C_in, C_out, KH, KW, groups) of a random convolution: i % 3 picks pointwise, depthwise
    (sometimes with a channel multiplier) or anything small."""
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 8))
    family = i % 3
    if family == 0:  # pointwise (thin, padded or strided as the caller draws)
        cin, cout, kh, kw, groups = int(rng.integers(1, 24)), int(rng.integers(1, 24)), 1, 1, 1
    elif family == 1:  # depthwise, sometimes with a multiplier
        cin = int(rng.integers(1, 10))
        cout, groups = cin * int(rng.choice([1, 1, 1, 2])), cin
        kh, kw = int(rng.integers(1, 8)), int(rng.integers(1, 8))
    else:  # anything
        groups = int(rng.choice([1, 2]))
        cin, cout = groups * int(rng.integers(1, 6)), groups * int(rng.integers(1, 6))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    return n, h, w, cin, cout, kh, kw, groups


def test_mirror_agrees_with_the_wrapper_on_random_shapes(lib: ctypes.CDLL) -> None:
    """Random convolutions of every kind: the wrapper accepts a head / tail placement exactly when
    in_place_alignment names it (equal sizes: head and tail coincide), and then computes the right bytes."""
    rng = np.random.default_rng(7)
    seen: set[tuple[str, str | None]] = set()
    for i in range(150):
        n, h, w, cin, cout, kh, kw, groups = random_geometry(rng, i)
        strides = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pad = [int(rng.integers(0, kh + 1)) if rng.random() < 0.6 else 0 for _ in range(2)]
        padding = (pad[0], pad[1] if kw > 1 or rng.random() < 0.3 else 0, int(rng.integers(0, kh)),
                   int(rng.integers(0, kw)))
        if h + padding[0] + padding[2] < kh or w + padding[1] + padding[3] < kw:
            continue
        conv = ConvCase(f"random {i}", (n, h, w, cin), cout, (kh, kw), strides=strides, padding=padding, groups=groups,
                        zx=int(rng.integers(-20, 20)))
        data = make_conv(conv, seed=i)
        allowed = mirror(conv, data)
        kernel = kernels.conv2d_kernel(data.x.shape, data.effective.shape, data.output_shape, strides, padding,
                                       groups)
        seen.add((kernel, allowed))
        same_size = data.x.size == data.y.size
        for alignment in ("head", "tail"):
            if allowed == "gap":  # input - output: 0 for head, out - in bytes for tail
                gap = small_k_gap(lib, data)
                ok = (0 if alignment == "head" else data.y.size - data.x.size) >= gap
            else:
                ok = allowed is not None and (alignment == allowed or same_size)
            call, initial = in_place_call(data, "wrapper", alignment, seed=i)
            status, outputs = calls.run_host(lib, call)
            assert status == (0 if ok else -1), (conv, kernel, alignment, allowed)
            want = expected_buffer(data, alignment, initial) if ok else initial
            np.testing.assert_array_equal(outputs[0], want, err_msg=f"{conv} {alignment}")
            if ok:
                np.testing.assert_array_equal(outputs[1], packed_mask(data))
    assert {("1x1", "head"), ("1x1", "tail"), ("1x1", None), ("depthwise", "head"), ("depthwise", None),
            ("small_k", "gap"), ("generic", None)} <= seen


PEAK_PAIRS = [
    # mcunet-5fps's arena peak: 32 KB in + 128 KB out, and the stride-2 depthwise after it
    InPlaceCase(ConvCase("1x1 64x64x8->32", (1, 64, 64, 8), 32, (1, 1), zy=-128, clamp=(-128, 127)), "tail", True),
    InPlaceCase(ConvCase("dw 3x3/2 64x64x32", (1, 64, 64, 32), 32, (3, 3), strides=(2, 2), padding=(0, 0, 1, 1),
                         groups=32, zx=-128, slice=(0, 32, "master")), "head", False),
]


@pytest.mark.parametrize("case", PEAK_PAIRS, ids=lambda c: c.conv.name)
def test_the_peak_layer_pairs_run_in_place(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    """The two layer pairs that set the arena peak, full size, through the wrapper (what emit_c calls)."""
    data = make_conv(case.conv)
    assert mirror(case.conv, data) == case.alignment
    call, initial = in_place_call(data, "wrapper", case.alignment, mask=case.mask)
    status, outputs = calls.run_host(lib, call)
    assert status == 0
    assert len(initial) == max(data.x.size, data.y.size) + 2 * GUARD  # the pair costs max(in, out)
    np.testing.assert_array_equal(outputs[0], expected_buffer(data, case.alignment, initial))
    if case.mask:
        np.testing.assert_array_equal(outputs[1], packed_mask(data))


# ---------------------------------------------------------------------------------------------------
# the small-K kernel (the stem): the output may start G bytes or more before the input
# ---------------------------------------------------------------------------------------------------


def small_k_gap(lib: ctypes.CDLL, data: ConvData) -> int:
    """G as the C computes it (qtrain_conv2d_small_k_s8_in_place_gap)."""
    gap, _ = calls.run_host(lib, Call("qtrain_conv2d_small_k_s8_in_place_gap", [
        data.params, Dims(data.x.shape), Dims(data.output_shape)]))
    assert isinstance(gap, int)
    return gap


SMALL_K = [
    ConvCase("stem 3x3/2 same 1x32x32x3->16", (1, 32, 32, 3), 16, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1)),
    ConvCase("stem 3x3/2 tf 1x33x31x3->8 master", (1, 33, 31, 3), 8, (3, 3), strides=(2, 2), padding=(0, 0, 1, 1),
             slice=(0, 3, "master")),
    ConvCase("small-k 5x5 batch 2 2->6 int8 slice", (2, 9, 8, 2), 6, (5, 5), padding=(2, 2, 2, 2),
             slice=(1, 2, "int8")),
    ConvCase("small-k 1x1 4->8", (1, 6, 6, 4), 8, (1, 1)),
    ConvCase("small-k 1x1 3->2", (1, 6, 6, 3), 2, (1, 1), zy=-100),
    ConvCase("small-k 1x1 stride 2 batch 2 4->9", (2, 7, 7, 4), 9, (1, 1), strides=(2, 2), bias=False),
    ConvCase("small-k 3x3 odd pixels 3->5 relu", (1, 5, 5, 3), 5, (3, 3), padding=(1, 1, 1, 1), zy=-128,
             clamp=(-128, 127)),
    ConvCase("small-k 3x1 stride (1, 2) 4->3", (1, 6, 9, 4), 3, (3, 1), strides=(1, 2), padding=(1, 0, 1, 0)),
]


@pytest.mark.parametrize("conv", SMALL_K, ids=lambda c: c.name)
def test_small_k_writes_over_the_rows_it_has_read(lib: ctypes.CDLL, conv: ConvCase) -> None:
    """At input - output == G (the mirror's G, equal to the C's) the kernel and the wrapper give the
    out-of-place bytes and touch nothing else; at G - 1 (when that still overlaps) both refuse, nothing
    written. The placement saves memory: the pair needs fewer bytes than input + output."""
    data = make_conv(conv)
    assert mirror(conv, data) == "gap"
    assert kernels.conv2d_kernel(data.x.shape, data.effective.shape, data.output_shape, conv.strides,
                                 conv.padding, conv.groups) == "small_k"
    gap = kernels.small_k_in_place_gap(data.x.shape, data.output_shape, conv.strides, conv.padding)
    assert gap == small_k_gap(lib, data)
    size, _, _ = placement(data, "gap", gap)
    assert size - 2 * GUARD < data.x.size + data.y.size
    for name in ("small_k", "wrapper"):
        for mask in (True, False):
            call, initial = in_place_call(data, name, "gap", mask=mask, gap=gap)
            status, outputs = calls.run_host(lib, call)
            assert status == 0, name
            np.testing.assert_array_equal(outputs[0], expected_buffer(data, "gap", initial, gap), err_msg=name)
            if mask:
                np.testing.assert_array_equal(outputs[1], packed_mask(data))
        if gap - 1 > -data.x.size:  # still an overlap
            call, initial = in_place_call(data, name, "gap", gap=gap - 1)
            status, outputs = calls.run_host(lib, call)
            assert status == -1, name
            np.testing.assert_array_equal(outputs[0], initial)


def test_small_k_gap_is_tight_for_the_stem() -> None:
    """mcunet's stem, recomputed here from its geometry: G is the smallest gap that keeps every stored
    pixel pair below the first image byte a later pixel reads (slack 0 for some pair, never negative),
    and it is small, so the 64 KB output over the 48 KB image needs 48 KB + G instead of 112 KB."""
    shape, out_shape, strides, padding = (1, 128, 128, 3), (1, 64, 64, 16), (2, 2), (1, 1, 1, 1)
    gap = kernels.small_k_in_place_gap(shape, out_shape, strides, padding)
    assert 0 < gap < 20 * 1024
    q = np.arange(64 * 64)
    starts = ((np.maximum(q // 64 * 2 - 1, 0)) * 128 + np.maximum(q % 64 * 2 - 1, 0)) * 3
    written_end = q * 16  # when the pair ending at pixel q - 1 is stored
    needed = np.minimum.accumulate(starts[::-1])[::-1]
    slack = gap + needed[2::2] - written_end[2::2]
    assert slack.min() == 0 and (slack >= 0).all()
