"""A candidate's memory: the `peak_sram_bytes` the real training pipeline plans for it."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain.contract import MEMORY
from qtrain.search.candidates import Candidate, backbone_convs, canonical
from qtrain.search.fine_tune import stop_workers
from qtrain.transforms.lite_residual import Calibration
from qtrain.transforms.narrow_gradients import DEFAULT_GRAD_PRECISION
from qtrain.transforms.pipeline import apply_passes, training_passes
from qtrain.transforms.recipe import DEFAULT_WEIGHT_STORAGE
from qtrain.transforms.schemes import UpdateScheme


def planned_peak_sram(module: ModuleOp, scheme: str | UpdateScheme, *, reorder: bool = True,
                      weight_storage: str = DEFAULT_WEIGHT_STORAGE, calibration: Calibration | None = None,
                      grad_precision: str = DEFAULT_GRAD_PRECISION) -> int:
    """`peak_sram_bytes` the training pipeline plans for `scheme` on a clone of forward-only `module`
    (`calibration`: the scales of the lite residual modules it inserts, if any)."""
    planned = apply_passes(
        module.clone(),
        training_passes(scheme, reorder=reorder, sram_kb=1 << 30, weight_storage=weight_storage,
                        calibration=calibration, grad_precision=grad_precision),
        verify=False,
    )
    memory = planned.attributes[MEMORY]
    return int(memory.data["peak_sram_bytes"].value.data)  # type: ignore[attr-defined]


class MemoryPlanner:
    """Planned peak SRAM of candidates (the real pipeline, see `planned_peak_sram`), cached by candidate.

    `jobs` > 1: `prefetch` plans a batch of candidates in that many worker processes (the evolution hands it
    the candidates it is about to plan); `close()` stops them (also a context manager)."""

    def __init__(self, module: ModuleOp, *, reorder: bool = True, weight_storage: str = DEFAULT_WEIGHT_STORAGE,
                 calibration: Calibration | None = None, jobs: int = 1):
        self.module = module
        self.calibration = calibration
        self.convs = backbone_convs(module)
        self.reorder = reorder
        self.weight_storage = weight_storage
        self.cache: dict[Candidate, int] = {}
        self.seconds = 0.0
        self.jobs = jobs
        self._pool: ProcessPoolExecutor | None = None

    def peak_sram_bytes(self, candidate: Candidate) -> int:
        candidate = canonical(candidate, self.convs)
        value = self.cache.get(candidate)
        if value is None:
            start = time.perf_counter()
            value = planned_peak_sram(self.module, candidate.scheme(), reorder=self.reorder,
                                      weight_storage=self.weight_storage, calibration=self.calibration)
            self.seconds += time.perf_counter() - start
            self.cache[candidate] = value
        return value

    def prefetch(self, candidates: Sequence[Candidate]) -> None:
        """Plans the candidates not planned yet, in the `jobs` worker processes (in this one when `jobs` is 1 or
        there is only one), so that `peak_sram_bytes` finds them in the cache."""
        todo = list(dict.fromkeys(c for c in (canonical(c, self.convs) for c in candidates) if c not in self.cache))
        if self.jobs <= 1 or len(todo) <= 1:
            for c in todo:
                self.peak_sram_bytes(c)
            return
        if self._pool is None:
            # The calibration (lite residual scales) is set after construction by the search tool: the
            # workers get what is set when the first batch comes.
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, initializer=_init_worker, initargs=(
                str(self.module), self.reorder, self.weight_storage, self.calibration))
        start = time.perf_counter()
        try:
            for c, value in zip(todo, self._pool.map(_plan_in_worker, [c.scheme() for c in todo]), strict=True):
                self.cache[c] = value
        except BaseException:
            self.close(wait=False)
            raise
        self.seconds += time.perf_counter() - start

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            if wait:
                self._pool.shutdown()
            else:
                stop_workers(self._pool)
            self._pool = None

    def __enter__(self) -> MemoryPlanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(wait=exc[0] is None)


_WORKER: dict[str, Any] = {}


def _init_worker(module_text: str, reorder: bool, weight_storage: str, calibration: Calibration | None) -> None:
    from qtrain.interpreter import load_module

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the workers
    _WORKER["args"] = (load_module(module_text), reorder, weight_storage, calibration)


def _plan_in_worker(scheme: UpdateScheme) -> int:
    module, reorder, weight_storage, calibration = _WORKER["args"]
    return planned_peak_sram(module, scheme, reorder=reorder, weight_storage=weight_storage, calibration=calibration)
