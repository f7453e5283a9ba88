"""targets/armv7em/build.py: tool lookup, flags, linking against the STM32F746's sizes, ELF reading."""

from __future__ import annotations

import shutil
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
    host = build.compile_flags("host")
    assert "-DQTRAIN_HOST" in host and "-ffreestanding" not in host
    with pytest.raises(ValueError, match="unknown target 'riscv'"):
        build.compile_flags("riscv")  # type: ignore[arg-type]


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
@pytest.mark.parametrize("target", ["qemu", "stm32f746"])
def test_flash_overflow_fails_to_link(tmp_path: Path, target: build.Target) -> None:
    with pytest.raises(build.FirmwareTooLargeError, match=r"Flash needs \d+ bytes of 1048576 \(\d+ too many, "
                                                          r"256 KB of it for the vector table and the checkpoint "
                                                          r"slots; largest: \.qtrain\.weights 800000"):
        build.build_firmware([FIRMWARE_SOURCES / "oversized.c"], tmp_path / "big.elf", target, harness=False,
                             defines=["ARENA=4", "WEIGHTS=800000"])


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
