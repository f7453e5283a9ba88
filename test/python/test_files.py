"""`qtrain.files`: the npz reader every tool and frontend uses, and the output writers.

The fuzz test draws arbitrary bytes, zip archives of arbitrary members and .npy members with arbitrary
headers (shapes, dtypes, lengths): `read_npz` returns plain numeric arrays or raises `NpzError`.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fuzzing import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qtrain.errors import UserError
from qtrain.files import MAX_ARRAY_BYTES, NpzError, OutputError, read_npz, write_npz, write_text

DTYPES = ["|i1", "<i4", "<f4", "<f8", "|b1", "<U3", "|O", "<c8", ">i2", "|V4", "bogus", "<i4,<f4"]


def npy(shape: object, dtype: str, payload: bytes, fortran: bool = False, version: bytes = b"\x01\x00") -> bytes:
    header = f"{{'descr': '{dtype}', 'fortran_order': {fortran}, 'shape': {shape}, }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY" + version + len(header).to_bytes(2, "little") + header.encode() + payload


shapes = st.one_of(
    st.lists(st.integers(min_value=-3, max_value=10**13), max_size=5).map(tuple),
    st.just("(2, 3"), st.just("'x'"), st.just("None"), st.integers(-5, 5),
)
def saved(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


members = st.one_of(
    st.builds(npy, shapes, st.sampled_from(DTYPES), st.binary(max_size=64), st.booleans(),
              st.sampled_from([b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"])),
    st.binary(max_size=80),
    hnp.arrays(st.sampled_from([np.int8, np.int64, np.float32]), hnp.array_shapes(min_dims=0, max_dims=4,
                                                                                  max_side=4)).map(saved),
)
names = st.one_of(st.sampled_from(["image.npy", "label.npy", "x.npy", "image", "a/b.npy", ".npy"]),
                  st.text(max_size=8))


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))  # not even a zip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate member names are part of the fuzz
        for _ in range(draw(st.integers(0, 3))):
            archive.writestr(draw(names) or "x.npy", draw(members))
    data = buffer.getvalue()
    cut = draw(st.integers(0, len(data)))
    return data if draw(st.booleans()) else data[:cut]


@FUZZ
@given(data=archives())
def test_fuzz_read_npz_returns_arrays_or_a_clean_error(data: bytes, tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("fuzz", numbered=True) / "f.npz"
    path.write_bytes(data)
    try:
        arrays = read_npz(path)
    except NpzError as e:
        assert str(e) and "\n" not in str(e) and str(path) in str(e)
        return
    for key, value in arrays.items():
        assert isinstance(value, np.ndarray) and not value.dtype.hasobject, key
        assert value.nbytes <= MAX_ARRAY_BYTES


def test_a_valid_npz_round_trips(tmp_path: Path):
    arrays = {"image": np.arange(24, dtype=np.int8).reshape(2, 3, 4, 1), "label": np.array([1, 2], np.int64)}
    write_npz(tmp_path / "a", arrays)
    back = read_npz(tmp_path / "a")
    assert sorted(back) == ["image", "label"] and all(np.array_equal(back[k], v) for k, v in arrays.items())
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    assert np.array_equal(read_npz(tmp_path / "c.npz")["image"], arrays["image"])


def test_the_writers_never_touch_an_input_and_leave_nothing_half_written(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    source = tmp_path / "in.txt"
    source.write_text("input")
    with pytest.raises(OutputError, match="refusing to write the output .* over the input"):
        write_text(source, "x", [source])
    link = tmp_path / "link.txt"
    os.symlink(source, link)
    with pytest.raises(OutputError):
        write_text(link, "x", [source])  # the same file under another name
    assert source.read_text() == "input"
    target = tmp_path / "out.npz"
    target.write_bytes(b"old")

    def fails_halfway(file: io.BufferedWriter, **arrays: np.ndarray) -> None:
        file.write(b"half of an archive")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr("qtrain.files.np.savez", fails_halfway)
    with pytest.raises(KeyboardInterrupt):
        write_npz(target, {"a": np.zeros(2)})
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert issubclass(NpzError, UserError) and issubclass(OutputError, UserError)
