"""Target support files (C runtime, startup code, linker scripts) and build helpers."""
