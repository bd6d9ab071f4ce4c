#!/usr/bin/env bash
# Print the path of a Python >= 3.12: python3.13, python3.12, python3, then pyenv's installs.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
root="${PYENV_ROOT:-$HOME/.pyenv}"
tried=()
for p in python3.13 python3.12 python3 "$root"/versions/3.13*/bin/python3 "$root"/versions/3.12*/bin/python3; do
  [ -e "$p" ] || command -v "$p" >/dev/null 2>&1 || continue
  if ok "$p"; then
    command -v "$p"
    exit 0
  fi
  tried+=("$p ($("$p" --version 2>&1 | head -n 1))")
done
echo "error: numpyro_fsdiff needs Python >= 3.12; found only: ${tried[*]:-no python at all}." >&2
echo "Install python3.12 or python3.13 (or set PYTHON=/path/to/python3.12) and retry." >&2
exit 1
