"""Cortex-M7 (ARMv7E-M) targets: C runtime, startup, linker scripts, and the build helpers in `build`."""
