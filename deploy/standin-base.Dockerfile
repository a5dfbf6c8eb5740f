# A stand-in for the Dockerfile's base image (python:3.11.11-slim-bookworm) where no image registry can be reached,
# as in CI: Debian bookworm's own Python 3.11 on a debootstrap root filesystem that scripts/images imports as
# face-streamer/debootstrap:bookworm. Like the python:*-slim images it lets pip install into the system Python
# (no EXTERNALLY-MANAGED marker). For testing, not for production: build those on the real base.
# The build machine's CA bundle is given to pip only (PIP_CERT: outbound TLS there may be re-signed by a local
# authority that only that bundle trusts); Python's own TLS in the running service keeps Debian's trust store.
FROM face-streamer/debootstrap:bookworm
# Unpinned on purpose: the same bookworm packages debootstrap just installed the rest from.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* /usr/lib/python3*/EXTERNALLY-MANAGED
COPY build-ca.crt /usr/local/share/build-ca/build-ca.crt
ENV PIP_CERT=/usr/local/share/build-ca/build-ca.crt
