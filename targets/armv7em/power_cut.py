"""Pulling the plug on QEMU after exactly N guest instructions: the TCG plugin `qemu_power_cut.c`.

`plugin_args(n)` are the extra QEMU arguments that end the emulator right before instruction n + 1
(`qtrain-run --power-cut-at-instruction N`); `plugin_args(None)` only counts, printing the total at
exit. The plugin is built for the host with clang on first use and cached under
$XDG_CACHE_HOME/qtrain (default ~/.cache/qtrain), named by a hash of its source.

Why a plugin: under `-icount shift=0` QEMU's instruction count is deterministic, but nothing in
QEMU 7.2 stops a running guest at a given count from outside (replay breakpoints need a recording;
a gdbstub single-step per instruction is far too slow), and a timer inside the guest would be the
firmware cutting its own power, at 40-instruction resolution.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

from qtrain.targets.armv7em.build import TARGET_DIR, BuildError, find_tool

PLUGIN_SOURCE = TARGET_DIR / "qemu_power_cut.c"
POWER_CUT_STATUS = 86
"""QEMU's exit status when the plugin cut the power."""
CUT_LINE = re.compile(r"qtrain-power-cut: after (\d+) instructions")
TOTAL_LINE = re.compile(r"qtrain-power-cut: (\d+) instructions in total")
PLUGIN_CFLAGS = ["-shared", "-fPIC", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror"]


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qtrain"


def plugin() -> Path:
    """The plugin's shared library, built on first use."""
    source = PLUGIN_SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(PLUGIN_CFLAGS).encode()).hexdigest()[:16]
    path = cache_dir() / f"libqtrain_power_cut-{digest}.so"
    if path.is_file():
        return path
    clang = find_tool("clang")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BuildError(f"cannot create the plugin cache {path.parent}: {e.strerror or e}") from e
    # Built under a temporary name and renamed: concurrent runs never load a half-written library.
    fd, tmp = tempfile.mkstemp(prefix=".power_cut-", suffix=".so", dir=path.parent)
    os.close(fd)
    try:
        result = subprocess.run([clang, *PLUGIN_CFLAGS, str(PLUGIN_SOURCE), "-o", tmp], capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise BuildError(f"building the QEMU power-cut plugin failed:\n{result.stderr.strip()}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def plugin_args(cut_at: int | None) -> list[str]:
    """QEMU arguments loading the plugin: cut before instruction cut_at + 1, or only count (None)."""
    return ["-plugin", f"{plugin()},{'count=on' if cut_at is None else f'at={cut_at}'}"]
