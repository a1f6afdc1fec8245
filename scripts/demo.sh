#!/usr/bin/env bash
# The demo command: installs the pipeline into .venv on first use, then runs `sessionwatch demo`
# (embedded Tansu broker + a worker + simulated users with injected hijacks; no servers to
# install by hand). Extra arguments go to the demo, e.g. `bash scripts/demo.sh --users 500`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${SESSIONWATCH_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[pipeline,console]"
exec "$VENV/bin/sessionwatch" demo "$@"
