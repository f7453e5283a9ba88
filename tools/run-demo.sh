#!/usr/bin/env bash
# The README's main job: sets the machine up (tools/ensure-env.sh: clang, lld, qemu-system-arm, the
# Python venv), then runs qtrain-demo: pick a sparse-update scheme under an SRAM budget, compile the
# model for the Cortex-M7, fine-tune it on the emulated device and report accuracy, memory and speed.
# Arguments go to qtrain-demo (see `bash tools/run-demo.sh --help`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/tools/ensure-env.sh" qtrain-demo "$@"
