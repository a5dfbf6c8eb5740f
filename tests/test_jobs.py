"""Upload jobs over HTTP (docs/http-api.md, "Upload jobs") against `python -m streamer serve` on loopback, with real
photos and clips: the result hides every face and keeps the video's frames and duration; bad uploads fail with a
readable reason while the service keeps serving; cancel, expiry and shutdown leave no file behind; uploaded names
never reach the disk.

Two services run for the module: ``service`` (defaults but a short-lived jobs directory of its own) for the results
and the bad inputs, and ``tight`` (``--max-upload-mb 1 --max-queued-jobs 1 --job-ttl 2``) for the limits, cancel,
expiry and shutdown. After every test that uses one of them, nothing may be left in its jobs directory but the
directories of the jobs it still lists, holding only ``input.*``/``output.*``; then every job is deleted and the
instance directory must be empty.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest
from conftest import REPO_ROOT, require_testdata

from models.boxes import iou_matrix
from models.centerface import CenterFaceDetector
from models.evaluate import load_truth

pytestmark = pytest.mark.timeout(300)

PHOTO = ("images", "2008_002470.jpg")  # six annotated faces
CLIP = ("videos", "sadtalker_WDA_KatieHill_000.mp4")  # 200 frames, MPEG-4 Part 2, one talking head
LONG_CLIP = ("videos", "liveportrait_driving_d3.mp4")  # 354 frames: still running when it is cancelled
SMALL_CLIP = ("videos", "face_recognition_short_hamilton_clip.mp4")  # 613 KB, under the tight 1 MB limit
TERMINAL = ("done", "failed", "cancelled")
# A detection in a result counts as a face left visible when it overlaps a face of the source (IoU >= 0.3) with at
# least this score (as in test_cameras.py). The source faces score 0.83-0.94; a scrambled mosaic, whose cell order is
# drawn per process, makes the detector see a "face" of 0.30-0.49 on the shuffled cells for a few keys in a hundred.
VISIBLE_SCORE = 0.5
U8 = npt.NDArray[np.uint8]


# ----------------------------------------------------------------------------------------------------- service


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> str:
        value = self.json()["error"]
        assert isinstance(value, str)
        return value


@dataclass
class Service:
    """One `python -m streamer serve` on 127.0.0.1 with its own jobs directory."""

    jobs_dir: Path
    args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> Service:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--device", "cpu", "--jobs-dir", str(self.jobs_dir), *self.args],
                cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited: {self.log_text()}"
            try:
                if self.request("GET", "/healthz", timeout=2).status == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve did not become ready within 90 s: {self.log_text()}")

    def stop(self) -> int:
        """SIGTERM, as a supervisor stops it; returns the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("serve did not stop within 30 s of SIGTERM") from None
        return int(self.proc.returncode)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log and self.log.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return int(self.proc.pid)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> Answer:
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return Answer(response.status, dict(response.headers.items()), response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers.items()), exc.read())

    def post_job(self, filename: str, data: bytes, fields: dict[str, str] | None = None,
                 file_field: str = "file") -> Answer:
        body, content_type = multipart(filename, data, fields or {}, file_field)
        return self.request("POST", "/jobs", body, {"Content-Type": content_type})

    def job(self, job_id: str) -> Answer:
        return self.request("GET", f"/jobs/{job_id}")

    def jobs(self) -> list[dict[str, Any]]:
        listed = self.request("GET", "/jobs").json()["jobs"]
        assert isinstance(listed, list)
        return listed

    def wait(self, job_id: str, limit_s: float = 150) -> dict[str, Any]:
        """Poll GET /jobs/{id} until the job has ended; returns the job object."""
        deadline = time.monotonic() + limit_s
        while True:
            answer = self.job(job_id)
            assert answer.status == 200, answer.body
            job: dict[str, Any] = answer.json()
            if job["state"] in TERMINAL:
                return job
            assert time.monotonic() < deadline, f"job still {job['state']} after {limit_s} s: {job}"
            time.sleep(0.2)

    def instance_dir(self) -> Path:
        """The directory of this instance inside the jobs directory (named by its pid)."""
        entries = sorted(self.jobs_dir.iterdir())
        assert [e.name.split("-", 1)[0] for e in entries] == [str(self.pid)], entries
        return entries[0]

    def healthy(self) -> bool:
        return self.request("GET", "/healthz", timeout=10).status == 200


def multipart(filename: str, data: bytes, fields: dict[str, str], file_field: str = "file") -> tuple[bytes, str]:
    """A multipart/form-data body: the fields, then the file (its name written as given, unescaped)."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
                 "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


INPUT = re.compile(r"input(\.[a-z0-9]+)?")
OUTPUT = re.compile(r"output\.[a-z0-9]+")
PARTIAL = re.compile(r"\.(output|audit)\.[A-Za-z0-9_]+\.partial\.[a-z0-9]+")  # offline.atomic_output's temporary file
AUDIT = re.compile(r"audit\.jsonl")


def check_layout(service: Service) -> None:
    """Only the instance directory; in it, one directory per job the service still lists: ``input.*`` while queued,
    also the partial output while running, only ``output.*`` once done, nothing at all for failed or cancelled."""
    instance = service.instance_dir()
    listed = {job["id"]: job for job in service.jobs()}
    for entry in instance.iterdir():
        assert entry.is_dir() and entry.name in listed, f"left over: {entry} (jobs: {sorted(listed)})"
        job = listed[entry.name]
        try:
            names = sorted(p.name for p in entry.iterdir())
        except FileNotFoundError:
            continue  # it ended (failed) since the listing
        allowed = {"queued": (INPUT,), "running": (INPUT, OUTPUT, PARTIAL, AUDIT),
                   "done": (OUTPUT, AUDIT)}.get(job["state"], ())
        assert all(any(p.fullmatch(n) for p in allowed) for n in names), f"{job['state']} job {entry}: {names}"
        if job["state"] == "done":
            assert len(names) == 1 + job["settings"]["audit"], f"{entry}: {names}"


def assert_clean(service: Service, limit_s: float = 150) -> None:
    """Wait for the service's jobs to end, check the layout, delete every job, and expect an empty instance dir."""
    deadline = time.monotonic() + limit_s
    while any(job["state"] not in TERMINAL for job in service.jobs()):
        check_layout(service)
        assert time.monotonic() < deadline, f"jobs still working: {service.jobs()}"
        time.sleep(0.3)
    check_layout(service)
    for job in service.jobs():
        assert service.request("DELETE", f"/jobs/{job['id']}").status in (204, 404)  # 404: it expired meanwhile
    assert service.jobs() == []
    instance = service.instance_dir()
    leftovers: list[Path] = []
    deadline = time.monotonic() + 10
    while (leftovers := sorted(instance.rglob("*"))) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert leftovers == []
    assert service.healthy()


@pytest.fixture(scope="module")
def service_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Deep enough that "../../etc/evil.jpg" taken as a path from a job's directory would still land inside the
    # test's own temporary tree, where the filename test looks for it.
    root = tmp_path_factory.mktemp("jobs-main")
    jobs_dir = root / "a" / "b" / "jobs"
    jobs_dir.mkdir(parents=True)
    return jobs_dir


@pytest.fixture(scope="module")
def orphan(service_dir: Path) -> Path:
    """A directory as a crashed instance leaves it (a pid that is not running), made before the service starts."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
            pid += 1
        except ProcessLookupError:
            break
        except PermissionError:
            pid += 1
    path = service_dir / f"{pid}-deadbeef"
    (path / "job").mkdir(parents=True)
    (path / "job" / "input.mp4").write_bytes(b"left by a crash")
    return path


@pytest.fixture(scope="module")
def main_service(service_dir: Path, orphan: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    srv = Service(service_dir, ("--job-ttl", "600")).start(tmp_path_factory.mktemp("logs") / "serve-main.log")
    try:
        yield srv
    finally:
        srv.stop()
    assert sorted(service_dir.iterdir()) == [], "the instance directory outlived the service"


@pytest.fixture
def service(main_service: Service) -> Iterator[Service]:
    """The main service; after the test nothing of it may be left on disk (see assert_clean)."""
    assert main_service.proc is not None and main_service.proc.poll() is None, main_service.log_text()
    yield main_service
    assert_clean(main_service)


@pytest.fixture(scope="module")
def tight_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    jobs_dir = tmp_path_factory.mktemp("jobs-tight") / "jobs"
    srv = Service(jobs_dir, ("--max-upload-mb", "1", "--max-queued-jobs", "1", "--job-ttl", "2"))
    srv.start(tmp_path_factory.mktemp("logs") / "serve-tight.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def tight(tight_service: Service) -> Iterator[Service]:
    assert tight_service.proc is not None and tight_service.proc.poll() is None, tight_service.log_text()
    yield tight_service
    if tight_service.proc is not None and tight_service.proc.poll() is None:
        assert_clean(tight_service)


# ----------------------------------------------------------------------------------------------------- media


def decode_image(data: bytes) -> U8:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "the result is not an image"
    return np.asarray(image, np.uint8)


def video_info(path: Path) -> tuple[int, float, float, tuple[int, int]]:
    """(decoded frames, average fps, stream duration in s, size) as PyAV reads them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        return frames, float(stream.average_rate or 0), duration, (stream.codec_context.width,
                                                                    stream.codec_context.height)


def sampled_frames(path: Path, every: int) -> list[U8]:
    with av.open(str(path)) as container:
        return [np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
                for i, frame in enumerate(container.decode(video=0)) if i % every == 0]


def assert_photo_hidden(source: Path, result: U8, detector: CenterFaceDetector) -> None:
    """Every annotated face region changed, and the detector finds no face where one was (IoU >= 0.3)."""
    before = cv2.imread(str(source), cv2.IMREAD_COLOR)
    assert before is not None and before.shape == result.shape
    truth = load_truth(source.with_suffix(".json"))
    for x1, y1, x2, y2 in truth.astype(int):
        changed = np.abs(before[y1:y2, x1:x2].astype(int) - result[y1:y2, x1:x2]).max(axis=2) > 8
        assert changed.mean() > 0.5, f"face at {(x1, y1, x2, y2)} barely changed ({changed.mean():.2f})"
    assert visible(truth, result, detector) == [], "a face is still visible"


def visible(faces: npt.NDArray[np.float32], image: U8, detector: CenterFaceDetector) -> list[tuple[float, float]]:
    """(IoU, score) of every detection in ``image`` that shows one of ``faces`` (see VISIBLE_SCORE)."""
    found = detector.detect(image)
    if not len(found):
        return []
    overlap = iou_matrix(faces, found.boxes).max(axis=0)
    return [(round(float(iou), 2), round(float(score), 2)) for iou, score in zip(overlap, found.scores, strict=True)
            if iou >= 0.3 and score >= VISIBLE_SCORE]


def assert_video_hidden(source: Path, result: Path, detector: CenterFaceDetector, every: int) -> None:
    """Same frames, rate and duration as the source; in sampled frames no face is found where one was."""
    frames, rate, duration, size = video_info(result)
    src_frames, src_rate, src_duration, src_size = video_info(source)
    assert (frames, size) == (src_frames, src_size)
    assert rate == pytest.approx(src_rate, rel=0.01)
    assert duration == pytest.approx(src_duration, abs=0.1)
    originals, hidden = sampled_frames(source, every), sampled_frames(result, every)
    assert len(originals) == len(hidden) >= 3
    for i, (original, out) in enumerate(zip(originals, hidden, strict=True)):
        faces = detector.detect(original)
        assert len(faces) >= 1, f"the source shows a face in frame {i * every}"
        shown = visible(faces.boxes, out, detector)
        assert shown == [], f"a face is visible in frame {i * every}: (IoU, score) {shown}"


def short_clip(source: Path, dest: Path, frames: int) -> Path:
    """The first ``frames`` frames of a real clip, re-encoded as H.264 at the same rate (a small, quick upload)."""
    with av.open(str(source)) as src, av.open(str(dest), "w") as out:
        vin = src.streams.video[0]
        rate = vin.average_rate or Fraction(25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        for i, frame in enumerate(src.decode(vin)):
            if i == frames:
                break
            image = frame.to_ndarray(format="yuv420p")
            new = av.VideoFrame.from_ndarray(image, format="yuv420p")
            new.pts = i
            new.time_base = Fraction(1) / rate
            out.mux(vout.encode(new))
        out.mux(vout.encode(None))
    return dest


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid, all-black, 1-bit greyscale PNG of width x height: tens of KB on disk, a gigapixel-scale picture
    once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then black pixels
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def peak_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def read_events(service: Service, job_id: str, limit_s: float = 150) -> list[dict[str, Any]]:
    """Every `progress` event of GET /jobs/{id}/events until the server ends the stream."""
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=limit_s)
    try:
        conn.request("GET", f"/jobs/{job_id}/events")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events: list[dict[str, Any]] = []
        name, data = "", ""
        for raw in response:  # ends when the server closes the stream
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                assert name == "progress"
                events.append(json.loads(data))
                name, data = "", ""
        return events
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------------- results


def test_a_crashed_instances_directory_is_removed_at_start(main_service: Service, orphan: Path) -> None:
    assert not orphan.exists()
    main_service.instance_dir()  # and this instance's own directory is the only one


def test_photo_job_hides_every_face(service: Service, detector: CenterFaceDetector, tmp_path: Path) -> None:
    src = require_testdata(*PHOTO)
    answer = service.post_job(src.name, src.read_bytes(), {"mode": "mosaic", "strength": "0.5"})
    assert answer.status == 202, answer.body
    job = answer.json()
    assert answer.headers["Location"] == f"/jobs/{job['id']}"
    assert (job["kind"], job["name"], job["settings"]) == ("image", "2008_002470", {
        "mode": "mosaic", "strength": 0.5, "zones": [], "audio": "keep", "audit": False})
    done = service.wait(job["id"])
    assert done["state"] == "done" and done["error"] is None, done
    assert (done["percent"], done["frames_done"], done["result"]) == (100.0, 1, f"/jobs/{job['id']}/result")
    result = service.request("GET", done["result"])
    assert result.status == 200
    assert result.headers["Content-Disposition"] == ('attachment; filename="2008_002470-anonymized.jpg"; '
                                                     "filename*=UTF-8''2008_002470-anonymized.jpg")
    assert_photo_hidden(src, decode_image(result.body), detector)
    check_layout(service)


def test_video_job_hides_faces_and_keeps_frames_and_duration(service: Service, detector: CenterFaceDetector,
                                                             tmp_path: Path) -> None:
    src = require_testdata(*CLIP)
    answer = service.post_job("talk.mp4", src.read_bytes(), {"mode": "blur", "strength": "0.8"})
    assert answer.status == 202, answer.body
    job_id = answer.json()["id"]
    assert service.request("GET", f"/jobs/{job_id}/result").status == 409  # not done yet
    events = read_events(service, job_id)  # followed once over Server-Sent Events, to the end
    assert events and events[-1]["state"] == "done", events[-1:]
    done_frames = [e["frames_done"] for e in events]
    assert done_frames == sorted(done_frames) and len(set(done_frames)) > 3, done_frames
    running = [e for e in events if e["state"] == "running" and e["frames_total"]]
    assert running and all(e["frames_total"] == 200 for e in running)
    assert any(e["fps"] > 0 and e["eta_s"] is not None for e in running)
    last = events[-1]
    assert (last["frames_done"], last["frames_total"], last["percent"]) == (200, 200, 100.0)
    assert service.job(job_id).json()["state"] == "done"  # and GET agrees
    result = service.request("GET", f"/jobs/{job_id}/result")
    assert result.status == 200
    assert result.headers["Content-Disposition"].startswith('attachment; filename="talk-anonymized.mp4"')
    out = tmp_path / "out.mp4"
    out.write_bytes(result.body)
    assert_video_hidden(src, out, detector, every=25)


def test_video_job_keeps_the_sound_burns_in_zones_and_gives_its_audit_trail(service: Service,
                                                                          detector: CenterFaceDetector,
                                                                          tmp_path: Path) -> None:
    src = require_testdata(*CLIP)  # MPEG-4 video with AAC sound
    zones = [[[0.0, 0.0], [0.25, 0.0], [0.25, 0.3], [0.0, 0.3]]]
    answer = service.post_job("talk.mp4", src.read_bytes(), {"zones": json.dumps(zones), "audit": "true"})
    assert answer.status == 202, answer.body
    job = answer.json()
    assert job["settings"] == {"mode": "mosaic", "strength": 0.5, "zones": zones, "audio": "keep", "audit": True}
    assert service.request("GET", f"/jobs/{job['id']}/audit").status == 409  # not done yet
    done = service.wait(job["id"])
    assert done["state"] == "done" and done["audit"] == f"/jobs/{job['id']}/audit", done
    check_layout(service)
    out = tmp_path / "out.mp4"
    out.write_bytes(service.request("GET", done["result"]).body)
    assert_video_hidden(src, out, detector, every=50)
    with av.open(str(out)) as result, av.open(str(src)) as source:
        assert [s.codec_context.name for s in result.streams.audio] == ["aac"]
        assert sum(1 for _ in result.demux(audio=0)) == sum(1 for _ in source.demux(audio=0))
    for frame in sampled_frames(out, 40):
        height, width = frame.shape[:2]
        corner = frame[2:int(0.3 * height) - 2, 2:int(0.25 * width) - 2].astype(int)
        assert np.abs(corner - 24).max() <= 6, "the zone is not solid"  # H.264 moves a flat area a little
    trail = service.request("GET", done["audit"])
    assert trail.status == 200 and trail.headers["Content-Type"].startswith("application/x-ndjson")
    records = [json.loads(line) for line in trail.body.splitlines()]
    assert [r["frame"] for r in records] == list(range(200))
    assert all(r["zones"] == 1 and r["width"] == frame.shape[1] for r in records)
    assert sum(bool(r["faces"]) for r in records) > 190


def test_a_job_may_drop_the_sound_and_has_no_trail_unless_asked(service: Service, tmp_path: Path) -> None:
    clip = short_clip(require_testdata(*CLIP), tmp_path / "short.mp4", 10)
    with av.open(str(require_testdata(*CLIP))) as source, av.open(str(tmp_path / "short.mkv"), "w") as out:
        # The short clip again, with the source's sound copied in.
        with av.open(str(clip)) as video:
            vout = out.add_stream_from_template(video.streams.video[0])
            aout = out.add_stream_from_template(source.streams.audio[0])
            for vpacket in video.demux(video=0):
                if vpacket.dts is not None:
                    vpacket.stream = vout
                    out.mux(vpacket)
        for i, apacket in enumerate(source.demux(audio=0)):
            if apacket.dts is not None and i < 20:
                apacket.stream = aout
                out.mux(apacket)
    answer = service.post_job("short.mkv", (tmp_path / "short.mkv").read_bytes(), {"audio": "drop"})
    assert answer.status == 202, answer.body
    done = service.wait(answer.json()["id"])
    assert done["state"] == "done" and done["audit"] is None, done
    result = tmp_path / "result.mp4"
    result.write_bytes(service.request("GET", done["result"]).body)
    with av.open(str(result)) as container:
        assert len(container.streams.audio) == 0 and len(container.streams.video) == 1
    missing = service.request("GET", f"/jobs/{done['id']}/audit")
    assert missing.status == 404 and "audit=true" in missing.json()["error"]


# ----------------------------------------------------------------------------------------------------- bad input


def bad_input(case: str) -> tuple[str, bytes]:
    if case == "text-as-mp4":
        return "notes.mp4", b"this is a text file, not a video\n" * 100
    if case == "truncated":
        data = require_testdata(*CLIP).read_bytes()
        return "cut.mp4", data[: len(data) // 3]
    if case == "empty":
        return "nothing.jpg", b""
    if case == "huge-image":
        return "huge.png", png_header_bomb(20000, 20000)
    raise AssertionError(case)


@pytest.mark.parametrize(("case", "reason"), [
    ("text-as-mp4", "not a readable video"),
    ("truncated", "video"),
    ("empty", "file is empty"),
    ("huge-image", "image of 20000x20000 is over the 100 MP limit"),
])
def test_bad_upload_fails_the_job_with_a_reason(service: Service, case: str, reason: str) -> None:
    filename, data = bad_input(case)
    peak_before = peak_rss_kb(service.pid)
    answer = service.post_job(filename, data)
    assert answer.status == 202, answer.body
    started = time.monotonic()
    job = service.wait(answer.json()["id"])
    assert job["state"] == "failed" and job["result"] is None, job
    error = job["error"]
    assert isinstance(error, str) and reason in error, error
    assert error.startswith(filename), error  # names the upload, not a path on the server
    assert str(service.jobs_dir) not in error and "input" not in error.split(":")[0], error
    if case == "truncated":
        assert re.search(r"truncated|could not be decoded|not a readable video", error), error
    if case == "huge-image":
        # Refused from the header: no decoding of 400 megapixels (seconds of CPU, gigabytes of memory).
        assert time.monotonic() - started < 5
        peak_after = peak_rss_kb(service.pid)
        if peak_before is not None and peak_after is not None:
            assert peak_after - peak_before < 200_000, f"peak memory grew by {peak_after - peak_before} kB"
    assert service.request("GET", f"/jobs/{job['id']}/result").status == 409
    assert service.healthy()


@pytest.mark.parametrize(("case", "status", "reason"), [
    ("unknown-field", 400, "unknown field 'colour'"),
    ("unknown-field-after-file", 400, "unknown field 'colour'"),
    ("bad-mode", 400, "mode must be one of"),
    ("bad-strength", 400, "strength must be"),
    ("no-file", 400, "no file"),
    ("bad-zones", 400, "within 0..1"),
    ("zones-not-json", 400, "zones must be JSON"),
    ("long-field", 400, "longer than"),
    ("bad-audio", 400, "audio must be keep or drop"),
    ("bad-audit", 400, "audit must be true or false"),
    ("file-under-another-name", 400, "unknown field 'attachment'"),
    ("not-multipart", 415, "multipart/form-data"),
])
def test_bad_request_is_refused_with_a_reason(service: Service, case: str, status: int, reason: str) -> None:
    photo = require_testdata(*PHOTO).read_bytes()
    if case == "unknown-field":
        answer = service.post_job("p.jpg", photo, {"mode": "blur", "colour": "red"})
    elif case == "unknown-field-after-file":
        body, content_type = multipart("p.jpg", photo, {})
        boundary = content_type.split("boundary=")[1]
        body = body.replace(f"--{boundary}--".encode(),
                            f'--{boundary}\r\nContent-Disposition: form-data; name="colour"\r\n\r\nred\r\n'
                            f"--{boundary}--".encode())
        answer = service.request("POST", "/jobs", body, {"Content-Type": content_type})
    elif case == "bad-mode":
        answer = service.post_job("p.jpg", photo, {"mode": "pixelate"})
    elif case == "bad-strength":
        answer = service.post_job("p.jpg", photo, {"strength": "lots"})
    elif case == "bad-zones":
        answer = service.post_job("p.jpg", photo, {"zones": "[[[0,0],[1,0],[1,7]]]"})
    elif case == "zones-not-json":
        answer = service.post_job("p.jpg", photo, {"zones": "[[["})
    elif case == "long-field":
        answer = service.post_job("p.jpg", photo, {"zones": "[" + " " * 20000 + "]"})
    elif case == "bad-audio":
        answer = service.post_job("p.jpg", photo, {"audio": "loud"})
    elif case == "bad-audit":
        answer = service.post_job("p.jpg", photo, {"audit": "maybe"})
    elif case == "no-file":
        boundary = uuid.uuid4().hex
        body = (f'--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n\r\nblur\r\n'
                f"--{boundary}--\r\n").encode()
        answer = service.request("POST", "/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    elif case == "file-under-another-name":
        answer = service.post_job("p.jpg", photo, {"mode": "blur"}, file_field="attachment")
    else:
        answer = service.request("POST", "/jobs", photo, {"Content-Type": "image/jpeg"})
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    assert reason in answer.error, answer.error
    assert service.jobs() == []  # no job was left registered
    assert service.healthy()


def test_a_broken_upload_leaves_no_job_behind(service: Service) -> None:
    """The body is cut off (the client goes away) or a part cannot be read after the file was written: the job
    registered for it goes with its files and frees its place in the queue."""
    photo = require_testdata(*PHOTO).read_bytes()
    body, content_type = multipart("p.jpg", photo, {})
    with socket.create_connection(("127.0.0.1", service.port)) as sock:
        sock.sendall(f"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
                     f"Content-Length: {len(body) + 100_000}\r\n\r\n".encode() + body[: len(body) // 2])
        time.sleep(0.5)
    # A field after the file with a charset that does not exist.
    boundary = content_type.split("boundary=")[1]
    body = body.replace(f"--{boundary}--".encode(),
                        f'--{boundary}\r\nContent-Disposition: form-data; name="mode"\r\n'
                        f"Content-Type: text/plain; charset=no-such-charset\r\n\r\nblur\r\n--{boundary}--".encode())
    answer = service.request("POST", "/jobs", body, {"Content-Type": content_type})
    assert answer.status == 400, answer.body
    deadline = time.monotonic() + 5
    while service.jobs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert service.jobs() == []
    assert sorted(service.instance_dir().iterdir()) == []


def test_uploaded_names_never_reach_the_disk(service: Service, tmp_path: Path,
                                            tmp_path_factory: pytest.TempPathFactory) -> None:
    photo = require_testdata(*PHOTO)
    clip = short_clip(require_testdata(*LONG_CLIP), tmp_path / "clip.mp4", frames=15)
    jobs: dict[str, dict[str, Any]] = {}
    for name, data in (("../../etc/evil.jpg", photo.read_bytes()), ("..\\x.mp4", clip.read_bytes()),
                       ("..\\..\\evil2.jpg", photo.read_bytes()), ("/etc/passwd.png", b"")):
        answer = service.post_job(name, data)
        assert answer.status == 202, answer.body
        jobs[name] = answer.json()
        assert "/" not in jobs[name]["name"] and "\\" not in jobs[name]["name"] and ".." not in jobs[name]["name"]
        check_layout(service)
    for name, job in jobs.items():
        jobs[name] = service.wait(job["id"])
    assert jobs["/etc/passwd.png"]["state"] == "failed"  # empty
    for name in ("../../etc/evil.jpg", "..\\x.mp4", "..\\..\\evil2.jpg"):
        assert jobs[name]["state"] == "done", jobs[name]
        result = service.request("GET", f"/jobs/{jobs[name]['id']}/result")
        assert result.status == 200
        match = re.fullmatch(r'attachment; filename="([A-Za-z0-9_-][A-Za-z0-9._-]*)"; '
                             r"filename\*=UTF-8''([A-Za-z0-9._~%-]+)", result.headers["Content-Disposition"])
        assert match, result.headers["Content-Disposition"]
        assert ".." not in match.group(1) and "%2F" not in match.group(2) and "%5C" not in match.group(2)
    assert jobs["..\\x.mp4"]["kind"] == "video"
    # A name in another script keeps its own letters in the download (RFC 5987), never on disk.
    answer = service.post_job("../사진 1.jpg", photo.read_bytes())
    assert answer.status == 202, answer.body
    done = service.wait(answer.json()["id"])
    result = service.request("GET", f"/jobs/{done['id']}/result")
    assert result.headers["Content-Disposition"].endswith("filename*=UTF-8''%EC%82%AC%EC%A7%84%201-anonymized.jpg")
    check_layout(service)
    # Nothing was written anywhere else: not beside the jobs directory, not in the test's tree, not in the checkout.
    base = tmp_path_factory.getbasetemp()
    strays = [p for p in base.rglob("*") if p.name in ("evil.jpg", "evil2.jpg", "x.mp4", "passwd.png")]
    assert strays == []
    assert not Path("/etc/evil.jpg").exists()
    assert not (REPO_ROOT / "etc").exists() and not (REPO_ROOT / "x.mp4").exists()


def test_cancel_removes_a_running_photo_job(service: Service) -> None:
    """A photo is never interrupted while it is processed: a DELETE meanwhile must still take its result away
    when the work ends (the job has left the list, so nothing would ever expire it)."""
    image = cv2.imread(str(require_testdata(*PHOTO)), cv2.IMREAD_COLOR)
    assert image is not None
    ok, encoded = cv2.imencode(".jpg", cv2.resize(image, (4000, 4000)), [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    answer = service.post_job("big.jpg", encoded.tobytes())  # 16 megapixels: processed for most of a second
    assert answer.status == 202, answer.body
    job_id = answer.json()["id"]
    job_dir = service.instance_dir() / job_id
    deadline = time.monotonic() + 30
    while (state := service.job(job_id).json()["state"]) == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert state == "running", "the photo was done before it could be cancelled"
    assert service.request("DELETE", f"/jobs/{job_id}").status == 204
    assert service.job(job_id).status == 404
    deadline = time.monotonic() + 10
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # well past the end of the work: nothing may reappear
    assert not job_dir.exists(), f"left behind: {sorted(p.name for p in job_dir.iterdir())}"


# ----------------------------------------------------------------------------------------------------- limits


def test_over_limit_upload_is_413(tight: Service) -> None:
    data = os.urandom(2 * 1024 * 1024)
    answer = tight.post_job("big.mp4", data)  # Content-Length says it all: refused before reading
    assert answer.status == 413, answer.body
    assert "1 MB" in answer.error
    # Without a Content-Length (chunked), the limit is found while the body streams to disk.
    body, content_type = multipart("big.mp4", data, {})
    conn = http.client.HTTPConnection("127.0.0.1", tight.port, timeout=60)
    try:
        conn.request("POST", "/jobs", body=(body[i:i + 65536] for i in range(0, len(body), 65536)),
                     headers={"Content-Type": content_type}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        assert "1 MB" in json.loads(response.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close the connection before all of the body was sent; the job must still be gone
    finally:
        conn.close()
    assert tight.jobs() == []
    assert tight.healthy()


def test_queue_full_is_429_and_cancel_removes_a_running_job(tight: Service) -> None:
    clip = require_testdata(*SMALL_CLIP)
    answer = tight.post_job(clip.name, clip.read_bytes())
    assert answer.status == 202, answer.body
    job_id = answer.json()["id"]
    deadline = time.monotonic() + 60
    while (job := tight.job(job_id).json())["frames_done"] < 3:
        assert job["state"] in ("queued", "running") and time.monotonic() < deadline, job
        time.sleep(0.1)
    job_dir = tight.instance_dir() / job_id
    assert job_dir.is_dir()

    full = tight.post_job("p.jpg", require_testdata(*PHOTO).read_bytes())  # one is running: the queue is full
    assert full.status == 429, full.body
    assert full.headers.get("Retry-After", "").isdigit()
    assert "limit 1" in full.error and "try again later" in full.error

    assert tight.request("DELETE", f"/jobs/{job_id}").status == 204
    assert tight.job(job_id).status == 404
    assert tight.request("GET", f"/jobs/{job_id}/result").status == 404
    assert tight.request("DELETE", f"/jobs/{job_id}").status == 404
    deadline = time.monotonic() + 10
    while job_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not job_dir.exists(), "the cancelled job's files are still there"

    again = tight.post_job("p.jpg", require_testdata(*PHOTO).read_bytes())  # its place is free again
    assert again.status == 202, again.body
    assert tight.wait(again.json()["id"])["state"] == "done"


def test_finished_jobs_expire(tight: Service) -> None:
    answer = tight.post_job("p.jpg", require_testdata(*PHOTO).read_bytes())
    assert answer.status == 202
    job_id = answer.json()["id"]
    assert tight.wait(job_id)["state"] == "done"
    job_dir = tight.instance_dir() / job_id
    assert (job_dir / "output.jpg").is_file()
    deadline = time.monotonic() + 15  # --job-ttl 2, checked every second
    while tight.job(job_id).status != 404:
        assert time.monotonic() < deadline, "the finished job did not expire"
        time.sleep(0.2)
    assert not job_dir.exists()
    assert sorted(tight.instance_dir().iterdir()) == []


def test_shutdown_removes_the_jobs_files(tight_service: Service) -> None:
    """SIGTERM while a video job runs: the instance's directory (the running job's input and partial output
    included) is gone once the service has exited."""
    clip = require_testdata(*SMALL_CLIP)
    answer = tight_service.post_job(clip.name, clip.read_bytes())
    assert answer.status == 202, answer.body
    deadline = time.monotonic() + 60
    while tight_service.job(answer.json()["id"]).json()["frames_done"] < 3:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert any(tight_service.instance_dir().rglob("*.partial*")), "expected a partial output while running"
    assert tight_service.stop() == 0, tight_service.log_text()
    assert sorted(tight_service.jobs_dir.iterdir()) == []
