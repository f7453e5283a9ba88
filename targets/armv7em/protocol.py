"""The request/result files harness.c exchanges with its runner (the format is documented in harness.c).

`encode_request` turns images and labels into the request file; `decode_result` turns the result file
into a `HarnessResult` with numpy arrays. `qtrain-run` is the main user; anything else that runs a
firmware (benchmarks, tests) can use these directly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

REQUEST_MAGIC = b"QTRI"
RESULT_MAGIC = b"QTRO"
VERSION = 1
MODE_INFER = 0
MODE_TRAIN = 1
REQUEST_HEADER = struct.Struct("<4s7I")
RESULT_HEADER = struct.Struct("<4s31I")
STACK_UNKNOWN = 0xFFFFFFFF

COUNTER_KINDS: dict[int, str | None] = {0: None, 1: "instructions", 2: "cycles", 3: "host_ns"}
"""What the per-record counts measure (qtrain_counter_kind_t)."""

DTYPES: dict[int, np.dtype] = {1: np.dtype("<i1"), 2: np.dtype("<i4"), 3: np.dtype("<f4")}
"""qtrain_dtype_t -> numpy dtype of a trainable tensor."""

TRAIN_RECORD = np.dtype([("loss", "<f4"), ("label", "<i4"), ("count", "<u8")])


class ProtocolError(ValueError):
    """The result file is not what harness.c writes."""


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def encode_request(images: np.ndarray, labels: np.ndarray, mode: int, steps: int = 0) -> bytes:
    """The request file for `images` (int8 [N, H, W, C]) and `labels` (int [N]).

    `mode` is MODE_INFER (every image once) or MODE_TRAIN (`steps` steps over the images in order,
    wrapping around).
    """
    if images.dtype != np.int8 or images.ndim < 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty int8 array [N, H, W, C], got {images.dtype} {list(images.shape)}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape [{len(images)}], got {list(labels.shape)}")
    image_bytes = int(np.prod(images.shape[1:]))
    record_bytes = 4 + _align4(image_bytes)
    records = np.zeros((len(images), record_bytes), np.uint8)
    records[:, :4] = labels.astype("<i4").reshape(-1, 1).view(np.uint8)
    records[:, 4:4 + image_bytes] = images.reshape(len(images), -1).view(np.uint8)
    header = REQUEST_HEADER.pack(REQUEST_MAGIC, VERSION, mode, len(images), steps, image_bytes, record_bytes, 0)
    return header + records.tobytes()


@dataclass
class HarnessResult:
    """A decoded result file. Arrays hold one row per record (image or step)."""

    mode: int
    complete: bool
    num_classes: int
    counter_kind: str | None
    counts: np.ndarray
    """uint64 [records]: the counter over each qtrain_infer / qtrain_train_step call."""
    init_count: int
    stack_used: int | None
    stack_size: int | None
    macs_per_infer: int
    macs_per_train_step: int
    memory: dict[str, int]
    """qtrain_memory: peak_sram_bytes, arena_bytes, trainable_bytes, scratch_bytes, flash_bytes."""
    input_bytes: int
    logits: np.ndarray | None = None
    output_q: np.ndarray | None = None
    loss: np.ndarray | None = None
    labels: np.ndarray | None = None
    params: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return len(self.counts)


def decode_result(data: bytes) -> HarnessResult:
    """Parse a result file. An incomplete file (the firmware stopped early) yields the whole records
    it holds and `complete=False`."""
    if len(data) < RESULT_HEADER.size or data[:4] != RESULT_MAGIC:
        raise ProtocolError("not a qtrain result file (bad magic or too short)")
    magic, version, complete, mode, records, num_classes, counter_kind, stack_used, stack_size, num_trainable, \
        *rest = RESULT_HEADER.unpack_from(data)
    if version != VERSION:
        raise ProtocolError(f"result file version {version}, expected {VERSION}")
    init_count = rest[0] | rest[1] << 32
    macs_per_infer = rest[2] | rest[3] << 32
    macs_per_train_step = rest[4] | rest[5] << 32
    memory = dict(zip(("peak_sram_bytes", "arena_bytes", "trainable_bytes", "scratch_bytes", "flash_bytes"),
                      rest[6:11], strict=True))
    input_bytes = rest[11]
    if mode == MODE_TRAIN:
        record = TRAIN_RECORD
    elif mode == MODE_INFER:
        pad = _align4(num_classes) - num_classes
        record = np.dtype([("logits", "<f4", (num_classes,)), ("output_q", "<i1", (num_classes,)),
                           *([("pad", "u1", (pad,))] if pad else []), ("count", "<u8")])
    else:
        raise ProtocolError(f"unknown mode {mode} in the result file")
    body = memoryview(data)[RESULT_HEADER.size:]
    if not complete:
        records = len(body) // record.itemsize
    if len(body) < records * record.itemsize:
        raise ProtocolError("the result file ends inside its records")
    rows = np.frombuffer(body, record, count=records)
    result = HarnessResult(
        mode=mode, complete=bool(complete), num_classes=num_classes, counter_kind=COUNTER_KINDS.get(counter_kind),
        counts=rows["count"].astype(np.uint64), init_count=init_count,
        stack_used=None if stack_used == STACK_UNKNOWN or not complete else stack_used,
        stack_size=None if stack_size == STACK_UNKNOWN else stack_size, macs_per_infer=macs_per_infer,
        macs_per_train_step=macs_per_train_step, memory=memory, input_bytes=input_bytes)
    if mode == MODE_INFER:
        result.logits = rows["logits"].astype(np.float32).reshape(records, num_classes)
        result.output_q = rows["output_q"].astype(np.int8).reshape(records, num_classes)
    else:
        result.loss = rows["loss"].astype(np.float32)
        result.labels = rows["label"].astype(np.int32)
    if complete and mode == MODE_TRAIN:
        result.params = _decode_tensors(data, RESULT_HEADER.size + records * record.itemsize, num_trainable)
    return result


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
            params[name] = np.frombuffer(data, dtype, count=data_bytes // dtype.itemsize, offset=offset) \
                .reshape(shape).copy()
            offset += _align4(data_bytes)
    except (struct.error, KeyError, UnicodeDecodeError) as e:
        raise ProtocolError(f"malformed trainable tensor table: {e}") from e
    return params
