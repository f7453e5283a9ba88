"""The request/result files harness.c exchanges with its runner (the format is documented in harness.c).

`encode_request` turns images and labels into the request file; `decode_result` turns the result file
into a `HarnessResult` with numpy arrays; `parse_progress` reads the one-line progress messages the
harness prints on its console while it runs. `qtrain-run` is the main user; anything else that runs a
firmware (benchmarks, tests) can use these directly.

Protocol version 2 added mode 2 (train + evaluate: evaluation passes over a held-out set before,
during and after training) and the progress lines; version 3 checkpoints (a checkpoint every C steps,
the device's step counter before and after the run). Firmwares and requests of other versions are
refused. `features` bit 0 (FEATURE_PROFILE) marks a firmware built with `--profile`: its result file
ends with the per-op counter table (`HarnessResult.profile`). Readers without it ignore the table.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from qtrain import numerics

REQUEST_MAGIC = b"QTRI"
RESULT_MAGIC = b"QTRO"
VERSION = 3
MODE_INFER = 0
MODE_TRAIN = 1
MODE_TRAIN_EVAL = 2
MODES = (MODE_INFER, MODE_TRAIN, MODE_TRAIN_EVAL)
REQUEST_HEADER = struct.Struct("<4s11I")
RESULT_HEADER = struct.Struct("<4s31I")
STACK_UNKNOWN = 0xFFFFFFFF
FEATURE_PROFILE = 1
"""Result header `features` bit: the file ends with uint64 count[profile_slots] (a profiled firmware)."""
NO_LABEL = -1
"""The label of an unlabelled evaluation record."""

COUNTER_KINDS: dict[int, str | None] = {0: None, 1: "instructions", 2: "cycles", 3: "host_ns"}
"""What the per-record counts measure (qtrain_counter_kind_t)."""

DTYPES: dict[int, np.dtype] = {1: np.dtype("<i1"), 2: np.dtype("<i4"), 3: np.dtype("<f4"), 4: np.dtype("<i2")}
"""qtrain_dtype_t -> numpy dtype of a trainable tensor."""
DTYPE_FIXED16 = 4
"""QTRAIN_DTYPE_FIXED16: an int16 master sent as its two int8 planes (values, then fractions)."""

TRAIN_RECORD = np.dtype([("loss", "<f4"), ("label", "<i4"), ("count", "<u8")])


def infer_record(num_classes: int) -> np.dtype:
    """The result record of one qtrain_infer call: logits, output_q (padded to 4 bytes), count."""
    pad = _align4(num_classes) - num_classes
    return np.dtype([("logits", "<f4", (num_classes,)), ("output_q", "<i1", (num_classes,)),
                     *([("pad", "u1", (pad,))] if pad else []), ("count", "<u8")])


class ProtocolError(ValueError):
    """The result file is not what harness.c writes."""


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def eval_schedule(steps: int, eval_every: int) -> Iterator[int]:
    """The training steps after which mode 2 runs an evaluation pass: 0, K, 2K, ... (< S), then S."""
    yield 0
    if eval_every > 0:
        yield from range(eval_every, steps, eval_every)
    yield steps


def _records(images: np.ndarray, labels: np.ndarray, what: str) -> tuple[np.ndarray, int]:
    if images.dtype != np.int8 or images.ndim < 2 or len(images) == 0:
        raise ValueError(f"{what} must be a non-empty int8 array [N, H, W, C], got {images.dtype} "
                         f"{list(images.shape)}")
    if labels.shape != (len(images),):
        raise ValueError(f"{what} labels must have shape [{len(images)}], got {list(labels.shape)}")
    image_bytes = int(np.prod(images.shape[1:]))
    records = np.zeros((len(images), 4 + _align4(image_bytes)), np.uint8)
    records[:, :4] = labels.astype("<i4").reshape(-1, 1).view(np.uint8)
    records[:, 4:4 + image_bytes] = images.reshape(len(images), -1).view(np.uint8)
    return records, image_bytes


def encode_request(images: np.ndarray, labels: np.ndarray, mode: int, steps: int = 0, *,
                   eval_images: np.ndarray | None = None, eval_labels: np.ndarray | None = None,
                   eval_every: int = 0, checkpoint_every: int = 0) -> bytes:
    """The request file for `images` (int8 [N, H, W, C]) and `labels` (int [N]).

    `mode` is MODE_INFER (every image once), MODE_TRAIN (`steps` steps over the images in order,
    wrapping around) or MODE_TRAIN_EVAL (the same steps, with evaluation passes over `eval_images`
    before the first step, after every `eval_every`-th step (0: never) and after the last; an
    `eval_labels` entry of NO_LABEL marks an unlabelled image; without `eval_labels` all are).
    `checkpoint_every` C >= 1 (modes 1, 2): a checkpoint after every step that leaves the device's step
    counter a multiple of C. Training starts at the sample the step counter points to (a resumed
    device continues the data order).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode}")
    if not 0 <= steps < 2**32 or not 0 <= eval_every < 2**32 or not 0 <= checkpoint_every < 2**32:
        raise ValueError("steps, eval_every and checkpoint_every must be in [0, 2^32)")
    if checkpoint_every and mode == MODE_INFER:
        raise ValueError("checkpoint_every needs a training mode")
    records, image_bytes = _records(images, labels, "images")
    num_eval = 0
    if mode == MODE_TRAIN_EVAL:
        if eval_images is None:
            raise ValueError("mode 2 (train + evaluate) needs eval_images")
        if eval_labels is None:
            eval_labels = np.full(len(eval_images), NO_LABEL, np.int32)
        eval_records, eval_bytes = _records(eval_images, eval_labels, "eval_images")
        if eval_bytes != image_bytes:
            raise ValueError(f"evaluation images have {eval_bytes} bytes, training images {image_bytes}")
        records = np.concatenate([records, eval_records])
        num_eval = len(eval_images)
    elif eval_images is not None or eval_every:
        raise ValueError("eval_images and eval_every need mode 2 (MODE_TRAIN_EVAL)")
    header = REQUEST_HEADER.pack(REQUEST_MAGIC, VERSION, mode, len(images), steps if mode != MODE_INFER else 0,
                                 image_bytes, records.shape[1], num_eval, eval_every, checkpoint_every, 0, 0)
    return header + records.tobytes()


@dataclass
class HarnessResult:
    """A decoded result file. Per-record arrays hold one row per image (mode 0) or step (modes 1, 2)."""

    mode: int
    complete: bool
    num_classes: int
    counter_kind: str | None
    counts: np.ndarray
    """uint64 [records]: the counter over each qtrain_infer (mode 0) / qtrain_train_step call."""
    init_count: int
    stack_used: int | None
    stack_size: int | None
    macs_per_infer: int
    macs_per_train_step: int
    memory: dict[str, int]
    """qtrain_memory: peak_sram_bytes, arena_bytes, trainable_bytes, scratch_bytes, flash_bytes."""
    input_bytes: int
    steps: int = 0
    """Training steps requested (modes 1, 2)."""
    num_eval: int = 0
    eval_every: int = 0
    logits: np.ndarray | None = None
    output_q: np.ndarray | None = None
    loss: np.ndarray | None = None
    labels: np.ndarray | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)
    eval_steps: np.ndarray | None = None
    """Mode 2: int64 [P], the training steps after which each complete evaluation pass ran."""
    eval_logits: np.ndarray | None = None
    """Mode 2: float32 [P, M, classes]."""
    eval_output_q: np.ndarray | None = None
    """Mode 2: int8 [P, M, classes]."""
    eval_counts: np.ndarray | None = None
    """Mode 2: uint64 [P, M], the counter over each qtrain_infer call of the passes."""
    restored_step: int = 0
    """The device's step counter after qtrain_init (where a restored checkpoint left it; else 0)."""
    step: int = 0
    """The device's step counter at the end (complete results only)."""
    checkpoints: int = 0
    """Checkpoints written in the run (complete results only)."""
    profile: np.ndarray | None = None
    """A profiled firmware: uint64 [slots], slot i the counter over one op of the last qtrain_infer /
    qtrain_train_step call (lowering/profile.py names the slots); None otherwise."""

    @property
    def records(self) -> int:
        return len(self.counts)


def decode_result(data: bytes) -> HarnessResult:
    """Parse a result file. An incomplete file (the firmware stopped early) yields the whole records
    it holds (mode 2: the steps and the complete evaluation passes) and `complete=False`."""
    if len(data) < RESULT_HEADER.size or data[:4] != RESULT_MAGIC:
        raise ProtocolError("not a qtrain result file (bad magic or too short)")
    magic, version, complete, mode, records, num_classes, counter_kind, stack_used, stack_size, num_trainable, \
        *rest = RESULT_HEADER.unpack_from(data)
    if version != VERSION:
        raise ProtocolError(f"result file version {version}, expected {VERSION} (rebuild the firmware)")
    if mode not in MODES:
        raise ProtocolError(f"unknown mode {mode} in the result file")
    init_count = rest[0] | rest[1] << 32
    macs_per_infer = rest[2] | rest[3] << 32
    macs_per_train_step = rest[4] | rest[5] << 32
    memory = dict(zip(("peak_sram_bytes", "arena_bytes", "trainable_bytes", "scratch_bytes", "flash_bytes"),
                      rest[6:11], strict=True))
    input_bytes, num_eval, eval_every, steps = rest[11:15]
    restored_step, final_step, checkpoints = rest[16:19]
    features, profile_slots = rest[20:22]
    result = HarnessResult(
        mode=mode, complete=bool(complete), num_classes=num_classes, counter_kind=COUNTER_KINDS.get(counter_kind),
        counts=np.zeros(0, np.uint64), init_count=init_count,
        stack_used=None if stack_used == STACK_UNKNOWN or not complete else stack_used,
        stack_size=None if stack_size == STACK_UNKNOWN else stack_size, macs_per_infer=macs_per_infer,
        macs_per_train_step=macs_per_train_step, memory=memory, input_bytes=input_bytes, steps=steps,
        num_eval=num_eval, eval_every=eval_every, restored_step=restored_step, step=final_step,
        checkpoints=checkpoints)
    if complete and features & FEATURE_PROFILE:
        if len(data) < RESULT_HEADER.size + 8 * profile_slots:
            raise ProtocolError("the result file ends inside its profile table")
        result.profile = np.frombuffer(data, "<u8", count=profile_slots,
                                       offset=len(data) - 8 * profile_slots).astype(np.uint64)
        data = data[:len(data) - 8 * profile_slots]
    body = memoryview(data)[RESULT_HEADER.size:]
    if mode == MODE_INFER:
        record = infer_record(num_classes)
        if not complete:
            records = len(body) // record.itemsize
        if len(body) < records * record.itemsize:
            raise ProtocolError("the result file ends inside its records")
        rows = np.frombuffer(body, record, count=records)
        result.counts = rows["count"].astype(np.uint64)
        result.logits = rows["logits"].astype(np.float32).reshape(records, num_classes)
        result.output_q = rows["output_q"].astype(np.int8).reshape(records, num_classes)
        return result
    if complete and records != steps:
        raise ProtocolError(f"the result file holds {records} steps of {steps}")
    if mode == MODE_TRAIN:
        segments: Iterator[tuple[str, int, int]] = iter([("train", steps, steps)])
    else:
        if num_eval == 0:
            raise ProtocolError("a train + evaluate result without evaluation records")
        segments = _train_eval_segments(steps, eval_every)
    offset = RESULT_HEADER.size
    train_rows: list[np.ndarray] = []
    eval_rows: list[np.ndarray] = []
    eval_steps: list[int] = []
    eval_record = infer_record(num_classes)
    for kind, count, step in segments:
        if kind == "train":
            record, rows_out = TRAIN_RECORD, train_rows
        else:
            record, rows_out, count = eval_record, eval_rows, num_eval
        whole = min(count, (len(data) - offset) // record.itemsize)
        if whole < count:
            if complete:
                raise ProtocolError("the result file ends inside its records")
            if kind == "train":  # the steps that did finish; an unfinished evaluation pass is dropped
                train_rows.append(np.frombuffer(data, record, count=whole, offset=offset))
            break
        rows_out.append(np.frombuffer(data, record, count=count, offset=offset))
        if kind == "eval":
            eval_steps.append(step)
        offset += record.itemsize * count
    train = np.concatenate(train_rows) if train_rows else np.zeros(0, TRAIN_RECORD)
    result.counts = train["count"].astype(np.uint64)
    result.loss = train["loss"].astype(np.float32)
    result.labels = train["label"].astype(np.int32)
    if mode == MODE_TRAIN_EVAL:
        passes = len(eval_rows)
        rows = np.stack(eval_rows) if eval_rows else np.zeros((0, num_eval), eval_record)
        result.eval_steps = np.array(eval_steps, np.int64)
        result.eval_logits = rows["logits"].astype(np.float32).reshape(passes, num_eval, num_classes)
        result.eval_output_q = rows["output_q"].astype(np.int8).reshape(passes, num_eval, num_classes)
        result.eval_counts = rows["count"].astype(np.uint64).reshape(passes, num_eval)
    if complete:
        result.params = _decode_tensors(data, offset, num_trainable)
    return result


def _train_eval_segments(steps: int, eval_every: int) -> Iterator[tuple[str, int, int]]:
    """(kind, steps, step) in file order: ("train", n, step) for the n training records that end at
    `step`, ("eval", 0, step) for the evaluation pass after `step` (its length is num_eval records)."""
    previous = 0
    for step in eval_schedule(steps, eval_every):
        if step > previous:
            yield "train", step - previous, step
        previous = step
        yield "eval", 0, step


def _decode_tensors(data: bytes, offset: int, count: int) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    try:
        for _ in range(count):
            name_bytes, = struct.unpack_from("<I", data, offset)
            name = data[offset + 4:offset + 4 + name_bytes].decode()
            offset += 4 + _align4(name_bytes)
            dtype_code, rank, *shape, data_bytes = struct.unpack_from("<7I", data, offset)
            offset += 28
            dtype = DTYPES[dtype_code]
            shape = shape[:rank]
            if int(np.prod(shape)) * dtype.itemsize != data_bytes or offset + data_bytes > len(data):
                raise ProtocolError(f"trainable tensor '{name}': {data_bytes} bytes do not match {dtype} {shape}")
            if dtype_code == DTYPE_FIXED16:
                planes = np.frombuffer(data, np.int8, count=data_bytes, offset=offset).reshape(2, *shape)
                params[name] = numerics.fixed16_master(planes[0], planes[1])
            else:
                params[name] = np.frombuffer(data, dtype, count=data_bytes // dtype.itemsize, offset=offset) \
                    .reshape(shape).copy()
            offset += _align4(data_bytes)
    except (struct.error, KeyError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed trainable tensor table: {e}") from e
    return params


# ---- progress lines (harness.c prints one per image, training step and evaluation pass) ----

@dataclass(frozen=True)
class ProgressLine:
    """One progress message of the harness.

    kind "image": `done` of `total` images inferred (mode 0); "step": `done` of `total` training
    steps, with that step's `loss`; "eval": an evaluation pass after `done` of `total` steps, `correct`
    of the `labelled` evaluation images predicted right.
    """

    kind: Literal["image", "step", "eval"]
    done: int
    total: int
    loss: float | None = None
    correct: int | None = None
    labelled: int | None = None


_IMAGE_LINE = re.compile(r"qtrain: image (\d+)/(\d+)")
_STEP_LINE = re.compile(r"qtrain: step (\d+)/(\d+) loss (-?(?:nan|inf|\d+\.\d{4}(?:e\d+)?))")
_EVAL_LINE = re.compile(r"qtrain: eval (\d+)/(\d+) correct (\d+)/(\d+)")


def parse_progress(line: str) -> ProgressLine | None:
    """The progress message in one console line, or None for any other line (errors, faults)."""
    line = line.rstrip("\r\n")
    if match := _STEP_LINE.fullmatch(line):
        return ProgressLine("step", int(match[1]), int(match[2]), loss=float(match[3]))
    if match := _EVAL_LINE.fullmatch(line):
        return ProgressLine("eval", int(match[1]), int(match[2]), correct=int(match[3]), labelled=int(match[4]))
    if match := _IMAGE_LINE.fullmatch(line):
        return ProgressLine("image", int(match[1]), int(match[2]))
    return None
