#!/usr/bin/env bash
# Start the web UI (default), run the tests, or refresh the dependency locks.
#   ./launch.sh [app.py flags]     creates .venv if missing, installs requirements.lock, serves on 127.0.0.1:7860
#   ./launch.sh --test [pytest args]   also installs requirements-test.lock, then runs pytest
#   ./launch.sh --lock [pip-compile args]   re-resolves the *.lock files from the requirements*.txt lists
#                                           (e.g. --upgrade, or --upgrade-package diffusers)
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=.venv

if [ "${1:-}" = "--lock" ]; then
  shift
  # pip-tools lives in its own throwaway venv, at a pinned version, so the app's venv stays exactly the lock.
  LOCK_VENV=.venv-lock
  if [ ! -x "$LOCK_VENV/bin/pip-compile" ]; then
    echo "Creating $LOCK_VENV with pip-tools"
    "$PYTHON" -m venv "$LOCK_VENV"
    "$LOCK_VENV/bin/python" -m pip install -q pip==26.3 pip-tools==7.7.0
  fi
  compile() {  # compile SOURCE OUTPUT [args]: hashes for every file, setuptools included, no index URLs recorded
    echo "Resolving $1 -> $2"
    "$LOCK_VENV/bin/pip-compile" --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
      --no-emit-find-links --output-file "$2" "$1" "${@:3}"
  }
  compile requirements.txt requirements.lock "$@"
  # The test and CUDA locks are constrained by requirements.lock, so the versions they share agree.
  compile requirements-test.txt requirements-test.lock "$@"
  compile requirements-cuda.txt requirements-cuda.lock "$@"
  echo "Locks refreshed. Review the diff (git diff *.lock), then run the whole suite: ./launch.sh --test"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating the virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check pip==26.3
fi

# sync LOCK...: make the venv hold exactly these locks (only when they changed since the last install).
# Packages an earlier lock installed and the new one drops are removed; packages installed by hand or by an
# extension's install.py are left alone.
sync() {
  local name=$1; shift
  local stamp="$VENV/.installed-$name" record="$VENV/.installed-$name.lock"
  local wanted
  wanted=$(cat "$@" | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  if [ -f "$record" ]; then
    echo "The $name dependency lock changed: bringing $VENV to it ($*)"
  else
    echo "Installing the $name dependencies from $*"
    if [ "$name" = app ]; then echo "(the first run downloads PyTorch and friends; this takes a while)"; fi
  fi
  # Every line of a lock carries hashes, so pip installs exactly those files and refuses anything unlisted.
  local args=()
  for lock in "$@"; do args+=(-r "$lock"); done
  if [ -f "$record" ]; then args+=(--quiet); fi  # an upgrade: only what changes is worth reading
  # (`|| return 1` throughout: `set -e` does not reach into a function called as `sync ... || echo ...`, and the
  # stamp must be written only after everything worked.)
  "$VENV/bin/python" -m pip install --disable-pip-version-check --require-hashes "${args[@]}" || return 1
  if [ -f "$record" ]; then
    "$VENV/bin/python" - "$record" "$@" <<'PY' || return 1
import re, subprocess, sys
from importlib import metadata

def names(path):
    with open(path) as f:
        return {re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0].lower().replace("_", "-")
                for line in f if line[:1].isalnum()}

old, new = names(sys.argv[1]), set().union(*(names(p) for p in sys.argv[2:]))
installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
dropped = sorted((old - new) & installed)
if dropped:
    print("Removing what the new lock no longer lists:", " ".join(dropped))
    subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *dropped])
PY
  fi
  cat "$@" > "$record" || return 1
  echo "$wanted" > "$stamp"
}

sync app requirements.lock
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  # xformers is optional and CUDA-only; without it PyTorch SDPA is used.
  sync cuda requirements.lock requirements-cuda.lock || echo "xformers not installed; using PyTorch SDPA"
fi

if [ "${1:-}" = "--test" ]; then
  shift
  sync test requirements.lock requirements-test.lock
  exec "$VENV/bin/python" -m pytest "$@"
fi
exec "$VENV/bin/python" app.py "$@"
