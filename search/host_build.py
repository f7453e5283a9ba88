"""Fine-tuning runs on the host build of the generated C: the search's engine at native speed.

The training graph of a scheme is compiled as `qtrain-compile --target host` compiles it (the same
passes with a memory plan, the same C emitter, the same runtime and harness) and run as `qtrain-run`
runs it (`qtrain.tools.qtrain_run.run`: the harness protocol, train then evaluate in one process).
DESIGN.md's agreement contract makes its int8 forward bit-exact with the golden model, so a run scores
what the interpreter's run of the same scheme scores, some 6x faster on mcunet-5fps.

Repeats of a candidate differ only in their sample order, so each distinct training graph is compiled
once: `HostBuilds` keeps the builds of one search in a folder, keyed by a hash of the planned IR.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from qtrain.search.candidates import SearchError

ENGINES = ("host", "interpreter")
"""What runs the fine-tuning runs: the host build of the generated C, or the numpy golden model."""

PLAN_KB = 1 << 30
"""The runs measure accuracy, not memory: the plan must never refuse a candidate (memory is the
planner's job, `qtrain.search.memory`)."""

RUN_TIMEOUT_S = 6 * 3600.0


class EngineUnavailableError(SearchError):
    """The host engine was asked for on a machine without clang."""


def check_engine(engine: str) -> None:
    """SearchError for an unknown engine, EngineUnavailableError for the host engine without clang (no
    silent fallback to the ~6x slower interpreter: the user chooses it)."""
    from qtrain.targets.armv7em import build

    if engine not in ENGINES:
        raise SearchError(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
    if engine == "host" and not build.have_tools("clang"):
        raise EngineUnavailableError("the host engine needs clang on PATH (apt-get install clang); or pass "
                                     "--engine interpreter (the numpy golden model, several times slower)")


class HostBuilds:
    """Host builds of training graphs in `root`, one per distinct planned IR (sha256 of its text).

    Several processes may share a root: a build is made in a private folder and renamed into place, so
    a process sees a whole build or none (two racing builds of the same IR are identical; one wins).
    """

    def __init__(self, root: Path):
        self.root = root

    def firmware(self, trained: ModuleOp) -> Path:
        from qtrain.lowering.emit_c import emit_model
        from qtrain.targets.armv7em import build

        key = hashlib.sha256(str(trained).encode()).hexdigest()[:32]
        final = self.root / key
        firmware = final / "firmware"
        if firmware.is_file():
            return firmware
        self.root.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.root))
        try:
            source, header = emit_model(trained)
            (work / "model.c").write_text(source)
            (work / "model.h").write_text(header)
            build.build_firmware([work / "model.c", *build.kernel_sources()], work / "firmware", "host",
                                 include_dirs=[work])
            (work / "model.c").unlink()  # 2-3 MB of weights as text per build; the binary is what runs
            try:
                os.rename(work, final)
            except OSError:
                if not firmware.is_file():
                    raise
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
        return firmware


def host_accuracy(firmware: Path, images: np.ndarray, labels: np.ndarray, steps: int, order: np.ndarray,
                  evaluate: tuple[np.ndarray, np.ndarray], work_dir: Path | None = None) -> float:
    """Accuracy on `evaluate` after `steps` training steps of the host build `firmware` on
    `images[order]` (what `fine_tune_accuracy` computes in the golden model). `work_dir`: where the
    run's request and result files go (the builds' folder: an interrupted search's stopped worker
    cannot clean up after itself, the search removes that folder)."""
    from qtrain.targets.armv7em import protocol
    from qtrain.tools.qtrain_run import run

    eval_images, eval_labels = evaluate
    if steps > 0:
        request = protocol.encode_request(images[order], labels[order].astype(np.int32), protocol.MODE_TRAIN_EVAL,
                                          steps, eval_images=eval_images, eval_labels=eval_labels.astype(np.int32))
        result, _ = run(firmware, request, RUN_TIMEOUT_S, f"{steps} steps", work_dir=work_dir)
        assert result.eval_logits is not None
        logits = result.eval_logits[-1]  # the pass after the last step
    else:
        request = protocol.encode_request(eval_images, eval_labels.astype(np.int32), protocol.MODE_INFER)
        result, _ = run(firmware, request, RUN_TIMEOUT_S, f"{len(eval_images)} images", work_dir=work_dir)
        logits = result.logits
    return float(np.mean(np.asarray(logits).argmax(axis=1) == eval_labels))


def training_graph(module: ModuleOp, scheme: object, options: dict[str, object], plan: bool,
                   calibration: object = None) -> ModuleOp:
    """A clone of forward-only `module` through the training pipeline (`options`: the recipe's
    `training_passes` keywords); planned for a host build, unplanned for the golden model."""
    from qtrain.transforms.pipeline import apply_passes, training_passes

    return apply_passes(module.clone(), training_passes(scheme, **options, plan=plan,  # type: ignore[arg-type]
                                                        sram_kb=PLAN_KB, calibration=calibration))


def remove_builds(root: Path | str) -> None:
    """Removes one search's builds, and their parent folder when no other search uses it."""
    shutil.rmtree(root, ignore_errors=True)
    try:
        Path(root).parent.rmdir()
    except OSError:
        pass  # another search's builds are there


def builds_root(token: str) -> Path:
    """The folder of one search's host builds on the machine that runs them (the temporary folder:
    a Dask worker on another machine keeps its own)."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"qtrain-search-{uid}" / token
