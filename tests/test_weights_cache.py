"""The weights cache is private: a built variant is trusted on the hash written beside it, so a folder that others
may write would let them swap in a model that finds no face."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from models import ModelError, load_detector
from models.weights import ENV_CACHE, cache_dir, resolve_model


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of its own, holding the verified weights."""
    weights = resolve_model()
    folder = tmp_path / "cache"
    folder.mkdir(mode=0o700)
    shutil.copy(weights, folder / weights.name)
    monkeypatch.setenv(ENV_CACHE, str(folder))
    return folder


def test_a_private_cache_is_used(cache: Path) -> None:
    assert resolve_model() == cache / "centerface.onnx"


def test_a_cache_others_may_write_is_refused(cache: Path) -> None:
    cache.chmod(0o777)
    with pytest.raises(ModelError, match=r"writable by other users \(mode 0777\).*chmod go-w.*STREAMER_CACHE"):
        resolve_model()
    with pytest.raises(ModelError, match="writable by other users"):
        load_detector("cpu", precision="int8")  # the variant would be trusted on a hash anyone could rewrite


def test_a_linked_cache_is_refused(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = tmp_path / "link"
    link.symlink_to(cache)
    monkeypatch.setenv(ENV_CACHE, str(link))
    with pytest.raises(ModelError, match="symbolic link"):
        resolve_model()


def test_a_new_cache_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "new" / "cache"
    monkeypatch.setenv(ENV_CACHE, str(folder))
    assert cache_dir(create=True) == folder
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
