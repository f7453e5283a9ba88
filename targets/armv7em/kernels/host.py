"""Build the kernel library for the host as a shared object and load it with ctypes.

`build_library(path, dsp=False)` compiles every kernel (and runtime_math.c, for qtrain_expf/logf)
with the host flags of `build.compile_flags("host")` plus -fPIC. `dsp=True` defines
QTRAIN_USE_DSP=1, which on a host without the ARM DSP extension compiles the DSP code paths over C
definitions of the intrinsics: the same integer arithmetic, so the tests can check both paths.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qtrain.targets.armv7em import build
from qtrain.targets.armv7em.kernels import KERNEL_DIR, sources


def library_sources() -> list[Path]:
    return [*sources(), build.TARGET_DIR / "runtime_math.c"]


def build_library(output: Path | str, *, dsp: bool = False, extra_cflags: tuple[str, ...] = ()) -> Path:
    """Compile the kernels for the host into the shared object `output` (returned)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    clang = build.find_tool("clang")
    flags = [*build.compile_flags("host"), "-fPIC", f"-DQTRAIN_USE_DSP={1 if dsp else 0}", *extra_cflags]
    objects_dir = output.parent / f"{output.stem}.objects"
    objects_dir.mkdir(exist_ok=True)

    def compile_one(source: Path) -> Path:
        obj = objects_dir / f"{source.stem}.o"
        result = subprocess.run([clang, *flags, "-c", str(source), "-o", str(obj)], capture_output=True, text=True)
        if result.returncode != 0:
            raise build.BuildError(f"clang ({source.name}) failed:\n{result.stderr.strip()}")
        return obj

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        objects = list(pool.map(compile_one, library_sources()))
    result = subprocess.run([clang, "-shared", "-o", str(output), *(str(o) for o in objects), "-lm"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise build.BuildError(f"linking {output.name} failed:\n{result.stderr.strip()}")
    return output


def load(path: Path | str) -> ctypes.CDLL:
    return ctypes.CDLL(str(path))


def cached_library(*, dsp: bool = False, cache_dir: Path | str | None = None) -> ctypes.CDLL:
    """The host library for the current sources, built once per content hash into `cache_dir` (default:
    the system temp folder) and loaded."""
    import hashlib
    import tempfile

    digest = hashlib.sha256()
    for source in [*library_sources(), *kernel_headers()]:
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    digest.update(" ".join(build.compile_flags("host")).encode())
    folder = Path(cache_dir or tempfile.gettempdir()) / f"qtrain-kernels-{digest.hexdigest()[:16]}"
    path = folder / f"libqtrain_kernels_{'dsp' if dsp else 'portable'}.so"
    if not path.exists():
        staging = folder / f"staging-{os.getpid()}"
        built = build_library(staging / path.name, dsp=dsp)
        built.replace(path)  # atomic: concurrent test processes never load a half-written file
    return load(path)


def kernel_headers() -> list[Path]:
    """The headers the library's build depends on."""
    return sorted(KERNEL_DIR.glob("*.h")) + [build.TARGET_DIR / "qtrain_runtime.h"]
