"""What every qtrain command-line tool shares: errors and exit codes, npz input, the progress bar.

Exit codes (DESIGN.md "Command-line conventions"): 0 success; 1 a check or the device failed
(`CheckFailed`); 2 bad input or usage: any `qtrain.errors.UserError` (one line on stderr, which an
over-budget report may follow with its breakdown); 130 interrupted (Ctrl-C / SIGTERM), without a
traceback. `--debug` on any tool shows the Python traceback instead. An exception that is not a user
error is a bug in qtrain and keeps its traceback.

Inputs are `.npz` files (DESIGN.md): `read_npz` reads one (one error type, `NpzError`, naming the path;
`qtrain.files` checks every member before loading it), `images_and_labels` checks the `image` /
`label` conventions (both from `qtrain.npz`, re-exported here), `check_input_q` an `input_q` against the
model's.

Outputs (`qtrain.files`, re-exported here): `check_output` refuses to write over an input; `write_npz`,
`write_text` and `write_bytes` write exactly the path given (np.savez would append `.npz`) through a
temporary file in the same folder renamed over the target, so a failure or an interrupt never leaves a
half-written output (and the old file stays as it was). Errors name the path.

Options: `number(...)` makes argparse types that refuse values out of range (NaN, infinities, a learning
rate that overflows float32, a count below its minimum) with a message naming the allowed range.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import numpy as np
from xdsl.utils.exceptions import DiagnosticException, ParseError

from qtrain.errors import UserError
from qtrain.files import (
    OutputError,
    atomic_file,
    check_output,
    same_file,
    write_bytes,
    write_npz,
    write_text,
)
from qtrain.npz import NpzError, images_and_labels, labels_int32, read_npz

__all__ = ["NpzError", "OutputError", "atomic_file", "check_output", "images_and_labels", "labels_int32", "read_npz",
           "same_file", "write_bytes", "write_npz", "write_text"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UsageError(UserError):
    """A bad command line."""


class CheckFailed(Exception):
    """A comparison or a run on the device failed: exit 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is a `UsageError` (one line, exit 2) instead of usage text + exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


USER_INPUT_ERRORS: tuple[type[BaseException], ...] = (UserError, ParseError, DiagnosticException)
"""What a tool reports as bad input: qtrain's user errors, and xDSL's errors about IR the user gave."""


def describe_error(e: BaseException) -> str:
    """The exception's message, plus the offending op's line when an xDSL verifier pointed at one; an
    xDSL parse error as `file:line:col: message` plus the source line (not its caret drawing)."""
    if isinstance(e, ParseError):
        try:
            source = e.span.print_with_context().splitlines()[1].strip()  # type: ignore[attr-defined]
            return f"{e.span.get_location()}: {' '.join(e.msg.split())}\n  at: {source[:200]}"  # type: ignore
        except (AttributeError, IndexError):
            pass
    message = str(e).strip() or type(e).__name__
    notes: list[str] = getattr(e, "__notes__", [])
    lines = "\n".join(notes).splitlines()
    for i, line in enumerate(lines):
        if i > 0 and line.lstrip().startswith("^^^"):
            message += f"\n  at: {lines[i - 1].strip()}"
            break
    return message


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run_tool(prog: str, body: Callable[[], int | None], argv: Sequence[str],
             extra_user_errors: tuple[type[BaseException], ...] = ()) -> NoReturn:
    """Runs a tool's `body` and exits with the conventional status, reporting errors as `prog: error: ...`.

    `extra_user_errors`: other libraries' exceptions that mean bad input for this tool (their message is
    folded into one line)."""
    debug = "--debug" in argv
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        status = body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except (*USER_INPUT_ERRORS, *extra_user_errors) as e:
        if debug:
            raise
        message = describe_error(e)
        if not isinstance(e, USER_INPUT_ERRORS):  # another library's message: made one line
            message = " ".join(message.split())
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except CheckFailed as e:
        if debug:
            raise
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    sys.exit(status or 0)


# -- npz inputs --------------------------------------------------------------------------------------------


def check_labels(labels: np.ndarray, classes: int, path: Path | str, key: str = "label",
                 unlabelled: int | None = None) -> None:
    """Every label is a class index in [0, classes) (or the `unlabelled` marker)."""
    values = np.asarray(labels, dtype=np.int64)
    if unlabelled is not None:
        values = values[values != unlabelled]
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise NpzError(f"{path}: '{key}' must be class indices in [0, {classes}), got {values.min()}..{values.max()}"
                       + (f" ({unlabelled} marks an unlabelled image)" if unlabelled is not None else ""))


def check_input_q(arrays: dict[str, np.ndarray], path: Path | str, scale: float, zero_point: int) -> None:
    """An `input_q` array (float [scale, zero_point], what the images were quantized with) must match the
    model's input quantization; absent, nothing is checked."""
    if "input_q" not in arrays:
        return
    value = arrays["input_q"]
    if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)) or value.size != 2:
        raise NpzError(f"{path}: 'input_q' must be two numbers [scale, zero_point], got {value.dtype} "
                       f"{list(value.shape)}")
    got_scale, got_zp = (float(v) for v in value.reshape(-1))
    if not (math.isfinite(got_scale) and math.isfinite(got_zp)):
        raise NpzError(f"{path}: 'input_q' must be finite, got [{got_scale:g}, {got_zp:g}]")
    if not math.isclose(got_scale, scale, rel_tol=1e-6) or got_zp != zero_point:
        raise NpzError(f"{path}: images were quantized with scale {got_scale:.9g} zero point {got_zp:g} but the "
                       f"model's input is scale {scale:.9g} zero point {zero_point} (import the model with the "
                       f"same calibration)")


# -- options ---------------------------------------------------------------------------------------------

FLOAT32_MAX = float(np.finfo(np.float32).max)


def number(kind: type[int] | type[float] = float, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, what: str = "a number") -> Callable[[str], float]:
    """An argparse `type` parsing `kind` within [low, high] (open ends with `low_open`/`high_open`); NaN and
    infinities are refused unless a bound is infinite. The error names the range in words."""
    def show(bound: float) -> str:
        integral = math.isfinite(bound) and float(bound).is_integer() and abs(bound) < 1e15
        return str(int(bound)) if integral else f"{bound:g}"

    def bound_text() -> str:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {show(low)}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {show(high)}")
        return " and ".join(parts)

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}") from None
        bad = isinstance(value, float) and math.isnan(value)
        if low is not None and (value < low or (low_open and value == low)):
            bad = True
        if high is not None and (value > high or (high_open and value == high)):
            bad = True
        if isinstance(value, float) and math.isinf(value) and not (
                (value > 0 and high == math.inf) or (value < 0 and low == -math.inf)):
            bad = True
        if bad:
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what} must be {bound_text()}")
        return value

    return parse


def LEARNING_RATE(text: str) -> float:  # noqa: N802 - an argparse type, named like the others' constants
    """argparse type of every learning-rate option: positive, finite, and still positive and finite as the
    float32 the device computes with (1e39 overflows it, 1e-50 becomes 0)."""
    value = number(float, low=0.0, low_open=True, high=FLOAT32_MAX, what="a learning rate (a float32)")(text)
    if float(np.float32(value)) == 0.0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: a learning rate must be a positive float32 "
                                         f"(at least 1.4e-45)")
    return value


# -- progress --------------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressBar:
    """A one-line text bar on `stream` for a run of `total` units (steps, images, runs), with an ETA.

    On a terminal the line is redrawn in place (at most every `TTY_INTERVAL` seconds, and by `tick`
    once a second so the elapsed time moves during a long pause); elsewhere (a log, `--progress` into
    a pipe) a new line is written at most every `LOG_INTERVAL` seconds and for every evaluation. With
    evaluations (`eval_steps`: the points after which the run evaluates) the ETA splits the elapsed time
    into work and evaluation, each attributed to the report that ended it, and extrapolates both.
    `advance` / `evaluated` (e.g. a reader thread) and `tick` (the main thread) may be called concurrently.
    """

    WIDTH = 24
    LOSS_WINDOW = 20
    TTY_INTERVAL = 0.1
    LOG_INTERVAL = 1.0

    def __init__(self, prog: str, stream: TextIO, tty: bool, total: int, unit: str, eval_steps: Sequence[int] = (),
                 clock: Callable[[], float] = time.monotonic):
        self.prog, self.stream, self.tty, self.total, self.unit = prog, stream, tty, total, unit
        self.eval_steps = list(eval_steps)
        self.clock = clock
        self.lock = threading.Lock()
        self.start = self.last_event = clock()
        self.last_draw: float | None = None
        self.done = 0
        self.losses: deque[float] = deque(maxlen=self.LOSS_WINDOW)
        self.work_time = 0.0
        self.eval_time = 0.0
        self.evals_done = 0
        self.eval_text = ""
        self.note = ""
        self.drawn = False
        self.closed = False

    def advance(self, done: int, loss: float | None = None, note: str | None = None) -> None:
        """`done` units finished (with the latest loss, or a short note such as the best result so far)."""
        with self.lock:
            now = self.clock()
            self.work_time += now - self.last_event
            self.last_event = now
            self.done = done
            if loss is not None:
                self.losses.append(loss)
            if note is not None:
                self.note = note
            self._maybe_draw(now, force=False)

    def evaluated(self, done: int, correct: int | None, labelled: int) -> None:
        """An evaluation pass after `done` units finished (`correct` of `labelled` images right)."""
        with self.lock:
            now = self.clock()
            self.eval_time += now - self.last_event
            self.last_event = now
            self.evals_done += 1
            if labelled and correct is not None:
                self.eval_text = f"eval {100 * correct / labelled:.1f}% ({correct}/{labelled} @{done})"
            self._maybe_draw(now, force=True)

    def _maybe_draw(self, now: float, force: bool) -> None:
        finished = self.done >= self.total and self.evals_done >= len(self.eval_steps)
        interval = self.TTY_INTERVAL if self.tty else self.LOG_INTERVAL
        if force or finished or self.last_draw is None or now - self.last_draw >= interval:
            self.draw(now)

    def tick(self) -> None:
        """Redraw on a terminal if nothing was drawn for a second (the run is busy, e.g. evaluating)."""
        with self.lock:
            now = self.clock()
            if self.tty and now - (self.start if self.last_draw is None else self.last_draw) >= 1.0:
                self.draw(now)

    def evaluating(self) -> bool:
        """Whether the run is in an evaluation pass now (the next report is the pass's)."""
        return self.evals_done < len(self.eval_steps) and self.eval_steps[self.evals_done] == self.done

    def eta(self) -> float | None:
        remaining = 0.0
        if self.done < self.total:
            if self.done == 0:
                return None
            remaining += self.work_time / self.done * (self.total - self.done)
        if self.evals_done < len(self.eval_steps):
            if self.evals_done == 0:
                return None
            remaining += self.eval_time / self.evals_done * (len(self.eval_steps) - self.evals_done)
        return remaining

    def text(self, now: float) -> str:
        fraction = self.done / self.total if self.total else 1.0
        filled = int(self.WIDTH * fraction)
        parts = [f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {self.unit} {self.done}/{self.total}"]
        if self.losses:
            parts.append(f"loss {sum(self.losses) / len(self.losses):.4f}")
        if self.note:
            parts.append(self.note)
        if self.eval_text:
            parts.append(self.eval_text)
        if self.evaluating():
            parts.append(f"evaluating ({self.evals_done + 1}/{len(self.eval_steps)})")
        eta = self.eta()
        if eta is not None:  # counting down between reports
            eta = max(0.0, eta - (now - self.last_event))
        parts.append(f"elapsed {format_duration(now - self.start)}")
        parts.append(f"ETA {'?' if eta is None else format_duration(eta)}")
        return "  ".join(parts)

    def draw(self, now: float) -> None:
        line = f"{self.prog}: {self.text(now)}"
        if self.tty:
            self.stream.write(f"\r{line}\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.drawn = True
        self.last_draw = now

    def close(self) -> None:
        """Draw the final state and end the line (before any other message goes to the stream); once."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            if self.last_draw is not None and self.last_event > self.last_draw:
                self.draw(self.last_event)
            if self.tty and self.drawn:
                self.stream.write("\n")
                self.stream.flush()


class StageBars:
    """The `on_progress(done, total, text)` callback of `qtrain.search` (and the benchmarks' runners),
    drawing one `ProgressBar` per stage: a report with done = 0, or a new text, starts a bar labelled
    `text`; later reports move it to `done`."""

    def __init__(self, prog: str, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.prog = prog
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock = clock
        self.bar: ProgressBar | None = None
        self.text = ""

    def __call__(self, done: int, total: int, text: str) -> None:
        if total <= 0:
            return
        if done == 0 or self.bar is None or self.text != text:
            if self.bar is not None:
                self.bar.close()
            self.bar, self.text = ProgressBar(self.prog, self.stream, self.tty, total, text, clock=self.clock), text
        self.bar.advance(done)
        if done >= total:
            self.bar.close()


def stage_bars(prog: str, enabled: bool, stream: TextIO | None = None) -> StageBars | None:
    """The progress callback for a tool's `--quiet` (enabled = not quiet): bars on `stream`, or none."""
    return StageBars(prog, stream) if enabled else None
