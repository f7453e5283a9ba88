"""Fine-tuning runs: how a scheme is trained and scored (the host build of the generated C, or the int8
golden model), the data splits and sample orders the runs use, and a runner that makes many runs (in a
process pool or on a Dask cluster when asked)."""

from __future__ import annotations

import signal
import tempfile
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp

from qtrain.dialects.qtrain.contract import TRAIN_STEP
from qtrain.search.candidates import SearchError
from qtrain.search.host_build import ENGINES, HostBuilds, builds_root, host_accuracy, remove_builds, training_graph
from qtrain.search.progress import ProgressCallback, report
from qtrain.transforms.lite_residual import Calibration
from qtrain.transforms.recipe import DEFAULT_WEIGHT_STORAGE, FINE_TUNE_RECIPE, FINE_TUNE_STEPS
from qtrain.transforms.schemes import UpdateScheme

Split = tuple[np.ndarray, np.ndarray]
"""(int8 NHWC images, labels)"""


@dataclass(frozen=True)
class FineTuneRecipe:
    """How a scheme is fine-tuned: `steps` SGD steps of batch 1 (int8 graph, QAS), samples drawn in
    seeded random order (epochs of permutations).

    Defaults chosen by a sweep on the digits task (examples/digits/make_task.py; 2000 steps, 3 sample
    orders, validation accuracy): the shifted inputs start at a loss of ~10, and with lr >= 0.02, or
    lr = bias lr = 0.01, updates reaching conv3 or deeper often collapse to chance (10%); the fp32
    simulation (relaxed interpreter) collapses the same way, so this is optimisation, not int8
    numerics. lr 0.01 with bias lr 0.001 was the most stable setting in which the classifier still
    learns (lr 0.003: classifier only stays at 25%). Train a found scheme with the same rates.

    The learning-rate schedule and momentum (`qtrain.transforms.recipe.Recipe`'s fields; `horizon` is its
    `steps`, the decay horizon) default to FINE_TUNE_RECIPE's: a constant rate, as the sweep measured.
    """

    steps: int = FINE_TUNE_STEPS
    lr: float = FINE_TUNE_RECIPE.lr
    bias_lr: float | None = FINE_TUNE_RECIPE.bias_lr
    weight_storage: str = DEFAULT_WEIGHT_STORAGE
    warmup_steps: int = FINE_TUNE_RECIPE.warmup_steps
    horizon: int = FINE_TUNE_RECIPE.steps
    final_lr_ratio: float = FINE_TUNE_RECIPE.final_lr_ratio
    momentum: float = FINE_TUNE_RECIPE.momentum

    def fingerprint(self) -> dict[str, Any]:
        fields = asdict(self)
        if self.warmup_steps == 0 and self.horizon == 0 and self.momentum == 0:
            # A constant rate without momentum trains bit for bit as before the schedule existed: the
            # fingerprint stays what it was, so contribution caches written then remain valid.
            for name in ("warmup_steps", "horizon", "final_lr_ratio", "momentum"):
                del fields[name]
        return fields

    def pass_options(self) -> dict[str, Any]:
        """The `training_passes` keywords of this recipe."""
        return {"lr": self.lr, "bias_lr": self.bias_lr, "warmup_steps": self.warmup_steps, "steps": self.horizon,
                "final_lr_ratio": self.final_lr_ratio, "momentum": self.momentum,
                "weight_storage": self.weight_storage}


def sample_order(n: int, steps: int, seed: Sequence[int] | int) -> np.ndarray:
    """Indexes of the samples for `steps` steps: consecutive seeded permutations of range(n)."""
    rng = np.random.default_rng(seed)  # type: ignore[arg-type]
    epochs = -(-steps // n)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)])[:steps]


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indexes, validation indexes): a seeded split of range(n), validation at least 1 sample."""
    if not 0 < fraction < 1:
        raise SearchError(f"validation fraction must be within (0, 1), got {fraction}")
    if n < 2:
        raise SearchError(f"the training split has {n} sample(s); carving a validation split needs at least 2")
    order = np.random.default_rng([seed, 0x5EA]).permutation(n)
    n_val = min(n - 1, max(1, round(fraction * n)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fine_tune_accuracy(
    module: ModuleOp,
    scheme: str | UpdateScheme,
    recipe: FineTuneRecipe,
    train: Split,
    evaluate: Split,
    seed: Sequence[int] | int,
    calibration: Calibration | None = None,
    *,
    engine: str = "interpreter",
    builds: HostBuilds | None = None,
) -> float:
    """Accuracy on `evaluate` after fine-tuning a clone of forward-only `module` with `scheme`.

    The graph is the one `qtrain-compile` would build (autodiff with QAS, sparse update, dead-gradient
    elimination, reorder), run by the int8 golden model (`engine` "interpreter") or compiled and run as a
    host build (`engine` "host", `qtrain.search.host_build`; `builds`: the search's build cache, default
    a temporary one). `calibration`: the scales of the lite residual modules a scheme inserts
    (`qtrain.transforms.lite_residual.calibrate` on the fine-tuning images).
    """
    images, labels = train
    order = sample_order(len(images), recipe.steps, seed) if recipe.steps > 0 else np.zeros(0, np.int64)
    if engine == "host":
        trained = training_graph(module, scheme, recipe.pass_options(), True, calibration)
        if builds is None:
            with tempfile.TemporaryDirectory(prefix="qtrain-search-") as tmp:
                firmware = HostBuilds(Path(tmp)).firmware(trained)
                return host_accuracy(firmware, images, labels, recipe.steps, order, evaluate)
        return host_accuracy(builds.firmware(trained), images, labels, recipe.steps, order, evaluate, builds.root)
    if engine != "interpreter":
        raise SearchError(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
    from qtrain.interpreter import ModelInterpreter, run_forward, run_train_steps

    trained = training_graph(module, scheme, recipe.pass_options(), False, calibration)
    runner = ModelInterpreter(trained)
    if recipe.steps > 0:
        run_train_steps(trained, images[order], labels[order], recipe.steps, entry=TRAIN_STEP, interpreter=runner)
    _, logits = run_forward(trained, evaluate[0], interpreter=runner)
    return float(np.mean(logits.argmax(axis=1) == evaluate[1]))


@dataclass(frozen=True)
class RunContext:
    """Everything the runs of one `FineTuneRunner.run` share: sent to each worker once, not with every run."""

    module_text: str
    recipe: FineTuneRecipe
    train: Split
    evaluate: Split
    calibration: Calibration | None
    engine: str
    token: str
    """names this context in a worker's memory and its host builds' folder (`host_build.builds_root`)"""

    def run(self, module: ModuleOp, scheme: str | UpdateScheme, seed: Sequence[int] | int) -> float:
        builds = HostBuilds(builds_root(self.token)) if self.engine == "host" else None
        return fine_tune_accuracy(module, scheme, self.recipe, self.train, self.evaluate, seed, self.calibration,
                                  engine=self.engine, builds=builds)


# A worker's loaded modules (process pool worker or Dask worker), by context token: parsed once per worker.
_MODULES: dict[str, ModuleOp] = {}
_WORKER: dict[str, Any] = {}


def worker_module(context: RunContext) -> ModuleOp:
    module = _MODULES.get(context.token)
    if module is None:
        from qtrain.interpreter import load_module

        module = _MODULES[context.token] = load_module(context.module_text)
    return module


def _worker_init(context: RunContext) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the workers; they print nothing. A no-op
    # handler, not SIG_IGN: an ignored signal stays ignored across exec, so the firmware a host-engine run
    # starts would outlive the search.
    signal.signal(signal.SIGINT, _no_op)
    _WORKER["context"] = context


def _no_op(signum: int, frame: object) -> None:
    pass


class WorkerInterrupted(Exception):
    """A worker's run stopped by Ctrl-C. The firmware a host-engine run starts gets the signal too and its
    runner raises KeyboardInterrupt; a process-pool worker would print that BaseException's traceback
    and die, so it goes back to the parent (which is stopping the search already) as an ordinary error."""


def _worker_run(scheme: str | UpdateScheme, seed: tuple[int, ...]) -> float:
    context: RunContext = _WORKER["context"]
    try:
        return context.run(worker_module(context), scheme, seed)
    except KeyboardInterrupt:
        raise WorkerInterrupted("interrupted") from None


class FineTuneRunner:
    """Runs (scheme, seed) fine-tuning jobs, reporting each finished run to `on_progress`
    (`qtrain.search.progress`): in this process (`jobs` 1), in a local process pool of `jobs` workers, or
    on a Dask cluster (`scheduler` "tcp://HOST:PORT", `qtrain.search.dask_cluster`). `engine`: "host" (the
    host build of the generated C, each distinct training graph compiled once per `run`) or
    "interpreter" (the golden model)."""

    def __init__(self, module: ModuleOp, recipe: FineTuneRecipe, train: Split, evaluate: Split, *, jobs: int = 1,
                 on_progress: ProgressCallback | None = None, calibration: Calibration | None = None,
                 engine: str = "interpreter", scheduler: str | None = None):
        if engine not in ENGINES:
            raise SearchError(f"unknown engine '{engine}' (expected one of {', '.join(ENGINES)})")
        self.module = module
        self.calibration = calibration
        self.recipe = recipe
        self.train = train
        self.evaluate = evaluate
        self.jobs = max(1, jobs)
        self.on_progress = on_progress
        self.engine = engine
        self.scheduler = scheduler

    def run(self, jobs: Sequence[tuple[str | UpdateScheme, tuple[int, ...]]], label: str,
            on_result: Callable[[int, float], None] | None = None) -> list[float]:
        """The accuracies of `jobs`, in order; `on_result(index, accuracy)` as each run finishes (e.g. to
        keep it in a cache file: an interrupted search then loses only the runs in flight)."""
        total = len(jobs)
        report(self.on_progress, 0, total, label)
        if total == 0:
            return []
        finished = 0

        def done(index: int, accuracy: float) -> None:
            nonlocal finished
            finished += 1
            if on_result is not None:
                on_result(index, accuracy)
            report(self.on_progress, finished, total, label)

        context = RunContext(str(self.module), self.recipe, self.train, self.evaluate, self.calibration,
                             self.engine, uuid.uuid4().hex)
        if self.scheduler is not None:
            from qtrain.search.dask_cluster import run_on_cluster

            return run_on_cluster(self.scheduler, context, jobs, done)
        try:
            return self._run_locally(context, jobs, done)
        finally:
            remove_builds(builds_root(context.token))

    def _run_locally(self, context: RunContext, jobs: Sequence[tuple[str | UpdateScheme, tuple[int, ...]]],
                     done: Callable[[int, float], None]) -> list[float]:
        if self.jobs == 1 or len(jobs) <= 1:
            results = []
            for index, (scheme, seed) in enumerate(jobs):
                results.append(context.run(self.module, scheme, seed))
                done(index, results[-1])
            return results
        out: list[float] = [0.0] * len(jobs)
        pool = ProcessPoolExecutor(max_workers=min(self.jobs, len(jobs)), initializer=_worker_init,
                                   initargs=(context,))
        try:
            futures = {pool.submit(_worker_run, scheme, seed): i for i, (scheme, seed) in enumerate(jobs)}
            for future in as_completed(futures):
                out[futures[future]] = future.result()
                done(futures[future], out[futures[future]])
        except WorkerInterrupted:
            # Ctrl-C reached a worker's firmware before this process's own handler ran: it is the same
            # interrupt (the tool exits 130), not a failed run.
            stop_workers(pool)
            raise KeyboardInterrupt from None
        except BaseException:
            stop_workers(pool)  # an interrupt (Ctrl-C, SIGTERM) or a failed run: do not wait for the others
            raise
        pool.shutdown()
        return out


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancels what has not started and terminates the workers of `pool` (Python 3.14's
    `terminate_workers`; before it, through the executor's process table)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
