"""The CUDA path's loading rules (models.runtime) and ONNX Runtime's telemetry kept off.

The CUDA provider itself is proven in the GPU image (tests/test_images.py: the image's own CUDA and cuDNN
libraries load and only the driver is missing) and on a lent GPU (BENCHMARKS.md); here, without either, the order
of the calls is checked against a recording stand-in for the onnxruntime module, and the diagnosis against the real
CPU build.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import REPO_ROOT

from models import runtime
from models.runtime import CPU, CUDA
from models.weights import ENV_CACHE, cache_dir, resolve_model


class RecordingOrt:
    """Just enough of the onnxruntime module for create_session, recording what is called in which order."""

    __file__ = "/nonexistent/onnxruntime/__init__.py"
    GraphOptimizationLevel = SimpleNamespace(ORT_ENABLE_ALL=99)

    def __init__(self) -> None:
        self.calls: list[str] = []

    class SessionOptions:
        def __init__(self) -> None:
            self.entries: dict[str, str] = {}

        def add_session_config_entry(self, key: str, value: str) -> None:
            self.entries[key] = value

    def get_available_providers(self) -> list[str]:
        return [CUDA, CPU]

    def preload_dlls(self, cuda: bool = True, cudnn: bool = True, msvc: bool = True) -> None:
        self.calls.append(f"preload cuda={cuda} cudnn={cudnn}")
        print("Failed to load libcudnn_adv.so.9: an example")  # ONNX Runtime prints its failures

    def InferenceSession(self, model: bytes, sess_options: Any, providers: list[Any]) -> Any:
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        self.calls.append(f"session {first}")
        return SimpleNamespace(get_providers=lambda: [first, CPU])


@pytest.fixture
def ort(monkeypatch: pytest.MonkeyPatch) -> RecordingOrt:
    fake = RecordingOrt()
    monkeypatch.setattr(runtime, "import_onnxruntime", lambda: fake)
    monkeypatch.setattr(runtime, "_preloaded", None)
    return fake


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cuda_libraries_are_preloaded_before_the_first_cuda_session(ort: RecordingOrt, device: runtime.Device,
                                                                    caplog: pytest.LogCaptureFixture,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.WARNING, logger="models.runtime"):
        _, provider = runtime.create_session(b"model", device)
        runtime.create_session(b"model", device)
    assert provider == CUDA
    assert ort.calls == ["preload cuda=True cudnn=True", f"session {CUDA}", f"session {CUDA}"]  # once per process
    # What failed to preload is logged, named, not printed on stdout.
    assert "libcudnn_adv.so.9" in caplog.text
    assert "Failed to load" not in capsys.readouterr().out


def test_no_preload_for_the_cpu(ort: RecordingOrt) -> None:
    runtime.create_session(b"model", "cpu")
    assert ort.calls == [f"session {CPU}"]


def test_the_failure_names_the_driver_or_the_library() -> None:
    driver = runtime.explain_cuda_failure("libcuda.so.1: cannot open shared object file: No such file or directory")
    assert "NVIDIA driver is missing" in driver and "libcuda.so.1" in driver and "--gpus" in driver
    own = runtime.explain_cuda_failure("libcublasLt.so.13: cannot open shared object file")
    assert "libcublasLt.so.13" in own and "pip install -e .[gpu]" in own
    assert "no usable GPU" in runtime.explain_cuda_failure(None)


def test_the_cpu_build_says_it_has_no_cuda_provider() -> None:
    ort = runtime.import_onnxruntime()
    if CUDA in ort.get_available_providers():
        pytest.skip("this environment has onnxruntime-gpu")
    reason = runtime.cuda_provider_load_error(ort)
    assert reason is not None and "not part of this onnxruntime build" in reason
    with pytest.raises(runtime.ProviderError, match="no CUDA provider"):
        runtime.create_session(b"", "cuda")


# ONNX Runtime keeps no telemetry store when one of these says it runs under CI (read from its library's strings),
# and puts the store under XDG_CACHE_HOME when that is set: both would silence the control below.
_SILENCERS = {"ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI",
              "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID", "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR",
              "BITBUCKET_BUILD_NUMBER"}


def _run(code: str, home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in _SILENCERS}
    env["HOME"] = str(home)
    env[ENV_CACHE] = str(cache_dir())  # the verified weights stay where they are, whatever HOME says
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_onnx_runtime_telemetry_stays_off(tmp_path: Path) -> None:
    """Loading and running the detector leaves no telemetry store behind; plain onnxruntime, the control, does."""
    store = Path(".cache") / "Microsoft" / "DeveloperTools" / ".onnxruntime"
    ours, plain = tmp_path / "ours", tmp_path / "plain"
    ours.mkdir()
    plain.mkdir()
    _run("import numpy as np, models; models.load_detector('cpu').detect(np.zeros((480, 640, 3), np.uint8))", ours)
    assert not (ours / store).exists(), sorted(p.name for p in (ours / store).iterdir())
    _run("import onnxruntime as ort; "
         f"ort.InferenceSession({str(resolve_model())!r}, providers=['CPUExecutionProvider'])", plain)
    assert (plain / store).exists(), "onnxruntime no longer keeps a telemetry store: this test proves nothing now"
