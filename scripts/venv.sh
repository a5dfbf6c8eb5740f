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
# Reinstall only when the dependencies or the chosen extras change.
STAMP=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${EXTRAS//,/_}"
if [ ! -f "$STAMP" ]; then
  echo "installing the project into .venv/ (extras: $EXTRAS) ..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==25.3"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$EXTRAS]"
  rm -f .venv/.installed-*
  touch "$STAMP"
fi
.venv/bin/python -m models.fetch >/dev/null
export PATH="$ROOT/.venv/bin:$PATH"
