#!/usr/bin/env bash
# Makes this checkout runnable on a fresh machine, then execs "$@" inside the project's venv.
#   1. System tools: clang, ld.lld, llvm tools and qemu-system-arm. Installed with apt-get when missing
#      and we are root; otherwise a clear message lists the Debian packages to install.
#   2. Python: a venv in .venv with `pip install -e .[test]`, redone whenever pyproject.toml changes.
# Used by tools/run-tests.sh (the README's test command) and tools/run-demo.sh (the main job).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

need_pkgs=()
command -v clang >/dev/null 2>&1 || need_pkgs+=(clang)
command -v ld.lld >/dev/null 2>&1 || need_pkgs+=(lld)
command -v llvm-size >/dev/null 2>&1 || need_pkgs+=(llvm)
command -v qemu-system-arm >/dev/null 2>&1 || need_pkgs+=(qemu-system-arm)
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "qtrain: installing ${need_pkgs[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "qtrain: missing system packages: ${need_pkgs[*]}" >&2
    echo "qtrain: install them with: sudo apt-get install ${need_pkgs[*]}" >&2
    exit 2
  fi
fi

python="${PYTHON:-python3}"
venv="$root/.venv"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "qtrain: creating $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.qtrain-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "qtrain: installing Python dependencies into $venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
exec "$@"
