#!/usr/bin/env bash
# The README's test command: sets the machine up (tools/ensure-env.sh), then runs every test:
# the lit/FileCheck suite (test/lit), pytest (test/python) and `ruff check .` (the Python style rules of
# pyproject.toml). Each runs even when an earlier one failed; the command fails if any did, naming it.
# pytest runs on two worker processes (pytest-xdist, -n 2: the CI machine has 2 cores and most tests wait on
# clang or QEMU subprocesses). Extra arguments go to pytest (`-n 0` runs it in one process).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/tools/ensure-env.sh" bash -c '
  cd "$0"
  echo "== lit (test/lit)"
  lit -sv test/lit; lit_status=$?
  echo "== pytest (test/python)"
  python -m pytest -n 2 test/python "${@}"; py_status=$?
  echo "== ruff check ."
  ruff check .; ruff_status=$?
  if [[ $lit_status -ne 0 ]]; then echo "lit failed (status $lit_status)" >&2; fi
  if [[ $py_status -ne 0 ]]; then echo "pytest failed (status $py_status)" >&2; fi
  if [[ $ruff_status -ne 0 ]]; then
    echo "ruff check failed (status $ruff_status): fix the findings above (ruff check --fix . fixes some)" >&2
  fi
  if [[ $lit_status -ne 0 || $ruff_status -ne 0 ]]; then exit 1; fi
  exit $py_status
' "$root" "$@"
