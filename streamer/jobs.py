"""Upload jobs: a photo or a video in, the anonymized file out, through the same pipeline as the `file` command.

Jobs run on a small pool of worker threads at a lower CPU priority, and their inferences wait behind any live
request (DetectionService), so uploads never starve live streams. Every job's files live in a directory of its
own under this instance's jobs directory, named by the job id (never by the uploaded name), and are removed on
failure, cancel, expiry and shutdown; a directory left by a crashed instance is removed at the next start.

Uploads are raw pictures of people: every folder here is 0700 and every file 0600, under a root that only this
user can write (``private_root``), so no other local user can read them or plant anything where they are written.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

from models.private_dir import make_private, refuse_unless_private

from .detection_service import DetectionService
from .file_pipeline.one_file import FileOptions, anonymize_file
from .offline import IMAGE_SUFFIXES, Cancelled, InputError, Progress, check_image_size, classify_input
from .processor import FrameProcessor
from .settings import AnonymizeSettings
from .zones import Zones, zones_as_json

logger = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed", "cancelled"]
TERMINAL = ("done", "failed", "cancelled")
VIDEO_INPUT_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".3gp"})
JOB_NICE = 10  # worker threads yield the CPU to live streams
DEFAULT_ROOT_NAME = "face-streamer-jobs"  # under $XDG_RUNTIME_DIR; in the temp directory, mkdtemp's prefix


def private_root(root: Path | None) -> tuple[Path, bool]:
    """The jobs root, and whether it is this instance's own (made by mkdtemp, removed at shutdown).

    An explicit root is created 0700 if missing and refused (ValueError, which `serve` prints) when it is not
    private. The default is per user: $XDG_RUNTIME_DIR/face-streamer-jobs when that is a private folder of ours
    (a tmpfs that the login session owns), else a fresh mkdtemp folder, never a fixed name in a shared /tmp that
    another user could create first."""
    if root is not None:
        make_private(root, "--jobs-dir")
        return root, False
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime:
        try:
            refuse_unless_private(Path(runtime), "$XDG_RUNTIME_DIR")
        except ValueError as exc:
            logger.warning("[jobs] not using %s; a folder of its own in the temp directory instead", exc)
        else:
            default = Path(runtime) / DEFAULT_ROOT_NAME
            make_private(default, "the jobs directory")
            return default, False
    return Path(tempfile.mkdtemp(prefix=f"{DEFAULT_ROOT_NAME}-")), True


def _stopped_instance(entry: Path) -> bool:
    """Whether ``entry`` is an instance directory ("PID-hex") whose process is gone."""
    pid_text = entry.name.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return False


def safe_suffix(filename: str) -> str:
    """The only part of an uploaded name that is used, and only to pick the decoder: a known extension or none."""
    suffix = Path(filename.replace("\\", "/")).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES | VIDEO_INPUT_SUFFIXES else ""


def display_stem(filename: str) -> str:
    """A harmless name for the download (Content-Disposition), never a path on disk."""
    stem = Path(filename.replace("\\", "/")).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80] or "upload"


@dataclass(frozen=True)
class JobOptions:
    """What the uploader chose: how faces are hidden, the privacy zones, the sound, and the audit trail."""

    settings: AnonymizeSettings = field(default_factory=AnonymizeSettings)
    zones: Zones = ()
    keep_audio: bool = True
    audit: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.settings.mode, "strength": self.settings.strength, "zones": zones_as_json(self.zones),
                "audio": "keep" if self.keep_audio else "drop", "audit": self.audit}


@dataclass
class Job:
    id: str
    name: str  # sanitized, for the download name only
    suffix: str
    options: JobOptions
    directory: Path
    title: str = ""  # the uploaded file's own stem (any script, no path), only ever percent-encoded in a header
    state: JobState = "queued"
    kind: Literal["image", "video"] = "video"
    frames_done: int = 0
    frames_total: int | None = None
    fps: float = 0.0
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    output: Path | None = None
    audit: Path | None = None  # the audit trail, when asked for and done
    cancel: threading.Event = field(default_factory=threading.Event)
    version: int = 0  # bumps on every change, for the progress stream

    @property
    def input(self) -> Path:
        return self.directory / f"input{self.suffix}"

    def create_input(self) -> BinaryIO:
        """The upload's file, new and 0600 whatever the umask lets files be: it holds raw faces."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return os.fdopen(os.open(self.input, flags, 0o600), "wb")

    def as_dict(self) -> dict[str, Any]:
        eta = None
        if self.state == "running" and self.frames_total and self.fps > 0:
            eta = round(max(0, self.frames_total - self.frames_done) / self.fps, 1)
        percent = None
        if self.state == "done":
            percent = 100.0
        elif self.frames_total:
            percent = round(min(99.9, 100 * self.frames_done / self.frames_total), 1)
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "state": self.state, "error": self.error,
            "frames_done": self.frames_done, "frames_total": self.frames_total, "percent": percent,
            "fps": round(self.fps, 1), "eta_s": eta, "created": self.created, "finished": self.finished,
            "settings": self.options.as_dict(),
            "result": f"/jobs/{self.id}/result" if self.state == "done" else None,
            "audit": f"/jobs/{self.id}/audit" if self.state == "done" and self.audit is not None else None,
        }


class QueueFull(RuntimeError):
    """More jobs are waiting than the queue limit allows."""


class JobManager:
    def __init__(self, root: Path | None, detection: DetectionService | None = None, *, workers: int = 1,
                 max_queued: int = 8, ttl_s: float = 3600.0) -> None:
        """``root`` None: a private per-user default (``private_root``). ValueError when ``root`` is not private."""
        self.root, self._own_root = private_root(root)
        self.max_queued = max_queued
        self.ttl_s = ttl_s
        self._detection = detection
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self.directory = self.root / f"{os.getpid()}-{secrets.token_hex(4)}"
        self.directory.mkdir(mode=0o700)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="job",
                                        initializer=self._lower_priority)
        self._remove_orphans()

    @staticmethod
    def _lower_priority() -> None:
        # Linux applies nice per thread: only this worker yields, not the live threads of the process.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), JOB_NICE)

    def _remove_orphans(self) -> None:
        """Directories of instances that are no longer running (a crash, a kill -9) are removed. With a mkdtemp
        root, each instance has a root of its own: those of stopped instances of this user go too."""
        for entry in self.root.iterdir():
            if entry != self.directory and _stopped_instance(entry):
                logger.info("[jobs] removing %s left by a stopped instance", entry)
                shutil.rmtree(entry, ignore_errors=True)
        if not self._own_root:
            return
        for other in self.root.parent.glob(f"{DEFAULT_ROOT_NAME}-*"):
            with contextlib.suppress(OSError):
                st = os.lstat(other)
                if other == self.root or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                    continue
                entries = list(other.iterdir())
                # An empty root may be an instance that is starting (between mkdtemp and its own folder): only an
                # old one is left over.
                if all(_stopped_instance(e) for e in entries) and (entries or time.time() - st.st_mtime > 60):
                    logger.info("[jobs] removing %s left by a stopped instance", other)
                    shutil.rmtree(other, ignore_errors=True)

    def bind(self, detection: DetectionService) -> None:
        self._detection = detection

    def new_job(self, filename: str, options: JobOptions) -> Job:
        """Register a job before its upload is written; QueueFull when too many are waiting."""
        with self._lock:
            waiting = sum(1 for j in self._jobs.values() if j.state in ("queued", "running"))
            if waiting >= self.max_queued:
                raise QueueFull(f"{waiting} jobs are already queued or running (limit {self.max_queued})")
            job_id = secrets.token_urlsafe(9)
            suffix = safe_suffix(filename)
            job = Job(job_id, display_stem(filename), suffix, options, self.directory / job_id,
                      title=Path(filename.replace("\\", "/")).stem[:120],
                      kind="image" if suffix in IMAGE_SUFFIXES else "video")
            job.directory.mkdir(mode=0o700)
            self._jobs[job_id] = job
        return job

    def start(self, job: Job) -> None:
        self._pool.submit(self._run, job)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.created)

    def _update(self, job: Job, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(job, key, value)
        job.version += 1

    def _run(self, job: Job) -> None:
        with self._lock:  # cancel() sets the flag and reads the state under the same lock
            if job.cancel.is_set():
                return
            assert self._detection is not None, "jobs started before the detector loaded"
            self._update(job, state="running", started=time.time())
        processor = FrameProcessor(self._detection.background_detector(), job.options.settings,
                                   stream_id=f"job {job.id}")
        processor.zones = job.options.zones

        def on_progress(p: Progress) -> None:
            self._update(job, frames_done=p.frames_done, frames_total=p.frames_total, fps=p.fps)
            if job.cancel.is_set():
                raise Cancelled(f"job {job.id} cancelled")

        try:
            # By its content, not its name (the same rule as the `file` command): refuses still-image formats whose
            # size is not checked before decoding.
            self._update(job, kind=classify_input(job.input))
            audit = job.directory / "audit.jsonl" if job.options.audit else None
            options = FileOptions(keep_audio=job.options.keep_audio, audit=audit, private=True)
            if job.kind == "image":
                check_image_size(job.input)
                # The name's image type; BMP and a photo under another name come back as PNG.
                suffix = job.suffix if job.suffix in IMAGE_SUFFIXES - {".bmp"} else ".png"
                output = job.directory / f"output{suffix}"
                anonymize_file(job.input, output, processor, options)
                self._update(job, frames_done=1, frames_total=1)
            else:
                output = job.directory / "output.mp4"
                anonymize_file(job.input, output, processor, options, on_progress=on_progress, cancel=job.cancel)
            job.input.unlink(missing_ok=True)
            with self._lock:
                # A DELETE that came while the last frame was written (or an image was processed, which never
                # looks at the flag) has already dropped the job: its files must not outlive it.
                cancelled = job.cancel.is_set()
                if not cancelled:
                    self._update(job, state="done", output=output, audit=audit, finished=time.time())
            if cancelled:
                raise Cancelled(f"job {job.id} cancelled")
            logger.info("[job %s] done: %d frame(s)", job.id, job.frames_done)
        except Cancelled:
            self._discard(job, "cancelled", None)
        except InputError as exc:
            self._discard(job, "failed", str(exc).replace(str(job.input), job.name + (job.suffix or "")))
        except OSError as exc:
            logger.exception("[job %s] failed", job.id)
            # The message of a full disk quotes the temporary file's path on the server: say what it means.
            reason = "no space left on the server's disk for the result" if exc.errno == errno.ENOSPC else str(exc)
            self._discard(job, "failed", f"processing failed: {reason}")
        except Exception as exc:
            logger.exception("[job %s] failed", job.id)
            # One line, without the server's paths: OpenCV's and FFmpeg's messages span lines and quote files.
            reason = " ".join(str(exc).replace(str(job.directory), job.name).split())
            self._discard(job, "failed", f"processing failed: {reason}")
        except BaseException as exc:
            # The worker itself is dying (SystemExit, MemoryError, an exception raised into its thread): the job
            # must not stay 'running' forever, holding a queue slot and its files.
            logger.critical("[job %s] its worker stopped (%s); job failed", job.id, type(exc).__name__)
            self._discard(job, "failed", f"the job's worker stopped unexpectedly ({type(exc).__name__})")
            raise

    def _discard(self, job: Job, state: JobState, error: str | None) -> None:
        shutil.rmtree(job.directory, ignore_errors=True)
        self._update(job, state=state, error=error, finished=time.time(), output=None, audit=None)
        if error:
            logger.info("[job %s] %s: %s", job.id, state, error)

    def fail_upload(self, job: Job, error: str) -> None:
        """The upload itself failed (too large, cut off): the job ends failed and its files go."""
        self._discard(job, "failed", error)

    def cancel(self, job: Job) -> None:
        """Cancel (if running or queued) and remove the job and its files. A running job's worker removes its
        files when it sees the flag (at the latest when its work ends)."""
        with self._lock:
            job.cancel.set()
            state = job.state
            self._jobs.pop(job.id, None)
        if state == "queued":
            self._discard(job, "cancelled", None)
        elif state in TERMINAL:
            shutil.rmtree(job.directory, ignore_errors=True)

    def expire(self, now: float | None = None) -> int:
        """Remove finished jobs older than the time-to-live; returns how many went."""
        now = time.time() if now is None else now
        gone = 0
        for job in list(self._jobs.values()):
            if job.state in TERMINAL and job.finished is not None and now - job.finished > self.ttl_s:
                shutil.rmtree(job.directory, ignore_errors=True)
                with self._lock:
                    self._jobs.pop(job.id, None)
                gone += 1
        return gone

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root if self._own_root else self.directory, ignore_errors=True)
