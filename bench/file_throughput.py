"""Whole-file throughput, ours against the deface CLI, and a recall check of both detectors at equal settings.

    python -m bench.file_throughput [CLIP[@WxH] ...] [--runs 3] [--seconds S] [--quick] [--json PATH]

Throughput: wall clock of each whole command, process start to exit (interpreter start, model load, decode,
detect, hide, encode), median of --runs runs, the two tools alternating so drift hits both alike:
  deface: bench/.venv-deface/bin/deface IN -o OUT --replacewith mosaic
          (its defaults otherwise: threshold 0.2, full-resolution network input, libx264 via imageio-ffmpeg)
  ours:   python -m streamer file IN OUT --mode mosaic   (our defaults otherwise)
frames/s = input frames (counted by decoding with PyAV) / median seconds. ``CLIP@WxH`` first re-encodes the
clip, centre-cropped and resized to WxH, into a temporary folder (as does --seconds, cutting it to its first S
seconds).

Recall: the 9 annotated test images; deface's own ``deface.centerface.CenterFace`` (run by
bench/deface_probe.py inside bench/.venv-deface) and ours at equal settings (threshold 0.2, NMS IoU 0.3,
full-resolution input), and ours at its defaults. All are scored here with ``models.evaluate.match``
(one-to-one, IoU >= 0.3).

The results go to bench/out/file_throughput.json (``--json``); ``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from models import DetectorConfig, ModelError, ProviderError, load_detector
from models.centerface import CenterFaceDetector
from models.evaluate import Match, annotated_images, load_truth, match

from ._common import (
    DEFACE_BIN,
    DEFACE_PROBE,
    DEFACE_PYTHON,
    IMAGES,
    REPO,
    VIDEOS,
    Frame,
    Timing,
    count_frames,
    json_option,
    parse_size,
    transcode,
    video_info,
    write_results,
)

DEFAULT_CLIPS = (
    str(VIDEOS / "liveportrait_source_s18.mp4"),
    str(VIDEOS / "face_recognition_short_hamilton_clip.mp4") + "@640x480",
)
DEFACE_THRESHOLD = 0.2  # deface CLI default (--thresh)
DEFACE_NMS_IOU = 0.3  # hard-coded in deface.centerface.CenterFace.decode
MATCH_IOU = 0.3

Boxes = npt.NDArray[np.float32]


@dataclass
class ToolResult:
    timing: Timing | None = None
    error: str | None = None
    output_frames: int | None = None
    seconds: list[float] = field(default_factory=list)


@dataclass
class ClipResult:
    spec: str
    path: Path
    width: int
    height: int
    frames: int
    tools: dict[str, ToolResult]


def shell_join(cmd: Sequence[str | Path]) -> str:
    import shlex

    return " ".join(shlex.quote(str(c)) for c in cmd)


def deface_command(src: Path, dst: Path, mode: str) -> list[str]:
    return [str(DEFACE_BIN), str(src), "-o", str(dst), "--replacewith", mode]


def ours_command(python: str, src: Path, dst: Path, mode: str) -> list[str]:
    return [python, "-m", "streamer", "file", str(src), str(dst), "--mode", mode]


def ours_available(python: str) -> str | None:
    """None when ``python -m streamer file --help`` works, else why not."""
    try:
        done = subprocess.run([python, "-m", "streamer", "file", "--help"], cwd=REPO, capture_output=True,
                              text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`python -m streamer file --help` failed: {exc}"
    if done.returncode != 0:
        tail = done.stderr.strip().replace("\n", " | ")[-300:]
        return f"`python -m streamer file --help` exited {done.returncode}: {tail}"
    return None


def deface_available() -> str | None:
    if not DEFACE_BIN.is_file():
        return f"{DEFACE_BIN} is missing: run `bash bench/deface_env.sh`"
    return None


def prepare_clip(spec: str, workdir: Path, seconds: float | None) -> Path:
    """The clip for both tools: the file itself, or a re-encoded copy (resized and/or cut) in ``workdir``."""
    path_text, _, size_text = spec.partition("@")
    src = Path(path_text)
    if not src.is_file():
        raise SystemExit(f"clip not found: {src} (the test data lives in ../shared/testdata)")
    size = parse_size(size_text) if size_text else None
    if size is None and seconds is None:
        return src
    tag = (f"_{size[0]}x{size[1]}" if size else "") + (f"_{seconds:g}s" if seconds is not None else "")
    dst = workdir / f"{src.stem}{tag}.mp4"
    if not dst.is_file():
        print(f"[throughput] re-encoding {src.name} -> {dst.name}", file=sys.stderr, flush=True)
        transcode(src, dst, size=size, seconds=seconds)
    return dst


def run_timed(cmd: Sequence[str], timeout: float) -> tuple[float, str | None]:
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, f"timed out after {timeout:.0f} s"
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().replace("\n", " | ")[-400:]
        return elapsed, f"exit {done.returncode}: {tail}"
    return elapsed, None


def throughput(args: argparse.Namespace, workdir: Path) -> tuple[list[ClipResult], dict[str, str]]:
    skipped: dict[str, str] = {}
    tools: list[str] = []
    if not args.no_deface:
        why = deface_available()
        if why:
            skipped["deface"] = why
        else:
            tools.append("deface")
    if not args.no_ours:
        why = ours_available(args.python)
        if why:
            skipped["ours"] = why
        else:
            tools.append("ours")
    results: list[ClipResult] = []
    for spec in args.clips:
        clip = prepare_clip(spec, workdir, args.seconds)
        width, height, _ = video_info(clip)
        frames = count_frames(clip)
        result = ClipResult(spec, clip, width, height, frames, {t: ToolResult() for t in tools})
        outputs = {t: workdir / f"{clip.stem}.{t}.mp4" for t in tools}
        for run in range(args.runs):
            order = tools if run % 2 == 0 else tools[::-1]
            for tool in order:
                res = result.tools[tool]
                if res.error:
                    continue
                out = outputs[tool]
                out.unlink(missing_ok=True)
                cmd = (deface_command(clip, out, args.mode) if tool == "deface"
                       else ours_command(args.python, clip, out, args.mode))
                print(f"[throughput] {clip.name} run {run + 1}/{args.runs}: {tool}", file=sys.stderr,
                      flush=True)
                seconds, error = run_timed(cmd, args.timeout)
                if error is None and not (out.is_file() and out.stat().st_size > 0):
                    error = f"exit 0 but no output file {out}"
                if error:
                    res.error = error
                    print(f"[throughput] {tool} failed: {error}", file=sys.stderr, flush=True)
                    continue
                res.seconds.append(seconds)
        for tool, res in result.tools.items():
            if res.seconds:
                res.timing = Timing(tuple(res.seconds))
                res.output_frames = count_frames(outputs[tool])
        results.append(result)
        if not args.keep:
            for out in outputs.values():
                out.unlink(missing_ok=True)
    return results, skipped


def throughput_json(results: Sequence[ClipResult], skipped: dict[str, str], args: argparse.Namespace
                    ) -> dict[str, object]:
    """The throughput part of the results: per clip its size, frames and each tool's seconds per run."""
    clips = []
    for r in results:
        path_text, _, size_text = r.spec.partition("@")
        clips.append({
            "clip": Path(path_text).name, "size": size_text or None, "file": r.path.name, "width": r.width,
            "height": r.height, "frames": r.frames,
            "tools": {tool: {"seconds": res.seconds, "median_s": None if res.timing is None else res.timing.median,
                             "output_frames": res.output_frames, "error": res.error}
                      for tool, res in r.tools.items()}})
    clip = Path("IN.mp4")
    deface_shown = shell_join(deface_command(clip, Path("OUT.mp4"), args.mode)).replace(f"{REPO}/", "")
    return {"clips": clips, "skipped": skipped, "deface_command": deface_shown,
            "ours_command": shell_join(ours_command("python", clip, Path("OUT.mp4"), args.mode))}


@dataclass(frozen=True)
class RecallRow:
    detector: str
    settings: str
    provider: str
    total: Match
    images: int


def read_image(path: Path) -> Frame:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read image {path}")
    return np.asarray(image, dtype=np.uint8)


def add(a: Match, b: Match) -> Match:
    return Match(a.faces + b.faces, a.found + b.found, a.false_positives + b.false_positives)


def deface_boxes(images: Sequence[Path], python: Path = DEFACE_PYTHON) -> tuple[dict[str, Boxes], str]:
    cmd = [str(python), str(DEFACE_PROBE), "boxes", "--threshold", str(DEFACE_THRESHOLD), *map(str, images)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().replace("\n", " | ")[-400:]
        raise RuntimeError(f"deface probe exited {done.returncode}: {tail}")
    data = json.loads(done.stdout)
    boxes = {path: np.asarray(dets, np.float32).reshape(-1, 5)[:, :4]
             for path, dets in data["images"].items()}
    return boxes, f"{data['provider']} ({data['backend']})"


def recall(args: argparse.Namespace) -> tuple[list[RecallRow], list[str]]:
    pairs = list(annotated_images(args.images))
    if not pairs:
        raise SystemExit(f"no annotated images (*.json beside *.jpg) in {args.images}")
    truth = {img: load_truth(js) for img, js in pairs}
    pictures = {img: read_image(img) for img, _ in pairs}
    rows: list[RecallRow] = []
    notes: list[str] = []
    empty = Match(0, 0, 0)

    why = deface_available()
    if why:
        notes.append(f"deface skipped: {why}")
    else:
        found, provider = deface_boxes([img for img, _ in pairs])
        total = empty
        for img, _ in pairs:
            total = add(total, match(truth[img], found[str(img)], MATCH_IOU))
        rows.append(RecallRow("deface 1.5.0 CenterFace", f"threshold {DEFACE_THRESHOLD}, "
                              f"NMS {DEFACE_NMS_IOU}, full image (÷32 stretch)", provider, total, len(pairs)))

    # Equal settings: the network sees each image at its own size, like deface (a session per distinct size).
    detectors: dict[int, CenterFaceDetector] = {}
    total = empty
    provider = ""
    for img, _ in pairs:
        picture = pictures[img]
        long_side = max(picture.shape[:2])
        if long_side not in detectors:
            config = DetectorConfig(detect_size=long_side, threshold=DEFACE_THRESHOLD, nms_iou=DEFACE_NMS_IOU)
            detectors[long_side] = load_detector(args.device, config=config)
        detector = detectors[long_side]
        provider = detector.provider
        total = add(total, match(truth[img], detector.detect(picture).boxes, MATCH_IOU))
    rows.append(RecallRow("ours", f"threshold {DEFACE_THRESHOLD}, NMS {DEFACE_NMS_IOU}, full image (÷32 pad)",
                          provider, total, len(pairs)))
    detectors.clear()

    default = DetectorConfig()
    detector = load_detector(args.device)
    total = empty
    for img, _ in pairs:
        total = add(total, match(truth[img], detector.detect(pictures[img]).boxes, MATCH_IOU))
    rows.append(RecallRow("ours (defaults)", f"threshold {default.threshold}, NMS {default.nms_iou}, "
                          f"detect_size {default.detect_size}", detector.provider, total, len(pairs)))
    return rows, notes


def recall_json(rows: Sequence[RecallRow], notes: Sequence[str], args: argparse.Namespace) -> dict[str, object]:
    return {"rows": [{"detector": r.detector, "settings": r.settings, "provider": r.provider,
                      "faces": r.total.faces, "found": r.total.found, "false_positives": r.total.false_positives,
                      "images": r.images} for r in rows],
            "notes": list(notes), "images": len(list(annotated_images(args.images))), "images_dir": args.images.name,
            "match_iou": MATCH_IOU}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.file_throughput", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("clips", nargs="*", default=list(DEFAULT_CLIPS), metavar="CLIP[@WxH]",
                   help="video files; @WxH re-encodes a centre-cropped, resized copy first "
                        "(default: %(default)s)")
    p.add_argument("--runs", type=int, default=3, help="runs per tool and clip (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=None, help="cut every clip to its first S seconds first")
    p.add_argument("--mode", default="mosaic", choices=("mosaic", "blur", "solid"),
                   help="hiding mode for both tools (default: %(default)s)")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for `-m streamer` (default: this one)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="device of our detector in the recall check (default: %(default)s)")
    p.add_argument("--images", type=Path, default=IMAGES, help="annotated images (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=1800,
                   help="seconds allowed per command (default: %(default)s)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep re-encoded clips here (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the anonymized outputs in the work dir")
    p.add_argument("--no-deface", action="store_true", help="skip the deface CLI")
    p.add_argument("--no-ours", action="store_true", help="skip our CLI")
    p.add_argument("--no-throughput", action="store_true", help="only the recall check")
    p.add_argument("--no-recall", action="store_true", help="only the throughput table")
    p.add_argument("--quick", action="store_true", help="smoke run: clips cut to 2 s, 1 run")
    json_option(p, "file_throughput")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    if args.quick:
        args.runs = 1
        args.seconds = 2.0 if args.seconds is None else min(args.seconds, 2.0)
    if args.runs < 1:
        raise SystemExit("--runs must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out: dict[str, object] = {"throughput": None, "recall": None, "recall_error": None}
    if not args.no_throughput:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            results, skipped = throughput(args, args.workdir)
        else:
            tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
            try:
                results, skipped = throughput(args, tmp)
            finally:
                if args.keep:
                    print(f"[throughput] outputs kept in {tmp}", file=sys.stderr)
                else:
                    shutil.rmtree(tmp, ignore_errors=True)
        out["throughput"] = throughput_json(results, skipped, args)
    if not args.no_recall:
        try:
            rows, notes = recall(args)
        except (ModelError, ProviderError, RuntimeError) as exc:
            print(f"error: recall check: {exc}", file=sys.stderr)
            out["recall_error"] = str(exc)
            write_results("file_throughput", argv, args, started, **out)
            return 1
        out["recall"] = recall_json(rows, notes, args)
    write_results("file_throughput", argv, args, started, **out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
