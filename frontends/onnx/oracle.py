"""onnxruntime as the numerics oracle (tests, `qtrain-export --verify`, bench_imports): sessions whose int8
results are exact on every CPU.

On x86-64 CPUs without VNNI (AVX2, AVX-512 without VNNI) onnxruntime's MLAS multiplies uint8 activations by
int8 weights with VPMADDUBSW, whose pairwise int16 sums saturate: a QLinearConv output can be tens of steps
from the exact result on those CPUs only (onnxruntime pull request 12088; Intel's oneDNN guide, "Nuances of
int8 computations"). Seen on an AMD EPYC (AVX2): up to 30 output steps on a small QOperator CNN, while a
VNNI machine agreed bit for bit. The session option below makes onnxruntime use its exact u8u8 kernels
where the saturating path would run; elsewhere it changes nothing. A model it cannot serve that way (the
conversion leaves an int8-activation QGemm with uint8 weights, which has no kernel: session creation fails
with NOT_IMPLEMENTED) gets a session without it: int8 activations take the s8s8 kernels, not the saturating
u8s8 ones (measured on the same AVX2 machine: the QOperator int8 tests are exact without the option).
onnxruntime is imported here only when a session is made: it is a dependency of the tests and of the tools
that compare against it, not of qtrain.
"""

from __future__ import annotations

import os
from typing import Any

X64_QUANT_PRECISION = "session.x64quantprecision"


def exact_session(model: str | bytes | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU `InferenceSession` of `model` (a path or serialized bytes) with exact int8 products
    (module docstring); `threads`: intra-op threads (default: onnxruntime's)."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    source = model if isinstance(model, bytes) else str(model)

    def session(exact: bool) -> Any:
        options = ort.SessionOptions()
        if exact:
            options.add_session_config_entry(X64_QUANT_PRECISION, "1")
        if threads is not None:
            options.intra_op_num_threads = threads
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])

    try:
        return session(True)
    except OrtNotImplemented:
        return session(False)
