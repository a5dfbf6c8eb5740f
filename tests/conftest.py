"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Plain `pytest` puts only tests/ on sys.path; the tests exercise this working tree even where the package was
# never pip-installed into the environment.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
# Real photos and clips live beside the checkout, never inside it (its README.md has origins and licences).
TESTDATA_DIR = REPO_ROOT.parent / "shared" / "testdata"

from testkit.netns import NamespaceError, NamespaceLoop, NetNamespace, netns_unavailable_reason  # noqa: E402

try:
    from hypothesis import settings as _hypothesis_settings
except ImportError:  # pragma: no cover - hypothesis is in the dev extra
    pass
else:
    # The same examples on every run, so a failure in CI is reproducible where it is read; HYPOTHESIS_PROFILE=explore
    # draws new ones (with more of them) for a fuzzing session.
    _hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
    _hypothesis_settings.register_profile("explore", max_examples=2000)
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def require_testdata(*parts: str) -> Path:
    """The path ``TESTDATA_DIR/parts...``, or skip the calling test saying what is missing."""
    path = TESTDATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found: {path} (expected ../shared/testdata beside the repository)")
    return path


def read_bgr(path: Path) -> npt.NDArray[np.uint8]:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return np.asarray(image, np.uint8)


@pytest.fixture
def testdata() -> Path:
    """The real test data folder; tests using it are skipped when it is absent."""
    return require_testdata()


@pytest.fixture(scope="session")
def detector() -> Any:
    """The real CenterFace model on the CPU provider with default settings, loaded once per run."""
    from models import load_detector

    return load_detector("cpu")


@pytest.fixture(scope="session")
def astronaut_bgr() -> npt.NDArray[np.uint8]:
    """A real portrait available everywhere: scikit-image's astronaut (public domain), as BGR."""
    from skimage import data

    astronaut: Callable[[], npt.NDArray[np.uint8]] = data.astronaut  # skimage's own hints are incomplete
    return np.ascontiguousarray(astronaut()[:, :, ::-1])


def video_frames(relative: str, count: int) -> list[npt.NDArray[np.uint8]]:
    """The first ``count`` frames of a clip under ../shared/testdata, as BGR arrays (skips when absent)."""
    import av

    path = require_testdata(*relative.split("/"))
    frames: list[npt.NDArray[np.uint8]] = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8))
            if len(frames) == count:
                break
    return frames


# --------------------------------------------------------------------------------------------------------------
# Live WebRTC tests run inside a network namespace of their own (see testkit/netns.py): aioice never uses
# 127.0.0.1, and tests may send nothing beyond loopback or addresses inside a namespace the run created itself.

ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"  # git-ignored: screenshots and logs worth a look after a run


@pytest.fixture(scope="session")
def netns() -> Iterator[NetNamespace]:
    """The run's network namespace ``fs-<pid>`` (lo + veth v0 10.77.0.1 / v1 10.77.0.2, nothing else), deleted at
    the end of the session; skips when it cannot be created (not root, no ``ip netns``)."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        ns = NetNamespace.create()
    except NamespaceError as exc:
        pytest.skip(str(exc))
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture(scope="session")
def ns_loop(netns: NetNamespace) -> Iterator[NamespaceLoop]:
    """A thread inside the namespace running its own event loop: ``ns_loop.run(coro)`` blocks,
    ``await ns_loop.call(coro)`` from async tests."""
    loop = NamespaceLoop(netns).start()
    try:
        yield loop
    finally:
        loop.stop()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The image tests run against images scripts/images has just built, and only from there
    (``STREAMER_IMAGE_TESTS=1``): any other run, whatever its ``-m``, leaves them out."""
    if os.environ.get("STREAMER_IMAGE_TESTS") == "1":
        return
    kept = [item for item in items if item.get_closest_marker("image") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
