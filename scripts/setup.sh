#!/usr/bin/env bash
# Set up facecluster in ./.venv on a fresh machine. `--dev` adds the test dependencies and the
# test-only reference implementation (facenet-pytorch, installed without its pinned dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# The CPU build of torch first: a looser spec would pull the CUDA build (gigabytes).
python -m pip install -q torch==2.13.0
if [ "${1:-}" = "--dev" ]; then
    python -m pip install -q -e '.[dev]'
    python -m pip install -q --no-deps facenet-pytorch==2.6.0
else
    python -m pip install -q -e .
fi
