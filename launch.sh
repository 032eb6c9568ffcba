#!/usr/bin/env bash
# Start the web UI (default), or run the tests with --test.
#   ./launch.sh [app.py flags]     creates .venv if missing, installs the requirements, serves on 127.0.0.1:7860
#   ./launch.sh --test [pytest args]
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.installed"
wanted=$(cat requirements.txt constraints.txt requirements-test.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing requirements (first run downloads PyTorch and friends; this takes a while)"
  "$VENV/bin/python" -m pip install --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -r requirements.txt -c constraints.txt
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    # xformers is optional and CUDA-only; a build matching our torch may not exist, which is fine (SDPA is used).
    "$VENV/bin/python" -m pip install xformers -c constraints.txt || echo "xformers not installed; using PyTorch SDPA"
  fi
  if [ "${1:-}" = "--test" ]; then
    "$VENV/bin/python" -m pip install -r requirements-test.txt -c constraints.txt
  fi
  echo "$wanted" > "$stamp"
elif [ "${1:-}" = "--test" ] && ! "$VENV/bin/python" -c "import pytest" 2>/dev/null; then
  "$VENV/bin/python" -m pip install -r requirements-test.txt -c constraints.txt
fi

if [ "${1:-}" = "--test" ]; then
  shift
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" app.py "$@"
