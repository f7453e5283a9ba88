"""Files in and out, without trusting the inputs or risking the user's files: the one npz reader and the
output writers of qtrain's tools, frontends and search.

`read_npz(path)` returns every array of the archive, or raises `NpzError` (a `UserError`, one line
naming the path) for a missing path, a directory, a file that is not a zip archive, a member that is not
a `.npy` array, an array of Python objects (pickles are never read), an array declaring more than
`MAX_ARRAY_BYTES` (checked from its header, before anything is allocated), or a member shorter than its
header declares.

Outputs: `check_output` refuses a path that names one of the inputs; `write_npz`, `write_text` and
`write_bytes` write exactly the path given (np.savez would append `.npz`) through a temporary file in the
same folder renamed over the target (`atomic_file`), so a failure or an interrupt never leaves a
half-written output and the previous file stays as it was. Errors (`OutputError`) name the path.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import numpy as np

from qtrain.errors import UserError

MAX_ARRAY_BYTES = 1 << 30
"""The largest array qtrain reads (1 GiB): far above any dataset the tools train on, and a declared
shape beyond it is refused before numpy allocates it."""


class NpzError(UserError):
    """An .npz input that is missing, unreadable, or does not hold what the tool needs."""


def _header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from a .npy member's header (ValueError when it is not one)."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version in ((2, 0), (3, 0)):  # 3.0 only allows utf-8 field names, which 2.0's reader decodes too
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def check_members(path: Path, archive: zipfile.ZipFile) -> None:
    """Every member is a plain .npy array of at most MAX_ARRAY_BYTES, complete (NpzError otherwise)."""
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise NpzError(f"{path}: member '{name}' is not an array (an .npz holds only .npy files)")
        key = name[:-4]
        try:
            with archive.open(info) as member:
                shape, dtype = _header(member)
                header_bytes = member.tell()
        except (ValueError, EOFError, OSError, zipfile.BadZipFile, RecursionError, SyntaxError) as e:
            raise NpzError(f"{path}: '{key}' is not a readable array ({' '.join(str(e).split())})") from None
        if dtype.hasobject:
            raise NpzError(f"{path}: '{key}' holds Python objects; only numeric arrays are read (no pickles)")
        if any(d < 0 for d in shape):
            raise NpzError(f"{path}: '{key}' declares a negative dimension {list(shape)}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > MAX_ARRAY_BYTES:
            raise NpzError(f"{path}: '{key}' declares {dtype} {list(shape)}, {nbytes} bytes: more than the "
                           f"{MAX_ARRAY_BYTES >> 20} MB an input array may have")
        if info.file_size < header_bytes + nbytes:
            raise NpzError(f"{path}: '{key}' is truncated ({info.file_size - header_bytes} of {nbytes} bytes)")


def read_npz(path: str | Path, what: str = "inputs") -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickles), or an `NpzError` naming the path."""
    path = Path(path)
    if path.is_dir():
        raise NpzError(f"cannot read {what} {path}: is a directory")
    if not path.is_file():
        raise NpzError(f"no such {what} file: {path}")
    if not zipfile.is_zipfile(path):
        raise NpzError(f"cannot read {path}: not an .npz archive (np.savez writes one)")
    try:
        with zipfile.ZipFile(path) as archive:
            check_members(path, archive)
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except NpzError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, RecursionError, NotImplementedError) as e:
        raise NpzError(f"cannot read {path}: {' '.join(str(e).split()) or type(e).__name__}") from None


# -- outputs ---------------------------------------------------------------------------------------------


class OutputError(UserError):
    """An output path that cannot or must not be written."""


def same_file(a: Path | str, b: Path | str) -> bool:
    """Whether two paths name the same file (existing: the same inode; else the same resolved path)."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output(path: Path | str, inputs: Iterable[Path | str | None], what: str = "output") -> Path:
    """`path`, unless it names one of `inputs` (refused: qtrain never writes over a file it reads)."""
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputError(f"refusing to write the {what} {path} over the input {source}")
    if path.is_dir():
        raise OutputError(f"cannot write the {what} {path}: is a directory")
    return path


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def usual_permissions(path: Path | str) -> None:
    """What open()/mkdir() would have given `path` (mkstemp and mkdtemp make private ones)."""
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~_UMASK)


@contextlib.contextmanager
def atomic_file(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """A file to write `path` through: a temporary file in the same folder, renamed over `path` when the
    block ends without an exception, removed otherwise (Ctrl-C included)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        usual_permissions(tmp)
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_npz(path: Path | str, arrays: dict[str, np.ndarray], inputs: Iterable[Path | str | None] = ()) -> Path:
    """`arrays` as an .npz at exactly `path` (no `.npz` appended), never over one of `inputs`."""
    path = check_output(path, inputs)
    with atomic_file(path) as f:
        np.savez(f, **arrays)  # pyright: ignore[reportArgumentType]
    return path


def write_text(path: Path | str, text: str, inputs: Iterable[Path | str | None] = (), what: str = "output") -> Path:
    path = check_output(path, inputs, what)
    with atomic_file(path, "w") as f:
        f.write(text)
    return path


def write_bytes(path: Path | str, data: bytes, inputs: Iterable[Path | str | None] = (),
                what: str = "output") -> Path:
    path = check_output(path, inputs, what)
    with atomic_file(path) as f:
        f.write(data)
    return path
