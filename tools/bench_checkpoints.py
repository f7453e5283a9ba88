"""Power cuts during on-device training: does what the device learned survive?

    python -m qtrain.tools.bench_checkpoints [--cuts 200] [--in-save 20] [--steps 60] [--every 10]
                                             [--scheme full] [--chain 10] [--seed 0] [--jobs N] [-o DIR]

The digits CNN (examples/digits, `--scheme` trained) is compiled for QEMU (mps2-an500, Cortex-M7) and
fine-tuned for `--steps` steps with a checkpoint every `--every` steps into a simulated Flash image
(`qtrain-run --flash-image --checkpoint-every`). Power cuts land at uniformly random guest instructions
(`--power-cut-at-instruction`, a QEMU plugin: the emulator stops from outside, exactly there, in a
step, an erase or a program alike). After each cut the device restarts (`--steps 0`: qtrain_init
restores the newest valid checkpoint) and is checked:

- its trainable tensors are bit-identical to an uninterrupted run's after the restored step;
- the restored step is a multiple of --every, not older than before the cut, and at most --every
  steps behind the steps the device had completed when the power went.

Cuts come in chains of `--chain`: the device resumes training (the remaining steps) from what it
restored, and the next cut, uniform over a whole training's instructions, hits that run or lands past
its end (the training completes and starts over from an empty Flash), until the chain has its cuts.
Chains are independent (seeded per chain) and run `--jobs` at a time.

A save takes a few percent of the instructions, so few random cuts land in one. `--in-save N` more
cuts aim inside the first checkpoint's save: its end E is found by bisection (the first cut at which
the step-K checkpoint is valid), its length from the instruction counts of K steps with and without
the checkpoint; the N cuts are uniform in that window, i.e. in the erase of slot A or the programming
of its payload, and must all restore step 0.

Prints a table per chain and a summary; exit status 1 when any check fails. `-o DIR` keeps the
build and the Flash images (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qtrain.targets.armv7em import flash_image, power_cut, protocol
from qtrain.tools.plumbing import ArgumentParser, CheckFailed, UsageError, run_tool
from qtrain.tools.qtrain_run import PowerCut, run

TRAIN_IMAGES = 64
TIMEOUT_S = 1800.0


@dataclass
class Setup:
    firmware: Path
    images: np.ndarray
    labels: np.ndarray
    steps: int
    every: int
    work: Path
    references: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    init_instructions: int = 0
    step_instructions: float = 0.0


@dataclass
class Cut:
    at: int
    steps_done: int
    """Steps the device had completed when the power went (its step counter, had it been saved)."""
    restored: int
    half_written: bool
    """A slot was neither valid nor erased after the cut (a save or an erase was interrupted)."""
    identical: bool
    """The restored tensors equal the uninterrupted run's at the restored step, bit for bit."""
    problems: list[str]


def request(setup: Setup, steps: int, every: int) -> bytes:
    return protocol.encode_request(setup.images, setup.labels, protocol.MODE_TRAIN, steps, checkpoint_every=every)


def train(setup: Setup, steps: int, image: Path | None, every: int = 0, qemu_args: list[str] | None = None
          ) -> tuple[protocol.HarnessResult, list[str]]:
    result, console = run(setup.firmware, request(setup, steps, every), TIMEOUT_S, f"{steps} steps", flash=image,
                          qemu_args=qemu_args or [])
    return result, console.messages


def counted(setup: Setup, steps: int, image: Path) -> int:
    """Guest instructions of a whole run (the plugin's count), with checkpoints into `image`."""
    _, messages = train(setup, steps, image, setup.every, power_cut.plugin_args(None))
    return int(next(m for line in messages if (m := power_cut.TOTAL_LINE.fullmatch(line)))[1])


def compile_digits(work: Path, scheme: str) -> tuple[Path, np.ndarray, np.ndarray]:
    import subprocess

    from qtrain.examples.digits.make_task import build_task, import_model

    module = import_model()
    task = build_task(module)
    (work / "digits.mlir").write_text(str(module) + "\n")
    result = subprocess.run([sys.executable, "-m", "qtrain.tools.qtrain_compile", str(work / "digits.mlir"),
                             "--scheme", scheme, "-o", str(work / "build")], capture_output=True, text=True)
    if result.returncode != 0:
        raise CheckFailed(f"qtrain-compile failed: {result.stderr.strip()}")
    return work / "build" / "firmware.elf", task["image"][:TRAIN_IMAGES], task["label"][:TRAIN_IMAGES].astype(np.int32)


def slot_erased_or_valid(image: Path) -> bool:
    raw = image.read_bytes()
    for slot, offset, size in zip(flash_image.slots(image), flash_image.SLOT_OFFSETS, flash_image.SLOT_BYTES,
                                  strict=True):
        if not slot.valid and raw[offset:offset + size] != b"\xff" * size:
            return False
    return True


def check(setup: Setup, restored: protocol.HarnessResult, before: int, done: int) -> tuple[bool, list[str]]:
    problems = []
    step = restored.step
    if step % setup.every:
        problems.append(f"restored step {step} is not a multiple of {setup.every}")
    if step < before:
        problems.append(f"restored step {step} is older than the {before} restored before the cut")
    if done - step > setup.every:
        problems.append(f"lost {done - step} steps (more than {setup.every})")
    reference = setup.references.get(step)
    identical = reference is not None and set(reference) == set(restored.params) and all(
        np.array_equal(restored.params[name], value) for name, value in reference.items())
    if not identical:
        problems.append(f"the tensors differ from the uninterrupted run's at step {step}")
    return identical, problems


def chain(setup: Setup, index: int, cuts: int, seed: int) -> tuple[list[Cut], int]:
    """One chain: (its cuts, trainings it completed)."""
    rng = np.random.default_rng([seed, index])
    image = setup.work / f"chain{index}.bin"
    image.unlink(missing_ok=True)
    flash_image.prepare(image, setup.firmware)
    found: list[Cut] = []
    completed = 0
    step = 0
    while len(found) < cuts:
        remaining = setup.steps - step
        # Uniform over a whole training's length, not the remaining run's: a cut past the end of the run
        # lets it complete (a new chain starts), so the cuts spread over every step of the training
        # instead of piling up in the last interval once a chain has reached it.
        estimate = setup.init_instructions + setup.steps * setup.step_instructions
        at = int(rng.integers(0, max(1, int(estimate))))
        try:
            result, _ = train(setup, remaining, image, setup.every, power_cut.plugin_args(at))
        except PowerCut as cut:
            done = step + cut.steps_done
            half = not slot_erased_or_valid(image)
            restored, _ = train(setup, 0, image)
            found.append(Cut(at, done, restored.step, half, *check(setup, restored, step, done)))
            step = restored.step
            continue
        # The run finished before the cut: the training is complete. Start over from an empty Flash.
        completed += 1
        if result.step != setup.steps:
            raise CheckFailed(f"chain {index}: a completed run ended at step {result.step}, not {setup.steps}")
        image.unlink()
        flash_image.prepare(image, setup.firmware)
        step = 0
    return found, completed


def save_window(setup: Setup) -> tuple[int, int]:
    """[start, end) of the first checkpoint's save in a run from an empty Flash: `end` is the first cut
    at which the step-K checkpoint is valid."""
    pristine = setup.work / "window.bin"
    pristine.unlink(missing_ok=True)
    flash_image.prepare(pristine, setup.firmware)
    scratch = setup.work / "window-scratch.bin"
    scratch.write_bytes(pristine.read_bytes())
    with_save = counted(setup, setup.every, scratch)
    scratch.write_bytes(pristine.read_bytes())
    _, messages = train(setup, setup.every, scratch, 0, power_cut.plugin_args(None))
    without = int(next(m for line in messages if (m := power_cut.TOTAL_LINE.fullmatch(line)))[1])
    low, high = 0, with_save  # step K not valid at low, valid at high
    while high - low > 1:
        middle = (low + high) // 2
        scratch.write_bytes(pristine.read_bytes())
        try:
            train(setup, setup.every, scratch, setup.every, power_cut.plugin_args(middle))
        except PowerCut:
            pass
        valid = [s.step for s in flash_image.slots(scratch) if s.valid]
        low, high = (middle, high) if setup.every not in valid else (low, middle)
    pristine.unlink()
    scratch.unlink()
    return high - (with_save - without), high


def in_save(setup: Setup, window: tuple[int, int], count: int, seed: int) -> list[Cut]:
    rng = np.random.default_rng([seed, 1 << 20])
    found = []
    for i, at in enumerate(sorted(rng.integers(window[0], window[1], count).tolist())):
        image = setup.work / f"save{i}.bin"
        flash_image.prepare(image, setup.firmware)
        try:
            train(setup, setup.steps, image, setup.every, power_cut.plugin_args(at))
            raise CheckFailed(f"the cut at {at} inside the first save did not happen")
        except PowerCut as cut:
            done = cut.steps_done
        half = not slot_erased_or_valid(image)
        restored, _ = train(setup, 0, image)
        identical, problems = check(setup, restored, 0, done)
        if restored.step != 0:
            problems.append(f"a cut inside the first save restored step {restored.step}")
        found.append(Cut(at, done, restored.step, half, identical, problems))
        image.unlink()
    return found


def main_body(args: argparse.Namespace) -> int:
    if args.cuts < 1 or args.steps < 1 or args.every < 1 or args.chain < 1 or args.jobs < 1 or args.in_save < 0:
        raise UsageError("--cuts, --steps, --every, --chain and --jobs must be >= 1, --in-save >= 0")
    if args.steps < args.every:
        raise UsageError(f"--steps ({args.steps}) must be at least --every ({args.every})")
    started = time.monotonic()
    own = args.output is None
    work = Path(tempfile.mkdtemp(prefix="qtrain-bench-checkpoints-")) if own else args.output
    work.mkdir(parents=True, exist_ok=True)
    try:
        firmware, images, labels = compile_digits(work, args.scheme)
        setup = Setup(firmware, images, labels, args.steps, args.every, work)
        print(f"digits CNN, scheme {args.scheme}, {args.steps} steps, a checkpoint every {args.every}, "
              f"{args.cuts} power cuts in chains of {args.chain}", flush=True)
        checkpoint_steps = list(range(0, args.steps + 1, args.every))
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = dict(zip(checkpoint_steps, pool.map(lambda s: train(setup, s, None)[0], checkpoint_steps),
                            strict=True))
        setup.references = {s: r.params for s, r in runs.items()}
        fresh = work / "count.bin"
        flash_image.prepare(fresh, firmware)
        setup.init_instructions = counted(setup, 0, fresh)
        fresh.unlink()
        flash_image.prepare(fresh, firmware)
        total = counted(setup, args.steps, fresh)
        setup.step_instructions = (total - setup.init_instructions) / args.steps
        slot = flash_image.slots(fresh)
        payload = max(len(s.payload) for s in slot)
        print(f"uninterrupted: {total} instructions ({setup.step_instructions:.0f} per step with its share of the "
              f"checkpoints); checkpoint payload {payload} bytes", flush=True)
        chains = (args.cuts + args.chain - 1) // args.chain
        sizes = [min(args.chain, args.cuts - i * args.chain) for i in range(chains)]
        with ThreadPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(lambda i: chain(setup, i, sizes[i], args.seed), range(chains)))
        save_cuts: list[Cut] = []
        if args.in_save:
            window = save_window(setup)
            print(f"the first checkpoint's save: instructions {window[0]} to {window[1]} "
                  f"({window[1] - window[0]} long)", flush=True)
            save_cuts = in_save(setup, window, args.in_save, args.seed)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return report(outcomes, save_cuts, args, time.monotonic() - started)


def report(outcomes: list[tuple[list[Cut], int]], save_cuts: list[Cut], args: argparse.Namespace,
           seconds: float) -> int:
    print(f"\n{'chain':>5} {'cuts':>5} {'in a save':>9} {'half-written':>12} {'max lost':>8} {'completed':>9}  "
          f"restored steps")
    cuts = [c for found, _ in outcomes for c in found]
    for i, (found, completed) in enumerate(outcomes):
        in_save = sum(1 for c in found if c.steps_done % args.every == 0 and c.restored < c.steps_done)
        lost = max(c.steps_done - c.restored for c in found)
        print(f"{i:>5} {len(found):>5} {in_save:>9} {sum(c.half_written for c in found):>12} {lost:>8} "
              f"{completed:>9}  {' '.join(str(c.restored) for c in found)}")
    problems = [f"cut at {c.at}: {p}" for c in [*cuts, *save_cuts] for p in c.problems]
    in_save = sum(1 for c in cuts if c.steps_done % args.every == 0 and c.restored < c.steps_done)
    print(f"\n{len(cuts)} power cuts ({in_save} during a checkpoint's erase or program, "
          f"{sum(c.half_written for c in cuts)} left a half-written slot); at most "
          f"{max(c.steps_done - c.restored for c in cuts)} steps lost (limit {args.every}); "
          f"{sum(c.identical for c in cuts)} of {len(cuts)} restored devices bit-identical to the uninterrupted run "
          f"at their step")
    if save_cuts:
        print(f"{len(save_cuts)} more cuts inside the first checkpoint's save: "
              f"{sum(c.half_written for c in save_cuts)} left a half-written slot A; "
              f"{sum(c.restored == 0 and c.identical for c in save_cuts)} of {len(save_cuts)} restored the initial "
              f"state (step 0) bit for bit")
    print(f"{seconds:.0f} s")
    if problems:
        for p in problems[:20]:
            print(f"  FAILED {p}")
        raise CheckFailed(f"{len(problems)} checks failed after power cuts")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="bench_checkpoints", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cuts", type=int, default=200, help="power cuts in all (default 200)")
    parser.add_argument("--in-save", type=int, default=20,
                        help="more cuts aimed inside the first checkpoint's save (default 20)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of one run (default 60)")
    parser.add_argument("--every", type=int, default=10, help="a checkpoint every K steps (default 10)")
    parser.add_argument("--scheme", default="full", help="what trains (default full: every tensor)")
    parser.add_argument("--chain", type=int, default=10, help="cuts per chain of resumed runs (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cut positions (default 0)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="chains at a time (default: CPUs)")
    parser.add_argument("-o", "--output", type=Path, help="keep the build and Flash images in this folder")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    args_list = list(sys.argv[1:] if argv is None else argv)
    run_tool("bench_checkpoints", lambda: main_body(parser.parse_args(args_list)), args_list)


if __name__ == "__main__":
    main()
