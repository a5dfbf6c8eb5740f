# Sourced by scripts/serve and scripts/test: creates .venv/ in the repo root from nothing, installs the project
# (CPU onnxruntime unless STREAMER_EXTRAS says otherwise) and fetches + verifies the CenterFace weights.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
EXTRAS="${STREAMER_EXTRAS:-cpu,dev}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv/ ..." >&2
  if ! "$PYTHON" -m venv .venv; then
    rm -rf .venv
    echo "error: '$PYTHON -m venv' failed; on Debian/Ubuntu install it with: sudo apt-get install python3-venv" >&2
    exit 1
  fi
fi
# Reinstall only when the dependencies, their locked versions or the chosen extras change.
STAMP=".venv/.installed-$(cat pyproject.toml requirements/cpu.lock | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -f "$STAMP" ]; then
  echo "installing the project into .venv/ (extras: $EXTRAS) ..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
  # The lock (scripts/lock.py) as constraints: every install gets the exact versions that were tested and audited.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c requirements/cpu.lock -e ".[$EXTRAS]"
  rm -f .venv/.installed-*
  touch "$STAMP"
fi
# The int8 model too: the CPU default (--precision auto), built once from the verified weights.
.venv/bin/python -m models.fetch --precision int8 >/dev/null
export PATH="$ROOT/.venv/bin:$PATH"
