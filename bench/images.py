"""``python -m bench.images``: the Docker images' sizes, layer by layer, and what the largest part of each is.

Reads the images ``scripts/images build`` made (face-streamer:cpu, face-streamer:gpu) from the local engine; the
results go to bench/out/images.json (``--json``), ``python -m bench.render`` makes the tables. Nothing is built here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ._common import json_option, write_results

DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
IMAGES = ("face-streamer:cpu", "face-streamer:gpu")
# Debian's Python (the stand-in base) installs into dist-packages, python:*-slim into site-packages.
SITE = "/usr/local/lib/python3.11/*-packages"


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True, timeout=600).stdout


def layers(image: str) -> list[tuple[int, str]]:
    """(bytes, instruction) from the oldest layer to the newest, for layers of 1 MB or more."""
    out = docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", image)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    found = []
    for row in reversed(rows):
        size = int(row["Size"])
        if size >= 1_000_000:
            text = " ".join(str(row["CreatedBy"]).replace("/bin/sh -c ", "").split())
            found.append((size, text[:90] or "(base image root filesystem)"))
    return found


def largest_packages(image: str, count: int = 5) -> list[tuple[int, str]]:
    script = f"du -sk {SITE}/* 2>/dev/null | sort -rn | head -{count}"
    out = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script)
    return [(int(size) * 1024, Path(path).name) for size, path in (line.split("\t") for line in out.splitlines())]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m bench.images", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for python -m bench; changes nothing")
    json_option(parser, "images")
    args = parser.parse_args(argv)
    present = [i for i in IMAGES if subprocess.run([DOCKER, "image", "inspect", i], capture_output=True,
                                                   check=False).returncode == 0]
    if not present:
        print("[images] no image built here (`scripts/images build` builds both)", file=sys.stderr)
    found = []
    for image in present:
        info = json.loads(docker("image", "inspect", image))[0]
        found.append({"image": image, "bytes": int(info["Size"]), "layer_count": len(info["RootFS"]["Layers"]),
                      "packages": largest_packages(image), "layers": layers(image)})
    write_results("images", argv, args, started, images=found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
