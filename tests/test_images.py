"""The Docker images, built for real and run (``pytest -m image``; ``scripts/images`` builds them first and
``.ci/run`` runs it on every CI run).

CPU image: healthy by Docker's own health check within its start period, ``/healthz`` ready on the CPU, a non-root
user, a real WebRTC session through it that leaks no face (judged by pixels, identity and the detector), ``file``
on mounted photos hides every annotated face, and ``docker stop`` ends it cleanly (exit 0, not killed after 10 s).
GPU image on this machine without a GPU: exits non-zero within the start period naming the missing NVIDIA driver,
not a library of its own. Compose: the CPU profile comes up healthy. Layers: a code change rebuilds no dependency.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import REPO_ROOT, require_testdata
from docker_support import CPU_IMAGE, GPU_IMAGE, START_PERIOD_S, Container, docker, missing, unique_name, wire_into
from test_live_leaks import WEBCAM, assert_no_leak, judged, play
from test_serve import free_port
from webrtc_support import wait_ready as wait_ready_async

from testkit.judges import DetectorJudge, IdentityJudge, PixelJudge, judge
from testkit.netns import SERVER_ADDR, NamespaceError, NamespaceLoop, NetNamespace, netns_unavailable_reason
from testkit.truth import AnnotatedPhoto, Box, Face, Image, TruthFrame, annotated_photos, hard_cuts

pytestmark = pytest.mark.image
PORT = 9002  # the image's STREAMER_PORT
USER_ID = 10001


def when(stamp: str) -> datetime:
    """Docker's RFC 3339 time (nanoseconds, "Z" or an offset: the health log uses the daemon's local zone, the
    container state UTC), to the microsecond, zone kept."""
    found = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert found, f"not an RFC 3339 time: {stamp!r}"
    whole, fraction, zone = found.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micro}{'+00:00' if zone == 'Z' else zone}")


def need(image: str) -> None:
    reason = missing(image)
    if reason:
        pytest.fail(f"the image tests need {image}: {reason}")


TOKEN = "image-test-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def token_secret(folder: Path) -> Path:
    """The token as a file the image's user can read, as a Docker secret is mounted."""
    secret = folder / "streamer_token"
    secret.write_text(TOKEN + "\n")
    os.chown(secret, 0, USER_ID)
    secret.chmod(0o640)
    return secret


def with_token(folder: Path) -> tuple[str, ...]:
    """``docker run`` options that give the image its token as a mounted secret, the way compose does."""
    return ("-v", f"{token_secret(folder)}:/run/secrets/streamer_token:ro",
            "-e", "STREAMER_TOKEN_FILE=/run/secrets/streamer_token")


@pytest.fixture(scope="module")
def cpu_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The CPU image with its own command and the token as a secret, in a network namespace of its own
    (``--network none``)."""
    need(CPU_IMAGE)
    container = Container.run(CPU_IMAGE, tag="cpu", options=(
        "--network", "none", *with_token(tmp_path_factory.mktemp("secret"))))
    try:
        yield container
    finally:
        container.remove()


def test_cpu_image_without_a_token_refuses_to_start() -> None:
    """The image listens on every address: without a token it stops at once, saying how to give one."""
    need(CPU_IMAGE)
    done = docker("run", "--rm", "--network", "none", CPU_IMAGE, check=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "without an access token" in done.stderr and "STREAMER_TOKEN_FILE" in done.stderr, done.stderr[-2000:]


def test_cpu_image_is_healthy_within_its_start_period_as_a_non_root_user(cpu_container: Container) -> None:
    verdict = cpu_container.wait_health()
    assert verdict == "healthy", f"Docker says {verdict}:\n{cpu_container.logs()[-3000:]}"
    state = cpu_container.state()
    first_ok = min(when(p["End"]) for p in state["Health"]["Log"] if p["ExitCode"] == 0)
    assert (first_ok - when(state["StartedAt"])).total_seconds() <= START_PERIOD_S, state["Health"]
    # /healthz from inside, as the health check and an operator's curl see it.
    fetch = ("import json, sys, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
             f"urllib.request.Request('http://127.0.0.1:{PORT}/healthz', headers=dict([sys.argv[1:]]))))))")
    public = cpu_container.exec("python", "-c", fetch, "X-None", "")
    assert json.loads(public.stdout) == {"status": "ok", "ready": True, "reason": None}, public.stdout
    probe = cpu_container.exec("python", "-c", fetch, "Authorization", BEARER["Authorization"])
    assert '"ready": true' in probe.stdout and '"provider": "CPUExecutionProvider"' in probe.stdout, probe.stdout
    assert cpu_container.inspect()["Config"]["User"] == f"{USER_ID}:{USER_ID}"
    ids = cpu_container.exec("python", "-c", "import os; print(os.getuid(), os.geteuid(), os.getgid())").stdout.split()
    assert ids == [str(USER_ID)] * 3  # gid 10001 too: a host's token file is made readable to that group
    # What a deployment must never carry: pip's cache, a compiler, the tests or their data.
    look = ("for p in /root/.cache /app/.cache /tmp/pip-* /app/tests /app/bench /app/.git /usr/bin/gcc /usr/bin/cc; "
            "do [ -e \"$p\" ] && echo \"$p\"; done; [ -d /root ] && echo checked")
    leftovers = cpu_container.exec("sh", "-c", look, user="0").stdout.split()
    assert leftovers == ["checked"], leftovers  # as root: /root is closed to the service's user


@pytest.fixture(scope="module")
def wired(cpu_container: Container) -> Iterator[NamespaceLoop]:
    """A client loop in a namespace of this test's own whose veth peer is inside the container."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.fail(f"the WebRTC image test needs a network namespace: {reason}")
    try:
        ns = NetNamespace.create(f"fsimg-{os.getpid()}")
    except NamespaceError as exc:
        pytest.fail(str(exc))
    loop: NamespaceLoop | None = None
    try:
        wire_into(cpu_container, ns)
        loop = NamespaceLoop(ns).start()
        yield loop
    finally:
        if loop is not None:
            loop.stop()
        ns.delete()


def test_a_webrtc_session_through_the_cpu_image_leaks_no_face(cpu_container: Container, wired: NamespaceLoop,
                                                               detector: Any, artifacts_dir: Path) -> None:
    require_testdata("images")
    base_url = f"http://{SERVER_ADDR}:{PORT}"
    health = wired.run(wait_ready_async(base_url, headers=BEARER), 200)
    assert health["provider"] == "CPUExecutionProvider"
    clip = hard_cuts(8.0, size=WEBCAM)
    result, track, _ = wired.run(play(base_url, clip, headers=BEARER), 180)
    assert_no_leak(judged(result, track, clip, detector), artifacts_dir, "docker-cpu")


def _truth(photo: AnnotatedPhoto) -> TruthFrame:
    faces = tuple(Face(photo.face_id(k), box, 1.0) for k, box in enumerate(photo.boxes))
    return TruthFrame(0, 0.0, photo.image, faces, photo.name)


def test_file_in_the_cpu_image_hides_every_face_of_mounted_photos(tmp_path: Path, detector: Any) -> None:
    need(CPU_IMAGE)
    require_testdata("images")
    photos = annotated_photos()
    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    outbox.mkdir()
    os.chown(outbox, USER_ID, USER_ID)  # the image's user writes there, and only there
    for photo in photos:
        shutil.copy(photo.path, inbox / photo.path.name)
    script = 'for f in /in/*.jpg; do python -m streamer file "$f" "/out/$(basename "$f" .jpg).png" || exit 1; done'
    done = docker("run", "--rm", "--network", "none", "-v", f"{inbox}:/in:ro", "-v", f"{outbox}:/out",
                  "--entrypoint", "sh", CPU_IMAGE, "-c", script, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    pairs = []
    for photo in photos:
        output = cv2.imread(str(outbox / f"{photo.name}.png"), cv2.IMREAD_COLOR)
        assert output is not None and output.shape == photo.image.shape, photo.name
        pairs.append((_truth(photo), np.asarray(output, np.uint8)))

    def reference(face_id: str) -> tuple[Image, Box]:
        name, _, k = face_id.partition("#")
        photo = next(p for p in photos if p.name == name)
        return photo.image, photo.boxes[int(k)]

    report = judge(pairs, [PixelJudge(), IdentityJudge(reference), DetectorJudge(detector)])
    faces = sum(len(p.boxes) for p in photos)
    assert report.frames == len(photos) and report.judges["pixels"].checked == faces, report.describe()
    assert report.ok, report.describe()


def test_docker_stop_ends_the_cpu_image_cleanly(tmp_path: Path) -> None:
    """SIGTERM to the service (PID 1 in the container) shuts it down by itself: exit status 0, where a service
    that ignored it would be killed after docker stop's 10 s grace with status 137."""
    need(CPU_IMAGE)
    container = Container.run(CPU_IMAGE, tag="stop", options=("--network", "none", *with_token(tmp_path)))
    try:
        assert container.wait_health() == "healthy", container.logs()[-3000:]
        docker("stop", "--time", "10", container.id)
        state = container.state()
        assert state["ExitCode"] == 0 and not state["OOMKilled"], (state, container.logs()[-3000:])
    finally:
        container.remove()


def test_gpu_image_without_a_gpu_exits_naming_the_missing_driver(tmp_path: Path) -> None:
    need(GPU_IMAGE)
    container = Container.run(GPU_IMAGE, tag="gpu", options=("--network", "none", *with_token(tmp_path)))
    try:
        status = container.wait_exit(limit_s=600)
        logs = container.logs()
        state = container.state()
        assert status == 2, logs[-3000:]  # the CLI's status for a usage or setup error
        ran_s = (when(state["FinishedAt"]) - when(state["StartedAt"])).total_seconds()
        assert ran_s <= START_PERIOD_S, (state, logs[-2000:])
        error = [line for line in logs.splitlines() if line.startswith("error:")]
        assert error and "NVIDIA driver" in error[-1] and "libcuda.so.1" in error[-1], logs[-3000:]
        # The CUDA and cuDNN libraries the image carries all loaded (preloaded): only the driver is missing.
        for own in ("libcublas", "libcudnn", "libcufft", "libcurand", "libcudart", "libnvrtc"):
            assert own not in logs, f"{own} failed to load in the image:\n{logs[-3000:]}"
    finally:
        container.remove()


LOAD_EVERY_CUDA_LIBRARY = """
import ctypes, glob, os
import onnxruntime as ort
from models import runtime
runtime.preload_cuda_libraries(ort)
capi = os.path.join(os.path.dirname(ort.__file__), "capi")
site = os.path.dirname(os.path.dirname(ort.__file__))
for lib in sorted(glob.glob(site + "/nvidia/*/lib/*.so*")) + [capi + "/libonnxruntime_providers_cuda.so"]:
    try:
        ctypes.CDLL(lib)
        print("loaded", lib)
    except OSError as exc:
        print("failed", lib, exc)
"""


def test_gpu_image_loads_every_cuda_library_it_carries_but_the_driver() -> None:
    """After the preload, each CUDA and cuDNN library of the image, and ONNX Runtime's CUDA provider, opens; the
    only thing missing on a machine without a GPU is the driver (libcuda.so.1), which the NVIDIA container toolkit
    mounts on a GPU host."""
    need(GPU_IMAGE)
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python", GPU_IMAGE, "-c",
                  LOAD_EVERY_CUDA_LIBRARY)
    lines = done.stdout.splitlines()
    loaded = [line for line in lines if line.startswith("loaded")]
    failed = [line for line in lines if line.startswith("failed")]
    names = " ".join(lines)
    for library in ("libcublasLt.so", "libcudnn.so.9", "libcudnn_engines_precompiled.so", "libcufft.so",
                    "libcurand.so", "libcudart.so"):
        assert library in names, f"{library} is not in the image:\n{done.stdout}"
    assert len(loaded) + len(failed) >= 15 and len(loaded) >= 10, done.stdout
    assert all("libcuda.so.1" in line for line in failed), "\n".join(failed)
    assert any("libonnxruntime_providers_cuda.so" in line for line in failed), done.stdout  # the driver it needs


@pytest.mark.parametrize("image", [CPU_IMAGE, GPU_IMAGE])
def test_both_images_carry_the_triton_client(image: str) -> None:
    """The triton extra is in both images: a replica reaches Triton with --detector triton://... (gRPC), and the
    model repository is written with Triton's own config message."""
    need(image)
    script = ("import tritonclient.grpc, tritonclient.grpc.model_config_pb2 as m; "
              "print(tritonclient.grpc.InferenceServerClient.__name__, m.ModelConfig.__name__)")
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", script, check=False)
    assert done.returncode == 0 and done.stdout.split() == ["InferenceServerClient", "ModelConfig"], (
        done.stdout + done.stderr[-2000:])


def test_cpu_image_writes_the_triton_model_repository_on_a_read_only_root(tmp_path: Path) -> None:
    """What compose's triton-repo service and the Kubernetes initContainer (deploy/k8s/triton.yaml) run: the image's
    python -m models.triton_repo into an empty folder anyone may write (an emptyDir), as the image's user, on a
    read-only root filesystem: the weights the image carries are enough."""
    need(CPU_IMAGE)
    models = tmp_path / "models"
    models.mkdir()
    models.chmod(0o777)  # as an emptyDir is
    done = docker("run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp", "-v", f"{models}:/models",
                  "--entrypoint", "python", CPU_IMAGE, "-m", "models.triton_repo", "/models", check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    config, model = models / "centerface" / "config.pbtxt", models / "centerface" / "1" / "model.onnx"
    assert config.is_file() and model.is_file() and model.stat().st_size > 1_000_000, sorted(models.rglob("*"))
    # Readable by Triton's own user (another uid than the writer's).
    assert all(p.stat().st_mode & 0o004 for p in (config, model)), [oct(p.stat().st_mode) for p in (config, model)]
    assert 'name: "centerface"' in config.read_text()


def test_cpu_image_serves_on_a_read_only_root_filesystem(tmp_path: Path) -> None:
    """deploy/k8s runs the service with readOnlyRootFilesystem and only /tmp writable (an emptyDir): it comes up
    healthy that way."""
    need(CPU_IMAGE)
    container = Container.run(CPU_IMAGE, tag="readonly", options=(
        "--network", "none", "--read-only", "--tmpfs", "/tmp", *with_token(tmp_path)))
    try:
        assert container.wait_health() == "healthy", container.logs()[-3000:]
    finally:
        container.remove()


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_compose_cpu_profile_comes_up_healthy(tmp_path: Path) -> None:
    need(CPU_IMAGE)
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.fail("docker-compose (Debian's package) is not installed; .ci/run installs it")
    project = unique_name("compose")
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TURN_", "STREAMER_"))},
           "STREAMER_PORT": str(port), "STREAMER_TOKEN_SECRET": str(token_secret(tmp_path))}
    base = [compose, "-f", str(REPO_ROOT / "docker-compose.yml"), "-p", project, "--profile", "cpu"]
    try:
        up = subprocess.run([*base, "up", "-d", "--no-build", "streamer-cpu"], capture_output=True, text=True,
                            env=env, timeout=600, check=False)
        assert up.returncode == 0, up.stderr[-3000:]
        cid = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        assert len(cid) == 1, cid
        container = Container(cid[0], project)
        assert container.wait_health() == "healthy", container.logs()[-3000:]
        assert container.inspect()["HostConfig"]["NetworkMode"] == "host"
        # On the host's network, on every address: the token from the secret guards it, Host names are checked.
        url = f"http://127.0.0.1:{port}/config"
        assert http_status(url) == 401
        assert http_status(url, BEARER) == 200
        assert http_status(url, {**BEARER, "Host": f"rebind.attacker.example:{port}"}) == 421
    finally:
        # --volumes: compose creates every named volume of the file (the triton profile's too) on any up.
        subprocess.run([*base, "down", "--volumes", "--timeout", "10"], capture_output=True, text=True, env=env,
                       timeout=300, check=False)


def test_a_code_change_rebuilds_no_dependency_layer(tmp_path: Path) -> None:
    """The Dockerfile orders layers from what changes least: after an edit under streamer/, the rebuilt image shares
    every layer up to and including the model with the original, and BuildKit reports the installs as cached."""
    need(CPU_IMAGE)
    base = os.environ.get("STREAMER_BASE_IMAGE")
    if not base:
        pytest.fail("STREAMER_BASE_IMAGE (the base scripts/images built with) is not set")
    context = tmp_path / "context"
    context.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "requirements", "scripts", "models", "streamer",
                 "web"):
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "weights"))
        else:
            shutil.copy(source, context / name)
    with (context / "streamer" / "__init__.py").open("a") as init:
        init.write("# an edit\n")
    edited = f"face-streamer:cpu-edit-{os.getpid()}"
    try:
        done = docker("build", "--network", "host", "--progress", "plain", "--build-arg", f"BASE_IMAGE={base}",
                      "--target", "cpu", "-t", edited, str(context))
        log = done.stdout + done.stderr
        for step in ("install-image.sh deps", "install-image.sh weights"):
            line = next((ln for ln in log.splitlines() if step in ln and "RUN" in ln), "")
            assert line, f"no {step} step in the build log:\n{log[-3000:]}"
            number = line.split()[0]  # "#9"
            assert f"{number} CACHED" in log, f"{step} ran again after a code change:\n{log[-3000:]}"
        original = docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", CPU_IMAGE).stdout
        rebuilt = docker("image", "inspect", "-f", "{{json .RootFS.Layers}}", edited).stdout
        a, b = json.loads(original), json.loads(rebuilt)
        assert len(a) == len(b) and a[:-2] == b[:-2] and a[-2] != b[-2], (a, b)
    finally:
        docker("rmi", "-f", edited, check=False)
