"""targets/armv7em/build.py: tool lookup, flags, the board table, linking against each board's sizes, ELF
reading."""

from __future__ import annotations

import platform
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest
from armv7em_testing import FIRMWARE_SOURCES, needs_arm_link, needs_clang

from qtrain.targets.armv7em import build


@pytest.mark.parametrize(("tool", "package"), [("clang", "clang"), ("ld.lld", "lld"),
                                               ("qemu-system-arm", "qemu-system-arm")])
def test_missing_tool_names_the_tool_and_its_package(monkeypatch: pytest.MonkeyPatch, tool: str,
                                                      package: str) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(build.ToolNotFoundError) as error:
        build.find_tool(tool)
    message = str(error.value)
    assert f"{tool} not found on PATH" in message
    assert f"Debian package '{package}'" in message
    assert "\n" not in message


def test_build_without_clang_fails_before_doing_anything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(build.ToolNotFoundError, match="clang not found on PATH; install the Debian package 'clang'"):
        build.build_firmware([FIRMWARE_SOURCES / "stub_model.c"], tmp_path / "firmware.elf")
    assert not (tmp_path / "firmware.elf").exists()


def test_compile_flags() -> None:
    for target in ("qemu", "stm32f746", "host"):
        flags = build.compile_flags(target)
        for flag in ("-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off"):
            assert flag in flags
    arm = build.compile_flags("qemu")
    for flag in ("--target=thumbv7em-none-eabihf", "-mcpu=cortex-m7", "-mfpu=fpv5-sp-d16", "-mfloat-abi=hard",
                 "-ffreestanding", "-DQTRAIN_BOARD_MPS2_AN500"):
        assert flag in arm
    assert "-DQTRAIN_BOARD_STM32F746" in build.compile_flags("stm32f746")
    for target, cpu in (("qemu-m4", "cortex-m4"), ("nucleo-f446re", "cortex-m4"), ("qemu-m33", "cortex-m33")):
        flags = build.compile_flags(target)
        assert f"-mcpu={cpu}" in flags and "-mfloat-abi=hard" in flags and "-ffreestanding" in flags
        assert f"-D{build.BOARDS[target].define}" in flags and f'-DQTRAIN_TARGET_NAME="{target}"' in flags
    assert "--target=thumbv8m.main-none-eabihf" in build.compile_flags("qemu-m33")
    assert "-mfpu=fpv4-sp-d16" in build.compile_flags("qemu-m4")
    host = build.compile_flags("host")
    assert "-DQTRAIN_HOST" in host and "-ffreestanding" not in host
    # The host build uses the build machine's instruction set (hardware FMA), and never lets clang fuse or
    # reassociate what the C does not (host = interpreter = QEMU, bit for bit).
    assert all(f in host for f in build.HOST_CPU_FLAGS) and "-ffp-contract=off" in host
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert "-march=native" in host
    with pytest.raises(ValueError, match="unknown target 'riscv'"):
        build.compile_flags("riscv")  # type: ignore[arg-type]


@needs_clang
@pytest.mark.parametrize("target", [t for t in build.TARGETS if t != "host"])
def test_every_arm_target_compiles_the_kernels_dsp_path(target: str, tmp_path: Path) -> None:
    """The kernels take their SIMD path on every board (Cortex-M4F, M7 and M33 all have the DSP
    extension): QTRAIN_USE_DSP defaults to 1. The inline assembly (which requantizes with FPv5's
    VMAXNM / VMINNM) is on where the FPU is FPv5, and off on the M4F's FPv4 (which cannot assemble it)."""
    asm = int(any(f.startswith("-mfpu=fpv5") for f in build.compile_flags(target)))
    probe = tmp_path / "dsp.c"
    probe.write_text('#include "qtrain_kernels_support.h"\n'
                     f'_Static_assert(QTRAIN_USE_DSP == 1 && QTRAIN_DSP_ASM == {asm}, "the DSP path is off");\n')
    subprocess.run([build.find_tool("clang"), *build.compile_flags(target), "-c", str(probe), "-o",
                    str(tmp_path / "dsp.o")], check=True, capture_output=True)


@pytest.mark.parametrize("target", list(build.BOARDS))
def test_linker_scripts_match_the_board_table(target: str) -> None:
    """Each board's linker script declares the Flash and SRAM the table (and so the budgets and the
    overflow messages) uses."""
    board = build.BOARDS[target]
    text = (build.TARGET_DIR / board.linker_script).read_text()
    regions = {name: (int(origin, 16), int(length) * 1024) for name, origin, length in
               re.findall(r"^\s*(FLASH|SRAM)\s*\(\w+\)\s*:\s*ORIGIN = (0x[0-9A-Fa-f]+), LENGTH = (\d+)K", text,
                          re.MULTILINE)}
    assert regions == {"FLASH": (board.flash_origin, board.flash_bytes), "SRAM": (board.sram_origin, board.sram_bytes)}
    assert "INCLUDE sections.ld" in text
    assert board.budget_kb * 1024 <= board.sram_bytes - build.DEFAULT_STACK_BYTES - build.HANDLER_STACK_BYTES
    assert build.default_budget_kb(target) == board.budget_kb
    assert board.emulated == (target in build.QEMU_TARGETS) == bool(board.instructions_per_tick)


def test_bad_stack_size_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 8 and at least 1024"):
        build.build_firmware([FIRMWARE_SOURCES / "stub_model.c"], tmp_path / "f.elf", stack_bytes=1000)


@needs_arm_link
def test_sram_overflow_fails_to_link_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(build.FirmwareTooLargeError) as error:
        build.build_firmware([FIRMWARE_SOURCES / "oversized.c"], tmp_path / "big.elf", harness=False,
                             defines=["ARENA=400000", "WEIGHTS=4"])
    message = str(error.value)
    assert message.startswith("big.elf does not fit the STM32F746: SRAM needs ")
    assert "of 327680" in message and ".qtrain.arena 400000" in message and ".stack 16384" in message
    assert "Flash" not in message and "\n" not in message
    assert not (tmp_path / "big.elf").exists()


@needs_arm_link
@pytest.mark.parametrize("target", list(build.BOARDS))
def test_flash_overflow_fails_to_link(tmp_path: Path, target: build.Target) -> None:
    board = build.BOARDS[target]
    weights = board.flash_bytes - build.FLASH_RESERVED_BYTES + 50000
    with pytest.raises(build.FirmwareTooLargeError, match=rf"^big\.elf does not fit {re.escape(board.chip)}: Flash "
                                                          rf"needs \d+ bytes of {board.flash_bytes} \(\d+ too many, "
                                                          rf"256 KB of it for the vector table and the checkpoint "
                                                          rf"slots; largest: \.qtrain\.weights {weights}"):
        build.build_firmware([FIRMWARE_SOURCES / "oversized.c"], tmp_path / "big.elf", target, harness=False,
                             defines=["ARENA=4", f"WEIGHTS={weights}"])


@needs_arm_link
@pytest.mark.parametrize("target", ["qemu-m4", "qemu-m33", "nucleo-f446re"])
def test_sram_overflow_names_the_board_and_its_size(tmp_path: Path, target: build.Target) -> None:
    board = build.BOARDS[target]
    with pytest.raises(build.FirmwareTooLargeError, match=rf"^big\.elf does not fit {re.escape(board.chip)}: SRAM "
                                                          rf"needs \d+ bytes of {board.sram_bytes} "):
        build.build_firmware([FIRMWARE_SOURCES / "oversized.c"], tmp_path / "big.elf", target, harness=False,
                             defines=[f"ARENA={board.sram_bytes}", "WEIGHTS=4"])


@needs_arm_link
def test_a_firmware_that_just_fits_links(tmp_path: Path) -> None:
    """300 KB arena + 16 KB stack + the runtime: under 320 KB, so it links, and the report adds up; 760 KB
    of weights fit the 768 KB above the checkpoint slots."""
    result = build.build_firmware([FIRMWARE_SOURCES / "oversized.c"], tmp_path / "fits.elf", harness=False,
                                  defines=["ARENA=307200", "WEIGHTS=778240"])
    memory = result.memory
    assert memory is not None
    assert memory.arena_bytes == 307200 and memory.weights_bytes == 778240 and memory.stack_bytes == 16384
    assert 307200 + 16384 < memory.sram_bytes <= build.SRAM_BYTES
    assert 778240 < memory.flash_bytes <= build.FLASH_BYTES - build.FLASH_RESERVED_BYTES + memory.sections[".vectors"]
    assert memory.sram_bytes == sum(memory.sections[name] for name in build.SRAM_SECTIONS)
    assert "SRAM" in memory.describe() and "Flash" in memory.describe()


@needs_arm_link
def test_stub_firmware_sections_and_vector_table(stub_qemu: build.BuildResult, tmp_path: Path) -> None:
    memory = stub_qemu.memory
    assert memory is not None
    assert memory.arena_bytes == 48  # stub_model.c's arena
    assert memory.trainable_bytes >= 5 * 32 + 2 * 5 * 4
    assert memory.sections[".handler_stack"] == 1024
    sections = {s.name: s for s in build.elf_sections(stub_qemu.path)}
    # QEMU's mps2-an500: code at 0 (VTOR resets to 0), data in the SSRAM at 0x20000000, stack first.
    assert sections[".vectors"].address == 0 and sections[".vectors"].size == 4 * (16 + 32)
    assert sections[".stack"].address == 0x20000000
    assert build.elf_machine(stub_qemu.path) == build.EM_ARM

    stm32 = build.build_firmware([FIRMWARE_SOURCES / "stub_model.c"], tmp_path / "stm32.elf", "stm32f746")
    sections = {s.name: s for s in build.elf_sections(stm32.path)}
    vectors = sections[".vectors"]
    assert vectors.address == 0x08000000 and vectors.size == 4 * (16 + 98)
    raw = stm32.path.read_bytes()[vectors.offset:vectors.offset + 8]
    initial_sp, reset = struct.unpack("<II", raw)
    handler_stack = sections[".handler_stack"]
    assert initial_sp == handler_stack.address + handler_stack.size  # MSP: top of the handler stack
    assert reset & 1 and sections[".text"].address <= reset - 1 < sections[".text"].address + sections[".text"].size


IRQS = {"qemu": 32, "qemu-m4": 32, "qemu-m33": 124, "stm32f746": 98, "nucleo-f446re": 97}
"""Interrupt vectors per board (startup_armv7em.c's QTRAIN_NUM_IRQ, from each board's manual or QEMU model)."""


@needs_arm_link
@pytest.mark.parametrize("target", list(build.BOARDS))
def test_each_board_boots_from_its_flash_with_its_vector_table(target: str, stub_on) -> None:  # noqa: ANN001
    board = build.BOARDS[target]
    elf = stub_on(target).path
    sections = {s.name: s for s in build.elf_sections(elf)}
    vectors = sections[".vectors"]
    assert vectors.address == board.flash_origin and vectors.size == 4 * (16 + IRQS[target])
    assert sections[".stack"].address == board.sram_origin  # the stack first, its guard at the bottom of SRAM
    initial_sp, reset = struct.unpack("<II", elf.read_bytes()[vectors.offset:vectors.offset + 8])
    handler_stack = sections[".handler_stack"]
    assert initial_sp == handler_stack.address + handler_stack.size
    assert reset & 1 and sections[".text"].address <= reset - 1 < sections[".text"].address + sections[".text"].size
    assert build.firmware_target(elf) == target
    assert ".qtrain.target" not in build.memory_usage(elf).sections  # it takes no memory on the device
    assert build.memory_usage(elf).sram_limit_bytes == board.sram_bytes


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_host_sources_are_warning_free_with_gcc(tmp_path: Path) -> None:
    sources = [*build.runtime_sources("host"), FIRMWARE_SOURCES / "stub_model.c"]
    for source in sources:
        subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-ffp-contract=off", "-DQTRAIN_HOST",
                        f"-I{build.TARGET_DIR}", "-c", str(source), "-o", str(tmp_path / f"{source.stem}.o")],
                       check=True, capture_output=True)


@needs_clang
def test_compile_error_is_reported_with_the_diagnostic(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text("int main(void) { return undeclared; }\n")
    with pytest.raises(build.BuildError, match=r"clang \(bad\.c\) failed:\n.*undeclared"):
        build.build_firmware([bad], tmp_path / "bad", "host", harness=False)


@needs_arm_link
def test_the_object_cache_gives_the_same_firmware(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build from cached runtime and kernel objects links the same code as one compiled from scratch."""
    monkeypatch.setenv(build.OBJECT_CACHE_ENV, str(tmp_path / "cache"))
    sources = [FIRMWARE_SOURCES / "stub_model.c", *build.kernel_sources()]
    first = build.build_firmware(sources, tmp_path / "a" / "f.elf", "qemu-m33")
    cached = sorted((tmp_path / "cache").glob("*.o"))
    assert len(cached) == len(build.kernel_sources()) + len(build.runtime_sources("qemu-m33"))  # not the test's C
    second = build.build_firmware(sources, tmp_path / "b" / "f.elf", "qemu-m33")
    monkeypatch.setenv(build.OBJECT_CACHE_ENV, "off")
    fresh = build.build_firmware(sources, tmp_path / "c" / "f.elf", "qemu-m33")
    assert sorted((tmp_path / "cache").glob("*.o")) == cached
    for section in (".text", ".rodata", ".vectors"):
        texts = {build.elf_section_bytes(r.path, section) for r in (first, second, fresh)}
        assert len(texts) == 1, section


def test_builds_into_different_folders_share_the_object_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qtrain-compile maps each build's temporary folder in the debug info (-ffile-prefix-map, a new name
    every time): that must not make the runtime's and the kernels' objects cache misses."""
    monkeypatch.setenv(build.OBJECT_CACHE_ENV, str(tmp_path / "cache"))
    sources = [FIRMWARE_SOURCES / "stub_model.c", *build.kernel_sources()]
    for name in ("a", "b"):
        build.build_firmware(sources, tmp_path / name / "f.elf", "qemu-m33",
                             extra_cflags=[f"-ffile-prefix-map={tmp_path / ('.tmp-' + name)}={tmp_path / name}"])
        cached = sorted((tmp_path / "cache").glob("*.o"))
        assert len(cached) == len(build.kernel_sources()) + len(build.runtime_sources("qemu-m33")), name
    # a map of the folder a source lives in still keys that source
    kernel = build.kernel_sources()[0]
    flags = build.compile_flags("qemu")
    mapped = [*flags, f"-ffile-prefix-map={kernel.parent}=/src"]
    clang = shutil.which("clang") or "clang"
    assert build.object_cache_key(clang, build._flags_affecting(mapped, kernel), kernel) != \
        build.object_cache_key(clang, flags, kernel)


def test_the_object_cache_key_covers_flags_sources_and_headers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clang = shutil.which("clang") or "clang"
    kernel = build.kernel_sources()[0]
    flags = build.compile_flags("qemu")
    key = build.object_cache_key(clang, flags, kernel)
    assert key is not None and key == build.object_cache_key(clang, list(flags), kernel)
    assert build.object_cache_key(clang, [*flags, "-DX=1"], kernel) != key
    assert build.object_cache_key(clang, build.compile_flags("qemu-m4"), kernel) != key
    assert build.object_cache_key(clang, flags, FIRMWARE_SOURCES / "stub_model.c") is None  # not ours: not cached
    # a changed header (in a copy of the folders) changes the key of every source
    copy = tmp_path / "armv7em"
    shutil.copytree(build.TARGET_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(build, "TARGET_DIR", copy)
    monkeypatch.setattr(build, "KERNEL_DIR", copy / "kernels")
    copied = copy / "kernels" / kernel.name
    assert build.object_cache_key(clang, flags, copied) == key
    header = copy / "kernels" / "qtrain_kernels.h"
    header.write_text(header.read_text() + "\n/* changed */\n")
    assert build.object_cache_key(clang, flags, copied) != key


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_tool_killed_by_ctrl_c_is_an_interrupt_not_a_failed_build(signum: int) -> None:
    """Ctrl-C reaches clang too (same process group), often before our own handler runs: a child that died of
    SIGINT / SIGTERM must surface as KeyboardInterrupt (the tools exit 130), not as a BuildError (exit 2)."""
    with pytest.raises(KeyboardInterrupt):
        build._run(["sh", "-c", f"kill -{int(signum)} $$"], "clang (x.c)")
    with pytest.raises(build.BuildError, match="clang \\(x.c\\) failed"):
        build._run(["sh", "-c", "echo 1 error generated. >&2; exit 1"], "clang (x.c)")
