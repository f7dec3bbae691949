#!/usr/bin/env bash
# Make .venv with Python 3.10 (lava-nc 0.10 needs 3.10) and install spikeff with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."
find_python() {
  for c in "${SPIKEFF_PYTHON:-}" "$HOME/.pyenv/versions/3.10.13/bin/python3.10" \
           $(ls -d "$HOME"/.pyenv/versions/3.10.*/bin/python3.10 2>/dev/null) python3.10; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  return 1
}
PY=$(find_python) || { echo "setup: no working Python 3.10 found (set SPIKEFF_PYTHON=/path/to/python3.10)" >&2; exit 1; }
echo "setup: using $PY"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[lava,dev]"
echo "setup: done (.venv)"
