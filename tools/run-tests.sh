#!/usr/bin/env bash
# The README's test command: sets the machine up (tools/ensure-env.sh), then runs every test:
# the lit/FileCheck suite (test/lit) and pytest (test/python). Extra arguments go to pytest.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$root/tools/ensure-env.sh" bash -c '
  cd "$0"
  echo "== lit (test/lit)"
  lit -sv test/lit; lit_status=$?
  echo "== pytest (test/python)"
  python -m pytest test/python "${@}"; py_status=$?
  if [[ $lit_status -ne 0 ]]; then echo "lit failed (status $lit_status)" >&2; exit 1; fi
  exit $py_status
' "$root" "$@"
