"""``python -m bench.images``: the Docker images' sizes, layer by layer, and what the largest part of each is.

Reads the images ``scripts/images build`` made (face-streamer:cpu, face-streamer:gpu) from the local engine; prints
Markdown. Nothing is built here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from ._common import markdown_table

DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker")
IMAGES = ("face-streamer:cpu", "face-streamer:gpu")
# Debian's Python (the stand-in base) installs into dist-packages, python:*-slim into site-packages.
SITE = "/usr/local/lib/python3.11/*-packages"


def docker(*args: str) -> str:
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, check=True, timeout=600).stdout


def mb(size: float) -> str:
    return f"{size / 1e6:,.0f} MB"


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for python -m bench; changes nothing")
    parser.parse_args(argv)
    present = [i for i in IMAGES if subprocess.run([DOCKER, "image", "inspect", i], capture_output=True,
                                                   check=False).returncode == 0]
    if not present:
        print("Not measured: no image built here (`scripts/images build` builds both).")
        return 0
    rows = []
    for image in present:
        info = json.loads(docker("image", "inspect", image))[0]
        rows.append([f"`{image}`", mb(info["Size"]), str(len(info["RootFS"]["Layers"])),
                     ", ".join(f"{name} {mb(size)}" for size, name in largest_packages(image))])
    print(markdown_table(["Image", "Size", "Layers", "Largest Python packages"], rows))
    for image in present:
        print(f"\nLayers of 1 MB or more in `{image}`, oldest first:\n")
        print(markdown_table(["Size", "Instruction"], [[mb(size), f"`{text}`"] for size, text in layers(image)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
