"""``python -m bench.allowlist``: the allow-list ("keep these faces visible") measured on real faces.

1. Rates: each one-person clip of the test data is enrolled from three early frames and judged on 40 later ones;
   every face of the photos, of the crowd clips and of the other subjects is a stranger. False keep: strangers
   within the match distance (left visible); false hide: the subject's faces beyond it (hidden). At several
   distances, the default (``streamer.identity.gallery.MATCH_DISTANCE``) marked.
2. Pipeline: the enrolled clip and a crowd clip through ``FrameProcessor`` with the policy, at the clip's frame
   rate as a live stream gets it (recognition does not wait) and as a file (it waits): how many frames show the
   enrolled face, whether any stranger is kept, and what it costs per frame.

Results go to bench/out/allowlist.json (``--json``); ``python -m bench.render`` makes the tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from models import DetectorConfig, load_detector
from streamer.identity.embedding import Embedder
from streamer.identity.gallery import MATCH_DISTANCE
from streamer.identity.policy import IdentityPolicy
from streamer.processor import FrameProcessor
from testkit.allowlist import SUBJECTS, clip_frames, measure, rates
from testkit.truth import testdata_dir

from ._common import json_option, write_results

THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6)


def pipeline(detector: object, embedder: Embedder, gallery: object, clip: Path, frames: range, fps: float,
             wait: bool) -> dict[str, float]:
    """Frames of ``clip`` through a processor with the "keep" policy; live-like (paced, not waiting) or file-like."""
    processor = FrameProcessor(detector)  # type: ignore[arg-type]
    policy = IdentityPolicy(gallery, embedder, "keep", clip.name, wait=wait)  # type: ignore[arg-type]
    processor.identity = policy
    kept_frames = faces = kept = 0
    policy_s: list[float] = []
    start = time.perf_counter()
    for n, (index, image) in enumerate(clip_frames(clip, frames)):
        if not wait:  # a live stream's frames come at the clip's rate
            delay = start + n / fps - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        detections, _ = processor.detect(image, index / fps)
        if detections is None:
            continue
        before = time.perf_counter()
        boxes = processor.tracker.update(detections.boxes, index / fps, (image.shape[1], image.shape[0]))
        shown = policy.visible(image, index / fps, boxes, len(detections), processor.tracker.last_ids,
                               processor.tracker.last_uncertain)
        policy_s.append(time.perf_counter() - before)
        faces += len(detections)
        kept += int(shown.sum())
        kept_frames += bool(shown.any())
    policy.stop()
    count = len(frames)
    return {"frames": count, "faces": faces, "kept": kept, "frames_with_kept": kept_frames,
            "recognitions": policy.recognitions, "recognitions_per_frame": policy.recognitions / max(1, count),
            "policy_ms_median": statistics.median(policy_s) * 1000 if policy_s else 0.0}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    parser = argparse.ArgumentParser(prog="python -m bench.allowlist", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one subject and the photos only")
    json_option(parser, "allowlist")
    args = parser.parse_args(argv)
    testdata = testdata_dir()
    detector = load_detector("cpu", None, DetectorConfig(threads=1))
    embedder = Embedder()
    try:
        print("[allowlist] embedding every face ...", file=sys.stderr, flush=True)
        subjects = SUBJECTS[:1] if args.quick else SUBJECTS
        measured = measure(testdata, detector, embedder, subjects=subjects,
                           **({"clips": ()} if args.quick else {}))
        table = [{"subject": r.subject, "threshold": r.threshold, "kept": r.kept, "judged": r.judged,
                  "strangers_kept": r.strangers_kept, "strangers": r.strangers, "worst_stranger": r.worst_stranger}
                 for r in rates(measured, THRESHOLDS)]
        print("[allowlist] the pipeline, live and file ...", file=sys.stderr, flush=True)
        katie = SUBJECTS[0]
        gallery = measured.galleries[katie.name]
        runs = []
        for clip, frames, fps in ((testdata / "videos" / katie.clip, range(30, 200), 25.0),
                                  (testdata / "videos" / "face_recognition_short_hamilton_clip.mp4", range(0, 275),
                                   29.97)):
            for wait in (False, True):
                runs.append({"clip": clip.name, "mode": "file" if wait else "live",
                             **pipeline(detector, embedder, gallery, clip, frames, fps, wait)})
    finally:
        embedder.stop()
    write_results("allowlist", argv, args, started, default_threshold=MATCH_DISTANCE, rates=table,
                  subjects={s.name: {"clip": s.clip, "enrolled_frames": list(s.enroll),
                                     "judged_faces": len(measured.subjects[s.name].embeddings)} for s in subjects},
                  strangers=len(measured.strangers.embeddings), stranger_sources=len(set(measured.strangers.sources)),
                  embed_ms_median=statistics.median(measured.embed_s) * 1000, pipeline=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
