# Face Streamer: live face anonymization service.
#   GPU (default target): docker build -t face-streamer:gpu .
#   CPU:                  docker build --target cpu -t face-streamer:cpu .
# The GPU image carries onnxruntime-gpu with its CUDA and cuDNN libraries from PyPI, so the host needs only the
# NVIDIA driver and the NVIDIA container toolkit.

FROM python:3.11.11-slim-bookworm AS common
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin streamer
COPY pyproject.toml README.md ./
COPY scripts/install-image.sh scripts/
COPY requirements requirements
COPY models models
COPY streamer streamer
COPY web web
# Readiness: the model loaded and its provider known. The start period covers start-up, the warm-up inference
# and, on a GPU, CUDA/cuDNN initialisation.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9002/healthz', timeout=4).status != 200)"]
EXPOSE 9002
ENTRYPOINT ["python", "-m", "streamer"]

FROM common AS cpu
RUN sh scripts/install-image.sh cpu
USER 10001
CMD ["serve", "--host", "0.0.0.0", "--port", "9002", "--device", "cpu"]

FROM common AS gpu
RUN sh scripts/install-image.sh gpu
USER 10001
# --require-gpu: the service refuses to start unless its warm-up inference really ran on CUDA.
CMD ["serve", "--host", "0.0.0.0", "--port", "9002", "--device", "cuda", "--require-gpu"]
