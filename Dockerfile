# Face Streamer: live face anonymization service.
#   GPU (default target): docker build -t face-streamer:gpu .
#   CPU:                  docker build --target cpu -t face-streamer:cpu .
# The GPU image carries onnxruntime-gpu with its CUDA and cuDNN libraries from PyPI, so the host needs only the
# NVIDIA driver and the NVIDIA container toolkit. Where the base image cannot be pulled, build with
# --build-arg BASE_IMAGE=... (scripts/images builds a stand-in from Debian's packages).
# Layers go from what changes least to what changes most: an edit under streamer/ or web/ rebuilds only the last
# two COPY layers; one under models/ also fetches and checks the weights again (and rebuilds the int8 model).
# The weights and the int8 model are built as root into $STREAMER_CACHE, a folder of the image that the service's
# user only reads; web/ goes where a wheel installs it, streamer/web (the package streamer.web).
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

FROM ${BASE_IMAGE} AS common
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    STREAMER_PORT=9002 \
    STREAMER_CACHE=/app/weights
WORKDIR /app
# uid and gid 10001, both fixed: a token file mounted as a secret is made readable to that group on the host.
RUN groupadd --system --gid 10001 streamer \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin streamer
# Readiness: the model loaded and its provider known, on $STREAMER_PORT (http or https). The start period covers
# start-up, the warm-up inference and, on a GPU, CUDA/cuDNN initialisation.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-m", "streamer.healthcheck"]
EXPOSE 9002
ENTRYPOINT ["python", "-m", "streamer"]

# The dependency lists alone: the install layers below are rebuilt only when these lists change, not on every
# edit of pyproject.toml.
FROM common AS requirements
COPY pyproject.toml scripts/install-image.sh ./
RUN sh install-image.sh requirements cpu > cpu.txt && sh install-image.sh requirements gpu > gpu.txt

FROM common AS cpu
COPY scripts/install-image.sh scripts/
COPY requirements requirements
COPY --from=requirements /app/cpu.txt requirements/image.txt
RUN sh scripts/install-image.sh deps requirements/image.txt
COPY models models
RUN sh scripts/install-image.sh weights cpu
COPY streamer streamer
COPY web streamer/web
USER 10001:10001
CMD ["serve", "--host", "0.0.0.0", "--device", "cpu"]

FROM common AS gpu
COPY scripts/install-image.sh scripts/
COPY requirements requirements
COPY --from=requirements /app/gpu.txt requirements/image.txt
RUN sh scripts/install-image.sh deps requirements/image.txt
COPY models models
RUN sh scripts/install-image.sh weights gpu
COPY streamer streamer
COPY web streamer/web
USER 10001:10001
# --require-gpu: the service refuses to start unless its warm-up inference really ran on CUDA.
CMD ["serve", "--host", "0.0.0.0", "--device", "cuda", "--require-gpu"]
