#!/usr/bin/env bash
# Create (idempotently) bench/.venv-deface: the deface 1.5.0 CLI and its dependencies, all pinned, kept apart
# from the project's own venv. Only PyPI is needed. Usage: bash bench/deface_env.sh [--force]
#   PYTHON=python3.11 picks the interpreter (default: python3.11, else python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-deface"
req="$here/deface-requirements.txt"
deface_pin="deface==1.5.0"

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

if [[ "${1:-}" == "--force" ]]; then
  rm -rf "$venv"
elif [[ $# -gt 0 ]]; then
  echo "usage: bash bench/deface_env.sh [--force]" >&2
  exit 2
fi

stamp="$venv/.bench-stamp"
want="$(sha256sum "$req" | cut -d' ' -f1) $deface_pin"

verify() {
  "$venv/bin/deface" --help >/dev/null &&
    "$venv/bin/deface" --version | grep -qx "${deface_pin#deface==}" &&
    "$venv/bin/python" -c 'import onnx, onnxruntime, deface.centerface, imageio_ffmpeg; imageio_ffmpeg.get_ffmpeg_exe()'
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && verify 2>/dev/null; then
  echo "deface env up to date: $venv ($("$venv/bin/deface" --version))"
  exit 0
fi

rm -f "$stamp"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating $venv with $("$python" --version 2>&1)"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)
"${pip[@]}" install -r "$req"
"${pip[@]}" install --no-deps "$deface_pin"

if ! verify; then
  echo "error: $venv was built but deface does not run; see the messages above" >&2
  exit 1
fi
echo "$want" >"$stamp"
echo "deface env ready: $venv ($("$venv/bin/deface" --version), $("$venv/bin/python" -c 'import onnxruntime as o; print("onnxruntime", o.__version__)'))"
