"""``python -m bench``: run every benchmark to JSON and render BENCHMARKS.md (see bench/run_all.py, bench/render.py)."""

from __future__ import annotations

from .run_all import main

if __name__ == "__main__":
    raise SystemExit(main())
