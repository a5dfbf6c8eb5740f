"""Many files at once: ``python -m streamer file DIR OUTDIR`` (or several inputs and globs).

Inputs are files, folders (walked, hidden entries and the output folder skipped) and globs; each output keeps its
path relative to the folder or glob it was found under, and two inputs that would write the same output are
refused before anything runs. A file whose output is already there, newer than it and made with the same settings
(``OUTDIR/.face-streamer-batch.json`` remembers them) is skipped, so a batch that was stopped resumes where it
stopped, and a batch run again with other settings redoes everything. One failure does not stop the batch: it is
reported and counted, and the exit status is the number of files that failed (at most 100), 0 when none did.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .file_pipeline.one_file import FileOptions, anonymize_file, sidecar_path
from .offline import IMAGE_SUFFIXES, VIDEO_SUFFIXES, InputError
from .processor import FrameProcessor

logger = logging.getLogger(__name__)

MAX_EXIT_STATUS = 100
MARKS_NAME = ".face-streamer-batch.json"
VIDEO_OUTPUT_SUFFIXES = VIDEO_SUFFIXES - {".webm"}
MEDIA_SUFFIXES = IMAGE_SUFFIXES | VIDEO_SUFFIXES | frozenset({".mpg", ".mpeg", ".ts", ".3gp"})


@dataclass(frozen=True)
class BatchItem:
    source: Path
    output: Path | None  # None with boxes-only
    audit: Path | None


@dataclass
class BatchReport:
    done: int = 0
    skipped: int = 0
    failed: int = 0

    @property
    def exit_status(self) -> int:
        return min(self.failed, MAX_EXIT_STATUS)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _leading(parts: tuple[str, ...]) -> Iterator[str]:
    for part in parts[:-1]:
        if _is_glob(part):
            return
        yield part


def _walk(root: Path, skip: Path | None) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        # The output folder may lie inside an input folder: its results are not inputs of the next run.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (Path(folder) / d).resolve() != skip)
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in MEDIA_SUFFIXES:
                yield Path(folder) / name


def expand_inputs(inputs: list[str], skip: Path | None = None) -> list[tuple[Path, Path]]:
    """(file, its path relative to where it was found) for every input, nothing from the folder ``skip``;
    ValueError for an input that names nothing, so a typo is not a silent empty batch."""
    found: list[tuple[Path, Path]] = []
    for text in inputs:
        path = Path(text)
        if _is_glob(text) and not path.exists():
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise ValueError(f"{text}: matches no file")
            # Outputs keep their path below the glob's fixed leading folders ("clips/**/*.mp4" -> below clips/).
            fixed = list(_leading(path.parts))
            base = Path(*fixed) if fixed else Path()
            for match in matches:
                if match.is_dir():
                    found += [(f, f.relative_to(base)) for f in _walk(match, skip)]
                elif match.is_file():
                    found.append((match, match.relative_to(base)))
        elif path.is_dir():
            found += [(f, f.relative_to(path)) for f in _walk(path, skip)]
        elif path.exists():
            found.append((path, Path(path.name)))
        else:
            raise ValueError(f"{text}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for source, relative in found:
        if source.resolve() not in seen:
            seen.add(source.resolve())
            unique.append((source, relative))
    return unique


def plan(inputs: list[str], out_dir: Path, *, audit: bool, boxes_only: bool) -> list[BatchItem]:
    """What each input becomes under ``out_dir``: the same relative path; a video whose container is not written
    (WebM and the like) as .mp4."""
    items = []
    skip = out_dir.resolve()
    for source, relative in expand_inputs(inputs, skip):
        if source.resolve().is_relative_to(skip):
            continue  # an earlier run's output, matched by a glob
        target = out_dir / relative
        suffix = target.suffix.lower()
        if suffix not in IMAGE_SUFFIXES and suffix not in VIDEO_OUTPUT_SUFFIXES:
            target = target.with_suffix(".mp4")
        if target.resolve() == source.resolve():
            raise ValueError(f"{source}: its output would overwrite it; give an output folder apart from the input")
        if boxes_only:
            items.append(BatchItem(source, None, sidecar_path(out_dir / relative)))
        else:
            items.append(BatchItem(source, target, sidecar_path(target) if audit else None))
    written: dict[Path, Path] = {}
    for item in items:
        for path in (item.output, item.audit):
            if path is None:
                continue
            other = written.setdefault(path.resolve(), item.source)
            if other != item.source:
                raise ValueError(f"{other} and {item.source} would both be written to {path}; give them output "
                                 "folders of their own")
    return items


class DoneMarks:
    """``OUTDIR/.face-streamer-batch.json``: the settings each output was made with (a fingerprint)."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / MARKS_NAME
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
            self.marks: dict[str, str] = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) \
                else {}
        except (OSError, ValueError):
            self.marks = {}

    @staticmethod
    def _key(item: BatchItem) -> str:
        return str((item.output or item.audit or item.source).resolve())

    def done(self, item: BatchItem, fingerprint: str) -> bool:
        """Whether an earlier run finished this one with the same settings: every file it writes exists and is
        newer than the source."""
        wanted = [p for p in (item.output, item.audit) if p is not None]
        source_time = item.source.stat().st_mtime
        return self.marks.get(self._key(item)) == fingerprint and \
            all(p.exists() and p.stat().st_mtime >= source_time for p in wanted)

    def mark(self, item: BatchItem, fingerprint: str) -> None:
        self.marks[self._key(item)] = fingerprint
        self.path.parent.mkdir(parents=True, exist_ok=True)
        part = self.path.with_name(self.path.name + ".part")
        part.write_text(json.dumps(self.marks, indent=1, sort_keys=True), encoding="utf-8")
        part.replace(self.path)


def fingerprint(settings: dict[str, Any]) -> str:
    """A short hash of everything that shapes an output (hiding, detection, zones, gallery, sound, quality)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_batch(items: list[BatchItem], make_processor: Callable[[Path], FrameProcessor], out_dir: Path, *,
              settings: str = "", keep_audio: bool = True, crf: int = 20, detect_workers: int = 1,
              overwrite: bool = False, progress: bool = True) -> BatchReport:
    """Each item through ``anonymize_file`` with a processor of its own (a file's tracks are not another's)."""
    from tqdm import tqdm

    report = BatchReport()
    marks = DoneMarks(out_dir)
    bar: Any = tqdm(total=len(items), unit="file", file=sys.stderr, dynamic_ncols=True, disable=not progress)
    try:
        for item in items:
            bar.set_postfix_str(item.source.name, refresh=True)
            if not overwrite and marks.done(item, settings):
                report.skipped += 1
                bar.update(1)
                continue
            file_options = FileOptions(keep_audio, item.audit, item.output is None, crf, detect_workers)
            try:
                result = anonymize_file(item.source, item.output, make_processor(item.source), file_options)
            except (InputError, ValueError, OSError) as exc:
                report.failed += 1
                bar.write(f"failed: {exc}", file=sys.stderr)
            except Exception as exc:  # a decoder's or encoder's own error: one file, not the batch
                logger.debug("%s failed", item.source, exc_info=True)
                report.failed += 1
                bar.write(f"failed: {item.source}: {exc}", file=sys.stderr)
            else:
                report.done += 1
                marks.mark(item, settings)
                bar.write(f"{item.source} -> {result.output or item.audit}: {result.frames} frame(s), "
                          f"{result.faces} face(s)", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
    return report
