"""``python -m bench``: run every benchmark and write BENCHMARKS.md (see bench/run_all.py)."""

from __future__ import annotations

from .run_all import main

if __name__ == "__main__":
    raise SystemExit(main())
