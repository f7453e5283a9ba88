"""A candidate's memory: the `peak_sram_bytes` the real training pipeline plans for it."""

from __future__ import annotations

import time

from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain.contract import MEMORY
from qtrain.search.candidates import Candidate, backbone_convs, canonical
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
    )
    memory = planned.attributes[MEMORY]
    return int(memory.data["peak_sram_bytes"].value.data)  # type: ignore[attr-defined]


class MemoryPlanner:
    """Planned peak SRAM of candidates (the real pipeline, see `planned_peak_sram`), cached by candidate."""

    def __init__(self, module: ModuleOp, *, reorder: bool = True, weight_storage: str = DEFAULT_WEIGHT_STORAGE,
                 calibration: Calibration | None = None):
        self.module = module
        self.calibration = calibration
        self.convs = backbone_convs(module)
        self.reorder = reorder
        self.weight_storage = weight_storage
        self.cache: dict[Candidate, int] = {}
        self.seconds = 0.0

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
