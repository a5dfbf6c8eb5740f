#!/usr/bin/env bash
# Makes .venv-triton/: a real NVIDIA Triton Inference Server for the tests and benches (testkit/triton.py). The
# `tritonserver` binary comes inside the nvidia-pytriton wheel, whose Python-backend stub embeds the libpython of
# Debian's own Python 3.11: under any other 3.11 build it fails at model load (../shared/notes/conventions.md), so
# this venv is made from /usr/bin/python3, apart from the project's .venv. Versions: requirements/triton-server.lock.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SYSTEM_PYTHON=/usr/bin/python3
if [ ! -x "$SYSTEM_PYTHON" ]; then
  echo "error: $SYSTEM_PYTHON (Debian's Python 3.11) is needed to run the test Triton server" >&2
  exit 1
fi
STAMP=".venv-triton/.installed-$(sha256sum requirements/triton-server.lock | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  echo "installing the test Triton server into .venv-triton/ ..." >&2
  rm -rf .venv-triton
  "$SYSTEM_PYTHON" -m venv .venv-triton
  .venv-triton/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    -r requirements/triton-server.lock
  touch "$STAMP"
fi
