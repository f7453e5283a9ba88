"""Input-gradient kernels writing dL/dx over dL/dy (the backward paragraph of "In place" in qtrain_kernels.h).

For each case the kernel runs once with disjoint buffers (the golden result, which must itself be
numerics.conv2d_input_grad within the fp32 summation bound, as in test_kernels_backward.py) and once in
place: one fp32 buffer holding the gradient at the aligned position (head: input_grad == grad; tail:
both end at the same byte), with guard bytes on either side. The in-place buffer must then be the
initial buffer with exactly the input_grad region replaced by the out-of-place result, bit for bit.
Every case runs through the chosen kernel (1x1 or depthwise) and the wrapper, in the portable and the
DSP host builds. `kernels.input_grad_in_place_alignment` (the planner's view) must agree with what the
C accepts: the placements it names are accepted and correct, the others (a shift by one float either
way, the other alignment, a strided 1x1, a depthwise whose shapes differ, every overlap for the
generic kernel) are refused with nothing written.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np
import pytest
from armv7em_testing import needs_clang
from test_kernels_backward import (
    GradCase,
    GradData,
    assert_within_sum_bound,
    input_grad_kernel,
    input_grad_scratch,
    make_grad,
)
from test_kernels_inplace import random_geometry, random_slice

from qtrain import numerics
from qtrain.targets.armv7em import kernels
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import At, Call, Dims, Out, Scratch

pytestmark = needs_clang

GUARD = 8  # bytes before and after the shared buffer that no kernel may touch
F32 = np.dtype(np.float32)


@pytest.fixture(scope="module", params=["portable", "dsp"])
def lib(request: pytest.FixtureRequest) -> ctypes.CDLL:
    return host.cached_library(dsp=request.param == "dsp")


# ---------------------------------------------------------------------------------------------------
# calls
# ---------------------------------------------------------------------------------------------------


def grad_bytes(data: GradData) -> int:
    return 4 * data.grad.size


def input_grad_bytes(data: GradData) -> int:
    return 4 * int(np.prod(data.case.input_shape))


def placement(data: GradData, alignment: str) -> tuple[int, int, int]:
    """(buffer bytes, grad offset, input_grad offset) of a shared buffer for `alignment`: "head", "tail",
    "shift" (input_grad one float after grad) or "back" (one float before): the last two are overlaps no
    kernel allows."""
    g, x = grad_bytes(data), input_grad_bytes(data)
    size = max(g, x)
    if alignment == "head":
        return size + 2 * GUARD, GUARD, GUARD
    if alignment == "tail":
        return size + 2 * GUARD, GUARD + size - g, GUARD + size - x
    if alignment == "shift":
        return size + 4 + 2 * GUARD, GUARD, GUARD + 4
    if alignment == "back":
        return size + 4 + 2 * GUARD, GUARD + 4, GUARD
    raise ValueError(alignment)


def scratch_bytes(data: GradData, kernel: str) -> int:
    """The Python mirror's scratch size for `kernel` ("wrapper": the kernel the wrapper picks)."""
    return input_grad_scratch(data, input_grad_kernel(data.case) if kernel == "wrapper" else kernel)


def out_of_place_call(data: GradData, kernel: str) -> Call:
    return calls.conv2d_input_grad(kernel, data.grad, data.weight, data.params, data.case.input_shape,
                                   scratch_bytes(data, kernel))


def in_place_call(data: GradData, kernel: str, alignment: str, *, seed: int = 0,
                  extra: int = 0) -> tuple[Call, np.ndarray]:
    """The call of `kernel` ("wrapper", "1x1", ...) with grad and input_grad in one buffer placed as
    `alignment`, and that buffer's initial contents (grad at its offset, random bytes elsewhere); `extra`
    bytes of scratch beyond the mirror's size."""
    size, grad_offset, out_offset = placement(data, alignment)
    initial = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8)
    initial[grad_offset:grad_offset + grad_bytes(data)] = data.grad.reshape(-1).view(np.uint8)
    buffer = Out((size,), np.dtype(np.uint8), initial)
    call = Call(calls.INPUT_GRAD_FUNCTIONS[kernel], [
        Scratch(scratch_bytes(data, kernel) + extra), data.params, Dims(data.case.output_shape),
        At(buffer, grad_offset),
        Dims(data.effective.shape), data.weight, Dims(data.case.input_shape), At(buffer, out_offset)])
    return call, initial


def expected_buffer(data: GradData, alignment: str, initial: np.ndarray, golden: np.ndarray) -> np.ndarray:
    """The shared buffer after a correct in-place call: input_grad at its offset, everything else as it was."""
    _, _, out_offset = placement(data, alignment)
    assert golden.dtype == F32 and golden.shape == data.case.input_shape
    want = initial.copy()
    want[out_offset:out_offset + input_grad_bytes(data)] = golden.reshape(-1).view(np.uint8)
    return want


def mirror(data: GradData) -> str | None:
    case = data.case
    return kernels.input_grad_in_place_alignment(case.input_shape, data.effective.shape, case.output_shape,
                                                 case.strides, case.padding, case.groups)


def golden(lib: ctypes.CDLL, data: GradData, kernel: str) -> np.ndarray:
    """The out-of-place result of `kernel`, checked against numerics' reference sum."""
    case = data.case
    status, (gx,) = calls.run_host(lib, out_of_place_call(data, kernel))
    assert status == 0, kernel
    args = {"strides": case.strides, "padding": case.padding, "groups": case.groups}
    reference = numerics.conv2d_input_grad(data.grad, data.effective, case.input_shape, **args)
    abs_terms = numerics.conv2d_input_grad(np.abs(data.grad).astype(np.float64),
                                           np.abs(data.effective.astype(np.int16)), case.input_shape, **args)
    assert_within_sum_bound(gx, reference, abs_terms, case.kernel[0] * case.kernel[1] * case.cout // case.groups)
    return gx


# ---------------------------------------------------------------------------------------------------
# cases: random shapes of every kind the contract covers
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InPlaceCase:
    grad: GradCase
    alignment: str  # what input_grad_in_place_alignment must say
    seed: int


def _cases() -> list[InPlaceCase]:
    rng = np.random.default_rng(20240611)
    out: list[InPlaceCase] = []
    slices = [None, "int8", "master"]
    i = 0
    # pointwise, stride 1: C_in < C_out (head), C_in > C_out (tail), C_in == C_out (both, head)
    for relation, alignment in [("<", "head"), (">", "tail"), ("=", "head")]:
        for batch in (1, 2):
            for kind in slices:
                i += 1
                cout = int(rng.integers(2, 40))
                cin = {"<": int(rng.integers(1, cout)), ">": int(rng.integers(cout + 1, 3 * cout + 2)),
                       "=": cout}[relation]
                h, w = (int(v) for v in rng.integers(1, 9, 2))
                grad = GradCase(f"1x1 {batch}x{h}x{w}x{cin}<-{cout} {kind or 'plain'}", (batch, h, w, cin), cout,
                                (1, 1), slice=random_slice(rng, cin, kind))
                out.append(InPlaceCase(grad, alignment, i))
    # depthwise, stride 1, "same" padding (grad_dims == input_dims), also on images smaller than the kernel
    for k in (3, 5, 7):
        for batch in (1, 2):
            for kind in slices:
                i += 1
                c = int(rng.integers(2, 20))
                h, w = (int(v) for v in rng.integers(1, 12, 2))
                p = k // 2
                grad = GradCase(f"dw {k}x{k}/1 same {batch}x{h}x{w}x{c} {kind or 'plain'}", (batch, h, w, c), c,
                                (k, k), padding=(p, p, p, p), groups=c, slice=random_slice(rng, c, kind))
                out.append(InPlaceCase(grad, "head", i))
    # non-square and asymmetric "same" depthwise kernels, and a strided one whose output is still 1x1
    for k, strides, padding, shape in [((3, 5), (1, 1), (1, 2, 1, 2), (2, 6, 7, 5)),
                                       ((5, 1), (1, 1), (0, 0, 4, 0), (1, 7, 4, 6)),
                                       ((2, 2), (1, 1), (1, 0, 0, 1), (1, 5, 5, 3)),
                                       ((3, 3), (2, 2), (1, 1, 1, 1), (2, 1, 1, 7))]:
        i += 1
        c = shape[3]
        grad = GradCase(f"dw {k[0]}x{k[1]}/{strides[0]} {'x'.join(map(str, shape))}", shape, c, k, strides=strides,
                        padding=padding, groups=c, slice=random_slice(rng, c, slices[i % 3]))
        out.append(InPlaceCase(grad, "head", i))
    return out


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.grad.name)
def test_in_place_equals_out_of_place(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    data = make_grad(case.grad, seed=case.seed)
    assert mirror(data) == case.alignment
    kernel = input_grad_kernel(case.grad)
    assert kernel == ("1x1" if case.grad.kernel == (1, 1) else "depthwise")
    placements = [case.alignment]
    if grad_bytes(data) == input_grad_bytes(data):
        placements = ["head", "tail"]  # the same placement (input_grad == grad) reached both ways
    reference = golden(lib, data, kernel)
    if not (case.grad.depthwise and case.grad.slice is not None):  # (the generic kernel has no such slice)
        generic = golden(lib, data, "generic")
        np.testing.assert_array_equal(reference.view(np.uint32), generic.view(np.uint32))
    for name in (kernel, "wrapper"):
        # out of place: the golden result, the same bits through either entry point
        np.testing.assert_array_equal(golden(lib, data, name).view(np.uint32), reference.view(np.uint32))
        for alignment in placements:
            call, initial = in_place_call(data, name, alignment, seed=case.seed)
            status, (buffer,) = calls.run_host(lib, call)
            assert status == 0, (name, alignment)
            np.testing.assert_array_equal(buffer, expected_buffer(data, alignment, initial, reference),
                                          err_msg=f"{name} {alignment}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.grad.name)
def test_in_place_with_more_scratch(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    """More scratch than the minimum picks other schedules (eight gradient rows or eight channels at a time):
    in place, the same bytes."""
    data = make_grad(case.grad, seed=case.seed)
    kernel = input_grad_kernel(case.grad)
    reference = golden(lib, data, kernel)
    for extra in (256, 4096, 65536):
        call, initial = in_place_call(data, kernel, case.alignment, seed=case.seed, extra=extra)
        status, (buffer,) = calls.run_host(lib, call)
        assert status == 0
        np.testing.assert_array_equal(buffer, expected_buffer(data, case.alignment, initial, reference),
                                      err_msg=f"+{extra}")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.grad.name)
def test_other_placements_are_refused(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    data = make_grad(case.grad, seed=case.seed)
    refused = ["shift", "back"]
    if grad_bytes(data) != input_grad_bytes(data):
        refused.append("tail" if case.alignment == "head" else "head")
    for name in (input_grad_kernel(case.grad), "wrapper"):
        for alignment in refused:
            call, initial = in_place_call(data, name, alignment, seed=case.seed)
            status, (buffer,) = calls.run_host(lib, call)
            assert status == -1, (name, alignment)
            np.testing.assert_array_equal(buffer, initial, err_msg=f"{name} {alignment}")  # nothing written


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.grad.name)
def test_scratch_sizes_agree_with_the_mirror(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    """The 1x1 kernel's scratch holds one block's four gradient rows (16 * C_out bytes) whether or not
    the call is in place; C and Python agree, and one word less is refused with nothing written."""
    data = make_grad(case.grad, seed=case.seed)
    kernel = input_grad_kernel(case.grad)
    size = scratch_bytes(data, kernel)
    s = case.grad.slice
    assert kernels.buffer_size_conv2d_input_grad_wrapper(
        case.grad.input_shape, data.effective.shape, case.grad.output_shape, case.grad.strides, case.grad.padding,
        case.grad.groups, slice_channels=None if s is None else s[1] - s[0],
        master=s is not None and s[2] == "master") == size
    if kernel == "1x1":
        master = s is not None and s[2] == "master"
        slice_bytes = (case.grad.cout * (s[1] - s[0]) + 3) // 4 * 4 if master and s is not None else 0
        assert size == slice_bytes + 16 * case.grad.cout
    for name in (kernel, "wrapper"):
        c_size, _ = calls.run_host(lib, Call(calls.INPUT_GRAD_FUNCTIONS[name] + "_get_buffer_size", [
            data.params, Dims(case.grad.output_shape), Dims(data.effective.shape), Dims(case.grad.input_shape),
            data.weight]))
        assert c_size == size, name
        call, initial = in_place_call(data, name, case.alignment, seed=case.seed)
        short = Call(call.function, [Scratch(size - 4), *call.args[1:]])
        status, (buffer,) = calls.run_host(lib, short)
        assert status == -1, name
        np.testing.assert_array_equal(buffer, initial)


def test_cases_cover_the_contract() -> None:
    """Both kernels, both alignments of the 1x1 kernel, C_in <, > and == C_out, 3x3 / 5x5 / 7x7 "same"
    depthwise, batches 1 and 2, slices of both kinds (on both kernels)."""
    grads = [c.grad for c in CASES]
    assert {(c.grad.kernel == (1, 1), c.alignment) for c in CASES} == {(True, "head"), (True, "tail"),
                                                                       (False, "head")}
    one = [g for g in grads if g.kernel == (1, 1)]
    assert any(g.input_shape[3] < g.cout for g in one) and any(g.input_shape[3] > g.cout for g in one)
    assert any(g.input_shape[3] == g.cout for g in one)
    for size in (3, 5, 7):
        assert any(g.kernel == (size, size) and g.strides == (1, 1) and g.padding == (size // 2,) * 4 for g in grads)
    for depthwise in (False, True):
        kinds = {g.slice[2] if g.slice else None for g in grads if g.depthwise == depthwise}
        assert kinds == {None, "int8", "master"}
        assert {g.input_shape[0] for g in grads if g.depthwise == depthwise} == {1, 2}


# ---------------------------------------------------------------------------------------------------
# shapes whose kernel does not run in place
# ---------------------------------------------------------------------------------------------------

NOT_IN_PLACE = [
    GradCase("1x1 stride 2 C_in < C_out", (1, 6, 6, 8), 12, (1, 1), strides=(2, 2)),
    GradCase("1x1 stride 2 C_in > C_out", (2, 5, 6, 16), 6, (1, 1), strides=(2, 2), slice=(2, 9, "master")),
    GradCase("1x1 stride (1, 2) C_in == C_out", (1, 4, 6, 8), 8, (1, 1), strides=(1, 2)),
    GradCase("1x1 stride (2, 1) C_in > C_out", (1, 5, 3, 10), 4, (1, 1), strides=(2, 1), slice=(0, 10, "int8")),
    GradCase("dw 3x3/2 same", (1, 8, 8, 6), 6, (3, 3), strides=(2, 2), padding=(1, 1, 1, 1), groups=6),
    GradCase("dw 7x7/2 tf", (2, 9, 9, 4), 4, (7, 7), strides=(2, 2), padding=(2, 2, 3, 3), groups=4),
    GradCase("dw 3x3 valid (smaller output)", (1, 6, 6, 4), 4, (3, 3), groups=4),
    GradCase("dw 3x3 taller output", (1, 6, 6, 4), 4, (3, 3), padding=(1, 1, 3, 1), groups=4),
    GradCase("dw 5x5 wider output", (2, 5, 5, 3), 3, (5, 5), padding=(2, 3, 2, 3), groups=3,
             slice=(1, 3, "master")),
    # padding of KH / KW or more: gradient rows and columns no input pixel reaches (they once made the
    # depthwise kernel write outside its scratch plane)
    GradCase("dw 1x2 pad_top >= KH", (2, 6, 5, 3), 3, (1, 2), padding=(1, 2, 0, 0), groups=3),
    GradCase("dw 3x3 bottom/right padding 4", (1, 5, 5, 4), 4, (3, 3), padding=(0, 0, 4, 4), groups=4),
    GradCase("dw 3x3/2 padding 5", (1, 6, 7, 2), 2, (3, 3), strides=(2, 2), padding=(5, 4, 5, 4), groups=2,
             slice=(1, 2, "int8")),
    GradCase("generic 3x3 same", (1, 6, 6, 8), 8, (3, 3), padding=(1, 1, 1, 1)),
    GradCase("generic 1x1 padded", (1, 4, 4, 8), 8, (1, 1), padding=(1, 1, 1, 1)),
    GradCase("generic 1x1 bottom padding", (1, 4, 4, 8), 8, (1, 1), padding=(0, 0, 1, 0)),
    GradCase("generic grouped same", (1, 6, 5, 8), 8, (3, 3), padding=(1, 1, 1, 1), groups=2),
    GradCase("generic depthwise multiplier 2", (1, 6, 6, 4), 8, (3, 3), padding=(1, 1, 1, 1), groups=4),
    GradCase("generic depthwise 13x13 same", (1, 14, 14, 4), 4, (13, 13), padding=(6, 6, 6, 6), groups=4),
]


@pytest.mark.parametrize("case", NOT_IN_PLACE, ids=lambda c: c.name)
def test_no_alignment_for_uncovered_shapes(lib: ctypes.CDLL, case: GradCase) -> None:
    """input_grad_in_place_alignment is None, and the wrapper (and the 1x1 / depthwise kernel it picks)
    refuses every overlap, nothing written, but runs the same call with disjoint buffers."""
    data = make_grad(case, seed=5)
    assert mirror(data) is None
    kernel = input_grad_kernel(case)
    assert kernel == {"1x1": "1x1", "dw": "depthwise", "generic": "generic"}[case.name.split()[0]]
    names = ["wrapper"] if kernel == "generic" else [kernel, "wrapper"]
    for name in names:
        for alignment in ("head", "tail", "shift", "back"):
            call, initial = in_place_call(data, name, alignment)
            status, (buffer,) = calls.run_host(lib, call)
            assert status == -1, (name, alignment)
            np.testing.assert_array_equal(buffer, initial, err_msg=f"{name} {alignment}")
        golden(lib, data, name)  # disjoint buffers: accepted, and right


def _random_case(rng: np.random.Generator, i: int) -> GradCase | None:
    n, h, w, cin, cout, kh, kw, groups = random_geometry(rng, i)
    strides = (1, 1) if rng.random() < 0.5 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    if rng.random() < 0.4:  # "same" (the shapes a depthwise runs in place with, when the stride is 1)
        padding = ((kh - 1) // 2, (kw - 1) // 2, kh // 2, kw // 2)
    elif rng.random() < 0.5:
        padding = (0, 0, 0, 0)
    else:
        padding = tuple(int(v) for v in (rng.integers(0, kh + 1), rng.integers(0, kw + 1), rng.integers(0, kh),
                                         rng.integers(0, kw)))
    if h + padding[0] + padding[2] < kh or w + padding[1] + padding[3] < kw:
        return None
    return GradCase(f"random {i}", (n, h, w, cin), cout, (kh, kw), strides=strides, padding=padding, groups=groups)


def test_mirror_agrees_with_the_wrapper_on_random_shapes(lib: ctypes.CDLL) -> None:
    """Random convolutions of every kind: the wrapper accepts a head / tail placement exactly when
    input_grad_in_place_alignment names it (equal sizes: head and tail coincide), and then writes the
    out-of-place bits; it refuses a shifted one either way."""
    rng = np.random.default_rng(11)
    seen: set[tuple[str, str | None]] = set()
    tried = 0
    for i in range(130):
        case = _random_case(rng, i)
        if case is None:
            continue
        tried += 1
        data = make_grad(case, seed=i)
        allowed = mirror(data)
        kernel = input_grad_kernel(case)
        seen.add((kernel, allowed))
        same_size = grad_bytes(data) == input_grad_bytes(data)
        reference = golden(lib, data, "wrapper")
        for alignment in ("head", "tail", "shift"):
            ok = allowed is not None and alignment != "shift" and (alignment == allowed or same_size)
            call, initial = in_place_call(data, "wrapper", alignment, seed=i)
            status, (buffer,) = calls.run_host(lib, call)
            assert status == (0 if ok else -1), (case, kernel, alignment, allowed)
            want = expected_buffer(data, alignment, initial, reference) if ok else initial
            np.testing.assert_array_equal(buffer, want, err_msg=f"{case} {alignment}")
    assert tried >= 100
    assert {("1x1", "head"), ("1x1", "tail"), ("1x1", None), ("depthwise", "head"), ("depthwise", None),
            ("generic", None)} <= seen
    assert {allowed for kernel, allowed in seen if kernel == "generic"} == {None}


PEAK_LAYERS = [
    # mcunet-sized backward layers: an expansion's dL/dx (tail: C_in > C_out) and a projection's (head)
    InPlaceCase(GradCase("1x1 20x20x96<-16", (1, 20, 20, 96), 16, (1, 1), slice=(0, 48, "master")), "tail", 1),
    InPlaceCase(GradCase("1x1 20x20x16<-96", (1, 20, 20, 16), 96, (1, 1)), "head", 2),
    InPlaceCase(GradCase("dw 7x7/1 10x10x192", (1, 10, 10, 192), 192, (7, 7), padding=(3, 3, 3, 3), groups=192,
                         slice=(0, 96, "master")), "head", 3),
]


@pytest.mark.parametrize("case", PEAK_LAYERS, ids=lambda c: c.grad.name)
def test_full_size_layers_run_in_place(lib: ctypes.CDLL, case: InPlaceCase) -> None:
    """Realistic layer sizes, through the wrapper (what emit_c calls): the pair costs max(grad, input_grad)."""
    data = make_grad(case.grad, seed=case.seed)
    assert mirror(data) == case.alignment
    reference = golden(lib, data, "wrapper")
    call, initial = in_place_call(data, "wrapper", case.alignment, seed=case.seed)
    status, (buffer,) = calls.run_host(lib, call)
    assert status == 0
    assert len(initial) == max(grad_bytes(data), input_grad_bytes(data)) + 2 * GUARD
    np.testing.assert_array_equal(buffer, expected_buffer(data, case.alignment, initial, reference))
