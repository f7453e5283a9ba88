"""The learning-rate schedule and SGD momentum kernels, and the runtime's cosine, against qtrain.numerics.

All of them are element-wise float32 operations in a documented order, so the host C and the golden
model must agree bit for bit: qtrain_cospif with numerics.cospi_f32 over every 256th float32 of [0, 1] (the
schedule's whole argument range, ~4.2 M values) and over every argument the schedules below produce;
qtrain_lr_schedule_f32 with numerics.lr_schedule_factor step by step (and its counter); the momentum
updates with numerics.momentum_velocity followed by numerics.sgd_update.
"""

from __future__ import annotations

import ctypes
import subprocess

import numpy as np
import pytest
from armv7em_testing import needs_clang
from test_kernels_backward import GRAD_CASES, make_grad, saved_input

from qtrain import numerics
from qtrain.targets.armv7em import build
from qtrain.targets.armv7em.kernels import calls, host
from qtrain.targets.armv7em.kernels.calls import F32, I32, Call, Dims, In, Out

pytestmark = needs_clang

SCHEDULES = [  # (warmup_steps, steps = the horizon, final_ratio)
    (50, 1000, 0.1),
    (0, 777, 0.0),
    (3, 10, 0.25),
    (7, 0, 0.5),  # warm-up, then constant (no decay)
    (0, 0, 1.0),  # constant: exactly 1
    (0, 4096, 1.0 / 3.0),
]


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    return host.cached_library()


@pytest.fixture(scope="module")
def cospi_array(tmp_path_factory: pytest.TempPathFactory) -> ctypes._CFuncPtr:
    """qtrain_cospif applied to an array, built from runtime_math.c with the host flags (one ctypes call
    for millions of values)."""
    folder = tmp_path_factory.mktemp("cospi")
    loop = folder / "cospi_array.c"
    loop.write_text('#include <stdint.h>\n#include "qtrain_runtime.h"\n'
                    "void cospi_array(const float *x, float *y, int32_t n) {\n"
                    "    for (int32_t i = 0; i < n; i++) { y[i] = qtrain_cospif(x[i]); }\n}\n")
    library = folder / "libcospi.so"
    subprocess.run([build.find_tool("clang"), *build.compile_flags("host"), "-Wno-missing-prototypes", "-fPIC",
                    "-shared", str(loop), str(build.TARGET_DIR / "runtime_math.c"), "-o", str(library)],
                   check=True, capture_output=True)
    function = ctypes.CDLL(str(library)).cospi_array
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
    return function


def c_cospi(function: ctypes._CFuncPtr, x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    function(x.ctypes.data, y.ctypes.data, x.size)
    return y


def schedule_arguments(warmup: int, horizon: int) -> np.ndarray:
    """The cosine's arguments a schedule produces: fp32(t - W) / fp32(T - W) for W <= t < T."""
    t = np.arange(warmup, horizon)
    return (t - warmup).astype(np.float32) / np.float32(horizon - warmup)


def test_cospi_is_the_golden_model_bit_for_bit_over_0_1(cospi_array: ctypes._CFuncPtr) -> None:
    bits = np.arange(0, 0x3F800001, 256, dtype=np.uint32)
    x = np.concatenate([bits.view(np.float32), np.float32([0.25, 0.5, 0.75, 1.0, np.nextafter(0.25, 1),
                                                           np.nextafter(0.5, 0), np.nextafter(0.5, 1)])])
    for lo in range(0, x.size, 1 << 22):  # chunks keep numpy's temporaries small
        chunk = x[lo:lo + (1 << 22)]
        np.testing.assert_array_equal(c_cospi(cospi_array, chunk).view(np.uint32),
                                      numerics.cospi_f32(chunk).view(np.uint32))


def test_cospi_over_every_schedule_argument(cospi_array: ctypes._CFuncPtr) -> None:
    for warmup, horizon in [(50, 1000), (0, 777), (0, 4096), (100, 2000), (0, 10000)]:
        p = schedule_arguments(warmup, horizon)
        np.testing.assert_array_equal(c_cospi(cospi_array, p).view(np.uint32), numerics.cospi_f32(p).view(np.uint32))


def lr_schedule(lib: ctypes.CDLL, counter: np.ndarray, warmup: int, horizon: int, ratio: float) -> np.float32:
    factor, (after,) = calls.run_host(lib, Call("qtrain_lr_schedule_f32", [
        Out((1,), np.dtype(np.uint32), counter), I32(warmup), I32(horizon), F32(ratio)], returns="f32"))
    counter[...] = after
    return np.float32(factor)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"W{s[0]}-T{s[1]}-r{s[2]:.3g}")
def test_lr_schedule_kernel_is_the_golden_model_step_by_step(lib: ctypes.CDLL, schedule: tuple[int, int, float]
                                                             ) -> None:
    warmup, horizon, ratio = schedule
    steps = max(warmup, horizon) + 20  # past the horizon: the final ratio is held
    expected = numerics.lr_schedule_factor(np.arange(steps), warmup_steps=warmup, steps=horizon, final_ratio=ratio)
    counter = np.zeros(1, np.uint32)
    got = np.array([lr_schedule(lib, counter, warmup, horizon, ratio) for _ in range(steps)], np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert counter[0] == steps


def test_lr_schedule_counter_saturates(lib: ctypes.CDLL) -> None:
    """At the counter's end the schedule stays held, never wrapping back into its warm-up."""
    counter = np.array([2**32 - 2], np.uint32)
    assert lr_schedule(lib, counter, 10, 100, 0.2) == np.float32(0.2)
    assert counter[0] == 2**32 - 1
    assert lr_schedule(lib, counter, 10, 100, 0.2) == np.float32(0.2)
    assert counter[0] == 2**32 - 1


def momentum_update(param: np.ndarray, grad: np.ndarray, velocity: np.ndarray, momentum: float, lr: float,
                    scale: np.ndarray) -> Call:
    suffix = {np.dtype(np.int8): "s8", np.dtype(np.int32): "s32", np.dtype(np.float32): "f32"}[param.dtype]
    channels = param.shape[0]
    return Call(f"qtrain_sgd_momentum_update_{suffix}", [
        Out(param.shape, param.dtype, param), In(grad.astype(np.float32)), Out(param.shape, np.dtype(np.float32),
                                                                               velocity),
        F32(momentum), I32(channels), I32(param.size // channels), F32(lr), In(scale), I32(scale.size)],
        returns="void")


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float32])
def test_momentum_update_is_bit_exact_over_several_steps(lib: ctypes.CDLL, dtype: type) -> None:
    rng = np.random.default_rng(31)
    shape = (6, 3, 3, 5) if dtype is not np.int32 else (40,)
    if dtype is np.int8:
        param = rng.integers(-128, 128, shape, dtype=np.int8)
    elif dtype is np.int32:
        param = rng.integers(-(2**31), 2**31, shape, dtype=np.int64).astype(np.int32)
    else:
        param = rng.uniform(-130, 130, shape).astype(np.float32)
    scale = rng.uniform(0.5, 3, shape[0]).astype(np.float32)
    velocity = np.zeros(shape, np.float32)
    device_param, device_velocity = param.copy(), velocity.copy()
    for step in range(4):
        grad = (rng.standard_normal(shape) * 50).astype(np.float32)
        lr = numerics.scheduled_lr(0.7, numerics.lr_schedule_factor(step, warmup_steps=2, steps=4, final_ratio=0.1))
        _, (device_param, device_velocity) = calls.run_host(lib, momentum_update(device_param, grad, device_velocity,
                                                                                 0.9, float(lr), scale))
        velocity = numerics.momentum_velocity(velocity, grad, 0.9)
        param = numerics.sgd_update(param, velocity, lr=lr, grad_scale=scale)
        np.testing.assert_array_equal(device_velocity.view(np.uint32), velocity.view(np.uint32))
        np.testing.assert_array_equal(device_param.view(np.uint8), param.view(np.uint8))


@pytest.mark.parametrize("storage", [np.int8, np.float32])
@pytest.mark.parametrize("case", [c for c in GRAD_CASES if c.groups == 1 and c.name in
                                  ("1x1 odd", "1x1 master slice", "generic 3x3/2 stem", "classifier")],
                         ids=lambda c: c.name)
def test_fused_momentum_update_equals_grad_then_momentum_update(lib: ctypes.CDLL, case, storage: type) -> None:
    data = make_grad(case, seed=3)
    saved, _ = saved_input(data)
    filter_shape = (case.cout, *case.kernel, saved.shape[3])
    rng = np.random.default_rng(8)
    if storage is np.int8:
        param = rng.integers(-128, 128, filter_shape, dtype=np.int8)
        scale = rng.uniform(20, 400, case.cout).astype(np.float32)
    else:
        param = rng.uniform(-100, 100, filter_shape).astype(np.float32)
        scale = rng.uniform(1, 10, case.cout).astype(np.float32)
    velocity = rng.standard_normal(filter_shape).astype(np.float32)  # as after earlier steps
    lr = float(numerics.scheduled_lr(0.02, 0.75))
    status, (dw,) = calls.run_host(lib, calls.conv2d_weight_grad(saved, data.grad, data.params, filter_shape))
    assert status == 0
    status, (fused, fused_velocity) = calls.run_host(lib, Call("qtrain_conv2d_weight_grad_sgd_momentum_update", [
        data.params, Dims(saved.shape), In(saved), Dims(data.grad.shape), In(data.grad), Dims(filter_shape), F32(lr),
        In(scale), I32(scale.size), I32(calls.STORAGE[param.dtype]), Out(param.shape, param.dtype, param),
        Out(filter_shape, np.dtype(np.float32), velocity), F32(0.9)]))
    assert status == 0
    expected_velocity = numerics.momentum_velocity(velocity, dw, 0.9)
    expected = numerics.sgd_update(param, expected_velocity, lr=lr, grad_scale=scale)
    np.testing.assert_array_equal(fused_velocity.view(np.uint32), expected_velocity.view(np.uint32))
    np.testing.assert_array_equal(fused.view(np.uint8), expected.view(np.uint8))
    assert (fused != param).mean() > 0.3  # the update did something


def test_fused_momentum_update_refuses_a_missing_velocity(lib: ctypes.CDLL) -> None:
    data = make_grad(GRAD_CASES[0])
    param = np.zeros((40, 1, 1, 24), np.float32)
    status, _ = calls.run_host(lib, Call("qtrain_conv2d_weight_grad_sgd_momentum_update", [
        data.params, Dims(data.x.shape), In(data.x), Dims(data.grad.shape), In(data.grad), Dims(param.shape),
        F32(0.1), In(np.ones(1, np.float32)), I32(1), I32(calls.STORAGE[param.dtype]),
        Out(param.shape, param.dtype, param), calls.Null(), F32(0.9)]))
    assert status == -1


def test_host_library_has_the_new_kernels(lib: ctypes.CDLL) -> None:
    for name in ("qtrain_lr_schedule_f32", "qtrain_cospif", "qtrain_sgd_momentum_update_s8",
                 "qtrain_sgd_momentum_update_s32", "qtrain_sgd_momentum_update_f32",
                 "qtrain_conv2d_weight_grad_sgd_momentum_update"):
        assert hasattr(lib, name), name

