"""Build helpers for the Cortex-M7 targets and the host: find the tools, compile, link, measure, run.

Targets (one name everywhere: `build_firmware(target=...)`, `qtrain-compile --target ...`):

- ``qemu``: QEMU ``-M mps2-an500`` (Cortex-M7), linked with ``qemu_mps2_an500.ld``; counts instructions.
- ``stm32f746``: the real chip, linked with ``stm32f746.ld``; counts cycles (DWT).
- ``host``: a native executable built from the same C with the stdio runtime.

Every firmware is the model's C plus this folder's runtime and (unless ``harness=False``) ``harness.c``.
Missing tools raise `ToolNotFoundError` naming the tool and the Debian package that provides it; a
firmware that does not fit the STM32F746 raises `FirmwareTooLargeError` with one line saying which
memory overflowed by how much.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qtrain.errors import UserError

Target = Literal["qemu", "stm32f746", "host"]
TARGETS: tuple[Target, ...] = ("qemu", "stm32f746", "host")

TARGET_DIR = Path(__file__).resolve().parent
"""This folder: C runtime, headers and linker scripts (also the include directory)."""
KERNEL_DIR = TARGET_DIR / "kernels"
"""The kernel library (qtrain_kernels.h and one .c per kernel; also an include directory)."""

FLASH_BYTES = 1024 * 1024
FLASH_RESERVED_BYTES = 256 * 1024
"""Flash sectors 0-4 (sections.ld): the vector table's sector and the checkpoint slots; everything
else the firmware puts in Flash lies above them."""
SRAM_BYTES = 320 * 1024
DEFAULT_STACK_BYTES = 16 * 1024
"""Application stack reserved by sections.ld unless `stack_bytes` says otherwise."""

LINKER_SCRIPTS: dict[Target, str] = {"qemu": "qemu_mps2_an500.ld", "stm32f746": "stm32f746.ld"}

# -fno-math-errno: nothing reads errno, and without it clang turns `__builtin_fmaf` into a library
# call instead of one VFMA.F32 (the kernels' fused multiply-adds).
COMMON_CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off", "-fno-math-errno", "-g"]
ARM_CFLAGS = [
    "--target=thumbv7em-none-eabihf",
    "-mcpu=cortex-m7",
    "-mfpu=fpv5-sp-d16",
    "-mfloat-abi=hard",
    "-ffreestanding",
    "-fno-common",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables",
    # The board allows unaligned LDR/STR (CCR.UNALIGN_TRP = 0; README.md); clang's bare-metal default
    # would split every unaligned 32-bit read of the kernels (4 weights at a time) into four LDRB.
    "-munaligned-access",
    # r7 as a general register: the DSP inner loops need 13-14 live registers, and clang keeps a
    # Thumb frame pointer by default.
    "-fomit-frame-pointer",
    # The FPU is single precision only: a double would silently become a slow library call (and
    # there is no library), so make every implicit promotion an error.
    "-Wdouble-promotion",
]
BOARD_DEFINES: dict[Target, str] = {
    "qemu": "-DQTRAIN_BOARD_MPS2_AN500",
    "stm32f746": "-DQTRAIN_BOARD_STM32F746",
    "host": "-DQTRAIN_HOST",
}

RUNTIME_SOURCES: dict[Target, tuple[str, ...]] = {
    "qemu": ("startup_armv7em.c", "runtime_target.c", "runtime_string.c", "runtime_math.c"),
    "stm32f746": ("startup_armv7em.c", "runtime_target.c", "runtime_string.c", "runtime_math.c"),
    "host": ("runtime_host.c", "runtime_math.c"),
}
HARNESS_SOURCE = "harness.c"
CHECKPOINT_SOURCES = ("checkpoint.c", "flash_sim.c", "flash_stm32f746.c")
"""Checkpoints and the Flash driver (each driver compiles to nothing on the boards it is not for)."""

# Tool name -> Debian package that installs it.
TOOL_PACKAGES = {"clang": "clang", "ld.lld": "lld", "qemu-system-arm": "qemu-system-arm"}

# QEMU, exactly as DESIGN.md runs it: 1 ns of virtual time per guest instruction (-icount shift=0).
QEMU_MACHINE_ARGS = ["-M", "mps2-an500", "-cpu", "cortex-m7", "-nographic", "-icount", "shift=0"]


class BuildError(UserError):
    """A compile or link step failed; the message says which and why (a missing toolchain, a firmware
    too large for the board): reported to the user like bad input."""


class ToolNotFoundError(BuildError):
    """A required executable is not on PATH."""


class FirmwareTooLargeError(BuildError):
    """The firmware does not fit the STM32F746's Flash or SRAM."""


def find_tool(name: str) -> str:
    """The path of `name` (clang, ld.lld or qemu-system-arm) on PATH, or a clear ToolNotFoundError."""
    path = shutil.which(name)
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        raise ToolNotFoundError(f"{name} not found on PATH; install the Debian package '{package}' "
                                f"(apt-get install {package})")
    return path


def have_tools(*names: str) -> bool:
    """Whether every named tool is on PATH (for skipping tests)."""
    return all(shutil.which(name) is not None for name in names)


def compile_flags(target: Target) -> list[str]:
    """The C compiler flags for `target`, include path of this folder included."""
    if target not in TARGETS:
        raise ValueError(f"unknown target '{target}' (expected one of {', '.join(TARGETS)})")
    arch = [] if target == "host" else ARM_CFLAGS
    return [*COMMON_CFLAGS, *arch, BOARD_DEFINES[target], f"-I{TARGET_DIR}", f"-I{KERNEL_DIR}"]


def runtime_sources(target: Target, harness: bool = True) -> list[Path]:
    """This folder's C files a firmware for `target` links: startup and runtime, and the harness."""
    names = [*RUNTIME_SOURCES[target], *CHECKPOINT_SOURCES, *([HARNESS_SOURCE] if harness else [])]
    return [TARGET_DIR / name for name in names]


def kernel_sources() -> list[Path]:
    """The kernel library's C files (kernels/*.c): pass them with a model's C to `build_firmware`;
    `--gc-sections` drops the kernels a model does not call. They use `qtrain_expf`/`qtrain_logf` from
    this folder's runtime_math.c, which every build links."""
    return sorted(KERNEL_DIR.glob("*.c"))


# ---------------------------------------------------------------------------------------------
# ELF reading (section sizes for the memory report, e_machine for qtrain-run)
# ---------------------------------------------------------------------------------------------

EM_ARM = 40
SHT_NOBITS = 8
SHF_ALLOC = 0x2


@dataclass(frozen=True)
class ElfSection:
    name: str
    address: int
    size: int
    type: int
    flags: int
    offset: int
    link: int
    entry_size: int


def elf_machine(path: Path) -> int:
    """The ELF e_machine of `path` (40 = ARM); ValueError when it is not an ELF file."""
    with open(path, "rb") as f:
        header = f.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    endian = "<" if header[5] == 1 else ">"
    return struct.unpack_from(endian + "H", header, 18)[0]


def elf_sections(path: Path) -> list[ElfSection]:
    """The section headers of an ELF32 or ELF64 file."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    is64 = data[4] == 2
    e = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
        entry = e + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(e + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x2E)
        entry = e + "IIIIIIIIII"
    raw = [struct.unpack_from(entry, data, shoff + i * shentsize) for i in range(shnum)]
    names_offset = raw[shstrndx][4]

    def name_at(offset: int) -> str:
        start = names_offset + offset
        return data[start:data.index(b"\0", start)].decode()

    return [ElfSection(name_at(s[0]), address=s[3], size=s[5], type=s[1], flags=s[2], offset=s[4], link=s[6],
                       entry_size=s[9]) for s in raw]


SHT_SYMTAB = 2


def elf_symbol_bytes(path: Path | str, name: str) -> bytes | None:
    """The initial bytes of the data object `name` as stored in the file, or None when the symbol
    is absent (stripped binary) or has no file contents (.bss). Pointers in it are unrelocated."""
    data = Path(path).read_bytes()
    is64 = data[4] == 2
    e = "<" if data[5] == 1 else ">"
    sections = elf_sections(Path(path))
    for symtab in (s for s in sections if s.type == SHT_SYMTAB):
        strtab = sections[symtab.link]
        for i in range(symtab.size // symtab.entry_size):
            at = symtab.offset + i * symtab.entry_size
            if is64:
                name_offset, _, _, shndx, value, size = struct.unpack_from(e + "IBBHQQ", data, at)
            else:
                name_offset, value, size, _, _, shndx = struct.unpack_from(e + "IIIBBH", data, at)
            start = strtab.offset + name_offset
            if data[start:data.index(b"\0", start)].decode() != name:
                continue
            if not 0 < shndx < len(sections) or sections[shndx].type == SHT_NOBITS:
                return None
            section = sections[shndx]
            begin = section.offset + value - section.address
            return data[begin:begin + size]
    return None


FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".qtrain.weights", ".data")
SRAM_SECTIONS = (".stack", ".data", ".bss", ".qtrain.arena", ".qtrain.trainable", ".qtrain.scratch",
                 ".handler_stack")


@dataclass(frozen=True)
class MemoryUsage:
    """What a target firmware occupies, read from its section headers.

    flash_bytes = .vectors + .text + .rodata + .qtrain.weights + .data (its initial image);
    sram_bytes = .stack (reserved) + .data + .bss + .qtrain.arena/.trainable/.scratch + .handler_stack.
    """

    flash_bytes: int
    sram_bytes: int
    sections: dict[str, int] = field(default_factory=dict)

    @property
    def stack_bytes(self) -> int:
        return self.sections.get(".stack", 0)

    @property
    def weights_bytes(self) -> int:
        return self.sections.get(".qtrain.weights", 0)

    @property
    def arena_bytes(self) -> int:
        return self.sections.get(".qtrain.arena", 0)

    @property
    def trainable_bytes(self) -> int:
        return self.sections.get(".qtrain.trainable", 0)

    @property
    def scratch_bytes(self) -> int:
        return self.sections.get(".qtrain.scratch", 0)

    def describe(self) -> str:
        """A small table: every section, then the two totals against the STM32F746's sizes."""
        lines = [f"{name:<20}{size:>10}" for name, size in self.sections.items()]
        for region, used, capacity in (("Flash", self.flash_bytes, FLASH_BYTES), ("SRAM", self.sram_bytes, SRAM_BYTES)):
            lines.append(f"{region:<20}{used:>10}  of {capacity} ({100 * used / capacity:.1f}%)")
        return "\n".join(lines)


def memory_usage(path: Path) -> MemoryUsage:
    """Flash and SRAM of a target firmware (an ARM ELF linked with this folder's scripts)."""
    sizes = {s.name: s.size for s in elf_sections(path) if s.flags & SHF_ALLOC and s.name in {*FLASH_SECTIONS,
                                                                                           *SRAM_SECTIONS}}
    ordered = {name: sizes.get(name, 0) for name in dict.fromkeys((*FLASH_SECTIONS, *SRAM_SECTIONS))}
    return MemoryUsage(flash_bytes=sum(ordered[n] for n in FLASH_SECTIONS),
                       sram_bytes=sum(ordered[n] for n in SRAM_SECTIONS), sections=ordered)


# ---------------------------------------------------------------------------------------------
# compile and link
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    path: Path
    target: Target
    memory: MemoryUsage | None
    """Section sizes (target builds only)."""


def _run(command: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{(result.stderr or result.stdout).strip()}")
    return result


_OVERFLOW = re.compile(r"section '[^']+' will not fit in region '([^']+)': overflowed by \d+ bytes")
FLASH_ORIGINS: dict[Target, int] = {"qemu": 0x00000000, "stm32f746": 0x08000000}


def _link_command(lld: str, script: str, objects: Sequence[Path], output: Path, stack_bytes: int,
                  map_file: Path | None) -> list[str]:
    return [lld, "--gc-sections", "-L", str(TARGET_DIR), "-T", script, f"--defsym=QTRAIN_STACK_BYTES={stack_bytes}",
            *(["-Map", str(map_file)] if map_file else []), "-o", str(output), *(str(o) for o in objects)]


def _too_large(lld: str, target: Target, objects: Sequence[Path], output: Path,
               stack_bytes: int) -> FirmwareTooLargeError:
    """One line naming each overflowing region and the sections that take the most room in it.

    lld stops at the region limit without writing the ELF (and blames whichever section crossed the
    limit first), so relink once with the same sections in 256 MB regions and report from the real
    section sizes.
    """
    with tempfile.TemporaryDirectory(prefix="qtrain-overflow-") as tmp:
        script = Path(tmp) / "unbounded.ld"
        script.write_text(f"MEMORY {{ FLASH (rx) : ORIGIN = {FLASH_ORIGINS[target]:#x}, LENGTH = 256M\n"
                          f"         SRAM (rwx) : ORIGIN = 0x20000000, LENGTH = 256M }}\n"
                          f"INCLUDE sections.ld\n")
        probe = Path(tmp) / output.name
        subprocess.run(_link_command(lld, str(script), objects, probe, stack_bytes, None), capture_output=True,
                       check=True)
        usage = memory_usage(probe)
    parts = []
    flash_used = usage.flash_bytes - usage.sections[".vectors"] + FLASH_RESERVED_BYTES
    for region, capacity, names, used in (("Flash", FLASH_BYTES, FLASH_SECTIONS, flash_used),
                                          ("SRAM", SRAM_BYTES, SRAM_SECTIONS, usage.sram_bytes)):
        if used > capacity:
            largest = sorted(((usage.sections[n], n) for n in names if usage.sections[n]), reverse=True)[:3]
            detail = ", ".join(f"{name} {size}" for size, name in largest)
            reserved = f", {FLASH_RESERVED_BYTES // 1024} KB of it for the vector table and the checkpoint slots" \
                if region == "Flash" else ""
            parts.append(f"{region} needs {used} bytes of {capacity} ({used - capacity} too many{reserved}; "
                         f"largest: {detail})")
    if not parts:
        parts.append("the sections do not fit with their alignment padding")
    return FirmwareTooLargeError(f"{output.name} does not fit the STM32F746: " + "; ".join(parts))


def build_firmware(
    sources: Sequence[Path | str],
    output: Path | str,
    target: Target = "qemu",
    *,
    harness: bool = True,
    include_dirs: Sequence[Path | str] = (),
    defines: Sequence[str] = (),
    extra_cflags: Sequence[str] = (),
    stack_bytes: int | None = None,
    sanitize: str | None = None,
) -> BuildResult:
    """Compile `sources` (the model's C, or a test program) with this folder's runtime and link.

    `harness=False` leaves out harness.c (the sources then provide `main`). `defines` are NAME or
    NAME=VALUE. `stack_bytes` sizes the application stack of target builds (default 16 KB, a
    multiple of 8, at least 1 KB). `sanitize` (host only), e.g. "address,undefined": compiled and
    linked with those clang sanitizers, every finding fatal (a nonzero exit, the report on stderr).
    Target builds are linked by ld.lld with the board's linker script, writing a map file next to
    the ELF, and their section sizes are read back into `BuildResult.memory`. Host builds are
    linked by clang.
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target '{target}' (expected one of {', '.join(TARGETS)})")
    stack = DEFAULT_STACK_BYTES if stack_bytes is None else stack_bytes
    if stack < 1024 or stack % 8:
        raise ValueError(f"stack_bytes must be a multiple of 8 and at least 1024, not {stack}")
    output = Path(output)
    clang = find_tool("clang")
    lld = find_tool("ld.lld") if target != "host" else ""
    all_sources = [Path(s) for s in sources] + runtime_sources(target, harness)
    for source in all_sources:
        if not source.is_file():
            raise BuildError(f"no such source file: {source}")
    if sanitize is not None and target != "host":
        raise ValueError("sanitizers need the host target")
    sanitizers = [] if sanitize is None else [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all",
                                              "-fno-omit-frame-pointer"]
    cflags = [*compile_flags(target), *(f"-I{d}" for d in include_dirs), *(f"-D{d}" for d in defines),
              *extra_cflags, *sanitizers]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qtrain-build-") as tmp:
        objects = [Path(tmp) / f"{i}_{s.stem}.o" for i, s in enumerate(all_sources)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            jobs = [pool.submit(_run, [clang, *cflags, "-c", str(s), "-o", str(o)], f"clang ({s.name})")
                    for s, o in zip(all_sources, objects, strict=True)]
            for job in jobs:
                job.result()
        if target == "host":
            _run([clang, *sanitizers, *(str(o) for o in objects), "-lm", "-o", str(output)], f"linking {output.name}")
            return BuildResult(output, target, None)
        command = _link_command(lld, LINKER_SCRIPTS[target], objects, output, stack, output.with_suffix(".map"))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            if _OVERFLOW.search(result.stderr):
                raise _too_large(lld, target, objects, output, stack)
            messages = "\n".join(dict.fromkeys(result.stderr.strip().splitlines()))  # lld repeats some
            raise BuildError(f"ld.lld failed linking {output.name}:\n{messages}")
    return BuildResult(output, target, memory_usage(output))


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

def qemu_command(firmware: Path | str, args: Sequence[str] = ()) -> list[str]:
    """The QEMU command line that runs `firmware` with semihosting; `args` become its command line
    (SYS_GET_CMDLINE gives "firmware ARG..."; the words must not contain commas or spaces, and the
    whole line must fit harness.c's 255 characters: pass relative paths and set the working directory)."""
    qemu = find_tool("qemu-system-arm")
    for arg in args:
        if "," in arg or " " in arg:
            raise ValueError(f"semihosting argument must not contain commas or spaces: {arg!r}")
    if len(" ".join(["firmware", *args])) > 255:
        raise ValueError("semihosting command line longer than the harness's 255-character buffer")
    semihosting = ",".join(["enable=on", "target=native", "arg=firmware", *(f"arg={a}" for a in args)])
    return [qemu, *QEMU_MACHINE_ARGS, "-semihosting-config", semihosting, "-kernel", str(firmware)]


def run_firmware(firmware: Path | str, args: Sequence[str] = (), *, timeout: float | None = None,
                 cwd: Path | str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a target firmware on QEMU (or a host build directly) and capture its output.

    The exit status is the firmware's (main's return value or qtrain_exit's argument). Semihosting
    console output (qtrain_puts) arrives on stderr, like the host build's. Raises
    subprocess.TimeoutExpired after `timeout` seconds (QEMU is killed).
    """
    firmware = Path(firmware)
    if elf_machine(firmware) == EM_ARM:
        command = qemu_command(firmware.resolve(), args)
    else:
        command = [str(firmware.resolve()), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)
