"""Build helpers for the ARMv7E-M / ARMv8-M mainline targets and the host: find the tools, compile, link,
measure, run.

Targets (one name everywhere: `build_firmware(target=...)`, `qtrain-compile --target ...`; the table is
`BOARDS`, one `Board` per target with its core, memory map, linker script, default SRAM budget and,
for the emulated ones, its QEMU machine):

- ``qemu``: QEMU ``-M mps2-an500`` (Cortex-M7), sized like the STM32F746; counts instructions.
- ``qemu-m4``: QEMU ``-M mps2-an386`` (Cortex-M4F), sized like a Nordic nRF52840; counts instructions.
- ``qemu-m33``: QEMU ``-M mps2-an505`` (Cortex-M33 with the DSP extension and the FPU, Secure state),
  sized like a Nordic nRF5340's application core; counts instructions.
- ``stm32f746``: the real chip (Cortex-M7); ``nucleo-f446re``: the real board (STM32F446RE, Cortex-M4F);
  both count cycles (DWT).
- ``host``: a native executable built from the same C with the stdio runtime.

Every firmware is the model's C plus this folder's runtime and (unless ``harness=False``) ``harness.c``.
Missing tools raise `ToolNotFoundError` naming the tool and the Debian package that provides it; a
firmware that does not fit its board raises `FirmwareTooLargeError` with one line saying which memory
overflowed by how much.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qtrain.errors import UserError

Target = Literal["qemu", "qemu-m4", "qemu-m33", "stm32f746", "nucleo-f446re", "host"]

TARGET_DIR = Path(__file__).resolve().parent
"""This folder: C runtime, headers and linker scripts (also the include directory)."""
KERNEL_DIR = TARGET_DIR / "kernels"
"""The kernel library (qtrain_kernels.h and one .c per kernel; also an include directory)."""

FLASH_RESERVED_BYTES = 256 * 1024
"""Flash [origin, origin + 256 KB) on every board (sections.ld): the vector table's sector and the
checkpoint slots (the STM32F746's sectors 0-4); everything else the firmware puts in Flash lies above them."""
DEFAULT_STACK_BYTES = 16 * 1024
"""Application stack reserved by sections.ld unless `stack_bytes` says otherwise."""
HANDLER_STACK_BYTES = 1024
"""The exception handlers' stack (sections.ld's default)."""
RUNTIME_RESERVE_BYTES = 1024
"""What a default budget leaves for the harness's and runtime's own .data and .bss (about 600 B)."""


@dataclass(frozen=True)
class Board:
    """One firmware target: its core, its memory and where it runs.

    The kernel library and the planner's target description are the same for every board (one
    ARMv7E-M / ARMv8-M mainline DSP kernel set); what differs is here. `budget_kb` is qtrain-compile's
    default `--sram-kb`, the static plan's share of the SRAM: the SRAM less the default 16 KB stack, the
    1 KB handler stack and 1 KB for the runtime's data, except on the STM32F746 pair, which keeps
    MCUNetV3's 256 KB (the paper's budget on that chip).
    """

    name: str
    summary: str
    chip: str
    """What a too-large firmware "does not fit", e.g. "the STM32F746"."""
    cpu_flags: tuple[str, ...]
    define: str
    """QTRAIN_BOARD_*: selects the runtime's counter, vector table and stack guard."""
    linker_script: str
    flash_origin: int
    flash_bytes: int
    sram_origin: int
    sram_bytes: int
    budget_kb: int
    qemu_machine: tuple[str, ...] = ()
    """qemu-system-arm's -M/-cpu arguments; empty for real hardware."""
    instructions_per_tick: int | None = None
    """QEMU: guest instructions per tick of the runtime's CMSDK timer under -icount shift=0."""
    clock_mhz: int = 0
    """The core clock of the chip the board stands for, for time estimates (1 instruction per cycle)."""

    @property
    def emulated(self) -> bool:
        return bool(self.qemu_machine)


def _budget_kb(sram_bytes: int) -> int:
    return (sram_bytes - DEFAULT_STACK_BYTES - HANDLER_STACK_BYTES - RUNTIME_RESERVE_BYTES) // 1024


_M7 = ("--target=thumbv7em-none-eabihf", "-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16")
# FPv4-SP: no VRINT, VMINNM, VMAXNM; runtime_math.c supplies rintf, fminf, fmaxf for it. The kernels'
# inline assembly requantizes with FPv5's VMAXNM / VMINNM, so the M4F takes their C (with the DSP
# intrinsics) instead: QTRAIN_DSP_ASM=0.
_M4 = ("--target=thumbv7em-none-eabihf", "-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-DQTRAIN_DSP_ASM=0")
# clang's cortex-m33 has the DSP extension (__ARM_FEATURE_DSP), so the kernels take their SIMD path.
_M33 = ("--target=thumbv8m.main-none-eabihf", "-mcpu=cortex-m33", "-mfpu=fpv5-sp-d16")

BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("qemu", "QEMU mps2-an500: Cortex-M7, sized like the STM32F746 (1 MB Flash, 320 KB SRAM)",
          "the STM32F746", _M7, "QTRAIN_BOARD_MPS2_AN500", "qemu_mps2_an500.ld",
          0x00000000, 1024 * 1024, 0x20000000, 320 * 1024, 256, ("-M", "mps2-an500", "-cpu", "cortex-m7"), 40, 216),
    Board("qemu-m4", "QEMU mps2-an386: Cortex-M4F, sized like the nRF52840 (1 MB Flash, 256 KB RAM)",
          "qemu-m4 (sized like the nRF52840)", _M4, "QTRAIN_BOARD_MPS2_AN386", "qemu_mps2_an386.ld",
          0x00000000, 1024 * 1024, 0x20000000, 256 * 1024, _budget_kb(256 * 1024),
          ("-M", "mps2-an386", "-cpu", "cortex-m4"), 40, 64),
    Board("qemu-m33", "QEMU mps2-an505: Cortex-M33 with DSP, sized like the nRF5340 (1 MB Flash, 512 KB RAM)",
          "qemu-m33 (sized like the nRF5340)", _M33, "QTRAIN_BOARD_MPS2_AN505", "qemu_mps2_an505.ld",
          0x10000000, 1024 * 1024, 0x38000000, 512 * 1024, _budget_kb(512 * 1024),
          ("-M", "mps2-an505", "-cpu", "cortex-m33"), 50, 128),
    Board("stm32f746", "STM32F746: Cortex-M7, 1 MB Flash, 320 KB SRAM (the chip)",
          "the STM32F746", _M7, "QTRAIN_BOARD_STM32F746", "stm32f746.ld",
          0x08000000, 1024 * 1024, 0x20000000, 320 * 1024, 256, clock_mhz=216),
    Board("nucleo-f446re", "NUCLEO-F446RE: STM32F446RE, Cortex-M4F, 512 KB Flash, 128 KB SRAM (the board)",
          "the STM32F446RE", _M4, "QTRAIN_BOARD_NUCLEO_F446RE", "nucleo_f446re.ld",
          0x08000000, 512 * 1024, 0x20000000, 128 * 1024, _budget_kb(128 * 1024), clock_mhz=180),
)}
TARGETS: tuple[Target, ...] = (*BOARDS, "host")  # type: ignore[assignment]
HOST_BUDGET_KB = BOARDS["qemu"].budget_kb
"""A host build stands in for the default device: the same default budget."""
QEMU_TARGETS: tuple[str, ...] = tuple(name for name, board in BOARDS.items() if board.emulated)

FLASH_BYTES = BOARDS["qemu"].flash_bytes
"""The default target's (the STM32F746's) Flash and SRAM; other boards: `BOARDS[name]`."""
SRAM_BYTES = BOARDS["qemu"].sram_bytes

LINKER_SCRIPTS: dict[str, str] = {name: board.linker_script for name, board in BOARDS.items()}


def board(target: str) -> Board:
    """The board of a firmware target; ValueError naming the targets for an unknown one ('host' has none)."""
    if target not in BOARDS:
        raise ValueError(f"unknown target '{target}' (expected one of {', '.join(TARGETS)})")
    return BOARDS[target]


def default_budget_kb(target: str) -> int:
    """qtrain-compile's default --sram-kb for `target`."""
    return HOST_BUDGET_KB if target == "host" else board(target).budget_kb


# -fno-math-errno: nothing reads errno, and without it clang turns `__builtin_fmaf` into a library
# call instead of one VFMA.F32 (the kernels' fused multiply-adds).
COMMON_CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off", "-fno-math-errno", "-g"]
ARM_CFLAGS = [
    "-mfloat-abi=hard",
    "-ffreestanding",
    "-fno-common",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-unwind-tables",
    "-fno-asynchronous-unwind-tables",
    # The boards allow unaligned LDR/STR (CCR.UNALIGN_TRP = 0; README.md); clang's bare-metal default
    # would split every unaligned 32-bit read of the kernels (4 weights at a time) into four LDRB.
    "-munaligned-access",
    # r7 as a general register: the DSP inner loops need 13-14 live registers, and clang keeps a
    # Thumb frame pointer by default.
    "-fomit-frame-pointer",
    # The FPU is single precision only: a double would silently become a slow library call (and
    # there is no library), so make every implicit promotion an error.
    "-Wdouble-promotion",
]
"""The flags every Arm target shares (each board adds its --target, -mcpu, -mfpu and QTRAIN_BOARD_*)."""

# A host build runs where it is built (qtrain-run, the search's runs; a Dask worker builds its own), so it
# may use the build machine's whole instruction set. What it buys is mostly hardware FMA: without it every
# `__builtin_fmaf` of the fp32 backward is glibc's software fmaf, and a deep backward step of mcunet-5fps
# takes 2.5x as long (125 -> 53 ms). Results do not change: fmaf is exactly rounded either way, rounding
# instructions are IEEE exact, and -ffp-contract=off with no -ffast-math leaves no reassociation to a
# wider vectoriser (the host = interpreter = QEMU agreement tests run on these builds).
HOST_CPU_FLAGS: tuple[str, ...] = {"x86_64": ("-march=native",), "amd64": ("-march=native",),
                                   "aarch64": ("-mcpu=native",), "arm64": ("-mcpu=native",)}.get(
                                       platform.machine().lower(), ())

TARGET_RUNTIME_SOURCES = ("startup_armv7em.c", "runtime_target.c", "runtime_string.c", "runtime_math.c")
HOST_RUNTIME_SOURCES = ("runtime_host.c", "runtime_math.c")
HARNESS_SOURCE = "harness.c"
CHECKPOINT_SOURCES = ("checkpoint.c", "flash_sim.c", "flash_stm32f746.c")
"""Checkpoints and the Flash driver (each driver compiles to nothing on the boards it is not for)."""

# Tool name -> Debian package that installs it.
TOOL_PACKAGES = {"clang": "clang", "ld.lld": "lld", "qemu-system-arm": "qemu-system-arm"}

# QEMU, exactly as DESIGN.md runs it: 1 ns of virtual time per guest instruction (-icount shift=0).
QEMU_COMMON_ARGS = ["-nographic", "-icount", "shift=0"]
TARGET_SECTION = ".qtrain.target"
"""A non-allocated ELF section holding the target's name (startup_armv7em.c writes it): which QEMU
machine runs a firmware."""


class BuildError(UserError):
    """A compile or link step failed; the message says which and why (a missing toolchain, a firmware
    too large for the board): reported to the user like bad input."""


class ToolNotFoundError(BuildError):
    """A required executable is not on PATH."""


class FirmwareTooLargeError(BuildError):
    """The firmware does not fit its board's Flash or SRAM."""


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
    if target == "host":
        return [*COMMON_CFLAGS, *HOST_CPU_FLAGS, "-DQTRAIN_HOST", f"-I{TARGET_DIR}", f"-I{KERNEL_DIR}"]
    b = board(target)
    return [*COMMON_CFLAGS, *b.cpu_flags, *ARM_CFLAGS, f"-D{b.define}", f'-DQTRAIN_TARGET_NAME="{b.name}"',
            f"-I{TARGET_DIR}", f"-I{KERNEL_DIR}"]


def runtime_sources(target: Target, harness: bool = True) -> list[Path]:
    """This folder's C files a firmware for `target` links: startup and runtime, and the harness."""
    runtime = HOST_RUNTIME_SOURCES if target == "host" else TARGET_RUNTIME_SOURCES
    names = [*runtime, *CHECKPOINT_SOURCES, *([HARNESS_SOURCE] if harness else [])]
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
    target: str = "qemu"
    """The board whose Flash and SRAM `describe` and `fits` compare against."""

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

    @property
    def flash_limit_bytes(self) -> int:
        return board(self.target).flash_bytes

    @property
    def sram_limit_bytes(self) -> int:
        return board(self.target).sram_bytes

    def describe(self) -> str:
        """A small table: every section, then the two totals against the board's sizes."""
        lines = [f"{name:<20}{size:>10}" for name, size in self.sections.items()]
        for region, used, capacity in (("Flash", self.flash_bytes, self.flash_limit_bytes),
                                       ("SRAM", self.sram_bytes, self.sram_limit_bytes)):
            lines.append(f"{region:<20}{used:>10}  of {capacity} ({100 * used / capacity:.1f}%)")
        return "\n".join(lines)


def memory_usage(path: Path, target: str | None = None) -> MemoryUsage:
    """Flash and SRAM of a target firmware (an ARM ELF linked with this folder's scripts); `target`
    defaults to the one the firmware names (`firmware_target`)."""
    sections = elf_sections(path)
    sizes = {s.name: s.size for s in sections if s.flags & SHF_ALLOC and s.name in {*FLASH_SECTIONS, *SRAM_SECTIONS}}
    ordered = {name: sizes.get(name, 0) for name in dict.fromkeys((*FLASH_SECTIONS, *SRAM_SECTIONS))}
    return MemoryUsage(flash_bytes=sum(ordered[n] for n in FLASH_SECTIONS),
                       sram_bytes=sum(ordered[n] for n in SRAM_SECTIONS), sections=ordered,
                       target=target or firmware_target(path) or "qemu")


def elf_section_bytes(path: Path | str, name: str) -> bytes | None:
    """The file contents of section `name`, or None when the ELF has no such section."""
    for s in elf_sections(Path(path)):
        if s.name == name and s.type != SHT_NOBITS:
            with open(path, "rb") as f:
                f.seek(s.offset)
                return f.read(s.size)
    return None


def firmware_target(path: Path | str) -> str | None:
    """The target an Arm firmware was built for (its TARGET_SECTION), or None when it does not say:
    a firmware built before the section existed (then a vector table at 0 means `qemu`, the only QEMU
    target there was) or not by `build_firmware`."""
    raw = elf_section_bytes(path, TARGET_SECTION)
    if raw is not None:
        name = raw.split(b"\0", 1)[0].decode(errors="replace")
        return name if name in BOARDS else None
    vectors = [s for s in elf_sections(Path(path)) if s.name == ".vectors"]
    return "qemu" if vectors and vectors[0].address == 0 else None


# ---------------------------------------------------------------------------------------------
# compile and link
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildResult:
    path: Path
    target: Target
    memory: MemoryUsage | None
    """Section sizes (target builds only)."""


OBJECT_CACHE_ENV = "QTRAIN_OBJECT_CACHE"
"""Where compiled runtime and kernel objects are kept between builds (default: qtrain-objects-UID in the
temporary folder); `off` disables the cache."""


def object_cache_dir() -> Path | None:
    setting = os.environ.get(OBJECT_CACHE_ENV)
    if setting == "off":
        return None
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(setting) if setting else Path(tempfile.gettempdir()) / f"qtrain-objects-{uid}"


@functools.cache
def _compiler_identity(clang: str) -> bytes:
    return subprocess.run([clang, "--version"], capture_output=True).stdout + clang.encode()


def object_cache_key(clang: str, flags: Sequence[str], source: Path) -> str | None:
    """The cache key of compiling one of this folder's sources (the runtime, the harness, a kernel): a
    hash of the compiler, the flags, the source and every header of this folder and the kernels' (all
    they include besides the system's). None for any other source (a model's C, a test program)."""
    if source.resolve().parent not in (TARGET_DIR, KERNEL_DIR):
        return None
    digest = hashlib.sha256(_compiler_identity(clang))
    digest.update("\0".join(flags).encode())
    for path in [source, *sorted(TARGET_DIR.glob("*.h")), *sorted(KERNEL_DIR.glob("*.h"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _compile(clang: str, flags: Sequence[str], key_flags: Sequence[str], source: Path, output: Path) -> None:
    """clang -c, or a copy of the object an identical earlier compile left in the object cache. The
    model's include folders are not part of the key: this folder's sources include only this folder's
    headers (and the system's)."""
    cache = object_cache_dir()
    key = object_cache_key(clang, _flags_affecting(key_flags, source), source) if cache is not None else None
    cached = cache / f"{key}.o" if cache is not None and key is not None else None
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, output)
        return
    _run([clang, *flags, "-c", str(source), "-o", str(output)], f"clang ({source.name})")
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(output, partial)
            os.replace(partial, cached)  # atomic: a parallel build sees the whole object or none
        except OSError:
            pass  # a cache that cannot be written only costs time


def _flags_affecting(flags: Sequence[str], source: Path) -> list[str]:
    """`flags` without the -ffile-prefix-map=OLD=NEW whose OLD does not hold `source`: such a map only renames
    paths under OLD, and this folder's sources include nothing from there. (qtrain-compile maps its
    temporary build folder, a new name on every build: keyed, it made every cached object a miss.)"""
    kept = []
    for flag in flags:
        if flag.startswith("-ffile-prefix-map="):
            old = Path(flag.removeprefix("-ffile-prefix-map=").split("=", 1)[0])
            if not source.resolve().is_relative_to(old.resolve()):
                continue
        kept.append(flag)
    return kept


def _run(command: Sequence[str], what: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(command), capture_output=True, text=True)
    if result.returncode in (-signal.SIGINT, -signal.SIGTERM):
        # Ctrl-C reaches the whole process group: clang dies of it too, often before this process's own
        # handler has run. Reported as the interrupt it is (the tools exit 130), not as a failed build.
        raise KeyboardInterrupt(f"{what} interrupted")
    if result.returncode != 0:
        raise BuildError(f"{what} failed:\n{(result.stderr or result.stdout).strip()}")
    return result


_OVERFLOW = re.compile(r"section '[^']+' will not fit in region '([^']+)': overflowed by \d+ bytes")
FLASH_ORIGINS: dict[str, int] = {name: b.flash_origin for name, b in BOARDS.items()}


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
        b = board(target)
        script.write_text(f"MEMORY {{ FLASH (rx) : ORIGIN = {b.flash_origin:#x}, LENGTH = 256M\n"
                          f"         SRAM (rwx) : ORIGIN = {b.sram_origin:#x}, LENGTH = 256M }}\n"
                          f"INCLUDE sections.ld\n")
        probe = Path(tmp) / output.name
        subprocess.run(_link_command(lld, str(script), objects, probe, stack_bytes, None), capture_output=True,
                       check=True)
        usage = memory_usage(probe, target)
    parts = []
    flash_used = usage.flash_bytes - usage.sections[".vectors"] + FLASH_RESERVED_BYTES
    for region, capacity, names, used in (("Flash", usage.flash_limit_bytes, FLASH_SECTIONS, flash_used),
                                          ("SRAM", usage.sram_limit_bytes, SRAM_SECTIONS, usage.sram_bytes)):
        if used > capacity:
            largest = sorted(((usage.sections[n], n) for n in names if usage.sections[n]), reverse=True)[:3]
            detail = ", ".join(f"{name} {size}" for size, name in largest)
            reserved = f", {FLASH_RESERVED_BYTES // 1024} KB of it for the vector table and the checkpoint slots" \
                if region == "Flash" else ""
            parts.append(f"{region} needs {used} bytes of {capacity} ({used - capacity} too many{reserved}; "
                         f"largest: {detail})")
    if not parts:
        parts.append("the sections do not fit with their alignment padding")
    return FirmwareTooLargeError(f"{output.name} does not fit {board(target).chip}: " + "; ".join(parts))


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
    linker_script: Path | str | None = None,
    sanitize: str | None = None,
) -> BuildResult:
    """Compile `sources` (the model's C, or a test program) with this folder's runtime and link.

    `harness=False` leaves out harness.c (the sources then provide `main`). `defines` are NAME or
    NAME=VALUE. `stack_bytes` sizes the application stack of target builds (default 16 KB, a
    multiple of 8, at least 1 KB). `sanitize` (host only), e.g. "address,undefined": compiled and
    linked with those clang sanitizers, every finding fatal (a nonzero exit, the report on stderr).
    Target builds are linked by ld.lld with the board's linker script, writing a map file next to
    the ELF, and their section sizes are read back into `BuildResult.memory`. Host builds are
    linked by clang. The runtime's and the kernels' objects come from the object cache when an
    identical compile made them before (`object_cache_key`).
    `linker_script` replaces the board's (it may INCLUDE sections.ld): e.g. a measurement build for QEMU
    whose regions are the emulated board's full memories rather than the STM32F746's.
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
    key_flags = [*compile_flags(target), *(f"-D{d}" for d in defines), *extra_cflags, *sanitizers]
    cflags = [*compile_flags(target), *(f"-I{d}" for d in include_dirs), *(f"-D{d}" for d in defines),
              *extra_cflags, *sanitizers]
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qtrain-build-") as tmp:
        objects = [Path(tmp) / f"{i}_{s.stem}.o" for i, s in enumerate(all_sources)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            jobs = [pool.submit(_compile, clang, cflags, key_flags, s, o)
                    for s, o in zip(all_sources, objects, strict=True)]
            try:
                for job in jobs:
                    job.result()
            except BaseException:
                # No new clang once one failed or Ctrl-C came: the folder they would read is going away.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if target == "host":
            _run([clang, *sanitizers, *(str(o) for o in objects), "-lm", "-o", str(output)], f"linking {output.name}")
            return BuildResult(output, target, None)
        script = str(linker_script) if linker_script is not None else LINKER_SCRIPTS[target]
        command = _link_command(lld, script, objects, output, stack, output.with_suffix(".map"))
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            if _OVERFLOW.search(result.stderr):
                raise _too_large(lld, target, objects, output, stack)
            messages = "\n".join(dict.fromkeys(result.stderr.strip().splitlines()))  # lld repeats some
            raise BuildError(f"ld.lld failed linking {output.name}:\n{messages}")
    return BuildResult(output, target, memory_usage(output, target))


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------

class NotEmulatedError(UserError):
    """A firmware for real hardware (or of an unknown target) was given to QEMU."""


def qemu_board(firmware: Path | str) -> Board:
    """The emulated board a firmware was built for; NotEmulatedError for one QEMU cannot run."""
    target = firmware_target(firmware)
    if target is None:
        raise NotEmulatedError(f"{firmware} was not built for a QEMU target (build it with --target "
                               f"{' or '.join(QEMU_TARGETS)})")
    b = BOARDS[target]
    if not b.emulated:
        raise NotEmulatedError(f"{firmware} is a {target} build, which runs on the hardware, not on QEMU (build it "
                               f"with --target {' or '.join(QEMU_TARGETS)})")
    return b


def qemu_command(firmware: Path | str, args: Sequence[str] = ()) -> list[str]:
    """The QEMU command line that runs `firmware` with semihosting on the machine of the target it was
    built for (`firmware_target`); `args` become its command line (SYS_GET_CMDLINE gives
    "firmware ARG..."; the words must not contain commas or spaces, and the whole line must fit
    harness.c's 255 characters: pass relative paths and set the working directory)."""
    machine = qemu_board(firmware).qemu_machine
    qemu = find_tool("qemu-system-arm")
    for arg in args:
        if "," in arg or " " in arg:
            raise ValueError(f"semihosting argument must not contain commas or spaces: {arg!r}")
    if len(" ".join(["firmware", *args])) > 255:
        raise ValueError("semihosting command line longer than the harness's 255-character buffer")
    semihosting = ",".join(["enable=on", "target=native", "arg=firmware", *(f"arg={a}" for a in args)])
    return [qemu, *machine, *QEMU_COMMON_ARGS, "-semihosting-config", semihosting, "-kernel", str(firmware)]


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
